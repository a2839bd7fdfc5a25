//! The sync jobs: push, pull and fetch-new, each in batches of at most
//! `[sync] batch_size` records with one round trip per batch. Runs never
//! overlap: each holds the job lock (`<data_dir>/sync.lock`), shared by the
//! daemon and one-shot runs from the command line.

mod apply;
mod fetch;
mod lock;
mod pull;
mod push;
pub mod upkeep;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use apply::JobError;
pub use fetch::fetch_one;
pub use lock::{JobLock, LockError};

/// Runs blocking database work off the async threads.
pub(crate) async fn spawn_db<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, JobError>
where
    JobError: From<E>,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::Task(e.to_string()))?
        .map_err(JobError::from)
}

/// Work started ahead (the next page asked for, a batch in flight) on its
/// own task; dropped unused, because its job stopped, it is abandoned.
pub(crate) struct Ahead<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Ahead<T> {
    pub(crate) fn start(work: impl std::future::Future<Output = T> + Send + 'static) -> Ahead<T> {
        Ahead(tokio::spawn(work))
    }

    /// Waits for it.
    pub(crate) async fn done(mut self) -> Result<T, JobError> {
        (&mut self.0)
            .await
            .map_err(|e| JobError::Task(e.to_string()))
    }
}

impl<T> Drop for Ahead<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

use crate::Satellite;
use crate::client::{CentralClient, LinkMeasure};

/// A job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// Push local changes.
    Push,
    /// Pull central's changes to records held here.
    Pull,
    /// Fetch records new to this clinic.
    FetchNew,
}

impl Job {
    /// Its name (`push`, `pull`, `fetch-new`).
    pub fn name(&self) -> &'static str {
        match self {
            Job::Push => "push",
            Job::Pull => "pull",
            Job::FetchNew => "fetch-new",
        }
    }

    /// All jobs, in the order `all` runs them.
    pub const ALL: [Job; 3] = [Job::Push, Job::Pull, Job::FetchNew];
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// push, pull, fetch-new or all.
    pub job: String,
    /// Records central accepted from here.
    pub records_sent: u64,
    /// Records stored from central.
    pub records_received: u64,
    /// Records merged (local and central changes combined).
    pub merged: u64,
    /// True conflicts queued for a clinician.
    pub conflicts: u64,
    /// Records central refused (see `chartsync satellite status`).
    pub refused: u64,
    /// Records left for the next run (central busy).
    pub deferred: u64,
    /// Records that could not be stored or merged here, set aside with a
    /// reason (`chartsync satellite status`); every other record went on.
    #[serde(default)]
    pub set_aside: u64,
    /// Request bytes on the wire.
    pub bytes_sent: u64,
    /// Reply bytes on the wire.
    pub bytes_received: u64,
    /// HTTP round trips.
    pub round_trips: u64,
    /// Wall time.
    pub seconds: f64,
}

impl Summary {
    fn add(&mut self, other: &Summary) {
        self.records_sent += other.records_sent;
        self.records_received += other.records_received;
        self.merged += other.merged;
        self.conflicts += other.conflicts;
        self.refused += other.refused;
        self.deferred += other.deferred;
        self.set_aside += other.set_aside;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.round_trips += other.round_trips;
        self.seconds += other.seconds;
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{}: sent {}, received {}, merged {}, conflicts {}, refused {}, deferred {}, set aside {}; {} bytes up, {} bytes down, {} round trips, {:.2} s",
            self.job,
            self.records_sent,
            self.records_received,
            self.merged,
            self.conflicts,
            self.refused,
            self.deferred,
            self.set_aside,
            self.bytes_sent,
            self.bytes_received,
            self.round_trips,
            self.seconds
        )
    }
}

/// Progress reports of a long run: (records done, records known so far).
pub type Progress = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// A progress reporter that reports nothing.
pub fn no_progress() -> Progress {
    Arc::new(|_, _| {})
}

/// Records to ask for in a pull or fetch-new page: `[sync] batch_size`.
/// Central cuts the page by bytes for the link the satellite tells it of,
/// in slow start the 2G link it is taken to be
/// ([`crate::client::SLOW_START_BANDWIDTH`]), so that a page takes about
/// `[sync] batch_secs` of such a link.
pub(crate) fn page_limit(sat: &Satellite) -> u32 {
    sat.config.sync.batch_size as u32
}

/// State keys of the link as last measured: bytes per second, and round
/// trip in microseconds plus one (0: unknown).
const LINK_BW: &str = "link_bytes_per_sec";
const LINK_RTT: &str = "link_rtt_us_plus_1";

fn load_measure(sat: &Satellite) -> Result<LinkMeasure, crate::db::DbError> {
    let bw = sat.db.state(LINK_BW)?;
    let rtt = sat.db.state(LINK_RTT)?;
    Ok(LinkMeasure {
        bytes_per_sec: (bw > 0).then_some(bw as f64),
        rtt: (rtt > 0).then(|| (rtt - 1) as f64 / 1e6),
    })
}

fn save_measure(sat: &Satellite, m: LinkMeasure) -> Result<(), crate::db::DbError> {
    if let Some(bw) = m.bytes_per_sec {
        sat.db.set_state(LINK_BW, (bw as i64).max(1))?;
    }
    if let Some(rtt) = m.rtt {
        sat.db.set_state(LINK_RTT, (rtt * 1e6) as i64 + 1)?;
    }
    Ok(())
}

/// Runs jobs once, in order, holding the job lock (which the caller has
/// taken). Each run is logged in the state database.
pub async fn run_locked(
    sat: &Arc<Satellite>,
    jobs: &[Job],
    _lock: &JobLock,
    progress: Progress,
) -> Result<Summary, JobError> {
    let client = Arc::new(CentralClient::new(&sat.config)?);
    // The link as measured by earlier runs; what this run measures is kept
    // for the next.
    let s = Arc::clone(sat);
    match spawn_db(move || load_measure(&s)).await {
        Ok(m) => client.set_measure(m),
        Err(e) => tracing::warn!(error = %e, "could not read the link's last measure"),
    }
    let mut total = Summary {
        job: if jobs.len() == 1 {
            jobs[0].name().to_string()
        } else {
            "all".to_string()
        },
        ..Summary::default()
    };
    // Every job runs, whatever became of the one before: a failed push
    // must not keep central's changes from reaching the clinic. The first
    // failure is the run's result.
    let mut failure = None;
    for job in jobs {
        match run_one(sat, &client, *job, progress.clone()).await {
            Ok(summary) => total.add(&summary),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let s = Arc::clone(sat);
    let m = client.measure();
    if let Err(e) = spawn_db(move || save_measure(&s, m)).await {
        tracing::warn!(error = %e, "could not keep the link's measure");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

async fn run_one(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    job: Job,
    progress: Progress,
) -> Result<Summary, JobError> {
    let s = Arc::clone(sat);
    let run = spawn_db(move || s.db.start_run(job.name())).await?;
    let start = Instant::now();
    let before = (
        client.bytes_sent.load(Ordering::Relaxed),
        client.bytes_received.load(Ordering::Relaxed),
        client.round_trips.load(Ordering::Relaxed),
    );
    let s = Arc::clone(sat);
    if let Ok(report) = spawn_db(move || Ok::<_, JobError>(crate::report::build(&s))).await {
        client.set_report(&report);
    }
    let mut result = match job {
        Job::Push => push::run(sat, client, &progress).await,
        Job::Pull => pull::run(sat, client, &progress).await,
        Job::FetchNew => fetch::run(sat, client, &progress).await,
    };
    // Edits carried onto a survivor this satellite now holds (as current
    // as this run made it): their conflicts join the queue.
    if let (Job::Pull | Job::FetchNew, Ok(summary)) = (job, &mut result) {
        let s = Arc::clone(sat);
        match spawn_db(move || apply::queue_carried_conflicts(&s)).await {
            Ok(n) => summary.conflicts += n,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "could not queue the conflicts of edits carried onto a survivor; tried again after the next pull");
            }
        }
    }
    let finish = |mut summary: Summary| {
        summary.job = job.name().to_string();
        summary.bytes_sent = client.bytes_sent.load(Ordering::Relaxed) - before.0;
        summary.bytes_received = client.bytes_received.load(Ordering::Relaxed) - before.1;
        summary.round_trips = client.round_trips.load(Ordering::Relaxed) - before.2;
        summary.seconds = start.elapsed().as_secs_f64();
        summary
    };
    let (ok, detail, out) = match result {
        Ok(summary) => {
            let summary = finish(summary);
            let detail = serde_json::to_value(&summary).unwrap_or_default();
            (summary.deferred == 0, detail, Ok(summary))
        }
        Err(e) => {
            let detail = serde_json::json!({ "error": crate::error_chain(&e) });
            (false, detail, Err(e))
        }
    };
    let s = Arc::clone(sat);
    if let Err(e) = spawn_db(move || s.db.finish_run(run, ok, &detail)).await {
        tracing::warn!(error = %e, "could not log the end of a run");
    }
    match &out {
        Ok(summary) => tracing::info!(job = job.name(), "{}", summary.line()),
        Err(e) => {
            tracing::warn!(job = job.name(), error = %crate::error_chain(e), "sync job failed")
        }
    }
    out
}

/// Runs jobs once, taking the job lock first: waits up to `wait` for a run
/// in progress (another process's or the daemon's) to finish.
pub async fn run_once(
    sat: &Arc<Satellite>,
    jobs: &[Job],
    wait: Duration,
    progress: Progress,
) -> Result<Summary, JobError> {
    let lock = JobLock::acquire(&sat.config.data_dir, wait).await?;
    run_locked(sat, jobs, &lock, progress).await
}
