use std::io;
use std::path::{Path, PathBuf};

use super::receive::ReceiveError;
use super::refs::RefError;
use crate::validate::InvalidRecord;
use chartsync_protocol::api::ChangedPath;
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};

/// What can go wrong in the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record.
    #[error("patient record {id} does not exist")]
    NotFound {
        /// The record.
        id: PatientId,
    },
    /// MustCreate, but the record exists.
    #[error("patient record {id} already exists")]
    Exists {
        /// The record.
        id: PatientId,
    },
    /// A conditional write refused: the record changed.
    #[error("patient record changed since version {}: {} path(s) differ", .0.expected_head.map(|h| h.to_string()).unwrap_or_default(), .0.changed.len())]
    Conflict(Box<Conflict>),
    /// The candidate record is not valid.
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
    /// Received data refused.
    #[error(transparent)]
    Received(#[from] ReceiveError),
    /// The record is retired: only a restore writes to it.
    #[error("patient record {id} is retired{}; restore it first, or write to the record that replaced it", .replaced_by.map(|r| format!(" (replaced by {r})")).unwrap_or_default())]
    Retired {
        /// The record.
        id: PatientId,
        /// The record that holds this patient now, if it was merged.
        replaced_by: Option<PatientId>,
    },
    /// A restore of a record that is not retired.
    #[error("patient record {id} is not retired; there is nothing to restore")]
    NotRetired {
        /// The record.
        id: PatientId,
    },
    /// Another writer holds the record for too long.
    #[error("patient record {id} is being written by someone else; try again")]
    Busy {
        /// The record.
        id: PatientId,
    },
    /// The head could not be read or moved.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// The repository is damaged.
    #[error("patient record {id} is damaged: {detail}")]
    Corrupt {
        /// The record.
        id: PatientId,
        /// What is wrong.
        detail: String,
    },
    /// A git operation failed.
    #[error("git error while {context}")]
    Git {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// A file operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Git { context, source }
    }
}

/// A refused conditional write: what the record holds now and what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The head now.
    pub current_head: Option<CommitId>,
    /// The head the caller expected.
    pub expected_head: Option<CommitId>,
    /// The paths that differ.
    pub changed: Vec<ChangedPath>,
    /// The files now.
    pub current: Files,
}

impl From<Conflict> for chartsync_protocol::api::ConflictBody {
    fn from(c: Conflict) -> Self {
        chartsync_protocol::api::ConflictBody {
            error: "conflict".into(),
            message: match c.expected_head {
                Some(h) => format!(
                    "the record changed since version {h}; re-read it and re-apply your change on top of current_head"
                ),
                None => "the record already exists".into(),
            },
            current_head: c.current_head,
            expected_head: c.expected_head,
            changed: c.changed,
            current: c.current,
        }
    }
}
