//! The sync endpoints' messages (satellite to central), carried in an
//! [`envelope`](super::envelope). See `docs/protocol.md`.
//!
//! Every request is idempotent: a reply lost in transit and a repeated
//! request change nothing twice.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CommitId;
use crate::id::PatientId;
use crate::wire_pack::{Incoming, Outgoing, compact, id_in, id_out, page_tokens, seq_in, seq_out};

/// The protocol's major version, in the envelope and the
/// `Chartsync-Protocol` header. Version 3 packs may be thin: a changed file
/// or folder travels as a delta (REF_DELTA) on the version the receiver is
/// known to hold. Version 4 leaves out the object ids the receiver can
/// compute (a commit's tree, a tree's entries, a record's head when it is
/// the pack's last commit) and checks them with one digest per batch.
/// Version 5 says per record only what the batch cannot say once: push
/// results without ids (they are in request order), sequence numbers and
/// times as differences from the previous ones, fetch-new pages
/// acknowledged by the page's cursor and the ids ([`PageAck`]). Version 6
/// acknowledges a fetch-new page whose records were all stored by the
/// token central gave the page ([`FetchNewResponse::page`]): central keeps
/// the ids each page offered, so they need not travel back. Version 7
/// sends the contents of linked pack entries in columns by kind before
/// the message (commits beside commits, files beside files). A peer
/// outside [`MIN_PROTOCOL_VERSION`]..=this is refused.
pub const PROTOCOL_VERSION: u8 = 7;
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
/// Most fetch-new pages one request may acknowledge by cursor
/// ([`PageAck`]); the ids of all of them and of the acknowledgements by
/// head together are at most [`MAX_BATCH`].
pub const MAX_ACK_PAGES: usize = 16;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a PatientId>,
    expected: &'a Option<CommitId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<&'a CommitId>,
    pack: Outgoing<'a>,
}

#[derive(Deserialize)]
struct PushRecordIn {
    #[serde(default)]
    id: Option<PatientId>,
    expected: Option<CommitId>,
    #[serde(default)]
    head: Option<CommitId>,
    pack: Incoming,
}

impl Serialize for PushRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pack = Outgoing::new(&self.pack);
        PushRecordOut {
            id: id_to_send(&self.id),
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
        let id = id_received(r.id)?;
        let head = r
            .pack
            .head(&id, r.head)
            .ok_or_else(|| serde::de::Error::missing_field("head"))?;
        Ok(PushRecord {
            id,
            expected: r.expected,
            head,
            pack: r.pack.pack,
        })
    }
}

/// A record's id as sent: in its map up to protocol 4; from protocol 5 in
/// the message's id column (see `envelope`), which keeps the random bytes
/// of all ids together and away from the packs zstd compresses.
fn id_to_send(id: &PatientId) -> Option<&PatientId> {
    if compact() {
        id_out(id);
        None
    } else {
        Some(id)
    }
}

/// A record's id as received: in its map, or the next of the id column.
fn id_received<E: serde::de::Error>(sent: Option<PatientId>) -> Result<PatientId, E> {
    match sent {
        Some(id) => Ok(id),
        None if compact() => id_in().ok_or_else(|| E::custom("more records than ids")),
        None => Err(E::missing_field("id")),
    }
}

/// Central's answer to a push: one result per record, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResponse {
    /// Per record.
    pub results: Vec<PushResult>,
}

/// What happened to one pushed record.
#[derive(Debug, Clone)]
pub struct PushResult {
    /// The patient: always set by central; `None` when read from a
    /// protocol 5 reply, which leaves ids out (the results are in request
    /// order, so the receiver knows them).
    pub id: Option<PatientId>,
    /// The outcome.
    pub outcome: PushOutcome,
}

#[derive(Serialize)]
struct PushResultOut<'a> {
    id: &'a PatientId,
    outcome: &'a PushOutcome,
}

#[derive(Deserialize)]
struct PushResultIn {
    id: PatientId,
    outcome: PushOutcome,
}

/// A push result in protocol 5: the outcome alone; `Applied` as the
/// differences of its sequence number and time from the previous ones in
/// the message (see `wire_pack::seq_out`), which zstd reduces to almost
/// nothing in a batch of records applied together.
#[derive(Serialize)]
enum CompactOut<'a> {
    Applied(i64, i64),
    Other(&'a PushOutcome),
}

#[derive(Deserialize)]
enum CompactIn {
    Applied(i64, i64),
    Other(PushOutcome),
}

impl Serialize for PushResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if compact() {
            return match &self.outcome {
                PushOutcome::Applied { seq, time } => {
                    let (dseq, dtime) = seq_out(*seq, *time);
                    CompactOut::Applied(dseq, dtime)
                }
                other => CompactOut::Other(other),
            }
            .serialize(serializer);
        }
        let id = self.id.as_ref().ok_or_else(|| {
            serde::ser::Error::custom("a push result without its id (protocol 4 or older)")
        })?;
        PushResultOut {
            id,
            outcome: &self.outcome,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PushResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PushResult, D::Error> {
        if compact() {
            let outcome = match CompactIn::deserialize(deserializer)? {
                CompactIn::Applied(dseq, dtime) => {
                    let (seq, time) = seq_in(dseq, dtime);
                    PushOutcome::Applied { seq, time }
                }
                CompactIn::Other(outcome) => outcome,
            };
            return Ok(PushResult { id: None, outcome });
        }
        let r = PushResultIn::deserialize(deserializer)?;
        Ok(PushResult {
            id: Some(r.id),
            outcome: r.outcome,
        })
    }
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

// Protocol 5 sends `dseq` and `dtime` (differences from the previous
// update's in the message, see `wire_pack::seq_out`) instead of `seq` and
// `time`.
#[derive(Serialize)]
struct RecordUpdateOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a PatientId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<&'a CommitId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dseq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dtime: Option<i64>,
    base: &'a Option<CommitId>,
    pack: Outgoing<'a>,
}

#[derive(Deserialize)]
struct RecordUpdateIn {
    #[serde(default)]
    id: Option<PatientId>,
    #[serde(default)]
    head: Option<CommitId>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    time: Option<i64>,
    #[serde(default)]
    dseq: Option<i64>,
    #[serde(default)]
    dtime: Option<i64>,
    base: Option<CommitId>,
    pack: Incoming,
}

impl Serialize for RecordUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (seq, time, dseq, dtime) = if compact() {
            let (dseq, dtime) = seq_out(self.seq, self.time);
            (None, None, Some(dseq), Some(dtime))
        } else {
            (Some(self.seq), Some(self.time), None, None)
        };
        let pack = Outgoing::new(&self.pack);
        RecordUpdateOut {
            id: id_to_send(&self.id),
            head: pack.head_to_send(&self.id, &self.head),
            seq,
            time,
            dseq,
            dtime,
            base: &self.base,
            pack,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RecordUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RecordUpdate, D::Error> {
        let r = RecordUpdateIn::deserialize(deserializer)?;
        let id = id_received(r.id)?;
        let head = r
            .pack
            .head(&id, r.head)
            .ok_or_else(|| serde::de::Error::missing_field("head"))?;
        let (seq, time) = if compact() {
            let dseq = r
                .dseq
                .ok_or_else(|| serde::de::Error::missing_field("dseq"))?;
            let dtime = r
                .dtime
                .ok_or_else(|| serde::de::Error::missing_field("dtime"))?;
            seq_in(dseq, dtime)
        } else {
            (
                r.seq
                    .ok_or_else(|| serde::de::Error::missing_field("seq"))?,
                r.time
                    .ok_or_else(|| serde::de::Error::missing_field("time"))?,
            )
        };
        Ok(RecordUpdate {
            id,
            head,
            seq,
            time,
            base: r.base,
            pack: r.pack.pack,
        })
    }
}

/// `POST /v1/sync/fetch-new`: in-scope records this instance does not hold.
#[derive(Debug, Clone)]
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
    /// Records received in earlier pages and now stored durably at the
    /// head they had in that page (protocol 5; sent as [`Ack`]s to an
    /// older central).
    pub pages: Vec<PageAck>,
}

#[derive(Serialize)]
struct FetchNewOut<'a> {
    cursor: u64,
    epoch: u64,
    limit: u32,
    acks: std::borrow::Cow<'a, [Ack]>,
    #[serde(skip_serializing_if = "<[PageAck]>::is_empty")]
    pages: &'a [PageAck],
}

#[derive(Deserialize)]
struct FetchNewIn {
    cursor: u64,
    epoch: u64,
    limit: u32,
    acks: Vec<Ack>,
    #[serde(default)]
    pages: Vec<PageAck>,
}

impl Serialize for FetchNewRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (acks, pages) = acks_out(&self.acks, &self.pages)?;
        FetchNewOut {
            cursor: self.cursor,
            epoch: self.epoch,
            limit: self.limit,
            acks,
            pages,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FetchNewRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FetchNewRequest, D::Error> {
        let r = FetchNewIn::deserialize(deserializer)?;
        pages_in::<D::Error>(&r.pages)?;
        Ok(FetchNewRequest {
            cursor: r.cursor,
            epoch: r.epoch,
            limit: r.limit,
            acks: r.acks,
            pages: r.pages,
        })
    }
}

/// The acknowledgements of a request as sent: in protocol 5 as given; to
/// an older central, every page's records as [`Ack`]s (which needs the
/// heads the satellite keeps in [`PageAck::heads`]).
fn acks_out<'a, E: serde::ser::Error>(
    acks: &'a [Ack],
    pages: &'a [PageAck],
) -> Result<(std::borrow::Cow<'a, [Ack]>, &'a [PageAck]), E> {
    if compact() || pages.is_empty() {
        return Ok((std::borrow::Cow::Borrowed(acks), pages));
    }
    let mut all = acks.to_vec();
    for page in pages {
        if page.heads.len() != page.ids.len() {
            return Err(E::custom(
                "a page acknowledgement without its heads cannot be sent in protocol 4 or older",
            ));
        }
        all.extend(page.ids.iter().zip(&page.heads).map(|(id, head)| Ack {
            id: *id,
            head: *head,
        }));
    }
    Ok((std::borrow::Cow::Owned(all), &[]))
}

/// Page acknowledgements are protocol 5's, by token alone protocol 6's.
fn pages_in<E: serde::de::Error>(pages: &[PageAck]) -> Result<(), E> {
    if !pages.is_empty() && !compact() {
        return Err(E::custom(
            "acknowledgements by page in a batch of protocol 4 or older",
        ));
    }
    for page in pages {
        if page.page != 0 && !page_tokens() {
            return Err(E::custom(
                "a page acknowledged by its token in a batch of protocol 5 or older",
            ));
        }
        if page.page != 0 && !page.ids.is_empty() {
            return Err(E::custom(
                "a page acknowledged by its token and by ids at once",
            ));
        }
    }
    Ok(())
}

/// "I store this record at this head": makes the instance a holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// The patient.
    pub id: PatientId,
    /// The head stored.
    pub head: CommitId,
}

/// Protocol 5: "I store these records of the fetch-new page whose reply
/// said `cursor`, at the heads they had in it". Every record of a page was
/// sent at its head as of the page's cursor, so central finds the heads
/// itself (the record's head after its latest change numbered `cursor` or
/// lower) and 20 bytes a record stay off the wire. A record stored at
/// another head (one that moved, or was fetched whole) is acknowledged by
/// its head ([`Ack`]).
///
/// Protocol 6: a page whose records were *all* stored at the heads it
/// sent is acknowledged by its token ([`FetchNewResponse::page`]) and
/// cursor alone; central looks up the ids the page offered. The satellite
/// keeps the ids anyway: a central that no longer knows the token says so
/// ([`FetchNewResponse::forgotten`]) and the page is acknowledged by its
/// ids next time, and an older central gets the ids (or the heads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAck {
    /// The `cursor` of the fetch-new reply the records came in.
    pub cursor: u64,
    /// The records, as one byte string of 16 bytes each on the wire (left
    /// out in protocol 6 when `page` is set).
    pub ids: Vec<PatientId>,
    /// The heads of `ids`, in order: kept by the satellite so that it can
    /// acknowledge by head to a central of protocol 4 or older; never sent.
    pub heads: Vec<CommitId>,
    /// The page's token (protocol 6), 0 for none: set only when every
    /// record the page offered is stored at the head it sent.
    pub page: u64,
}

#[derive(Serialize)]
struct PageAckOut<'a> {
    cursor: u64,
    #[serde(with = "id_list")]
    ids: &'a [PatientId],
    #[serde(skip_serializing_if = "is_zero")]
    page: u64,
}

#[derive(Deserialize)]
struct PageAckIn {
    cursor: u64,
    #[serde(with = "id_list")]
    ids: Vec<PatientId>,
    #[serde(default)]
    page: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Serialize for PageAck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // By token where the receiver speaks protocol 6, else by ids.
        let by_token = self.page != 0 && page_tokens();
        PageAckOut {
            cursor: self.cursor,
            ids: if by_token { &[] } else { &self.ids },
            page: if by_token { self.page } else { 0 },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PageAck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PageAck, D::Error> {
        let r = PageAckIn::deserialize(deserializer)?;
        Ok(PageAck {
            cursor: r.cursor,
            ids: r.ids,
            heads: Vec::new(),
            page: r.page,
        })
    }
}

/// Patient ids as one byte string (16 bytes each), which saves the 2-byte
/// header MessagePack puts before each.
mod id_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::ByteBuf;

    use crate::PatientId;

    pub(super) fn serialize<S: Serializer>(
        ids: &[PatientId],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
        serializer.serialize_bytes(&bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<PatientId>, D::Error> {
        let bytes = ByteBuf::deserialize(deserializer)?;
        let (chunks, rest) = bytes.as_chunks::<16>();
        if !rest.is_empty() {
            return Err(serde::de::Error::custom(
                "a list of patient ids is not a multiple of 16 bytes",
            ));
        }
        chunks
            .iter()
            .map(|c| PatientId::from_bytes(*c).map_err(serde::de::Error::custom))
            .collect()
    }
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
    /// Protocol 6: the page's token, by which the satellite acknowledges
    /// it once every record in it is stored ([`PageAck::page`]); 0: none
    /// (no records, or an older protocol).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub page: u64,
    /// Protocol 6: the tokens of pages acknowledged by token that central
    /// no longer knows (kept a week, and until acknowledged): nothing of
    /// them was taken, and the satellite acknowledges them by ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<u64>,
}

/// `POST /v1/sync/ack`: acknowledgements alone.
#[derive(Debug, Clone)]
pub struct AckRequest {
    /// Records stored durably.
    pub acks: Vec<Ack>,
    /// Records of fetch-new pages stored durably (protocol 5; see
    /// [`FetchNewRequest::pages`]).
    pub pages: Vec<PageAck>,
}

#[derive(Serialize)]
struct AckOut<'a> {
    acks: std::borrow::Cow<'a, [Ack]>,
    #[serde(skip_serializing_if = "<[PageAck]>::is_empty")]
    pages: &'a [PageAck],
}

#[derive(Deserialize)]
struct AckIn {
    acks: Vec<Ack>,
    #[serde(default)]
    pages: Vec<PageAck>,
}

impl Serialize for AckRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (acks, pages) = acks_out(&self.acks, &self.pages)?;
        AckOut { acks, pages }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AckRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AckRequest, D::Error> {
        let r = AckIn::deserialize(deserializer)?;
        pages_in::<D::Error>(&r.pages)?;
        Ok(AckRequest {
            acks: r.acks,
            pages: r.pages,
        })
    }
}

/// Answer to an [`AckRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckResponse {
    /// Acknowledged records whose head moved since the acknowledged head.
    pub moved: Vec<RecordUpdate>,
    /// As [`FetchNewResponse::forgotten`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EnvelopeError, decode, decode_versioned, encode_as};

    fn update(seq: u64, time: i64) -> RecordUpdate {
        RecordUpdate {
            id: PatientId::random(),
            head: CommitId([seq as u8; 20]),
            seq,
            time,
            base: None,
            pack: b"not a pack".to_vec(),
        }
    }

    #[test]
    fn sequence_numbers_and_times_round_trip_in_every_version() {
        // Out of order, equal, far apart, at the ends of their ranges.
        let pairs = [
            (7, 1_700_000_000),
            (9, 1_700_000_000),
            (3, 1_600_000_000),
            (3, -5),
            (u64::MAX, i64::MIN),
            (0, i64::MAX),
            (12, 1_700_000_001),
        ];
        let page = FetchNewResponse {
            records: pairs[..4].iter().map(|&(s, t)| update(s, t)).collect(),
            cursor: 12,
            epoch: 1,
            more: true,
            moved: pairs[4..].iter().map(|&(s, t)| update(s, t)).collect(),
            page: 0,
            forgotten: Vec::new(),
        };
        for version in 2..=PROTOCOL_VERSION {
            let bytes = encode_as(&page, version).expect("encode");
            let back: FetchNewResponse = decode(&bytes, 1 << 20).expect("decode");
            let got: Vec<(u64, i64)> = back
                .records
                .iter()
                .chain(&back.moved)
                .map(|u| (u.seq, u.time))
                .collect();
            assert_eq!(got, pairs, "protocol {version}");
        }
    }

    #[test]
    fn push_results_leave_ids_out_and_keep_order_from_protocol_5() {
        let ids: Vec<PatientId> = (0..4).map(|_| PatientId::random()).collect();
        let outcomes = [
            PushOutcome::Applied {
                seq: 100,
                time: 1_700_000_000,
            },
            PushOutcome::Busy,
            PushOutcome::Refused {
                code: "invalid_yaml".into(),
                message: "no".into(),
            },
            PushOutcome::Applied {
                seq: 99,
                time: 1_700_000_003,
            },
        ];
        let response = PushResponse {
            results: ids
                .iter()
                .zip(&outcomes)
                .map(|(id, outcome)| PushResult {
                    id: Some(*id),
                    outcome: outcome.clone(),
                })
                .collect(),
        };
        for version in 2..=PROTOCOL_VERSION {
            let bytes = encode_as(&response, version).expect("encode");
            let back: PushResponse = decode(&bytes, 1 << 20).expect("decode");
            assert_eq!(back.results.len(), 4);
            for (i, r) in back.results.iter().enumerate() {
                let id = (version < 5).then_some(ids[i]);
                assert_eq!(r.id, id, "protocol {version}");
                assert_eq!(format!("{:?}", r.outcome), format!("{:?}", outcomes[i]));
            }
        }
        // An older peer cannot be answered without ids.
        let anonymous = PushResponse {
            results: vec![PushResult {
                id: None,
                outcome: PushOutcome::Busy,
            }],
        };
        assert!(encode_as(&anonymous, 4).is_err());
        assert!(encode_as(&anonymous, 5).is_ok());
    }

    #[test]
    fn a_batch_of_applied_results_costs_almost_nothing_per_record() {
        let response = PushResponse {
            results: (0..1000)
                .map(|i| PushResult {
                    id: Some(PatientId::random()),
                    outcome: PushOutcome::Applied {
                        seq: 5000 + i,
                        time: 1_764_000_000,
                    },
                })
                .collect(),
        };
        let v4 = encode_as(&response, 4).expect("encode").len();
        let v5 = encode_as(&response, 5).expect("encode").len();
        // Ids are 16 random bytes each in protocol 4.
        assert!(v4 > 16_000, "{v4}");
        assert!(v5 < 200, "{v5} bytes for 1000 results");
    }

    fn page_ack(n: usize, with_heads: bool) -> PageAck {
        PageAck {
            cursor: 42,
            ids: (0..n).map(|_| PatientId::random()).collect(),
            heads: if with_heads {
                (0..n).map(|i| CommitId([i as u8; 20])).collect()
            } else {
                Vec::new()
            },
            page: 0,
        }
    }

    #[test]
    fn a_whole_page_travels_as_its_token_in_protocol_6_and_as_ids_before() {
        let mut whole = page_ack(900, true);
        whole.page = 0x1234_5678_9abc;
        let request = AckRequest {
            acks: Vec::new(),
            pages: vec![whole.clone(), page_ack(2, true)],
        };
        let v6 = encode_as(&request, 6).expect("encode");
        let back: AckRequest = decode(&v6, 1 << 20).expect("decode");
        assert_eq!(back.pages[0].page, whole.page);
        assert!(back.pages[0].ids.is_empty(), "the token alone");
        assert_eq!(back.pages[0].cursor, 42);
        assert_eq!(back.pages[1].page, 0);
        assert_eq!(back.pages[1].ids, request.pages[1].ids);
        // 900 ids are 14,400 random bytes: gone.
        assert!(v6.len() < 200, "{} bytes", v6.len());
        // Protocol 5: the ids, no token.
        let back: AckRequest =
            decode(&encode_as(&request, 5).expect("encode"), 1 << 20).expect("decode");
        assert_eq!(back.pages[0].ids, whole.ids);
        assert_eq!(back.pages[0].page, 0);
        // Protocol 4: by head.
        let back: AckRequest =
            decode(&encode_as(&request, 4).expect("encode"), 1 << 20).expect("decode");
        assert_eq!(back.acks.len(), 902);
        // A page's token and forgotten tokens in replies, from protocol 6.
        let reply = FetchNewResponse {
            records: Vec::new(),
            cursor: 9,
            epoch: 1,
            more: false,
            moved: Vec::new(),
            page: 77,
            forgotten: vec![5, 6],
        };
        let back: FetchNewResponse =
            decode(&encode_as(&reply, 6).expect("encode"), 1 << 20).expect("decode");
        assert_eq!((back.page, back.forgotten), (77, vec![5, 6]));
    }

    #[test]
    fn a_token_is_refused_before_protocol_6_and_beside_ids() {
        #[derive(Serialize)]
        struct Raw {
            acks: Vec<Ack>,
            pages: Vec<RawPage>,
        }
        #[derive(Serialize)]
        struct RawPage {
            cursor: u64,
            #[serde(with = "serde_bytes")]
            ids: Vec<u8>,
            page: u64,
        }
        let raw = |ids: Vec<u8>| Raw {
            acks: Vec::new(),
            pages: vec![RawPage {
                cursor: 1,
                ids,
                page: 7,
            }],
        };
        let id = PatientId::random().as_bytes().to_vec();
        assert!(decode::<AckRequest>(&encode_as(&raw(Vec::new()), 6).expect("e"), 1 << 20).is_ok());
        for (bad, version) in [(Vec::new(), 5), (id, 6)] {
            let bytes = encode_as(&raw(bad), version).expect("encode");
            assert!(
                matches!(
                    decode::<AckRequest>(&bytes, 1 << 20),
                    Err(EnvelopeError::Decode(_))
                ),
                "protocol {version}"
            );
        }
    }

    #[test]
    fn page_acknowledgements_travel_as_ids_and_as_heads_to_older_centrals() {
        let request = FetchNewRequest {
            cursor: 42,
            epoch: 3,
            limit: 100,
            acks: vec![Ack {
                id: PatientId::random(),
                head: CommitId([9; 20]),
            }],
            pages: vec![page_ack(3, true)],
        };
        let bytes = encode_as(&request, 5).expect("encode");
        let back: FetchNewRequest = decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(back.acks, request.acks);
        assert_eq!(back.pages.len(), 1);
        assert_eq!(back.pages[0].ids, request.pages[0].ids);
        assert_eq!(back.pages[0].cursor, 42);
        assert!(back.pages[0].heads.is_empty(), "heads are not sent");
        for version in 2..5 {
            let bytes = encode_as(&request, version).expect("encode");
            let back: FetchNewRequest = decode(&bytes, 1 << 20).expect("decode");
            assert!(back.pages.is_empty());
            assert_eq!(back.acks.len(), 4, "protocol {version}");
            assert_eq!(back.acks[3].id, request.pages[0].ids[2]);
            assert_eq!(back.acks[3].head, CommitId([2; 20]));
        }
        let alone = AckRequest {
            acks: Vec::new(),
            pages: vec![page_ack(2, true)],
        };
        let back: AckRequest =
            decode(&encode_as(&alone, 5).expect("encode"), 1 << 20).expect("decode");
        assert_eq!(back.pages[0].ids, alone.pages[0].ids);
        let back: AckRequest =
            decode(&encode_as(&alone, 4).expect("encode"), 1 << 20).expect("decode");
        assert_eq!(back.acks.len(), 2);
        // Without heads it cannot be said in protocol 4.
        let headless = AckRequest {
            acks: Vec::new(),
            pages: vec![page_ack(2, false)],
        };
        assert!(encode_as(&headless, 4).is_err());
    }

    #[test]
    fn malformed_page_acknowledgements_are_refused() {
        // Pages in a batch marked protocol 4.
        let mut bytes = encode_as(
            &AckRequest {
                acks: Vec::new(),
                pages: vec![page_ack(2, false)],
            },
            5,
        )
        .expect("encode");
        bytes[3] = 4;
        assert!(matches!(
            decode_versioned::<AckRequest>(&bytes, 1 << 20),
            Err(EnvelopeError::Decode(_))
        ));
        // Ids that are not a whole number of 16 bytes, or not version 4 UUIDs.
        #[derive(Serialize)]
        struct Raw {
            acks: Vec<Ack>,
            pages: Vec<RawPage>,
        }
        #[derive(Serialize)]
        struct RawPage {
            cursor: u64,
            #[serde(with = "serde_bytes")]
            ids: Vec<u8>,
        }
        for ids in [vec![0x44; 17], vec![0; 16], vec![0x44; 15]] {
            let raw = Raw {
                acks: Vec::new(),
                pages: vec![RawPage { cursor: 1, ids }],
            };
            let bytes = encode_as(&raw, 5).expect("encode");
            assert!(matches!(
                decode::<AckRequest>(&bytes, 1 << 20),
                Err(EnvelopeError::Decode(_))
            ));
        }
    }
}
