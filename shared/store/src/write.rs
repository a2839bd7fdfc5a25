//! Writes from the record API: a whole file set or a patch, under a write
//! condition.

use std::collections::HashSet;

use serde_json::Value;

use super::objects::{NewCommit, build_commit, read_files, write_objects};
use super::refs::RefLock;
use super::retire::{RETIRED_FILE, Retirement};
use super::{Conflict, Flush, Prepared, RecordStore, Stage, StoreError, TempRepo, commit_id, oid};
use crate::validate::{InvalidRecord, validate_files};
use chartsync_merge::diff::diff_files;
use chartsync_merge::patch::{apply_merge_patch, stale_patch_conflicts};
use chartsync_merge::pointer;
use chartsync_merge::yaml::{is_yaml_path, parse_yaml, to_yaml};
use chartsync_protocol::api::{ChangedPath, FilePatch, PatchBody};
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};
use git2::Oid;

/// When a write applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The record must not exist yet.
    MustCreate,
    /// Only if the head is still this commit. (A patch whose touched fields
    /// did not change since this commit applies anyway.)
    MatchHead(CommitId),
    /// Last writer wins. Must be asked for explicitly.
    Unconditional,
}

/// What a write does to the files.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace the whole file set.
    Replace(Files),
    /// Patch some files.
    Patch(PatchBody),
    /// Retire the record: a tombstone commit that keeps every file and adds
    /// the marker [`RETIRED_FILE`]. Needs the exact head (a stale one is a
    /// conflict); refused with [`StoreError::Retired`] when already retired.
    Retire {
        /// The record that holds this patient now (a merge), if any.
        replaced_by: Option<PatientId>,
    },
    /// Restore a retired record: one commit removing the marker, so the
    /// record is active again with its last files. Needs the exact head
    /// (the tombstone's); refused with [`StoreError::NotRetired`] when the
    /// record is not retired.
    Restore,
}

impl Change {
    /// Whether this is a record API write of files (not retire or restore).
    fn is_edit(&self) -> bool {
        matches!(self, Change::Replace(_) | Change::Patch(_))
    }

    /// Refuses a record write that touches the retirement marker.
    fn check_reserved(&self) -> Result<(), StoreError> {
        let touches = match self {
            Change::Replace(files) => files.contains_key(RETIRED_FILE),
            Change::Patch(patch) => patch.contains_key(RETIRED_FILE),
            Change::Retire { .. } | Change::Restore => false,
        };
        if touches {
            return Err(InvalidRecord::Reserved {
                file: RETIRED_FILE.to_string(),
            }
            .into());
        }
        Ok(())
    }
}

/// Who writes, and why.
#[derive(Debug, Clone)]
pub struct CommitMeta {
    /// Author name (clinician or client).
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Why.
    pub message: String,
}

impl CommitMeta {
    /// Metadata with a message.
    pub fn new(name: &str, email: &str, message: &str) -> CommitMeta {
        CommitMeta {
            author_name: name.to_string(),
            author_email: email.to_string(),
            message: message.to_string(),
        }
    }
}

/// A new commit made on `instance`.
fn new_commit<'a>(instance: &'a str, meta: &'a CommitMeta, parents: Vec<Oid>) -> NewCommit<'a> {
    NewCommit {
        parents,
        author_name: &meta.author_name,
        author_email: &meta.author_email,
        instance,
        message: &meta.message,
        time: now(),
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl RecordStore {
    /// Writes a change and moves the head, durably. Returns the new head
    /// (the current one if the change changes nothing).
    pub fn write(
        &self,
        id: &PatientId,
        condition: Condition,
        change: Change,
        meta: &CommitMeta,
    ) -> Result<CommitId, StoreError> {
        let prepared = self.prepare(id, condition, change, meta, Flush::Now)?;
        self.publish(prepared, Flush::Now)
    }

    /// Does all the work of a write but moving the head (see the module
    /// documentation). The commit names this store's instance.
    pub fn prepare(
        &self,
        id: &PatientId,
        condition: Condition,
        change: Change,
        meta: &CommitMeta,
        flush: Flush,
    ) -> Result<Prepared, StoreError> {
        self.prepare_as(&self.instance, id, condition, change, meta, flush)
    }

    /// Like [`RecordStore::prepare`], with the commit naming `instance`
    /// (central writes on behalf of whoever called its record API).
    pub fn prepare_as(
        &self,
        instance: &str,
        id: &PatientId,
        condition: Condition,
        change: Change,
        meta: &CommitMeta,
        flush: Flush,
    ) -> Result<Prepared, StoreError> {
        change.check_reserved()?;
        let guard = self.local_lock(*id)?;
        if condition == Condition::MustCreate {
            if self.exists(id) {
                return Err(self.exists_conflict(id));
            }
            if !change.is_edit() {
                return Err(StoreError::NotFound { id: *id });
            }
            let files = apply_change(&Files::new(), &change, instance)?;
            let catchment = validate_files(&files, &self.limits)?;
            let (new, objects) =
                build_commit(&files, &new_commit(instance, meta, vec![]), &HashSet::new())?;
            let tmp = self.stage_new_repo(id, &objects, new, flush)?;
            return Ok(Prepared {
                id: *id,
                old: None,
                new: commit_id(new),
                changed: files,
                catchment,
                retired: None,
                stage: Stage::Create(tmp),
                _guard: guard,
            });
        }
        let path = self.layout.repo(id);
        if !path.join("HEAD").is_file() {
            return Err(StoreError::NotFound { id: *id });
        }
        let mut lock = RefLock::acquire(&path, self.lock_wait).map_err(|e| match e {
            super::refs::RefError::Locked { .. } => StoreError::Busy { id: *id },
            other => other.into(),
        })?;
        let current = lock
            .current()
            .ok_or_else(|| super::objects::corrupt(id, "the record has no head".into()))?;
        let (new, objects, changed, catchment) = self.with_repo(id, |repo| {
            let now_contents = read_files(repo, id, current)?;
            let retired = Retirement::of(&now_contents.files);
            match (&change, &retired) {
                (Change::Restore, None) => return Err(StoreError::NotRetired { id: *id }),
                (Change::Restore, Some(_)) => {}
                (_, Some(r)) => {
                    return Err(StoreError::Retired {
                        id: *id,
                        replaced_by: r.replaced_by,
                    });
                }
                (_, None) => {}
            }
            let target = match condition {
                // Retire and restore apply to the exact version only.
                Condition::MatchHead(expected) if oid(expected) != current && !change.is_edit() => {
                    let expected_files = if repo.find_commit(oid(expected)).is_ok() {
                        Some(read_files(repo, id, oid(expected))?.files)
                    } else {
                        None
                    };
                    let changed = stale_changes(
                        expected_files.as_ref(),
                        &now_contents.files,
                        &Change::Replace(expected_files.clone().unwrap_or_default()),
                    );
                    return Err(StoreError::Conflict(Box::new(Conflict {
                        current_head: Some(commit_id(current)),
                        expected_head: Some(expected),
                        changed,
                        current: now_contents.files,
                    })));
                }
                Condition::MatchHead(expected) if oid(expected) != current => {
                    let expected_files = if repo.find_commit(oid(expected)).is_ok() {
                        Some(read_files(repo, id, oid(expected))?.files)
                    } else {
                        None
                    };
                    let stale =
                        stale_changes(expected_files.as_ref(), &now_contents.files, &change);
                    if !stale.is_empty() || expected_files.is_none() {
                        return Err(StoreError::Conflict(Box::new(Conflict {
                            current_head: Some(commit_id(current)),
                            expected_head: Some(expected),
                            changed: stale,
                            current: now_contents.files,
                        })));
                    }
                    apply_change(&now_contents.files, &change, instance)?
                }
                _ => apply_change(&now_contents.files, &change, instance)?,
            };
            let catchment = validate_files(&target, &self.limits)?;
            if target == now_contents.files {
                return Ok((current, Vec::new(), Files::new(), None));
            }
            let changed: Files = target
                .iter()
                .filter(|(k, v)| now_contents.files.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let (new, objects) = build_commit(
                &target,
                &new_commit(instance, meta, vec![current]),
                &now_contents.objects,
            )?;
            Ok((new, objects, changed, catchment))
        })?;
        if new == current {
            return Ok(Prepared {
                id: *id,
                old: Some(commit_id(current)),
                new: commit_id(current),
                changed,
                catchment,
                retired: None,
                stage: Stage::Unchanged,
                _guard: guard,
            });
        }
        write_objects(&path, &objects, self.pack_level, flush)?;
        lock.stage(new, flush)?;
        Ok(Prepared {
            id: *id,
            old: Some(commit_id(current)),
            new: commit_id(new),
            changed,
            catchment,
            retired: None,
            stage: Stage::Move(lock),
            _guard: guard,
        })
    }

    /// A new commit made on this store's instance.
    pub(crate) fn new_commit<'a>(
        &'a self,
        meta: &'a CommitMeta,
        parents: Vec<Oid>,
    ) -> NewCommit<'a> {
        new_commit(&self.instance, meta, parents)
    }

    /// Builds a complete new repository in `tmp/` holding `objects`, with
    /// its head at `head`.
    pub(crate) fn stage_new_repo(
        &self,
        id: &PatientId,
        objects: &[chartsync_git::Object],
        head: Oid,
        flush: Flush,
    ) -> Result<TempRepo, StoreError> {
        let path = self
            .layout
            .new_skeleton(id, flush)
            .map_err(StoreError::io(self.layout.root()))?;
        let tmp = TempRepo {
            path,
            published: false,
        };
        super::objects::write_objects_fresh(&tmp.path, objects, self.pack_level, flush)?;
        // The head as a packed ref: one file, and no refs/heads folder
        // until the first update (which writes a loose ref, as git does).
        let head_file = tmp.path.join("packed-refs");
        super::durable::write_new(
            &head_file,
            format!("# pack-refs with: peeled fully-peeled sorted \n{head} refs/heads/main\n")
                .as_bytes(),
            flush,
        )
        .map_err(StoreError::io(&head_file))?;
        if flush == Flush::Now {
            super::durable::sync_dir(&tmp.path).map_err(StoreError::io(&tmp.path))?;
        }
        Ok(tmp)
    }

    /// The conflict answered to a creation of an existing record.
    pub(crate) fn exists_conflict(&self, id: &PatientId) -> StoreError {
        match self.read(id) {
            Ok(snapshot) => StoreError::Conflict(Box::new(Conflict {
                current_head: Some(snapshot.head),
                expected_head: None,
                changed: Vec::new(),
                current: snapshot.files,
            })),
            Err(_) => StoreError::Exists { id: *id },
        }
    }
}

/// Applies a change to a file set.
pub(crate) fn apply_change(
    files: &Files,
    change: &Change,
    instance: &str,
) -> Result<Files, StoreError> {
    match change {
        Change::Replace(new) => Ok(new.clone()),
        Change::Retire { replaced_by } => {
            let mut out = files.clone();
            let marker = Retirement {
                retired_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                replaced_by: *replaced_by,
                by: instance.to_string(),
            };
            out.insert(RETIRED_FILE.to_string(), marker.to_yaml());
            Ok(out)
        }
        Change::Restore => {
            let mut out = files.clone();
            out.remove(RETIRED_FILE);
            Ok(out)
        }
        Change::Patch(patch) => {
            let mut out = files.clone();
            for (file, op) in patch {
                match op {
                    FilePatch::Delete => {
                        out.remove(file);
                    }
                    FilePatch::Replace(text) => {
                        out.insert(file.clone(), text.clone());
                    }
                    FilePatch::Merge(merge) => {
                        if !is_yaml_path(file) {
                            return Err(InvalidRecord::PatchNotYaml { file: file.clone() }.into());
                        }
                        let doc = match files.get(file) {
                            Some(text) => {
                                parse_yaml(text).map_err(|source| InvalidRecord::Yaml {
                                    file: file.clone(),
                                    source,
                                })?
                            }
                            None => Value::Null,
                        };
                        let patched = apply_merge_patch(&doc, merge);
                        out.insert(file.clone(), to_yaml(&patched));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn doc(files: Option<&Files>, file: &str) -> Option<Value> {
    let text = files?.get(file)?;
    if is_yaml_path(file) {
        parse_yaml(text).ok()
    } else {
        Some(Value::String(text.clone()))
    }
}

fn opt(v: Option<Value>) -> Value {
    v.unwrap_or(Value::Null)
}

/// For a write based on a stale version: the paths that changed since that
/// version and collide with the change. Empty means the change may be
/// applied to the current version (only ever for patches).
fn stale_changes(expected: Option<&Files>, current: &Files, change: &Change) -> Vec<ChangedPath> {
    let Some(expected) = expected else {
        // The expected version is unknown here: everything counts as changed.
        return diff_files(&Files::new(), current)
            .into_iter()
            .map(|d| ChangedPath {
                file: d.file,
                path: d.path,
                base: opt(d.a),
                current: opt(d.b),
                wanted: Value::Null,
            })
            .collect();
    };
    match change {
        Change::Replace(wanted) => diff_files(expected, current)
            .into_iter()
            .map(|d| {
                let wanted_value =
                    doc(Some(wanted), &d.file).and_then(|v| pointer::get(&v, &d.path).cloned());
                ChangedPath {
                    file: d.file,
                    path: d.path,
                    base: opt(d.a),
                    current: opt(d.b),
                    wanted: opt(wanted_value),
                }
            })
            .collect(),
        Change::Retire { .. } | Change::Restore => Vec::new(),
        Change::Patch(patch) => {
            let mut out = Vec::new();
            for (file, op) in patch {
                let before = doc(Some(expected), file);
                let now = doc(Some(current), file);
                match op {
                    FilePatch::Merge(merge) if is_yaml_path(file) => {
                        for d in stale_patch_conflicts(before.as_ref(), now.as_ref(), merge) {
                            let wanted = pointer::get(merge, &d.path).cloned();
                            out.push(ChangedPath {
                                file: file.clone(),
                                path: d.path,
                                base: opt(d.a),
                                current: opt(d.b),
                                wanted: opt(wanted),
                            });
                        }
                    }
                    _ => {
                        if expected.get(file) != current.get(file) {
                            out.push(ChangedPath {
                                file: file.clone(),
                                path: String::new(),
                                base: opt(before),
                                current: opt(now),
                                wanted: match op {
                                    FilePatch::Replace(s) => Value::String(s.clone()),
                                    FilePatch::Merge(m) => m.clone(),
                                    FilePatch::Delete => Value::Null,
                                },
                            });
                        }
                    }
                }
            }
            out
        }
    }
}
