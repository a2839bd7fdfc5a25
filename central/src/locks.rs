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

/// The name of a lease holder: `host:pid:random`, unique per process
/// start.
pub fn holder_name(random: u64) -> String {
    let host = hostname().unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}:{random:016x}", std::process::id())
}

/// This machine's name, as written in lease holders; `None` when it cannot
/// be told (then no other process is ever judged dead).
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

/// Whether `holder` (another process's lease holder name) is known to be
/// dead: it ran on this machine and its process is gone, or it is an
/// earlier start of this very process id. A holder on another machine, or
/// one whose process id is alive (perhaps reused), is never judged dead:
/// its leases then expire as usual.
pub fn holder_is_dead(holder: &str, me: &str) -> bool {
    if holder == me {
        return false;
    }
    let mut parts = holder.rsplitn(3, ':');
    let (Some(_random), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if Some(host) != hostname().as_deref() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    // /proc tells whether a process id is alive; without it, nothing is
    // known.
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

/// Releases the leases of processes on this machine that are gone (a
/// crash, kill -9), so that their patients are writable at once rather
/// than after the lease expires. Returns how many leases were dropped.
/// (On PostgreSQL, the next writer also takes over at once the leases of a
/// dead process on any machine, its database session having ended: see
/// the backend's `locks` and `liveness` modules.)
pub async fn release_dead_holders<D: CentralDb>(db: &D, me: &str) -> Result<u64, DbError> {
    let mut released = 0;
    for holder in db.lease_holders().await? {
        if holder_is_dead(&holder, me) {
            let n = db.release_leases_of(&holder).await?;
            tracing::info!(
                holder,
                leases = n,
                "released the leases of a process that is gone"
            );
            released += n;
        }
    }
    Ok(released)
}

#[cfg(test)]
mod dead_holder_tests {
    use super::*;

    #[test]
    fn a_holder_is_dead_only_when_its_process_on_this_machine_is_gone() {
        let me = holder_name(1);
        assert!(!holder_is_dead(&me, &me));
        // An earlier start with the same process id.
        assert!(holder_is_dead(&holder_name(2), &me));
        // A process id that does not exist on this machine.
        let host = hostname().expect("this machine has a name");
        let gone = format!("{host}:{}:{:016x}", u32::MAX - 7, 3);
        assert!(holder_is_dead(&gone, &me));
        // Another machine: expiry is the rule.
        let remote = format!("{host}-elsewhere:{}:{:016x}", u32::MAX - 7, 3);
        assert!(!holder_is_dead(&remote, &me));
        // A live process (pid 1 always exists).
        let live = format!("{host}:1:{:016x}", 4);
        assert!(!holder_is_dead(&live, &me));
        assert!(!holder_is_dead("garbage", &me));
    }
}
