//! Open repositories, kept for reuse (opening one costs 60-160 µs).
//!
//! A `git2::Repository` may move between threads but not be shared, so a
//! handle is taken out of the cache for the duration of one operation and
//! put back afterwards.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use git2::Repository;

use chartsync_protocol::id::PatientId;

/// A bounded cache of open repositories.
pub struct RepoCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<PatientId, Repository>,
    order: VecDeque<PatientId>,
}

impl std::fmt::Debug for RepoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RepoCache {
    /// A cache of up to `capacity` repositories.
    pub fn new(capacity: usize) -> RepoCache {
        RepoCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes the record's repository out of the cache, or opens it.
    pub fn take(&self, id: &PatientId, path: &Path) -> Result<Repository, git2::Error> {
        if let Some(repo) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(id)
        {
            return Ok(repo);
        }
        Repository::open_ext(
            path,
            git2::RepositoryOpenFlags::NO_SEARCH
                | git2::RepositoryOpenFlags::BARE
                | git2::RepositoryOpenFlags::NO_DOTGIT,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
    }

    /// Puts a repository back.
    pub fn put(&self, id: PatientId, repo: Repository) {
        if self.capacity == 0 {
            return;
        }
        // Closing a repository unmaps its packs (a few syscalls): done
        // after the lock is released, so other threads need not wait.
        let mut evicted = Vec::new();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.open.contains_key(&id) {
            return;
        }
        while inner.open.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => evicted.extend(inner.open.remove(&old)),
                None => break,
            }
        }
        inner.open.insert(id, repo);
        inner.order.push_back(id);
        // `order` may hold ids already taken out; keep it from growing
        // without bound.
        if inner.order.len() > self.capacity * 2 + 16 {
            let Inner { open, order } = &mut *inner;
            order.retain(|k| open.contains_key(k));
        }
        drop(inner);
        drop(evicted);
    }

    /// Forgets a record (after its repository was replaced on disk).
    pub fn forget(&self, id: &PatientId) {
        let repo = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(id);
        drop(repo);
    }
}
