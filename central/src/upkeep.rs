//! Repository upkeep: every received change adds a pack file to a record's
//! repository and libgit2 has no garbage collection, so records with many
//! packs are repacked into one delta-compressed pack. A write that leaves a
//! record with `repack_after_packs` packs, or with new packs as large as
//! its last repack, queues it here; a periodic sweep catches the rest. Each
//! repack runs under the patient's lock.

use std::sync::Arc;
use std::time::Duration;

use chartsync_protocol::PatientId;
use tokio::sync::{mpsc, watch};

use crate::Central;
use crate::db::CentralDb;

/// How often copies of records beyond the limit are dropped.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Queue of records to look at.
pub type UpkeepQueue = mpsc::Sender<PatientId>;

/// Repacks one record under its patient lock, if it has enough packs.
pub async fn repack_one<D: CentralDb>(central: &Arc<Central<D>>, id: PatientId) -> bool {
    let threshold = central.config.upkeep.repack_after_packs.max(2);
    let held = match central.locks.acquire(&central.db, &[id]).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(patient = %id, error = %e, "upkeep could not take the patient lock");
            return false;
        }
    };
    // Repacking keeps what the git ref reaches: only do it when the ref is
    // the database's head (it always is, outside a crash window that
    // start-up repair closes), so no accepted head can lose its objects.
    let db_head = match central.db.records(&[id]).await {
        Ok(rows) => rows.into_iter().next().flatten().map(|r| r.head),
        Err(e) => {
            tracing::warn!(patient = %id, error = %e, "upkeep could not read the record");
            None
        }
    };
    let in_step = db_head.is_some() && central.store.head(&id).ok().flatten() == db_head;
    let done = if held.ids.is_empty() || !in_step {
        false
    } else {
        let c = Arc::clone(central);
        match tokio::task::spawn_blocking(move || c.store.repack(&id, threshold)).await {
            Ok(Ok(stats)) => {
                if stats.repacked {
                    central.metrics.repacks.inc();
                    tracing::debug!(patient = %id, packs = stats.packs_before, objects = stats.objects, "repacked");
                }
                stats.repacked
            }
            Ok(Err(e)) => {
                tracing::warn!(patient = %id, error = %e, "repack failed");
                false
            }
            Err(e) => {
                tracing::warn!(patient = %id, error = %e, "repack task failed");
                false
            }
        }
    };
    if let Err(e) = central.locks.release(&central.db, held).await {
        tracing::warn!(error = %e, "could not release a patient lock");
    }
    done
}

/// How often fetch-new pages older than [`crate::db::pages::KEEP_SECS`]
/// are forgotten.
const FORGET_PAGES_EVERY: Duration = Duration::from_secs(3600);

/// Runs upkeep until `stop` turns true or the queue closes: queued records
/// right away, and a slow sweep over every record every `sweep_secs`.
///
/// Stopping never interrupts a repack: `stop` is looked at between records
/// only, so a repack that holds a patient lease always finishes and
/// releases it (the caller waits for this task, with a deadline).
pub async fn run<D: CentralDb>(
    central: Arc<Central<D>>,
    mut queue: mpsc::Receiver<PatientId>,
    mut stop: watch::Receiver<bool>,
) {
    let sweep = central.config.upkeep.sweep_secs;
    let mut timer = tokio::time::interval(Duration::from_secs(sweep.max(1)));
    timer.tick().await;
    // Copies of records beyond `[database] cache_records` (PostgreSQL).
    let trims = central.db.keeps_history();
    let mut trim_timer = tokio::time::interval(TRIM_EVERY);
    trim_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Fetch-new pages never acknowledged by token (see `db::pages`).
    let mut pages_timer = tokio::time::interval(FORGET_PAGES_EVERY);
    pages_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            next = queue.recv() => match next {
                Some(id) => {
                    repack_one(&central, id).await;
                }
                None => return,
            },
            _ = trim_timer.tick(), if trims => {
                let dropped = crate::copies::trim(&central).await;
                if dropped > 0 {
                    tracing::debug!(dropped, kept = central.copies.len(), "dropped copies of records");
                }
            }
            _ = pages_timer.tick() => {
                let before = chrono::Utc::now().timestamp() - crate::db::pages::KEEP_SECS;
                match central.db.forget_pages(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pages = n, "forgot fetch-new pages a week old, never acknowledged by token"),
                    Err(e) => tracing::warn!(error = %e, "could not forget old fetch-new pages"),
                }
            }
            _ = timer.tick(), if sweep > 0 => {
                let c = Arc::clone(&central);
                let ids = match tokio::task::spawn_blocking(move || c.store.list()).await {
                    Ok(Ok(ids)) => ids,
                    _ => continue,
                };
                let threshold = central.config.upkeep.repack_after_packs.max(2);
                for id in ids {
                    if *stop.borrow() {
                        return;
                    }
                    if central.store.needs_repack(&id, threshold).unwrap_or(false) {
                        repack_one(&central, id).await;
                    }
                    // Gentle: the sweep must not compete with sync traffic.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}
