//! The sync endpoints' messages (satellite to central), carried in an
//! [`envelope`](super::envelope). See `docs/protocol.md`.
//!
//! Every request is idempotent: a reply lost in transit and a repeated
//! request change nothing twice.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CommitId;
use crate::id::PatientId;
use crate::wire_pack::{Incoming, Outgoing};

/// The protocol's major version, in the envelope and the
/// `Chartsync-Protocol` header. Version 3 packs may be thin: a changed file
/// or folder travels as a delta (REF_DELTA) on the version the receiver is
/// known to hold. Version 4 leaves out the object ids the receiver can
/// compute (a commit's tree, a tree's entries, a record's head when it is
/// the pack's last commit) and checks them with one digest per batch. A
/// peer outside [`MIN_PROTOCOL_VERSION`]..=this is refused.
pub const PROTOCOL_VERSION: u8 = 4;
/// The oldest version still spoken: central answers a version 2 request in
/// version 2 (packs of whole objects), so older satellites keep working.
pub const MIN_PROTOCOL_VERSION: u8 = 2;
/// The HTTP header carrying [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "chartsync-protocol";
/// The media type of sync bodies.
pub const CONTENT_TYPE: &str = "application/vnd.chartsync.batch";
/// Most records in one batch, in either direction.
pub const MAX_BATCH: usize = 1000;
/// Most bytes a request batch may decompress to (central refuses more,
/// from the frame's declared size, before decompressing). A satellite
/// keeps its push batches under half of it. With the request body
/// (`max_body_bytes`, 16 MiB by default), its decoded message and the
/// packs rebuilt from it (protocol 4's references may rebuild to at most
/// twice the decoded message), one sync request holds at most about
/// `max_body_bytes + 5 * MAX_REQUEST_BYTES` (176 MiB) at central.
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Most bytes a reply batch may decompress to (the satellite refuses more).
pub const MAX_REPLY_BYTES: usize = 256 << 20;
/// Central stops adding records to a pull or fetch-new page once their
/// packs pass this many bytes (a page holds at least one record).
pub const PAGE_BYTES: usize = 16 << 20;
/// A satellite stops adding records to a push batch before their packs
/// pass this many bytes; a single record larger than
/// `MAX_REQUEST_BYTES / 2` is set aside, never sent.
pub const PUSH_BATCH_BYTES: usize = 16 << 20;

/// `POST /v1/sync/push`: records changed at the satellite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    /// At most [`MAX_BATCH`] records, each id once.
    pub records: Vec<PushRecord>,
}

/// One record's new commits.
#[derive(Debug, Clone)]
pub struct PushRecord {
    /// The patient.
    pub id: PatientId,
    /// The head the satellite last saw at central (the write applies only if
    /// central's head is still this); `None` for a record new at the
    /// satellite (it must not exist at central yet).
    pub expected: Option<CommitId>,
    /// The satellite's head: the new head it asks central to take.
    pub head: CommitId,
    /// Git pack data: the commits from `expected` (exclusive) to `head`.
    pub pack: Vec<u8>,
}

// On the wire (protocol 4) `head` is left out when the pack's linked form
// implies it: see `wire_pack`.
#[derive(Serialize)]
struct PushRecordOut<'a> {
    id: &'a PatientId,
    expected: &'a Option<CommitId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<&'a CommitId>,
    pack: Outgoing<'a>,
}

#[derive(Deserialize)]
struct PushRecordIn {
    id: PatientId,
    expected: Option<CommitId>,
    #[serde(default)]
    head: Option<CommitId>,
    pack: Incoming,
}

impl Serialize for PushRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pack = Outgoing::new(&self.pack);
        PushRecordOut {
            id: &self.id,
            expected: &self.expected,
            head: pack.head_to_send(&self.id, &self.head),
            pack,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PushRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PushRecord, D::Error> {
        let r = PushRecordIn::deserialize(deserializer)?;
        let head = r
            .pack
            .head(&r.id, r.head)
            .ok_or_else(|| serde::de::Error::missing_field("head"))?;
        Ok(PushRecord {
            id: r.id,
            expected: r.expected,
            head,
            pack: r.pack.pack,
        })
    }
}

/// Central's answer to a push: one result per record, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResponse {
    /// Per record.
    pub results: Vec<PushResult>,
}

/// What happened to one pushed record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    /// The patient.
    pub id: PatientId,
    /// The outcome.
    pub outcome: PushOutcome,
}

/// What happened to one pushed record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Central's head is now the pushed head (also when it already was: a
    /// repeated push is harmless). The head is not repeated: the satellite
    /// knows what it pushed.
    Applied {
        /// The change's number in central's global sequence.
        seq: u64,
        /// When central accepted it (Unix seconds).
        time: i64,
    },
    /// Central's head moved since `expected`: here is what the satellite
    /// lacks, so it can merge and push again without another round trip.
    Conflict {
        /// Central's head.
        head: CommitId,
        /// Its sequence number.
        seq: u64,
        /// Commits from the satellite's `expected` (or everything, if the
        /// satellite pushed a new record whose id central already has).
        #[serde(with = "super::wire_pack")]
        pack: Vec<u8>,
    },
    /// Refused for good (bad data, out of scope): retrying will not help
    /// until the record changes.
    Refused {
        /// Machine-readable reason, such as `invalid_tree` or `forbidden`.
        code: String,
        /// A sentence.
        message: String,
    },
    /// Central could not take the patient's lock in time; try again later.
    Busy,
    /// Central could not store the record now, through a fault of its own
    /// (a full disk, an I/O error): nothing was stored, and the same push
    /// will be taken once central is repaired. Unlike `Refused`, the record
    /// is not at fault.
    Failed {
        /// Machine-readable reason, such as `internal`.
        code: String,
        /// A sentence for the operator.
        message: String,
    },
}

/// `POST /v1/sync/pull`: changes after a cursor to records this instance holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// The last sequence number the satellite has stored.
    pub cursor: u64,
    /// At most this many records (capped at [`MAX_BATCH`]).
    pub limit: u32,
}

/// A page of changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResponse {
    /// Records changed after the cursor, by sequence number.
    pub updates: Vec<RecordUpdate>,
    /// The cursor to save once every update is stored.
    pub cursor: u64,
    /// More changes are waiting after this page.
    pub more: bool,
}

/// A record's state at central and the commits the receiver lacks.
#[derive(Debug, Clone)]
pub struct RecordUpdate {
    /// The patient.
    pub id: PatientId,
    /// Central's head.
    pub head: CommitId,
    /// Its sequence number.
    pub seq: u64,
    /// When central accepted it (Unix seconds).
    pub time: i64,
    /// The commit the pack starts after (the receiver has it); `None`: the
    /// pack holds the whole history.
    pub base: Option<CommitId>,
    /// Git pack data.
    pub pack: Vec<u8>,
}

#[derive(Serialize)]
struct RecordUpdateOut<'a> {
    id: &'a PatientId,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<&'a CommitId>,
    seq: u64,
    time: i64,
    base: &'a Option<CommitId>,
    pack: Outgoing<'a>,
}

#[derive(Deserialize)]
struct RecordUpdateIn {
    id: PatientId,
    #[serde(default)]
    head: Option<CommitId>,
    seq: u64,
    time: i64,
    base: Option<CommitId>,
    pack: Incoming,
}

impl Serialize for RecordUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pack = Outgoing::new(&self.pack);
        RecordUpdateOut {
            id: &self.id,
            head: pack.head_to_send(&self.id, &self.head),
            seq: self.seq,
            time: self.time,
            base: &self.base,
            pack,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RecordUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RecordUpdate, D::Error> {
        let r = RecordUpdateIn::deserialize(deserializer)?;
        let head = r
            .pack
            .head(&r.id, r.head)
            .ok_or_else(|| serde::de::Error::missing_field("head"))?;
        Ok(RecordUpdate {
            id: r.id,
            head,
            seq: r.seq,
            time: r.time,
            base: r.base,
            pack: r.pack.pack,
        })
    }
}

/// `POST /v1/sync/fetch-new`: in-scope records this instance does not hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchNewRequest {
    /// Sequence number up to which records were offered before.
    pub cursor: u64,
    /// The scope epoch the cursor belongs to (the cursor restarts from 0
    /// when the instance's scope changed).
    pub epoch: u64,
    /// At most this many records (capped at [`MAX_BATCH`]).
    pub limit: u32,
    /// Records received earlier and now stored durably.
    pub acks: Vec<Ack>,
}

/// "I store this record at this head": makes the instance a holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// The patient.
    pub id: PatientId,
    /// The head stored.
    pub head: CommitId,
}

/// A page of new records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchNewResponse {
    /// Whole records (full history).
    pub records: Vec<RecordUpdate>,
    /// The cursor to send next time, once these are stored and acknowledged.
    pub cursor: u64,
    /// The scope epoch of that cursor.
    pub epoch: u64,
    /// More records are waiting.
    pub more: bool,
    /// Acknowledged records whose head moved after the acknowledged head,
    /// with the commits since then.
    pub moved: Vec<RecordUpdate>,
}

/// `POST /v1/sync/ack`: acknowledgements alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckRequest {
    /// Records stored durably.
    pub acks: Vec<Ack>,
}

/// Answer to an [`AckRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckResponse {
    /// Acknowledged records whose head moved since the acknowledged head.
    pub moved: Vec<RecordUpdate>,
}

/// `POST /v1/sync/fetch`: one record by id (a visiting patient).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchOneRequest {
    /// The patient.
    pub id: PatientId,
}

/// The record, whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchOneResponse {
    /// The record and its whole history.
    pub record: RecordUpdate,
}
