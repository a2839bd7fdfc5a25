//! The daemon's job schedule: each configured job runs at its cron times,
//! after a random delay of up to `jitter_secs` (so a thousand clinics do not
//! call central in the same second). A failed run is retried with
//! exponential backoff until the next scheduled time. The daemon's own jobs
//! take turns (jobs due at the same time run one after the other); a job
//! that finds a run of another process in progress (a one-shot run from
//! system cron) skips its turn. Repository upkeep (repacking, see
//! [`crate::jobs::upkeep`]) sweeps the records in the background, a minute
//! after start and then every [`UPKEEP_EVERY`], between sync runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::Satellite;
use crate::jobs::{Job, JobError, JobLock, LockError, no_progress, run_locked};
use crate::schedule::Schedule;

/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(15);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Time between upkeep sweeps.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(10 * 60);
/// Delay before the first upkeep sweep.
const UPKEEP_FIRST: Duration = Duration::from_secs(60);

/// A random time below `max_secs` (zero when no randomness is to be had).
pub(crate) fn random_below(max_secs: u64) -> Duration {
    if max_secs == 0 {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from_le_bytes(b) % (max_secs * 1000))
}

/// Sleeps, or returns false at shutdown.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stop.changed() => false,
    }
}

/// Runs the configured schedules until `stop` turns true.
pub async fn run(sat: Arc<Satellite>, stop: watch::Receiver<bool>) {
    let turns = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = vec![tokio::spawn(upkeep_loop(Arc::clone(&sat), stop.clone()))];
    for (name, expr) in sat.config.schedules() {
        let Some(expr) = expr else { continue };
        let job = match name {
            "push" => Job::Push,
            "pull" => Job::Pull,
            _ => Job::FetchNew,
        };
        let schedule = match Schedule::parse(expr) {
            Ok(s) => s,
            Err(e) => {
                // The configuration was checked at start; this cannot happen.
                tracing::error!(job = name, error = %e, "invalid schedule");
                continue;
            }
        };
        tracing::info!(
            job = job.name(),
            schedule = schedule.source(),
            "job scheduled"
        );
        tasks.push(tokio::spawn(job_loop(
            Arc::clone(&sat),
            job,
            schedule,
            Arc::clone(&turns),
            stop.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Sweeps the records for repacking until `stop` turns true. A sweep in
/// progress is never interrupted (it is bounded: at most
/// [`crate::jobs::upkeep::MAX_REPACKS_PER_SWEEP`] repacks).
async fn upkeep_loop(sat: Arc<Satellite>, mut stop: watch::Receiver<bool>) {
    let mut wait = UPKEEP_FIRST;
    loop {
        if !sleep_or_stop(wait, &mut stop).await {
            return;
        }
        // Never during a sync run: try again in a minute.
        let lock = match JobLock::acquire(&sat.config.data_dir, Duration::ZERO).await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::debug!(error = %e, "upkeep waits for the sync run");
                wait = UPKEEP_FIRST;
                continue;
            }
        };
        wait = UPKEEP_EVERY;
        let s = Arc::clone(&sat);
        let done = tokio::task::spawn_blocking(move || {
            crate::jobs::upkeep::sweep(&s, &lock, crate::jobs::upkeep::MAX_REPACKS_PER_SWEEP)
        })
        .await;
        match done {
            Ok(Ok(stats)) if stats.repacked > 0 => {
                tracing::info!(
                    checked = stats.checked,
                    repacked = stats.repacked,
                    skipped = stats.skipped,
                    "upkeep sweep"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "upkeep sweep failed"),
            Err(e) => tracing::warn!(error = %e, "upkeep task failed"),
        }
    }
}

async fn job_loop(
    sat: Arc<Satellite>,
    job: Job,
    schedule: Schedule,
    turns: Arc<tokio::sync::Mutex<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let jitter = sat.config.schedule.jitter_secs;
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default() + random_below(jitter);
        if !sleep_or_stop(wait, &mut stop).await {
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = {
                let _turn = tokio::select! {
                    turn = turns.lock() => turn,
                    _ = stop.changed() => return,
                };
                run_now(&sat, job).await
            };
            match result {
                Ok(()) => break,
                Err(JobError::Lock(LockError::Busy { .. })) => {
                    tracing::info!(
                        job = job.name(),
                        "another run is in progress; skipping this turn"
                    );
                    break;
                }
                Err(e) => {
                    let next_turn = schedule
                        .next_after(Utc::now())
                        .and_then(|t| (t - Utc::now()).to_std().ok())
                        .unwrap_or(MAX_BACKOFF);
                    if backoff >= next_turn {
                        tracing::warn!(job = job.name(), error = %crate::error_chain(&e), "run failed; trying again at the next scheduled time");
                        break;
                    }
                    tracing::warn!(job = job.name(), error = %crate::error_chain(&e), retry_in = ?backoff, "run failed; retrying");
                    if !sleep_or_stop(
                        backoff + random_below(jitter.min(backoff.as_secs())),
                        &mut stop,
                    )
                    .await
                    {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

async fn run_now(sat: &Arc<Satellite>, job: Job) -> Result<(), JobError> {
    let lock = JobLock::acquire(&sat.config.data_dir, Duration::ZERO).await?;
    let summary = run_locked(sat, &[job], &lock, no_progress()).await?;
    if summary.deferred > 0 {
        return Err(JobError::Protocol(format!(
            "{} record(s) deferred (central busy)",
            summary.deferred
        )));
    }
    Ok(())
}
