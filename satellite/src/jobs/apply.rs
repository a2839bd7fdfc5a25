//! Storing central's versions of records: new records whole, held records
//! fast-forwarded or merged with local unpushed changes. Every page is one
//! group commit: all objects, one flush, all heads, one flush.

use chartsync_shared::protocol::sync::RecordUpdate;
use chartsync_shared::store::{CommitMeta, Flush, MergeOutcome, Prepared, Received, StoreError};
use chartsync_shared::{CommitId, PatientId};

use crate::Satellite;
use crate::client::SyncError;
use crate::db::{CentralState, DbError, NewConflict};

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Talking to central failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The record store failed.
    #[error("record store error")]
    Store(#[from] StoreError),
    /// The state database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The job lock.
    #[error(transparent)]
    Lock(#[from] super::LockError),
    /// Central's reply does not match the request.
    #[error("central's reply does not match the request: {0}")]
    Protocol(String),
    /// A worker task died.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// What storing a page did.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// What central has, for the database.
    pub states: Vec<CentralState>,
    /// Records whose pack could not be applied (fetch them whole).
    pub refetch: Vec<PatientId>,
    /// Records created here.
    pub created: Vec<(PatientId, CommitId)>,
    /// Records stored (created, fast-forwarded or merged).
    pub received: u64,
    /// Records merged with local changes.
    pub merged: u64,
    /// Conflicts queued.
    pub conflicts: u64,
    /// Records refused (bad data from central).
    pub refused: u64,
}

fn state(u: &RecordUpdate) -> CentralState {
    CentralState {
        id: u.id,
        head: u.head,
        seq: u.seq,
        time: u.time,
    }
}

/// The metadata of merge commits made here.
pub(crate) fn merge_meta(sat: &Satellite) -> CommitMeta {
    CommitMeta::new(
        "chartsync",
        &format!("chartsync@{}", sat.config.instance_name()),
        "Merge central's changes",
    )
}

/// Stores a page of central's versions (see the module documentation). The
/// caller records `states` (with its cursor) in the database afterwards.
pub(crate) fn store_updates(
    sat: &Satellite,
    updates: Vec<RecordUpdate>,
) -> Result<Stored, JobError> {
    let store = &sat.store;
    let mut out = Stored::default();
    let mut creates: Vec<(Prepared, CentralState)> = Vec::new();
    let mut held: Vec<(RecordUpdate, Option<CommitId>)> = Vec::new();
    // Phase 1: objects.
    for u in updates {
        if !store.exists(&u.id) {
            if u.base.is_some() {
                out.refetch.push(u.id);
                continue;
            }
            match store.prepare_received(&u.id, None, u.head, &u.pack, Flush::Deferred) {
                Ok(Received::Ready(p)) => creates.push((p, state(&u))),
                Ok(Received::Stale { .. }) => out.refetch.push(u.id),
                Err(StoreError::Received(e)) => {
                    tracing::warn!(patient = %u.id, error = %e, "central sent a record that does not verify");
                    out.refused += 1;
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let local = store.head(&u.id)?;
        if local == Some(u.head) {
            out.states.push(state(&u));
            continue;
        }
        match store.ingest(&u.id, u.head, &u.pack, Flush::Deferred) {
            Ok(()) => held.push((u, local)),
            Err(StoreError::Received(e)) => {
                tracing::info!(patient = %u.id, error = %e, "cannot apply central's changes as sent; fetching the record whole");
                out.refetch.push(u.id);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !creates.is_empty() || !held.is_empty() {
        store.flush()?;
    }
    // Phase 2: heads (fast-forward or merge), staged.
    let meta = merge_meta(sat);
    let mut merges: Vec<(MergeOutcome, CommitId, RecordUpdate)> = Vec::new();
    for (u, _) in held {
        let mut staged = None;
        for _ in 0..5 {
            let Some(ours) = store.head(&u.id)? else {
                break;
            };
            match store.prepare_merge(&u.id, ours, u.head, &meta, Flush::Deferred)? {
                Ok(outcome) => {
                    staged = Some((outcome, ours));
                    break;
                }
                // A local write moved the head meanwhile: merge again.
                Err(_) => continue,
            }
        }
        match staged {
            Some((outcome, ours)) => merges.push((outcome, ours, u)),
            None => out.refetch.push(u.id),
        }
    }
    let mut dirty = Vec::new();
    let mut conflicts = Vec::new();
    for (outcome, ours, u) in &merges {
        if outcome.fast_forward {
            continue;
        }
        // Local changes remain on top of central's head: to be pushed.
        dirty.push(u.id);
        if outcome.merged {
            out.merged += 1;
        }
        for c in &outcome.conflicts {
            conflicts.push(NewConflict {
                patient: u.id,
                file: c.file.clone(),
                path: c.path.clone(),
                base: c.base.clone().unwrap_or(serde_json::Value::Null),
                ours: c.ours.clone().unwrap_or(serde_json::Value::Null),
                theirs: c.theirs.clone().unwrap_or(serde_json::Value::Null),
                ours_commit: *ours,
                theirs_commit: u.head,
                merge_commit: outcome.prepared.new,
            });
        }
    }
    if !merges.is_empty() {
        store.flush()?;
    }
    // Before any head moves: the changed marks and the conflict queue.
    if !dirty.is_empty() {
        sat.db.mark_dirty_many(&dirty)?;
    }
    if !conflicts.is_empty() {
        for c in &conflicts {
            store.keep_commit(&c.patient, c.ours_commit)?;
        }
        sat.db.record_conflicts(&conflicts)?;
        out.conflicts += conflicts.len() as u64;
    }
    // Phase 3: move the heads, then one flush.
    let any = !creates.is_empty() || !merges.is_empty();
    for (prepared, state) in creates {
        let id = prepared.id;
        match store.publish(prepared, Flush::Deferred) {
            Ok(head) => {
                out.created.push((id, head));
                out.states.push(state);
                out.received += 1;
            }
            Err(StoreError::Exists { .. }) => out.refetch.push(id),
            Err(e) => return Err(e.into()),
        }
    }
    for (outcome, _, u) in merges {
        store.publish(outcome.prepared, Flush::Deferred)?;
        out.states.push(state(&u));
        out.received += 1;
    }
    if any {
        store.flush()?;
    }
    Ok(out)
}
