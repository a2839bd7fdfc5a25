//! Reading records: current files, files at a version, history.

use chrono::{DateTime, SecondsFormat};

use super::objects::{INSTANCE_TRAILER, commit_ids, corrupt, read_files, signature_text};
use super::{RecordStore, Snapshot, StoreError, commit_id, oid, refs};
use chartsync_git as git;
use chartsync_protocol::api::HistoryEntry;
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};

impl RecordStore {
    /// The record's current head and files.
    pub fn read(&self, id: &PatientId) -> Result<Snapshot, StoreError> {
        self.with_repo(id, |repo| {
            let head = refs::read_head(&self.layout.repo(id))?
                .ok_or_else(|| corrupt(id, "the record has no head".into()))?;
            let contents = read_files(repo, id, head)?;
            Ok(Snapshot {
                head: commit_id(head),
                files: contents.files,
            })
        })
    }

    /// The record's files at `commit` (`None` if the repository does not
    /// have that commit).
    pub fn read_at(&self, id: &PatientId, commit: CommitId) -> Result<Option<Files>, StoreError> {
        self.with_repo(id, |repo| {
            if repo.find_commit(oid(commit)).is_err() {
                return Ok(None);
            }
            Ok(Some(read_files(repo, id, oid(commit))?.files))
        })
    }

    /// Whether the record is retired at `commit` (its tree holds the
    /// marker [`crate::RETIRED_FILE`]); reads one tree, not the files.
    pub fn is_retired_at(&self, id: &PatientId, commit: CommitId) -> Result<bool, StoreError> {
        self.with_repo(id, |repo| {
            let Ok(commit) = repo.find_commit(oid(commit)) else {
                return Ok(false);
            };
            let tree = commit
                .tree()
                .map_err(StoreError::git(format!("reading the tree of {id}")))?;
            Ok(tree.get_name(crate::RETIRED_FILE).is_some())
        })
    }

    /// Whether the repository has `commit`.
    pub fn has_commit(&self, id: &PatientId, commit: CommitId) -> Result<bool, StoreError> {
        self.with_repo(id, |repo| Ok(repo.find_commit(oid(commit)).is_ok()))
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    pub fn is_ancestor(
        &self,
        id: &PatientId,
        ancestor: CommitId,
        commit: CommitId,
    ) -> Result<bool, StoreError> {
        if ancestor == commit {
            return Ok(true);
        }
        self.with_repo(id, |repo| {
            repo.graph_descendant_of(oid(commit), oid(ancestor))
                .map_err(StoreError::git("checking ancestry"))
        })
    }

    /// The record's history, newest first.
    pub fn history(&self, id: &PatientId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_at(id, None)
    }

    /// The history from `head` (default: the current head), newest first.
    pub fn history_at(
        &self,
        id: &PatientId,
        head: Option<CommitId>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.with_repo(id, |repo| {
            let head = match head {
                Some(h) => oid(h),
                None => refs::read_head(&self.layout.repo(id))?
                    .ok_or_else(|| corrupt(id, "the record has no head".into()))?,
            };
            let mut walk = repo
                .revwalk()
                .map_err(StoreError::git("starting a history walk"))?;
            walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
                .map_err(StoreError::git("sorting history"))?;
            walk.push(head)
                .map_err(StoreError::git("walking history"))?;
            let mut out = Vec::new();
            for commit in walk {
                let commit = commit.map_err(StoreError::git("walking history"))?;
                let commit = repo
                    .find_commit(commit)
                    .map_err(|e| corrupt(id, format!("commit unreadable: {e}")))?;
                let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
                let instance = git::commit_trailer(&message, INSTANCE_TRAILER).map(str::to_string);
                out.push(HistoryEntry {
                    commit: commit_id(commit.id()),
                    parents: commit_ids(commit.parent_ids()),
                    author: signature_text(&commit.author()),
                    instance,
                    time: DateTime::from_timestamp(commit.time().seconds(), 0)
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                        .unwrap_or_default(),
                    message: strip_trailers(&message),
                });
            }
            Ok(out)
        })
    }

    /// A wire pack of the commits from `haves` (exclusive; the receiver has
    /// them) to `head`; with no `haves`, the whole history.
    pub fn pack_since(
        &self,
        id: &PatientId,
        head: CommitId,
        haves: &[CommitId],
    ) -> Result<Vec<u8>, StoreError> {
        let haves: Vec<git2::Oid> = haves.iter().map(|h| oid(*h)).collect();
        let dir = self.layout.repo(id).join("objects/pack");
        let packs = git::PackReader::open(&dir).map_err(StoreError::io(&dir))?;
        if let Some(objects) = super::objects::objects_since(&packs, oid(head), &haves) {
            return Ok(git::write_pack(&objects, 0).pack);
        }
        self.with_repo(id, |repo| {
            super::objects::pack_since(repo, id, oid(head), &haves)
        })
    }

    /// Like [`RecordStore::pack_since`], as a thin pack (sync protocol 3):
    /// changed files and folders travel as deltas on their versions in the
    /// first of `haves`, which the receiver must have.
    pub fn pack_since_thin(
        &self,
        id: &PatientId,
        head: CommitId,
        haves: &[CommitId],
    ) -> Result<Vec<u8>, StoreError> {
        let Some(base) = haves.first().map(|h| oid(*h)) else {
            return self.pack_since(id, head, haves);
        };
        let haves: Vec<git2::Oid> = haves.iter().map(|h| oid(*h)).collect();
        let dir = self.layout.repo(id).join("objects/pack");
        let packs = git::PackReader::open(&dir).map_err(StoreError::io(&dir))?;
        let objects = match super::objects::objects_since(&packs, oid(head), &haves) {
            Some(objects) => objects,
            None => self.with_repo(id, |repo| {
                super::objects::objects_since_repo(repo, id, oid(head), &haves)
            })?,
        };
        let read = |o: git2::Oid| match packs.read(o) {
            git::Lookup::Found(object) => Some(object),
            _ => None,
        };
        Ok(super::objects::thin_pack(&objects, base, &read))
    }

    /// The common ancestor of two commits, if any.
    pub fn merge_base(
        &self,
        id: &PatientId,
        a: CommitId,
        b: CommitId,
    ) -> Result<Option<CommitId>, StoreError> {
        self.with_repo(id, |repo| match repo.merge_base(oid(a), oid(b)) {
            Ok(base) => Ok(Some(commit_id(base))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(StoreError::git("finding a merge base")(e)),
        })
    }
}

/// The message without its trailer paragraph (when that paragraph holds
/// only `Key: value` lines).
fn strip_trailers(message: &str) -> String {
    let trimmed = message.trim_end();
    if let Some((body, last)) = trimmed.rsplit_once("\n\n")
        && !last.is_empty()
        && last.lines().all(|l| {
            l.split_once(": ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        })
    {
        return body.trim_end().to_string();
    }
    trimmed.to_string()
}

#[cfg(test)]
mod tests {
    use super::strip_trailers;

    #[test]
    fn strips_only_a_trailer_paragraph() {
        assert_eq!(strip_trailers("Edit\n\nChartsync-Instance: a\n"), "Edit");
        assert_eq!(strip_trailers("Edit\n\nsome text"), "Edit\n\nsome text");
        assert_eq!(strip_trailers("Edit"), "Edit");
    }
}
