//! In-process serialisation of writers to one record.
//!
//! The head's lock file already excludes other processes; this table makes
//! the threads of one process queue for a record instead of polling its lock
//! file. The guard is an owned value that may cross threads and `.await`s.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chartsync_protocol::id::PatientId;

/// Records being written by this process.
#[derive(Debug, Default)]
pub struct LocalLocks {
    inner: Arc<(Mutex<HashSet<PatientId>>, Condvar)>,
}

/// Held while writing one record; released on drop.
#[derive(Debug)]
pub struct LocalGuard {
    inner: Arc<(Mutex<HashSet<PatientId>>, Condvar)>,
    id: PatientId,
}

impl LocalLocks {
    /// Waits up to `wait` for the record; `None` on timeout.
    pub fn lock(&self, id: PatientId, wait: Duration) -> Option<LocalGuard> {
        let (set, cond) = &*self.inner;
        let deadline = Instant::now() + wait;
        let mut held = set.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(&id) {
            let left = deadline.checked_duration_since(Instant::now())?;
            held = cond
                .wait_timeout(held, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        held.insert(id);
        Some(LocalGuard {
            inner: Arc::clone(&self.inner),
            id,
        })
    }
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let (set, cond) = &*self.inner;
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_times_out() {
        let locks = LocalLocks::default();
        let id = PatientId::random();
        let g = locks.lock(id, Duration::from_millis(10)).expect("free");
        assert!(locks.lock(id, Duration::from_millis(20)).is_none());
        assert!(locks.lock(PatientId::random(), Duration::ZERO).is_some());
        drop(g);
        assert!(locks.lock(id, Duration::ZERO).is_some());
    }
}
