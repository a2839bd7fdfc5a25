//! Everything central keeps in its database but the records' history, as
//! plain values: what `chartsync central copy` moves from one backend to
//! the other ([`super::CentralDb::dump`], [`super::CentralDb::load`]).

use chartsync_protocol::{CommitId, PatientId};

use super::{RecordRow, Seq};

/// An instance with everything stored about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDump {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// SHA-256 of its token (so tokens stay valid).
    pub token_hash: Vec<u8>,
    /// Its scope epoch.
    pub scope_epoch: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub last_seen: Option<i64>,
    /// Unix seconds.
    pub token_rotated_at: Option<i64>,
    /// Its catchments, in order.
    pub catchments: Vec<String>,
}

/// A record's row with its creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDump {
    /// The row.
    pub row: RecordRow,
    /// Unix seconds.
    pub created_at: i64,
}

/// One accepted change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeDump {
    /// Its sequence number.
    pub seq: Seq,
    /// The record.
    pub patient: PatientId,
    /// The head it brought.
    pub head: CommitId,
    /// Who made it (`None`: HQ).
    pub instance: Option<u32>,
    /// Unix seconds.
    pub time: i64,
}

/// A grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantDump {
    /// The instance.
    pub instance: u32,
    /// The record.
    pub patient: PatientId,
    /// created | fetched | held.
    pub reason: String,
    /// Unix seconds.
    pub granted_at: i64,
}

/// Central's database as values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Instances, by id.
    pub instances: Vec<InstanceDump>,
    /// Records.
    pub records: Vec<RecordDump>,
    /// The change log, by sequence number.
    pub changes: Vec<ChangeDump>,
    /// Grants.
    pub grants: Vec<GrantDump>,
    /// The last sequence number given out.
    pub seq: Seq,
    /// The instances version.
    pub instances_version: u64,
}

/// The error [`super::CentralDb::load`] gives for a database that is not
/// empty.
pub fn not_empty() -> super::DbError {
    super::DbError::Backend {
        context: "loading a copy",
        source: "the target database is not empty (it has records or instances); copy into a new, empty database".into(),
    }
}
