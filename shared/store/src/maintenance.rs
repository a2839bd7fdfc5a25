//! Repository upkeep. Every write adds one pack file and libgit2 has no
//! garbage collection, so a record's packs are merged into one from time to
//! time: the objects reachable from its refs are written as one new pack,
//! then the old packs are removed. It runs holding the record's head lock,
//! so no write can be between its two phases, while readers go on (a reader
//! that misses an object re-lists the packs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::objects::{read_object, write_objects};
use super::refs::{RefError, RefLock};
use super::{Flush, RecordStore, StoreError};
use chartsync_git::{self as git, Kind};
use chartsync_protocol::id::PatientId;
use git2::Oid;

/// zlib level of repacked packs: they are read often and kept long.
const REPACK_LEVEL: u32 = 6;

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

impl RecordStore {
    /// How many pack files the record has.
    pub fn pack_count(&self, id: &PatientId) -> Result<usize, StoreError> {
        Ok(pack_files(&self.layout.repo(id).join("objects/pack"))?.len())
    }

    /// Merges the record's packs into one when it has at least `min_packs`.
    pub fn repack(&self, id: &PatientId, min_packs: usize) -> Result<RepackStats, StoreError> {
        let path = self.layout.repo(id);
        let pack_dir = path.join("objects/pack");
        let before = pack_files(&pack_dir)?;
        if before.len() < min_packs.max(2) {
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
        let objects = self.with_repo(id, |repo| {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            let mut stack = roots.clone();
            while let Some(next) = stack.pop() {
                if !seen.insert(next) {
                    continue;
                }
                let object = read_object(repo, next).ok_or_else(|| StoreError::Corrupt {
                    id: *id,
                    detail: format!("object {next} is missing"),
                })?;
                match object.kind {
                    Kind::Commit => {
                        let c =
                            git::parse_commit(&object.data).map_err(|e| StoreError::Corrupt {
                                id: *id,
                                detail: format!("commit {next}: {e}"),
                            })?;
                        stack.push(c.tree);
                        stack.extend(c.parents);
                    }
                    Kind::Tree => {
                        let entries =
                            git::parse_tree(&object.data).map_err(|e| StoreError::Corrupt {
                                id: *id,
                                detail: format!("tree {next}: {e}"),
                            })?;
                        stack.extend(entries.into_iter().map(|e| e.id));
                    }
                    Kind::Blob | Kind::Tag => {}
                }
                out.push(object);
            }
            Ok(out)
        })?;
        let checksum = write_objects(&path, &objects, REPACK_LEVEL, Flush::Now)?;
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
