//! JSON bodies of the record API (the same on satellite and central).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CommitId, Files};
use crate::id::PatientId;

/// Body of `POST /v1/patients` and `PUT /v1/patients/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesBody {
    /// The whole file set of the record.
    pub files: Files,
}

/// One operation of a `PATCH` body, per file.
#[derive(Debug, Clone, PartialEq)]
pub enum FilePatch {
    /// `null`: delete the file.
    Delete,
    /// An object: an RFC 7396 merge patch applied to the YAML document.
    Merge(serde_json::Value),
    /// A string: the file's new whole content.
    Replace(String),
}

/// Body of `PATCH /v1/patients/{id}` (`application/merge-patch+json`):
/// file path to patch.
pub type PatchBody = BTreeMap<String, FilePatch>;

/// Parses a PATCH body: a JSON object whose values are objects (merge
/// patches), `null` (delete) or strings (replace).
pub fn parse_patch_body(value: serde_json::Value) -> Result<PatchBody, String> {
    let serde_json::Value::Object(map) = value else {
        return Err("a PATCH body is a JSON object of file path to merge patch".into());
    };
    let mut out = PatchBody::new();
    for (file, op) in map {
        let op = match op {
            serde_json::Value::Null => FilePatch::Delete,
            serde_json::Value::String(s) => FilePatch::Replace(s),
            v @ serde_json::Value::Object(_) => FilePatch::Merge(v),
            _ => {
                return Err(format!(
                    "the patch for {file:?} must be an object (merge patch), a string (new content) or null (delete)"
                ));
            }
        };
        out.insert(file, op);
    }
    Ok(out)
}

/// A record as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordBody {
    /// The patient id.
    pub id: PatientId,
    /// The head commit: the record's version.
    pub head: CommitId,
    /// The files at that version.
    pub files: Files,
}

/// One entry of `GET /v1/patients/{id}/history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// The commit hash.
    pub commit: CommitId,
    /// Its parents (two for a merge).
    pub parents: Vec<CommitId>,
    /// Who made the change: `Name <email>`.
    pub author: String,
    /// The instance the change was made on (its `Chartsync-Instance` trailer).
    pub instance: Option<String>,
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// Why (the commit message without trailers).
    pub message: String,
}

/// One path that differs, in a [`ConflictBody`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangedPath {
    /// The file.
    pub file: String,
    /// JSON pointer inside the YAML document ("" = the whole file).
    pub path: String,
    /// Value at the version the caller expected (`null` when absent).
    pub base: serde_json::Value,
    /// Value now.
    pub current: serde_json::Value,
    /// Value the caller wanted.
    pub wanted: serde_json::Value,
}

/// The body of a 412 answer: why a conditional write was refused, and what
/// the record holds now, so the caller can re-apply its change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConflictBody {
    /// Always `"conflict"`.
    pub error: String,
    /// A sentence for humans.
    pub message: String,
    /// The record's head now (use it as the next `If-Match`).
    pub current_head: Option<CommitId>,
    /// The head the caller sent.
    pub expected_head: Option<CommitId>,
    /// The paths that changed in ways that collide with the request.
    pub changed: Vec<ChangedPath>,
    /// The record's files now.
    pub current: Files,
}

/// Every error answer: `{"error": "<code>", "message": "<sentence>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// Machine-readable code, such as `not_found` or `invalid_path`.
    pub error: String,
    /// A sentence saying what went wrong and what to do.
    pub message: String,
}

/// `GET /v1/conflicts` entry (satellite).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConflictEntry {
    /// Conflict id (for `POST /v1/conflicts/{id}/resolve`).
    pub id: i64,
    /// The patient.
    pub patient: PatientId,
    /// The file.
    pub file: String,
    /// JSON pointer in the file.
    pub path: String,
    /// Value at the common ancestor.
    pub base: serde_json::Value,
    /// This clinic's value (kept out of the record, here).
    pub ours: serde_json::Value,
    /// Central's value (the one in the record now).
    pub theirs: serde_json::Value,
    /// The commit holding this clinic's version (kept under a ref).
    pub ours_commit: CommitId,
    /// The merge commit that kept central's value.
    pub merge_commit: CommitId,
    /// When it was found (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/status` (satellite).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusBody {
    /// This satellite's instance id at central.
    pub instance_id: u32,
    /// Records with local changes not yet acknowledged by central.
    pub pending_push: u64,
    /// Conflicts waiting for a clinician.
    pub open_conflicts: u64,
    /// The pull cursor (central's change sequence number seen so far).
    pub cursor: u64,
    /// The latest run of each job.
    pub last_runs: Vec<JobRun>,
    /// Records set aside: they could not be stored, merged or received
    /// here; every other record goes on. Each says why.
    #[serde(default)]
    pub set_aside: Vec<SetAsideRecord>,
}

/// A record set aside at a satellite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetAsideRecord {
    /// The record.
    pub patient: PatientId,
    /// The job that set it aside.
    pub job: String,
    /// Why, and what to do.
    pub reason: String,
    /// When it was first set aside, RFC 3339.
    pub since: String,
    /// Attempts so far.
    pub attempts: u64,
    /// When it is tried again, RFC 3339.
    pub retry_at: String,
}

/// One run of a sync job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRun {
    /// push, pull or fetch-new.
    pub job: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339 (absent while running).
    pub finished_at: Option<String>,
    /// Did it complete.
    pub ok: bool,
    /// The summary or the error.
    pub detail: serde_json::Value,
}
