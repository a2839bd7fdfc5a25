//! Repository upkeep. Every write adds one pack file of whole objects and
//! libgit2 has no garbage collection, so a record's packs are merged into
//! one from time to time: the objects reachable from its refs are written
//! as one new pack, delta-compressed (each version of a file, and of a
//! folder, stored as a delta on the next newer version of the same path,
//! chains at most [`MAX_DEPTH`] long, the newest version whole so that
//! reading the head costs no delta), and made durable before the old packs
//! are removed. It runs holding the record's head lock, so no write can be
//! between its two phases, while readers go on (a reader that misses an
//! object re-lists the packs).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::objects::{read_object, write_pack_files};
use super::refs::{RefError, RefLock};
use super::{Flush, RecordStore, StoreError};
use chartsync_git as git;
use chartsync_protocol::CommitId;
use chartsync_protocol::id::PatientId;
use git2::Oid;

/// zlib level of repacked packs: they are read often and kept long.
const REPACK_LEVEL: u32 = 6;

/// Longest delta chain a repack writes (git's default too).
pub const MAX_DEPTH: u32 = 50;

/// What a repack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepackStats {
    /// Pack files before.
    pub packs_before: usize,
    /// Objects kept.
    pub objects: usize,
    /// Whether anything was done.
    pub repacked: bool,
}

fn pack_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(StoreError::io(dir))?.path();
        if path.extension().is_some_and(|e| e == "idx")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pack-"))
        {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Removes what a crashed writer left: `tmp_*` files, and packs whose index
/// was never written (older than an hour, so no live writer's).
fn remove_stale_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let leftover = entry.file_name().to_str().is_some_and(|n| {
            n.starts_with("tmp_")
                || (n.starts_with("pack-")
                    && n.ends_with(".pack")
                    && !path.with_extension("idx").exists())
        });
        let stale = leftover
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn needs_repack(idx_files: &[PathBuf], min_packs: usize) -> Result<bool, StoreError> {
    if idx_files.len() < 2 {
        return Ok(false);
    }
    if idx_files.len() >= min_packs.max(2) {
        return Ok(true);
    }
    let mut sizes = Vec::with_capacity(idx_files.len());
    for idx in idx_files {
        let pack = idx.with_extension("pack");
        match std::fs::metadata(&pack) {
            Ok(m) => sizes.push(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&pack)(e)),
        }
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let total: u64 = sizes.iter().sum();
    Ok(total - largest >= largest)
}

/// The objects reachable from `roots`, newest commit first, and for each
/// tree or blob the index of the object it is best stored as a delta on:
/// the version met just before it at the same path (a newer one), unless
/// that one's chain is already [`MAX_DEPTH`] long.
fn collect(
    repo: &git2::Repository,
    id: &PatientId,
    roots: &[Oid],
) -> Result<(Vec<git::Object>, Vec<Option<usize>>), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { id: *id, detail };
    let read = |oid: Oid| {
        read_object(repo, oid).ok_or_else(|| corrupt(format!("object {oid} is missing")))
    };
    let mut seen = HashSet::new();
    let mut objects = Vec::new();
    let mut bases = Vec::new();
    let mut depth: Vec<u32> = Vec::new();
    // Last object stored per (path, is a tree).
    let mut last: HashMap<(Vec<u8>, bool), usize> = HashMap::new();
    // Commits newest first.
    let mut commits: BinaryHeap<(i64, Oid)> = BinaryHeap::new();
    for root in roots {
        if seen.insert(*root) {
            let object = read(*root)?;
            let c = git::parse_commit(&object.data)
                .map_err(|e| corrupt(format!("commit {root}: {e}")))?;
            commits.push((c.committer.time, *root));
        }
    }
    let mut parsed: HashMap<Oid, (git::Object, git::Commit)> = HashMap::new();
    while let Some((_, next)) = commits.pop() {
        let (object, commit) = match parsed.remove(&next) {
            Some(pair) => pair,
            None => {
                let object = read(next)?;
                let commit = git::parse_commit(&object.data)
                    .map_err(|e| corrupt(format!("commit {next}: {e}")))?;
                (object, commit)
            }
        };
        for parent in &commit.parents {
            if seen.insert(*parent) {
                let object = read(*parent)?;
                let c = git::parse_commit(&object.data)
                    .map_err(|e| corrupt(format!("commit {parent}: {e}")))?;
                commits.push((c.committer.time, *parent));
                parsed.insert(*parent, (object, c));
            }
        }
        objects.push(object);
        bases.push(None);
        depth.push(0);
        // The commit's tree, depth first, with paths.
        let mut stack: Vec<(Oid, Vec<u8>, bool)> = vec![(commit.tree, Vec::new(), true)];
        while let Some((oid, path, is_tree)) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let object = read(oid)?;
            if is_tree {
                let entries = git::parse_tree(&object.data)
                    .map_err(|e| corrupt(format!("tree {oid}: {e}")))?;
                for entry in entries.iter().rev() {
                    let mut child = path.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(entry.name.as_bytes());
                    stack.push((entry.id, child, entry.mode == git::MODE_DIR));
                }
            }
            let index = objects.len();
            let base = last
                .get(&(path.clone(), is_tree))
                .copied()
                .filter(|&b| objects[b].kind == object.kind && depth[b] < MAX_DEPTH);
            depth.push(base.map_or(0, |b| depth[b] + 1));
            bases.push(base);
            last.insert((path, is_tree), index);
            objects.push(object);
        }
    }
    Ok((objects, bases))
}

impl RecordStore {
    /// How many pack files the record has.
    pub fn pack_count(&self, id: &PatientId) -> Result<usize, StoreError> {
        Ok(pack_files(&self.layout.repo(id).join("objects/pack"))?.len())
    }

    /// Whether [`RecordStore::repack`] would repack the record: it has at
    /// least `min_packs` packs, or more than one and the packs other than
    /// the largest (whole objects written since the last repack) take as
    /// much room as the largest; so a record's disk use stays within about
    /// twice its repacked size however large its files grow.
    pub fn needs_repack(&self, id: &PatientId, min_packs: usize) -> Result<bool, StoreError> {
        let pack_dir = self.layout.repo(id).join("objects/pack");
        needs_repack(&pack_files(&pack_dir)?, min_packs)
    }

    /// Merges the record's packs into one when [`RecordStore::needs_repack`]
    /// says so.
    pub fn repack(&self, id: &PatientId, min_packs: usize) -> Result<RepackStats, StoreError> {
        self.repack_keeping(id, min_packs, &[])
    }

    /// Like [`RecordStore::repack`], also keeping what the commits `keep`
    /// reach when the repository has them (a satellite keeps central's head
    /// as it last saw it, the base of its next sync).
    pub fn repack_keeping(
        &self,
        id: &PatientId,
        min_packs: usize,
        keep: &[CommitId],
    ) -> Result<RepackStats, StoreError> {
        let path = self.layout.repo(id);
        let pack_dir = path.join("objects/pack");
        let before = pack_files(&pack_dir)?;
        if !needs_repack(&before, min_packs)? {
            return Ok(RepackStats {
                packs_before: before.len(),
                ..RepackStats::default()
            });
        }
        let _guard = self.local_lock(*id)?;
        let lock = RefLock::acquire(&path, self.lock_wait).map_err(|e| match e {
            RefError::Locked { .. } => StoreError::Busy { id: *id },
            other => other.into(),
        })?;
        let before = pack_files(&pack_dir)?;
        let mut roots: Vec<Oid> = lock.current().into_iter().collect();
        roots.extend(self.aux_refs(&path)?);
        let (objects, bases) = self.with_repo(id, |repo| {
            for extra in keep.iter().map(|c| super::oid(*c)) {
                if repo.find_commit(extra).is_ok() {
                    roots.push(extra);
                }
            }
            collect(repo, id, &roots)
        })?;
        let files = git::write_pack_deltified(&objects, &bases, REPACK_LEVEL);
        let checksum = Some(write_pack_files(&path, &files, Flush::Now)?);
        let keep = checksum.map(|c| pack_dir.join(format!("pack-{c}.idx")));
        self.cache.forget(id);
        for idx in before.iter().filter(|p| Some(*p) != keep.as_ref()) {
            let pack = idx.with_extension("pack");
            for file in [idx, &pack] {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(file)(e)),
                }
            }
        }
        remove_stale_tmp(&pack_dir);
        super::durable::sync_dir(&pack_dir).map_err(StoreError::io(&pack_dir))?;
        drop(lock);
        Ok(RepackStats {
            packs_before: before.len(),
            objects: objects.len(),
            repacked: true,
        })
    }

    /// The commits that refs other than the head keep (conflict losers).
    fn aux_refs(&self, repo: &Path) -> Result<Vec<Oid>, StoreError> {
        let dir = repo.join("refs/chartsync/conflicts");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(StoreError::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "lock") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(StoreError::io(&path))?;
            if let Ok(o) = Oid::from_str(text.trim()) {
                out.push(o);
            }
        }
        Ok(out)
    }
}
