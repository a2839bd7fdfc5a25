//! Start-up repair: bring every git ref level with the database, the source
//! of truth (see [`crate::apply`]).

use std::collections::HashSet;

use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::{RecordStore, StoreError};

use crate::db::{CentralDb, DbError, RefPending};
use crate::locks::PatientLocks;

/// Moves one record's ref to `head` (renaming a staged new repository into
/// place if the record is not on disk yet).
pub fn repair_one(
    store: &RecordStore,
    id: PatientId,
    head: CommitId,
    staging: Option<&str>,
) -> Result<(), StoreError> {
    if !store.exists(&id)
        && let Some(staging) = staging
    {
        store.finish_create(&id, std::path::Path::new(staging))?;
    }
    store.force_head(&id, head)
}

/// What start-up repair did.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Records whose ref was brought level with the database.
    pub repaired: usize,
    /// Records left as they were: another live process kept their patient
    /// locks for longer than a lease. Their `ref_pending` rows stay (and
    /// with them the staging folders of new records, which must not be
    /// removed).
    pub left: Vec<RefPending>,
}

/// Repairs every record listed in `ref_pending`, each under its patient
/// lock.
///
/// The process that crashed may still hold those locks: its leases outlive
/// it by up to one lease. So repair waits for them, all at once, for up to
/// a lease (plus the configured wait): giving up sooner would leave refs
/// behind the database, and new records in a dead process's staging folder
/// that start-up then removes, while the database acknowledges them.
pub async fn repair_all<D: CentralDb>(
    store: &RecordStore,
    db: &D,
    locks: &PatientLocks,
) -> Result<Repaired, RepairError> {
    let pending = db.ref_pending().await?;
    if pending.is_empty() {
        return Ok(Repaired::default());
    }
    let ids: Vec<PatientId> = pending.iter().map(|row| row.id).collect();
    let wait = locks.lease() + locks.wait();
    tracing::info!(
        records = ids.len(),
        wait_secs = wait.as_secs_f64(),
        "repairing refs left behind by a crash (waiting for the stopped process's patient locks to expire)"
    );
    let held = locks.acquire_within(db, &ids, wait).await?;
    let result = repair_held(store, db, &pending, &held.ids).await;
    locks.release(db, held).await?;
    let (done, left) = result?;
    db.clear_ref_pending(&done).await?;
    for (id, head) in &done {
        tracing::info!(patient = %id, head = %head, "repaired a ref left behind by a crash");
    }
    if !left.is_empty() {
        tracing::error!(
            records = left.len(),
            "some refs left behind by a crash could not be repaired: their patients stayed locked; they are repaired at the next start"
        );
    }
    Ok(Repaired {
        repaired: done.len(),
        left,
    })
}

/// Repairs the pending rows whose patients are held; returns the repaired
/// `(id, head)` pairs and the rows left alone.
async fn repair_held<D: CentralDb>(
    store: &RecordStore,
    db: &D,
    pending: &[RefPending],
    held: &[PatientId],
) -> Result<(Vec<(PatientId, CommitId)>, Vec<RefPending>), RepairError> {
    let held: HashSet<PatientId> = held.iter().copied().collect();
    let mut done = Vec::new();
    let mut left = Vec::new();
    for row in pending {
        if !held.contains(&row.id) {
            left.push(row.clone());
            continue;
        }
        // Re-read under the lock: the row may have moved on.
        let current = db.records(&[row.id]).await?.into_iter().next().flatten();
        if let Some(record) = current {
            repair_one(store, row.id, record.head, row.staging.as_deref())
                .map_err(|source| RepairError::Store { id: row.id, source })?;
        }
        done.push((row.id, row.head));
    }
    Ok((done, left))
}

/// Why repair failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A record could not be repaired.
    #[error("cannot repair patient record {id}")]
    Store {
        /// The record.
        id: PatientId,
        /// The cause.
        #[source]
        source: StoreError,
    },
}
