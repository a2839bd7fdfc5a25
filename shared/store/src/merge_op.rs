//! Merging another instance's head into the local one (a satellite merging
//! central's changes with its own unpushed edits).

use std::collections::HashSet;

use super::objects::{build_commit, read_files, write_objects};
use super::refs::{RefError, RefLock};
use super::{CommitMeta, Flush, Prepared, RecordStore, Stage, StoreError, commit_id, oid};
use crate::retire::RETIRED_FILE;
use crate::validate::validate_files;
use chartsync_merge::files::{FileConflict, merge_files};
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};

/// What merging `theirs` into the local head gives.
#[derive(Debug)]
pub struct MergeOutcome {
    /// The write to publish (unchanged when the local head already contains
    /// `theirs`).
    pub prepared: Prepared,
    /// True conflicts: central's value is in the merged record, the local
    /// value here.
    pub conflicts: Vec<FileConflict>,
    /// Whether the result is `theirs` itself (no local changes to keep).
    pub fast_forward: bool,
    /// Whether a merge commit was made.
    pub merged: bool,
}

impl RecordStore {
    /// Merges commit `theirs` (whose objects must be stored, see
    /// [`RecordStore::ingest`]) into the record's head, which must still be
    /// `ours`. A true conflict keeps `theirs`' value in the record; the
    /// conflicts are returned so the caller can queue them.
    pub fn prepare_merge(
        &self,
        id: &PatientId,
        ours: CommitId,
        theirs: CommitId,
        meta: &CommitMeta,
        flush: Flush,
    ) -> Result<Result<MergeOutcome, Option<CommitId>>, StoreError> {
        let guard = self.local_lock(*id)?;
        let path = self.layout.repo(id);
        if !path.join("HEAD").is_file() {
            return Err(StoreError::NotFound { id: *id });
        }
        let mut lock = RefLock::acquire(&path, self.lock_wait).map_err(|e| match e {
            RefError::Locked { .. } => StoreError::Busy { id: *id },
            other => other.into(),
        })?;
        let current = lock.current().map(commit_id);
        if current != Some(ours) {
            return Ok(Err(current));
        }
        let unchanged = |guard| Prepared {
            id: *id,
            old: Some(ours),
            new: ours,
            changed: Files::new(),
            catchment: None,
            retired: None,
            stage: Stage::Unchanged,
            _guard: guard,
        };
        if ours == theirs || self.is_ancestor(id, theirs, ours)? {
            return Ok(Ok(MergeOutcome {
                prepared: unchanged(guard),
                conflicts: Vec::new(),
                fast_forward: false,
                merged: false,
            }));
        }
        if self.is_ancestor(id, ours, theirs)? {
            lock.stage(oid(theirs), flush)?;
            return Ok(Ok(MergeOutcome {
                prepared: Prepared {
                    id: *id,
                    old: Some(ours),
                    new: theirs,
                    changed: Files::new(),
                    catchment: None,
                    retired: None,
                    stage: Stage::Move(lock),
                    _guard: guard,
                },
                conflicts: Vec::new(),
                fast_forward: true,
                merged: false,
            }));
        }
        let base = self.merge_base(id, ours, theirs)?;
        let (new, objects, conflicts) = self.with_repo(id, |repo| {
            let base_files = match base {
                Some(b) => read_files(repo, id, oid(b))?.files,
                None => Files::new(),
            };
            let ours_files = read_files(repo, id, oid(ours))?.files;
            let theirs_contents = read_files(repo, id, oid(theirs))?;
            let mut merged = merge_files(&base_files, &ours_files, &theirs_contents.files);
            // Both sides retired the record (the same merge made at two
            // places): central's marker stands, and two markers differing
            // in time or author are no conflict for a clinician.
            if let (Some(_), Some(theirs_marker)) = (
                ours_files.get(RETIRED_FILE),
                theirs_contents.files.get(RETIRED_FILE),
            ) {
                merged
                    .files
                    .insert(RETIRED_FILE.to_string(), theirs_marker.clone());
                merged.conflicts.retain(|c| c.file != RETIRED_FILE);
            }
            validate_files(&merged.files, &self.limits)?;
            let mut known: HashSet<_> = theirs_contents.objects;
            known.extend(read_files(repo, id, oid(ours))?.objects);
            let message = if merged.conflicts.is_empty() {
                meta.message.clone()
            } else {
                format!(
                    "{}\n\n{} conflicting field(s) kept central's value; this instance's values wait for review.",
                    meta.message,
                    merged.conflicts.len()
                )
            };
            let meta = CommitMeta {
                message,
                ..meta.clone()
            };
            let (new, objects) =
                build_commit(&merged.files, &self.new_commit(&meta, vec![oid(ours), oid(theirs)]), &known)?;
            Ok((new, objects, merged.conflicts))
        })?;
        write_objects(&path, &objects, self.pack_level, flush)?;
        lock.stage(new, flush)?;
        Ok(Ok(MergeOutcome {
            prepared: Prepared {
                id: *id,
                old: Some(ours),
                new: commit_id(new),
                changed: Files::new(),
                catchment: None,
                retired: None,
                stage: Stage::Move(lock),
                _guard: guard,
            },
            conflicts,
            fast_forward: false,
            merged: true,
        }))
    }

    /// Keeps a commit reachable under `refs/chartsync/conflicts/<commit>` (the
    /// losing side of a conflict), so plain `git` can always show it.
    pub fn keep_commit(&self, id: &PatientId, commit: CommitId) -> Result<(), StoreError> {
        let path = self.layout.repo(id);
        super::refs::set_aux_ref(&path, &format!("chartsync/conflicts/{commit}"), oid(commit))?;
        Ok(())
    }
}
