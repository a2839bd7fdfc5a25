//! Patient locks. Every write to a patient runs holding its lock, leased
//! from the database so that it also excludes other central processes and a
//! crashed process blocks a patient no longer than the lease. Within one
//! process, writers queue on an in-memory lock first, so only one of them at
//! a time asks the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartsync_protocol::PatientId;
use tokio::sync::OwnedMutexGuard;

use crate::db::{CentralDb, DbError};

/// The patient locks of this process.
#[derive(Debug)]
pub struct PatientLocks {
    local: Mutex<HashMap<PatientId, Arc<tokio::sync::Mutex<()>>>>,
    holder: String,
    lease: Duration,
    wait: Duration,
}

/// Locks held on some patients; release with [`PatientLocks::release`].
#[derive(Debug)]
pub struct Held {
    /// The patients whose locks are held (in request order, deduplicated).
    pub ids: Vec<PatientId>,
    _local: Vec<OwnedMutexGuard<()>>,
    /// How long taking them took.
    pub waited: Duration,
}

impl PatientLocks {
    /// Locks leased for `lease`, waiting at most `wait` for a busy patient.
    /// `holder` names this process in the database.
    pub fn new(holder: String, lease: Duration, wait: Duration) -> PatientLocks {
        PatientLocks {
            local: Mutex::new(HashMap::new()),
            holder,
            lease,
            wait,
        }
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a writer waits for a busy patient.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Takes the locks of as many of `ids` as possible within the wait
    /// bound; the others are left out of [`Held::ids`] (their callers get
    /// "busy"). Locks are taken in id order, so two batches cannot deadlock.
    pub async fn acquire<D: CentralDb>(&self, db: &D, ids: &[PatientId]) -> Result<Held, DbError> {
        self.acquire_within(db, ids, self.wait).await
    }

    /// Like [`PatientLocks::acquire`], waiting at most `wait` for busy
    /// patients instead of the configured wait.
    pub async fn acquire_within<D: CentralDb>(
        &self,
        db: &D,
        ids: &[PatientId],
        wait: Duration,
    ) -> Result<Held, DbError> {
        let start = Instant::now();
        let deadline = start + wait;
        let mut sorted: Vec<PatientId> = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        // In-process queue first.
        let mut local: Vec<(PatientId, OwnedMutexGuard<()>)> = Vec::with_capacity(sorted.len());
        let mut have = Vec::with_capacity(sorted.len());
        for id in sorted {
            let mutex = {
                let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(map.entry(id).or_default())
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(guard) = tokio::time::timeout(left, mutex.lock_owned()).await {
                local.push((id, guard));
                have.push(id);
            }
        }
        // Then the database leases, retrying the busy ones until the deadline.
        let mut held = Vec::with_capacity(have.len());
        let mut pending = have;
        let mut pause = Duration::from_millis(5);
        loop {
            let taken = db.try_lock(&pending, &self.holder, self.lease).await?;
            let mut still = Vec::new();
            for (id, ok) in pending.into_iter().zip(taken) {
                if ok {
                    held.push(id);
                } else {
                    still.push(id);
                }
            }
            pending = still;
            if pending.is_empty() || Instant::now() + pause > deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        // Local guards of patients we did not get in the database go now.
        let keep: std::collections::HashSet<PatientId> = held.iter().copied().collect();
        let local: Vec<OwnedMutexGuard<()>> = local
            .into_iter()
            .filter(|(id, _)| keep.contains(id))
            .map(|(_, guard)| guard)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let ordered: Vec<PatientId> = ids
            .iter()
            .copied()
            .filter(|id| keep.contains(id) && seen.insert(*id))
            .collect();
        Ok(Held {
            ids: ordered,
            _local: local,
            waited: start.elapsed(),
        })
    }

    /// Releases held locks.
    pub async fn release<D: CentralDb>(&self, db: &D, held: Held) -> Result<(), DbError> {
        let result = db.unlock(&held.ids, &self.holder).await;
        drop(held);
        self.forget_idle();
        result
    }

    /// Drops in-memory locks nobody uses, so the map does not grow forever.
    fn forget_idle(&self) {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
    }
}
