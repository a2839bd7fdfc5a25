//! The record store: one bare git repository per patient.
//!
//! Every write builds its objects in memory, writes them as one pack file
//! plus index (never a shared working copy), makes them durable, and only
//! then moves the head by compare-and-swap ([`refs`]). A crash at any instant
//! leaves a record at its old or its new head, never in between.
//!
//! Writes come in two phases so that callers can put their own durable step
//! between them (central commits its database transaction there, a satellite
//! marks the record as changed): [`RecordStore::prepare`] (and its siblings
//! for received packs and merges) does all the work and takes the record's
//! head lock; [`RecordStore::publish`] moves the head. Dropping a
//! [`Prepared`] abandons the write.

mod cache;
mod durable;
mod error;
mod layout;
mod local_lock;
mod maintenance;
mod merge_op;
mod objects;
mod read;
mod receive;
pub mod refs;
mod retire;
mod shape;
mod write;

pub mod path;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

pub use durable::Flush;
pub use error::{Conflict, StoreError};
pub use layout::{BRANCH, Layout};
pub use maintenance::RepackStats;
pub use merge_op::MergeOutcome;
pub use objects::INSTANCE_TRAILER;
pub use receive::{Attribution, ReceiveError, Received};
pub use retire::{RETIRED_FILE, Retirement};
pub use write::{Change, CommitMeta, Condition};

use cache::RepoCache;
use local_lock::{LocalGuard, LocalLocks};
use refs::RefLock;

use crate::validate::Limits;
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};
use git2::Oid;

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The folder holding `repos/` and `tmp/`.
    pub root: PathBuf,
    /// This instance's name, written into every commit it makes.
    pub instance: String,
    /// Size limits of records.
    pub limits: Limits,
    /// Open repositories kept for reuse.
    pub cache_capacity: usize,
    /// How long a writer waits for a record another writer holds.
    pub lock_wait: Duration,
    /// zlib level of the pack each write adds (0-9). Default 0: a write's
    /// pack is a few KB and takes a whole file-system block anyway, so
    /// compressing it only costs CPU; repacking compresses (level 6).
    pub pack_level: u32,
}

impl StoreOptions {
    /// Defaults for a store at `root` made by `instance`.
    pub fn new(root: impl Into<PathBuf>, instance: impl Into<String>) -> StoreOptions {
        StoreOptions {
            root: root.into(),
            instance: instance.into(),
            limits: Limits::default(),
            cache_capacity: 1024,
            lock_wait: Duration::from_secs(10),
            pack_level: 0,
        }
    }
}

/// The patient records of one instance.
#[derive(Debug)]
pub struct RecordStore {
    layout: Layout,
    instance: String,
    limits: Limits,
    cache: RepoCache,
    locals: LocalLocks,
    lock_wait: Duration,
    pack_level: u32,
}

/// A record at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The head commit.
    pub head: CommitId,
    /// The files.
    pub files: Files,
}

/// A write whose objects are stored and whose head is locked, ready to be
/// published. Dropping it abandons the write and releases the lock.
#[derive(Debug)]
pub struct Prepared {
    /// The record.
    pub id: PatientId,
    /// The head before (`None`: the record is created).
    pub old: Option<CommitId>,
    /// The head after publishing (equal to `old` when nothing changes).
    pub new: CommitId,
    /// The files this write adds or changes, with their new content
    /// (for a received head: the files new in the pack).
    pub changed: Files,
    /// The catchment `patient.yaml` declares, read while validating this
    /// write; always set when `changed` holds a `patient.yaml` that declares
    /// one.
    pub catchment: Option<String>,
    /// Whether the new head's tree holds the retirement marker
    /// ([`RETIRED_FILE`]), for a received head whose tree was read while
    /// verifying it; `None` otherwise (a local write, a merge, a head
    /// already here).
    pub retired: Option<bool>,
    stage: Stage,
    _guard: LocalGuard,
}

#[derive(Debug)]
enum Stage {
    /// Nothing to do: the record is already at `new`.
    Unchanged,
    /// Move the head of an existing record.
    Move(RefLock),
    /// Rename a complete new repository into place.
    Create(TempRepo),
}

/// A repository being built in `tmp/`; removed on drop unless published.
#[derive(Debug)]
pub(crate) struct TempRepo {
    path: PathBuf,
    published: bool,
}

impl Drop for TempRepo {
    fn drop(&mut self) {
        if !self.published
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove an abandoned new record");
        }
    }
}

impl Prepared {
    /// Whether publishing changes anything.
    pub fn is_change(&self) -> bool {
        !matches!(self.stage, Stage::Unchanged)
    }

    /// Whether this creates the record.
    pub fn is_create(&self) -> bool {
        matches!(self.stage, Stage::Create(_))
    }

    /// For a creation: the folder holding the new repository until it is
    /// published (central records it, to finish the job after a crash).
    pub fn staging_path(&self) -> Option<&Path> {
        match &self.stage {
            Stage::Create(tmp) => Some(&tmp.path),
            _ => None,
        }
    }
}

pub(crate) fn oid(c: CommitId) -> Oid {
    Oid::from_bytes(c.as_bytes()).expect("a CommitId is 20 bytes, a valid SHA-1 oid")
}

pub(crate) fn commit_id(o: Oid) -> CommitId {
    CommitId::from_slice(o.as_bytes()).expect("SHA-1 oids are 20 bytes")
}

static GIT_INIT: Once = Once::new();

fn init_libgit2() {
    GIT_INIT.call_once(|| {
        // Records never read global, XDG or system git configuration: it
        // costs file lookups on every open and could change behaviour.
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: called once, before this process opens any repository
            // (the store is the only user of libgit2 in chartsync).
            if let Err(e) = unsafe { git2::opts::set_search_path(level, "") } {
                tracing::warn!(error = %e, "could not turn off git config search paths");
            }
        }
        // Records are small and objects are rarely read twice: libgit2's
        // object cache (up to 256 MB by default) would only cost memory.
        git2::opts::enable_caching(false);
    });
}

impl RecordStore {
    /// Opens (creating if needed) the store at `options.root`, removing
    /// leftovers of creations that a crash cut off.
    pub fn open(options: StoreOptions) -> Result<RecordStore, StoreError> {
        init_libgit2();
        let mut layout = Layout::new(options.root);
        layout.init().map_err(StoreError::io(layout.root()))?;
        layout
            .start_session()
            .map_err(StoreError::io(layout.root()))?;
        let removed = layout.clean_tmp().map_err(StoreError::io(layout.root()))?;
        if removed > 0 {
            tracing::info!(removed, "removed unfinished record creations");
        }
        Ok(RecordStore {
            layout,
            instance: options.instance,
            limits: options.limits,
            cache: RepoCache::new(options.cache_capacity),
            locals: LocalLocks::default(),
            lock_wait: options.lock_wait,
            pack_level: options.pack_level.min(9),
        })
    }

    /// Opens the store without removing anything from `tmp/`: for a caller
    /// that first finishes creations recorded elsewhere (central's repair),
    /// then calls [`RecordStore::clean_tmp`].
    pub fn open_keep_tmp(options: StoreOptions) -> Result<RecordStore, StoreError> {
        init_libgit2();
        let mut layout = Layout::new(options.root);
        layout.init().map_err(StoreError::io(layout.root()))?;
        layout
            .start_session()
            .map_err(StoreError::io(layout.root()))?;
        Ok(RecordStore {
            layout,
            instance: options.instance,
            limits: options.limits,
            cache: RepoCache::new(options.cache_capacity),
            locals: LocalLocks::default(),
            lock_wait: options.lock_wait,
            pack_level: options.pack_level.min(9),
        })
    }

    /// Removes leftovers of creations that a crash cut off.
    pub fn clean_tmp(&self) -> Result<usize, StoreError> {
        self.layout
            .clean_tmp()
            .map_err(StoreError::io(self.layout.root()))
    }

    /// The on-disk layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The size limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether the record exists.
    pub fn exists(&self, id: &PatientId) -> bool {
        self.layout.repo(id).join("HEAD").is_file()
    }

    /// The record's head, `None` if it does not exist.
    pub fn head(&self, id: &PatientId) -> Result<Option<CommitId>, StoreError> {
        let path = self.layout.repo(id);
        if !path.is_dir() {
            return Ok(None);
        }
        Ok(refs::read_head(&path)?.map(commit_id))
    }

    /// Removes this store's copy of a record: for central on PostgreSQL,
    /// whose database holds every record's history and whose repositories
    /// are a bounded cache. Waits for the record's local lock (no write of
    /// this process is in it meanwhile), forgets its open handle, and moves
    /// the folder into this session's `tmp/` with one rename before
    /// deleting it, so a crash leaves the copy whole or gone (a leftover in
    /// `tmp/` is removed at the next start). `false`: there was no copy.
    pub fn drop_copy(&self, id: &PatientId) -> Result<bool, StoreError> {
        let _guard = self.local_lock(*id)?;
        let path = self.layout.repo(id);
        if !path.is_dir() {
            return Ok(false);
        }
        let doomed = self.layout.doomed(id).map_err(StoreError::io(&path))?;
        self.cache.forget(id);
        std::fs::rename(&path, &doomed).map_err(StoreError::io(&path))?;
        self.cache.forget(id);
        std::fs::remove_dir_all(&doomed).map_err(StoreError::io(&doomed))?;
        Ok(true)
    }

    /// Makes everything written with [`Flush::Deferred`] durable (one
    /// `syncfs` of the store's file system).
    pub fn flush(&self) -> Result<(), StoreError> {
        durable::sync_filesystem(self.layout.root()).map_err(StoreError::io(self.layout.root()))
    }

    fn local_lock(&self, id: PatientId) -> Result<LocalGuard, StoreError> {
        self.locals
            .lock(id, self.lock_wait)
            .ok_or(StoreError::Busy { id })
    }

    /// Runs `f` with the record's open repository.
    fn with_repo<T>(
        &self,
        id: &PatientId,
        f: impl FnOnce(&git2::Repository) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.layout.repo(id);
        if !path.join("HEAD").is_file() {
            return Err(StoreError::NotFound { id: *id });
        }
        let repo = self
            .cache
            .take(id, &path)
            .map_err(|source| StoreError::Git {
                context: format!("opening {}", path.display()),
                source,
            })?;
        let out = f(&repo);
        self.cache.put(*id, repo);
        out
    }

    /// Moves the head of a prepared write. With [`Flush::Deferred`], the
    /// caller must have called [`RecordStore::flush`] after preparing (so the
    /// objects are durable before the head refers to them) and must call it
    /// again before acknowledging.
    pub fn publish(&self, prepared: Prepared, flush: Flush) -> Result<CommitId, StoreError> {
        let Prepared { id, new, stage, .. } = prepared;
        match stage {
            Stage::Unchanged => {}
            Stage::Move(lock) => lock.commit(flush)?,
            Stage::Create(mut tmp) => {
                let shard = self
                    .layout
                    .ensure_shard(&id, flush)
                    .map_err(StoreError::io(self.layout.root()))?;
                let target = self.layout.repo(&id);
                match std::fs::rename(&tmp.path, &target) {
                    Ok(()) => tmp.published = true,
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOTEMPTY)
                            || e.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        return Err(StoreError::Exists { id });
                    }
                    Err(e) => return Err(StoreError::io(&target)(e)),
                }
                self.cache.forget(&id);
                if flush == Flush::Now {
                    durable::sync_dir(&shard).map_err(StoreError::io(&shard))?;
                }
            }
        }
        Ok(new)
    }

    /// The wire pack of what a prepared write adds to its record: the
    /// objects from its old head to its new one (for a creation, the whole
    /// history). Central stores it when its database keeps the records'
    /// history (PostgreSQL).
    pub fn prepared_pack(&self, prepared: &Prepared) -> Result<Vec<u8>, StoreError> {
        let haves: Vec<CommitId> = prepared.old.into_iter().collect();
        match &prepared.stage {
            Stage::Create(tmp) => {
                let dir = tmp.path.join("objects/pack");
                // A new record's staged repository holds one pack: every
                // object of the record, verified and reachable from its
                // head (`stage_new_repo`). Those bytes are the pack asked
                // for, with nothing to walk or write again.
                if haves.is_empty()
                    && let Some(pack) = objects::only_pack(&dir)?
                {
                    return Ok(pack);
                }
                // The new repository's own packs first (no libgit2).
                let packs = chartsync_git::PackReader::open(&dir).map_err(StoreError::io(&dir))?;
                let have_oids: Vec<Oid> = haves.iter().map(|h| oid(*h)).collect();
                if let Some(objects) = objects::objects_since(&packs, oid(prepared.new), &have_oids)
                {
                    return Ok(chartsync_git::write_pack(&objects, 0).pack);
                }
                let repo = git2::Repository::open(&tmp.path).map_err(|source| StoreError::Git {
                    context: format!("opening {}", tmp.path.display()),
                    source,
                })?;
                let haves: Vec<Oid> = haves.into_iter().map(oid).collect();
                objects::pack_since(&repo, &prepared.id, oid(prepared.new), &haves)
            }
            _ => self.pack_since(&prepared.id, prepared.new, &haves),
        }
    }

    /// Finishes a creation that was prepared before a crash (central's
    /// repair): renames `staging` into place if the record does not exist.
    pub fn finish_create(&self, id: &PatientId, staging: &Path) -> Result<bool, StoreError> {
        if self.exists(id) || !staging.join("HEAD").is_file() {
            return Ok(false);
        }
        let shard = self
            .layout
            .ensure_shard(id, Flush::Now)
            .map_err(StoreError::io(self.layout.root()))?;
        std::fs::rename(staging, self.layout.repo(id)).map_err(StoreError::io(staging))?;
        durable::sync_dir(&shard).map_err(StoreError::io(&shard))?;
        Ok(true)
    }

    /// Sets a record's head without condition (central's repair, under the
    /// patient's lock, after its database says what the head is).
    pub fn force_head(&self, id: &PatientId, head: CommitId) -> Result<(), StoreError> {
        let path = self.layout.repo(id);
        let _guard = self.local_lock(*id)?;
        let mut lock = RefLock::acquire(&path, self.lock_wait)?;
        if lock.current() == Some(oid(head)) {
            return Ok(());
        }
        let exists = self.with_repo(id, |repo| Ok(repo.find_commit(oid(head)).is_ok()))?;
        if !exists {
            return Err(StoreError::Corrupt {
                id: *id,
                detail: format!("head {head} is not in the repository"),
            });
        }
        lock.stage(oid(head), Flush::Now)?;
        lock.commit(Flush::Now)?;
        Ok(())
    }

    /// Every record on disk (walks the shard folders).
    pub fn list(&self) -> Result<Vec<PatientId>, StoreError> {
        let mut out = Vec::new();
        let repos = self.layout.repos();
        for a in read_dir_sorted(&repos)? {
            for b in read_dir_sorted(&a)? {
                for repo in read_dir_sorted(&b)? {
                    if let Some(id) = repo
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".git"))
                        .and_then(|n| n.parse().ok())
                    {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(StoreError::io(path))? {
        out.push(entry.map_err(StoreError::io(path))?.path());
    }
    out.sort();
    Ok(out)
}
