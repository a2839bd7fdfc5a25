//! Repository upkeep at the satellite, under central's rules: every write
//! adds a pack of whole objects to a record's repository, so records with
//! many packs, or with new packs as large as their last repack, are
//! repacked into one delta-compressed pack. Each repack holds the record's
//! write lock (a write in flight makes it skip the record until the next
//! sweep), writes the new pack and index durably before removing the old
//! ones, and keeps central's head as last seen here (the base of the next
//! sync). A sweep holds the job lock, so it never runs during a sync run
//! (which may store central's objects ahead of a merge, not yet reachable
//! from any ref), and repacks at most a given number of records.

use std::sync::Arc;

use chartsync_store::StoreError;

use super::JobLock;
use crate::Satellite;

/// Repack a record once it has this many packs (central's default too), so
/// a record never has more than a handful.
pub const REPACK_AFTER_PACKS: usize = 8;
/// Most records one sweep repacks.
pub const MAX_REPACKS_PER_SWEEP: usize = 200;

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpkeepStats {
    /// Records looked at.
    pub checked: usize,
    /// Records repacked.
    pub repacked: usize,
    /// Records skipped: a write was in flight, or the repack failed
    /// (logged); the next sweep tries again.
    pub skipped: usize,
}

/// Looks at every record and repacks those that need it, at most
/// `max_repacks` of them, holding the job lock (`_lock`). Blocking: run it
/// off the async threads.
pub fn sweep(
    sat: &Arc<Satellite>,
    _lock: &JobLock,
    max_repacks: usize,
) -> Result<UpkeepStats, StoreError> {
    let mut stats = UpkeepStats::default();
    for id in sat.store.list()? {
        if stats.repacked >= max_repacks {
            break;
        }
        stats.checked += 1;
        if !sat.store.needs_repack(&id, REPACK_AFTER_PACKS)? {
            continue;
        }
        let keep: Vec<_> = match sat.db.record(&id) {
            Ok(state) => state.and_then(|s| s.central_head).into_iter().collect(),
            Err(e) => {
                tracing::warn!(patient = %id, error = %e, "upkeep could not read the record's state");
                stats.skipped += 1;
                continue;
            }
        };
        match sat.store.repack_keeping(&id, REPACK_AFTER_PACKS, &keep) {
            Ok(done) if done.repacked => {
                stats.repacked += 1;
                tracing::debug!(patient = %id, packs = done.packs_before, objects = done.objects, "repacked");
            }
            Ok(_) => {}
            Err(StoreError::Busy { .. }) => stats.skipped += 1,
            Err(e) => {
                tracing::warn!(patient = %id, error = %e, "repack failed");
                stats.skipped += 1;
            }
        }
    }
    Ok(stats)
}
