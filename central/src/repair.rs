//! Start-up repair: bring every git ref level with the database, the source
//! of truth (see [`crate::apply`]).

use chartsync_shared::store::{RecordStore, StoreError};
use chartsync_shared::{CommitId, PatientId};

use crate::db::{CentralDb, DbError};
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

/// Repairs every record listed in `ref_pending`, each under its patient
/// lock. Returns how many were repaired.
pub async fn repair_all<D: CentralDb>(
    store: &RecordStore,
    db: &D,
    locks: &PatientLocks,
) -> Result<usize, RepairError> {
    let pending = db.ref_pending().await?;
    let mut repaired = 0;
    for row in pending {
        let held = locks.acquire(db, &[row.id]).await?;
        if held.ids.is_empty() {
            // Another live process holds it and will finish its own write.
            locks.release(db, held).await?;
            continue;
        }
        // Re-read under the lock: the row may have moved on.
        let current = db.records(&[row.id]).await?.into_iter().next().flatten();
        let result = match current {
            Some(record) => repair_one(store, row.id, record.head, row.staging.as_deref())
                .map(|()| (row.id, row.head)),
            None => Ok((row.id, row.head)),
        };
        locks.release(db, held).await?;
        let done = result.map_err(|source| RepairError::Store { id: row.id, source })?;
        db.clear_ref_pending(&[done]).await?;
        repaired += 1;
        tracing::info!(patient = %row.id, head = %row.head, "repaired a ref left behind by a crash");
    }
    Ok(repaired)
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
