//! How the sync messages' git packs travel (`#[serde(with = ...)]` on their
//! `pack` fields, and [`Outgoing`] / [`Incoming`] inside records). In
//! memory a pack is git pack data; on the wire a pack of whole objects and
//! REF_DELTA entries (a thin pack, protocol 3) is sent as its entries,
//! `[kind, content]` each (kind 7: a delta, its content the base's id then
//! the delta), and rebuilt on arrival. That drops the pack's framing
//! (headers, Adler-32 and SHA-1 checksums: about 30 bytes per record that
//! zstd cannot compress) and loses no safety: the receiver rebuilds and
//! hashes every object to its id and checks every reference. A pack that
//! is anything else (OFS_DELTA entries, or broken) travels byte for byte,
//! so the receiver refuses exactly what was sent.
//!
//! Protocol 4 sends the entries in reverse pack order (`Linked`), and an id
//! the receiver can compute is not sent: a commit's `tree` line naming a
//! tree sent earlier in the list (kind 8), a tree entry naming a blob or
//! tree sent earlier (kind 9), each replaced by a backward distance in the
//! list (a varint). The receiver rebuilds the exact object bytes and hashes
//! them as before. A record's head is then not sent when it is the first
//! commit of the list; one digest per batch over the (record, head) pairs
//! so derived (in the envelope) still refuses a corrupted or mis-rebuilt
//! object. See `docs/protocol.md`.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::{ByteBuf, Bytes};
use sha1::{Digest, Sha1};

use chartsync_git as git;

use crate::{CommitId, PatientId};

/// Wire kind of a commit whose `tree` line is a reference.
const LINKED_COMMIT: u8 = 8;
/// Wire kind of a tree with at least one entry id by reference.
const LINKED_TREE: u8 = 9;
/// The REF_DELTA pack type code.
const REF_DELTA: u8 = 7;
/// Protocol 7: the columns a linked pack entry's content travels in, by
/// its wire kind ([`column_of`]): commits, trees, blobs (and any other
/// kind), deltas.
pub(crate) const COLUMNS: usize = 4;
/// Without an envelope's context, a linked pack may grow by at most this
/// many bytes when its references are rebuilt.
const DEFAULT_GROWTH: usize = 32 << 20;

/// What the envelope being encoded or decoded on this thread says: the
/// protocol version, the digest of the heads left out, and how many bytes
/// rebuilding references may still add.
struct Ctx {
    version: u8,
    heads: Sha1,
    growth: usize,
    /// Protocol 5: the last sequence number and time said in this message
    /// (sent as differences from them, see [`seq_out`]).
    seq: u64,
    time: i64,
    /// Protocol 5: the records' ids, which travel as one column before the
    /// message (see `envelope`): written while encoding, read while
    /// decoding (`next` of them so far).
    ids: Vec<PatientId>,
    next: usize,
    /// Protocol 7: the contents of linked pack entries, one column per
    /// [`column_of`] their kind, each in message order: written while
    /// encoding; while decoding, read in order (`taken` of each so far).
    columns: [Column; COLUMNS],
}

/// One column of entry contents: how many, their lengths (varints, as
/// they travel) and the contents back to back.
#[derive(Default)]
pub(crate) struct Column {
    pub(crate) count: usize,
    pub(crate) lengths: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
    /// Decoding: entries taken so far, and where the next one's length and
    /// content start.
    taken: usize,
    length_at: usize,
    at: usize,
}

impl Column {
    /// A column read from a batch: `count` entries whose `lengths` (as
    /// many varints) the caller checked add up to `bytes`.
    pub(crate) fn new(count: usize, lengths: Vec<u8>, bytes: Vec<u8>) -> Column {
        Column {
            count,
            lengths,
            bytes,
            ..Column::default()
        }
    }

    fn push(&mut self, content: &[u8]) {
        put_varint(&mut self.lengths, content.len());
        self.bytes.extend_from_slice(content);
        self.count += 1;
    }

    fn take(&mut self) -> Option<&[u8]> {
        if self.taken == self.count {
            return None;
        }
        let (n, used) = get_varint(self.lengths.get(self.length_at..)?).ok()?;
        let content = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.taken += 1;
        self.length_at += used;
        self.at += n;
        Some(content)
    }
}

/// Protocol 7: the column a linked pack entry of wire kind `code` travels
/// in.
fn column_of(code: u8) -> usize {
    match code {
        1 | LINKED_COMMIT => 0,
        2 | LINKED_TREE => 1,
        REF_DELTA => 3,
        _ => 2,
    }
}

/// What encoding or decoding a message left in its [`Scope`].
pub(crate) struct Finished {
    /// The digest over the heads left out or derived.
    pub(crate) digest: [u8; 20],
    /// Protocol 5, encoding: the id column.
    pub(crate) ids: Vec<PatientId>,
    /// Protocol 5, decoding: ids of the column no record took.
    pub(crate) unread: usize,
    /// Protocol 7, encoding: the entry columns.
    pub(crate) columns: [Column; COLUMNS],
    /// Protocol 7, decoding: entries of the columns no pack took.
    pub(crate) unread_entries: usize,
}

thread_local! {
    static CTX: RefCell<Option<Ctx>> = const { RefCell::new(None) };
}

/// Sets this thread's wire context while a message is encoded or decoded;
/// [`Scope::finish`] returns the heads' digest.
pub(crate) struct Scope {
    previous: Option<Ctx>,
}

impl Scope {
    /// Starts encoding or decoding a message of protocol `version`; when
    /// decoding, references may add at most `growth` bytes in all.
    pub(crate) fn enter(version: u8, growth: usize) -> Scope {
        let previous = CTX.with(|c| {
            c.borrow_mut().replace(Ctx {
                version,
                heads: Sha1::new(),
                growth,
                seq: 0,
                time: 0,
                ids: Vec::new(),
                next: 0,
                columns: Default::default(),
            })
        });
        Scope { previous }
    }

    /// Protocol 5, decoding: the id column read before the message.
    pub(crate) fn read_ids(&self, ids: Vec<PatientId>) {
        CTX.with(|c| {
            if let Some(ctx) = c.borrow_mut().as_mut() {
                ctx.ids = ids;
                ctx.next = 0;
            }
        });
    }

    /// Protocol 7, decoding: the entry columns read before the message.
    pub(crate) fn read_columns(&self, columns: [Column; COLUMNS]) {
        CTX.with(|c| {
            if let Some(ctx) = c.borrow_mut().as_mut() {
                ctx.columns = columns;
            }
        });
    }

    /// The digest over the (record id, head) pairs whose head was left out
    /// (encoding) or derived (decoding), in message order, and the id
    /// column.
    pub(crate) fn finish(self) -> Finished {
        let ctx = CTX.with(|c| c.borrow_mut().take());
        let mut digest = [0u8; 20];
        let (ids, unread, columns, unread_entries) = match ctx {
            Some(ctx) => {
                digest.copy_from_slice(&ctx.heads.finalize());
                let unread = ctx.ids.len().saturating_sub(ctx.next);
                let unread_entries = ctx
                    .columns
                    .iter()
                    .map(|c| c.count.saturating_sub(c.taken))
                    .sum();
                (ctx.ids, unread, ctx.columns, unread_entries)
            }
            None => {
                digest.copy_from_slice(&Sha1::new().finalize());
                (Vec::new(), 0, Default::default(), 0)
            }
        };
        Finished {
            digest,
            ids,
            unread,
            columns,
            unread_entries,
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CTX.with(|c| *c.borrow_mut() = previous);
    }
}

/// The protocol version of the message being encoded or decoded on this
/// thread (`None` outside an envelope).
pub(crate) fn version() -> Option<u8> {
    CTX.with(|c| c.borrow().as_ref().map(|c| c.version))
}

fn linked() -> bool {
    version().is_some_and(|v| v >= 4)
}

/// Whether the message being encoded or decoded is of protocol 5 or later
/// (results without ids, sequence numbers and times as differences,
/// acknowledgements by page).
pub(crate) fn compact() -> bool {
    version().is_some_and(|v| v >= 5)
}

/// Whether the message being encoded or decoded is of protocol 6 or later
/// (fetch-new pages acknowledged by the page's token alone).
pub(crate) fn page_tokens() -> bool {
    version().is_some_and(|v| v >= 6)
}

/// Whether the message being encoded or decoded is of protocol 7 or later
/// (linked pack entries' contents in columns before the message).
fn entry_columns() -> bool {
    version().is_some_and(|v| v >= 7)
}

/// Protocol 7, encoding: `content` goes at the end of its kind's column.
fn column_out(code: u8, content: &[u8]) {
    CTX.with(|c| {
        if let Some(ctx) = c.borrow_mut().as_mut() {
            ctx.columns[column_of(code)].push(content);
        }
    });
}

/// Protocol 7, decoding: the next content of the column of kind `code`;
/// `None` when it has no more.
fn column_in(code: u8) -> Option<ByteBuf> {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.as_mut()?;
        ctx.columns[column_of(code)].take().map(ByteBuf::from)
    })
}

/// Protocol 5: a sequence number and time as sent, the differences
/// (wrapping, so any pair round-trips exactly) from the previous pair said
/// in the same message, in message order (the first from 0 and 0).
pub(crate) fn seq_out(seq: u64, time: i64) -> (i64, i64) {
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => {
            let d = (
                seq.wrapping_sub(ctx.seq) as i64,
                time.wrapping_sub(ctx.time),
            );
            (ctx.seq, ctx.time) = (seq, time);
            d
        }
        None => (seq as i64, time),
    })
}

/// Protocol 5: a record's id goes in the message's id column (encoding).
pub(crate) fn id_out(id: &PatientId) {
    CTX.with(|c| {
        if let Some(ctx) = c.borrow_mut().as_mut() {
            ctx.ids.push(*id);
        }
    });
}

/// Protocol 5: the next id of the message's id column (decoding); `None`
/// when the column has no more.
pub(crate) fn id_in() -> Option<PatientId> {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.as_mut()?;
        let id = ctx.ids.get(ctx.next).copied()?;
        ctx.next += 1;
        Some(id)
    })
}

/// The inverse of [`seq_out`], as a message is read in order.
pub(crate) fn seq_in(dseq: i64, dtime: i64) -> (u64, i64) {
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => {
            ctx.seq = ctx.seq.wrapping_add(dseq as u64);
            ctx.time = ctx.time.wrapping_add(dtime);
            (ctx.seq, ctx.time)
        }
        None => (dseq as u64, dtime),
    })
}

fn note_head(id: &PatientId, head: &CommitId) {
    CTX.with(|c| {
        if let Some(ctx) = c.borrow_mut().as_mut() {
            ctx.heads.update(id.as_bytes());
            ctx.heads.update(head.as_bytes());
        }
    });
}

/// Takes `bytes` from the growth budget; false when it is spent.
fn grow(bytes: usize) -> bool {
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => match ctx.growth.checked_sub(bytes) {
            Some(left) => {
                ctx.growth = left;
                true
            }
            None => false,
        },
        None => bytes <= DEFAULT_GROWTH,
    })
}

#[derive(Debug, Serialize)]
enum WireRef<'a> {
    Pack(&'a Bytes),
    Objects(Vec<(u8, ByteBuf)>),
    Linked(Vec<(u8, ByteBuf)>),
}

#[derive(Debug, Deserialize)]
enum Wire {
    Pack(ByteBuf),
    Objects(Vec<(u8, ByteBuf)>),
    Linked(Vec<(u8, ByteBuf)>),
}

/// A pack as it is about to be sent: its wire form, and (protocol 4) the
/// id of its first commit on the wire, which a record then need not
/// repeat as its head.
#[derive(Debug)]
pub struct Outgoing<'a> {
    wire: WireRef<'a>,
    head: Option<CommitId>,
}

impl<'a> Outgoing<'a> {
    /// The wire form of `pack` for the protocol being encoded.
    pub fn new(pack: &'a [u8]) -> Outgoing<'a> {
        let Some(entries) = git::split_pack_entries(pack) else {
            return Outgoing {
                wire: WireRef::Pack(Bytes::new(pack)),
                head: None,
            };
        };
        if linked() {
            let (list, head) = link(entries);
            Outgoing {
                wire: WireRef::Linked(list),
                head,
            }
        } else {
            Outgoing {
                wire: WireRef::Objects(
                    entries
                        .into_iter()
                        .map(|(code, data)| (code, ByteBuf::from(data)))
                        .collect(),
                ),
                head: None,
            }
        }
    }

    /// The head to send for record `id` whose head is `head`: `None` (and
    /// noted in the batch's digest) when the receiver derives it from the
    /// pack.
    pub fn head_to_send<'h>(&self, id: &PatientId, head: &'h CommitId) -> Option<&'h CommitId> {
        if self.head.as_ref() == Some(head) {
            note_head(id, head);
            None
        } else {
            Some(head)
        }
    }
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.wire {
            // Protocol 7: each entry's content goes in its kind's column;
            // the message keeps the kinds, each with empty content.
            WireRef::Linked(list) if entry_columns() => {
                let kinds: Vec<(u8, &Bytes)> = list
                    .iter()
                    .map(|(code, data)| {
                        column_out(*code, data);
                        (*code, Bytes::new(&[]))
                    })
                    .collect();
                WireRefKinds::Linked(kinds).serialize(serializer)
            }
            wire => wire.serialize(serializer),
        }
    }
}

/// Protocol 7's `Linked` form: the kinds, the contents in the columns.
#[derive(Serialize)]
enum WireRefKinds<'a> {
    Linked(Vec<(u8, &'a Bytes)>),
}

/// A pack as received: the rebuilt pack data and, for a linked pack, the
/// id of its first commit on the wire (the record's head when the record
/// does not say it).
#[derive(Debug)]
pub struct Incoming {
    /// Git pack data.
    pub pack: Vec<u8>,
    head: Option<CommitId>,
}

impl Incoming {
    /// Record `id`'s head: `sent` when the record carries one, else the
    /// one the linked pack implies (noted in the batch's digest, which the
    /// envelope checks). `None`: neither.
    pub fn head(&self, id: &PatientId, sent: Option<CommitId>) -> Option<CommitId> {
        if sent.is_some() {
            return sent;
        }
        let head = self.head?;
        note_head(id, &head);
        Some(head)
    }
}

impl<'de> Deserialize<'de> for Incoming {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Incoming, D::Error> {
        match Wire::deserialize(deserializer)? {
            Wire::Pack(bytes) => Ok(Incoming {
                pack: bytes.into_vec(),
                head: None,
            }),
            Wire::Objects(parts) => {
                let pack = git::join_pack_entries(
                    parts.iter().map(|(code, data)| (*code, data.as_slice())),
                )
                .ok_or_else(|| {
                    serde::de::Error::custom(
                        "a pack entry of an unknown kind, or a delta without its base id",
                    )
                })?;
                Ok(Incoming { pack, head: None })
            }
            Wire::Linked(parts) => {
                if !linked() && version().is_some() {
                    return Err(serde::de::Error::custom(
                        "a linked pack in a batch of protocol 3 or older",
                    ));
                }
                let parts = if entry_columns() {
                    parts
                        .into_iter()
                        .map(|(code, inline)| {
                            if !inline.is_empty() {
                                return Err(serde::de::Error::custom(
                                    "a pack entry with its content in the message (protocol 7 sends it in its column)",
                                ));
                            }
                            column_in(code).map(|c| (code, c)).ok_or_else(|| {
                                serde::de::Error::custom(
                                    "more pack entries than the batch's columns hold",
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, D::Error>>()?
                } else {
                    parts
                };
                let (pack, head) = unlink(parts).map_err(serde::de::Error::custom)?;
                Ok(Incoming { pack, head })
            }
        }
    }
}

/// Serializes a pack.
pub fn serialize<S: Serializer>(pack: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    Outgoing::new(pack).serialize(serializer)
}

/// Deserializes a pack.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    Incoming::deserialize(deserializer).map(|i| i.pack)
}

fn hex(id: &[u8; 20]) -> [u8; 40] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 40];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A varint at the start of `bytes`: its value and length.
pub(crate) fn get_varint(bytes: &[u8]) -> Result<(usize, usize), &'static str> {
    let mut n: usize = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = usize::from(b & 0x7f);
        n |= part
            .checked_shl(7 * i as u32)
            .filter(|v| v >> (7 * i as u32) == part)
            .ok_or("a reference out of range")?;
        if b & 0x80 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err("a truncated reference")
}

/// The kind a tree entry of this mode names, when it may be a reference.
fn kind_of_mode(mode: &[u8]) -> Option<git::Kind> {
    match mode {
        b"40000" => Some(git::Kind::Tree),
        b"100644" | b"100755" | b"120000" => Some(git::Kind::Blob),
        _ => None,
    }
}

/// A tree entry's mode, name and id, as slices of the tree.
type EntryParts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// A tree's entries, or `None` if malformed.
fn tree_entries(data: &[u8]) -> Option<Vec<EntryParts<'_>>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let nul = rest.iter().position(|&b| b == 0)?;
        if nul < space {
            return None;
        }
        let id = rest.get(nul + 1..nul + 21)?;
        out.push((&rest[..space], &rest[space + 1..nul], id));
        rest = &rest[nul + 21..];
    }
    Some(out)
}

/// Protocol 4's wire list for a pack's entries: reverse pack order, ids of
/// objects earlier in the list sent as backward distances. Also the id of
/// the first commit in the list.
fn link(entries: Vec<(u8, Vec<u8>)>) -> (Vec<(u8, ByteBuf)>, Option<CommitId>) {
    let mut seen: HashMap<[u8; 20], (usize, git::Kind)> = HashMap::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    let mut head = None;
    for (at, (code, data)) in entries.into_iter().rev().enumerate() {
        let Some(kind) = git::Kind::from_type_code(code) else {
            out.push((code, ByteBuf::from(data)));
            continue;
        };
        let id = *git::hash_object(kind, &data)
            .as_bytes()
            .first_chunk::<20>()
            .unwrap_or(&[0; 20]);
        let back = |target: &[u8], want: git::Kind| -> Option<usize> {
            let target: [u8; 20] = target.try_into().ok()?;
            let &(index, found) = seen.get(&target)?;
            (found == want).then_some(at - index)
        };
        let wire = match kind {
            git::Kind::Commit => data
                .strip_prefix(b"tree ")
                .and_then(|rest| {
                    let (line, rest) = (rest.get(..41)?, rest.get(41..)?);
                    let tree: CommitId = std::str::from_utf8(&line[..40]).ok()?.parse().ok()?;
                    if line[..40] != hex(tree.as_bytes()) || line[40] != b'\n' {
                        return None;
                    }
                    let target = back(tree.as_bytes(), git::Kind::Tree);
                    let mut linked = Vec::with_capacity(rest.len() + 3);
                    put_varint(&mut linked, target?);
                    linked.extend_from_slice(rest);
                    Some((LINKED_COMMIT, linked))
                })
                .unwrap_or((code, data)),
            git::Kind::Tree => match tree_entries(&data) {
                Some(list)
                    if list.iter().any(|(mode, _, id)| {
                        kind_of_mode(mode).is_some_and(|k| back(id, k).is_some())
                    }) =>
                {
                    let mut linked = Vec::with_capacity(data.len());
                    for (mode, name, id) in list {
                        linked.extend_from_slice(mode);
                        linked.push(b' ');
                        linked.extend_from_slice(name);
                        linked.push(0);
                        match kind_of_mode(mode).and_then(|k| back(id, k)) {
                            Some(distance) => put_varint(&mut linked, distance),
                            None => {
                                linked.push(0);
                                linked.extend_from_slice(id);
                            }
                        }
                    }
                    (LINKED_TREE, linked)
                }
                _ => (code, data),
            },
            _ => (code, data),
        };
        if kind == git::Kind::Commit && head.is_none() {
            head = Some(CommitId(id));
        }
        seen.entry(id).or_insert((at, kind));
        out.push((wire.0, ByteBuf::from(wire.1)));
    }
    (out, head)
}

/// The inverse of [`link`]: the pack (in pack order) and the id of the
/// first commit in the list. Refuses a reference that is not backward, is
/// out of range, or names an entry of the wrong kind (or a delta), and
/// stops once rebuilding would pass the growth budget.
fn unlink(parts: Vec<(u8, ByteBuf)>) -> Result<(Vec<u8>, Option<CommitId>), &'static str> {
    // Per entry: the kind and id of a whole object (none for a delta).
    let mut ids: Vec<Option<(git::Kind, [u8; 20])>> = Vec::with_capacity(parts.len());
    let mut rebuilt: Vec<(u8, Vec<u8>)> = Vec::with_capacity(parts.len());
    let mut head = None;
    let target = |ids: &[Option<(git::Kind, [u8; 20])>],
                  at: usize,
                  distance: usize,
                  want: git::Kind|
     -> Result<[u8; 20], &'static str> {
        if distance == 0 {
            return Err("a reference to itself");
        }
        let index = at
            .checked_sub(distance)
            .ok_or("a reference before the first entry")?;
        match ids.get(index).copied().flatten() {
            Some((kind, id)) if kind == want => Ok(id),
            _ => Err("a reference to an entry of the wrong kind"),
        }
    };
    for (at, (code, data)) in parts.into_iter().enumerate() {
        let data = data.into_vec();
        let (kind, bytes) = match code {
            REF_DELTA => {
                ids.push(None);
                rebuilt.push((code, data));
                continue;
            }
            LINKED_COMMIT => {
                let (distance, used) = get_varint(&data)?;
                let tree = target(&ids, at, distance, git::Kind::Tree)?;
                let rest = &data[used..];
                if !grow(46usize.saturating_sub(used)) {
                    return Err("references rebuild to too many bytes");
                }
                let mut commit = Vec::with_capacity(46 + rest.len());
                commit.extend_from_slice(b"tree ");
                commit.extend_from_slice(&hex(&tree));
                commit.push(b'\n');
                commit.extend_from_slice(rest);
                (git::Kind::Commit, commit)
            }
            LINKED_TREE => {
                let mut tree = Vec::with_capacity(data.len() + 64);
                let mut rest = &data[..];
                let mut added = 0usize;
                while !rest.is_empty() {
                    let space = rest
                        .iter()
                        .position(|&b| b == b' ')
                        .ok_or("a malformed linked tree")?;
                    let nul = rest
                        .iter()
                        .position(|&b| b == 0)
                        .filter(|&nul| nul > space)
                        .ok_or("a malformed linked tree")?;
                    let mode = &rest[..space];
                    tree.extend_from_slice(&rest[..=nul]);
                    rest = &rest[nul + 1..];
                    let (distance, used) = get_varint(rest)?;
                    rest = &rest[used..];
                    if distance == 0 {
                        let id = rest.get(..20).ok_or("a truncated linked tree")?;
                        tree.extend_from_slice(id);
                        rest = &rest[20..];
                    } else {
                        let want = kind_of_mode(mode)
                            .ok_or("a reference from a tree entry of another mode")?;
                        tree.extend_from_slice(&target(&ids, at, distance, want)?);
                        added += 20usize.saturating_sub(used);
                    }
                }
                if !grow(added) {
                    return Err("references rebuild to too many bytes");
                }
                (git::Kind::Tree, tree)
            }
            code => (
                git::Kind::from_type_code(code).ok_or("a pack entry of an unknown kind")?,
                data,
            ),
        };
        let id = *git::hash_object(kind, &bytes)
            .as_bytes()
            .first_chunk::<20>()
            .ok_or("an object id that is not 20 bytes")?;
        if kind == git::Kind::Commit && head.is_none() {
            head = Some(CommitId(id));
        }
        ids.push(Some((kind, id)));
        rebuilt.push((kind.type_code(), bytes));
    }
    let pack = git::join_pack_entries(rebuilt.iter().rev().map(|(c, d)| (*c, d.as_slice())))
        .ok_or("a pack entry of an unknown kind, or a delta without its base id")?;
    Ok((pack, head))
}

#[cfg(test)]
mod tests {
    use crate::envelope;
    use crate::sync::{PushRecord, PushRequest};
    use crate::{CommitId, PatientId};
    use chartsync_git::{Kind, Object, write_pack_only};

    fn request(pack: Vec<u8>) -> PushRequest {
        PushRequest {
            records: vec![PushRecord {
                id: PatientId::random(),
                expected: None,
                head: CommitId::from_slice(&[7; 20]).expect("20 bytes"),
                pack,
            }],
        }
    }

    /// The pack back, in protocol 3 and 4 (the same), and the size of the
    /// protocol 3 envelope (4 has a 20-byte digest more).
    fn round_trip(pack: Vec<u8>) -> (Vec<u8>, usize) {
        let bytes = envelope::encode_as(&request(pack.clone()), 3).expect("encode");
        let back: PushRequest = envelope::decode(&bytes, 1 << 20).expect("decode");
        let v4 = envelope::encode(&request(pack)).expect("encode");
        let back4: PushRequest = envelope::decode(&v4, 1 << 20).expect("decode");
        assert_eq!(back4.records[0].pack, back.records[0].pack);
        (back.records[0].pack.clone(), bytes.len())
    }

    #[test]
    fn packs_arrive_as_sent_and_smaller() {
        let objects = vec![
            Object::new(Kind::Blob, b"name: A\ncatchment: north\n".to_vec()),
            Object::new(Kind::Blob, b"visits: []\n".to_vec()),
        ];
        let pack = write_pack_only(&objects, 0);
        let (back, split_len) = round_trip(pack.clone());
        assert_eq!(back, pack);
        // The same pack sent byte for byte is larger.
        let raw = rmp_serde::to_vec_named(
            &serde_json::json!({"records": [{"pack": serde_bytes::Bytes::new(&pack)}]}),
        )
        .expect("encode");
        assert!(split_len < raw.len(), "{split_len} >= {}", raw.len());

        // A broken pack travels unchanged.
        let mut broken = pack.clone();
        let middle = broken.len() / 2;
        broken[middle] ^= 1;
        assert_eq!(round_trip(broken.clone()).0, broken);
        assert_eq!(round_trip(b"not a pack".to_vec()).0, b"not a pack".to_vec());
    }

    #[test]
    fn an_unknown_object_kind_is_refused() {
        #[derive(serde::Serialize)]
        struct Hostile {
            records: Vec<HostileRecord>,
        }
        #[derive(serde::Serialize)]
        struct HostileRecord {
            id: PatientId,
            expected: Option<CommitId>,
            head: CommitId,
            pack: HostilePack,
        }
        #[derive(serde::Serialize)]
        enum HostilePack {
            Objects(Vec<(u8, serde_bytes::ByteBuf)>),
        }
        let message = Hostile {
            records: vec![HostileRecord {
                id: PatientId::random(),
                expected: None,
                head: CommitId::from_slice(&[7; 20]).expect("20 bytes"),
                pack: HostilePack::Objects(vec![(6, serde_bytes::ByteBuf::from(vec![1, 2]))]),
            }],
        };
        let bytes = envelope::encode(&message).expect("encode");
        assert!(envelope::decode::<PushRequest>(&bytes, 1 << 20).is_err());
    }

    // --- protocol 4: linked packs ---

    use super::{LINKED_COMMIT, LINKED_TREE};
    use crate::envelope::EnvelopeError;
    use crate::sync::{PullResponse, RecordUpdate};
    use chartsync_git::{Commit, Signature, build_tree, encode_commit};

    /// A record's pack as the store writes it: per commit (oldest first),
    /// the commit, then its new trees and blobs, root first. Returns the
    /// pack and the head.
    fn history(versions: &[&[(&str, &str)]]) -> (Vec<u8>, CommitId) {
        let mut objects: Vec<Object> = Vec::new();
        let mut parent = None;
        let mut seen = std::collections::HashSet::new();
        for (n, files) in versions.iter().enumerate() {
            let files = files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect();
            let (tree, mut parts) = build_tree(&files).expect("tree");
            let who = Signature::new(
                "chartsync",
                "chartsync@clinic-a",
                1_700_000_000 + n as i64,
                60,
            )
            .expect("signature");
            let commit = Object::new(
                Kind::Commit,
                encode_commit(&Commit {
                    tree,
                    parents: parent.into_iter().collect(),
                    author: who.clone(),
                    committer: who,
                    message: "edit\n\nChartsync-Instance: clinic-a\n".into(),
                }),
            );
            parent = Some(commit.id);
            objects.push(commit);
            parts.reverse();
            objects.extend(parts.into_iter().filter(|o| seen.insert(o.id)));
        }
        let head = CommitId::from_slice(parent.expect("a commit").as_bytes()).expect("20 bytes");
        (write_pack_only(&objects, 0), head)
    }

    fn patient(n: usize) -> Vec<(&'static str, String)> {
        vec![
            (
                "patient.yaml",
                format!("name: Patient {n}\ncatchment: north\n"),
            ),
            (
                "notes/visits.yaml",
                format!("- date: 2026-01-{:02}\n", n % 28 + 1),
            ),
            ("notes/allergies.yaml", "- none\n".to_string()),
        ]
    }

    fn update(id: PatientId, head: CommitId, pack: Vec<u8>) -> RecordUpdate {
        RecordUpdate {
            id,
            head,
            seq: 7,
            time: 1_700_000_000,
            base: None,
            pack,
        }
    }

    #[test]
    fn linked_packs_round_trip_without_the_ids_the_receiver_computes() {
        let files: Vec<Vec<(&str, String)>> = (0..3).map(patient).collect();
        fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
            v.iter().map(|(p, c)| (*p, c.as_str())).collect()
        }
        let one = as_refs(&files[0]);
        let two = as_refs(&files[1]);
        let three = as_refs(&files[2]);
        let (pack, head) = history(&[&one, &two, &three]);
        let (single, single_head) = history(&[&one]);
        let message = PullResponse {
            updates: vec![
                update(PatientId::random(), head, pack.clone()),
                update(PatientId::random(), single_head, single.clone()),
                // A head that is not the pack's last commit is sent.
                update(PatientId::random(), CommitId([9; 20]), single.clone()),
                // No pack at all.
                update(PatientId::random(), CommitId([8; 20]), Vec::new()),
            ],
            cursor: 9,
            more: false,
        };
        let bytes = envelope::encode(&message).expect("encode");
        let back: PullResponse = envelope::decode(&bytes, 1 << 20).expect("decode");
        for (sent, got) in message.updates.iter().zip(&back.updates) {
            assert_eq!(got.pack, sent.pack, "the same pack, byte for byte");
            assert_eq!(got.head, sent.head);
            assert_eq!(got.id, sent.id);
        }
        // Version 3 carries every id: per record 20 (head) + 20 (the tree
        // in the commit, as 40 hex digits) + 20 per file or folder more.
        let (_, v3) = envelope::prepare(&message, 3).expect("v3");
        let (_, v4) = envelope::prepare(&message, 4).expect("v4");
        assert!(
            v3.len() >= v4.len() + 2 * (20 + 40 + 4 * 20),
            "v3 {} bytes, v4 {} bytes",
            v3.len(),
            v4.len()
        );
        // And a version 3 batch still decodes as before.
        let old = envelope::encode_as(&message, 3).expect("v3");
        let back: PullResponse = envelope::decode(&old, 1 << 20).expect("decode v3");
        assert_eq!(back.updates[0].pack, pack);
        assert_eq!(back.updates[0].head, head);
    }

    #[test]
    fn a_corrupted_object_in_a_linked_pack_is_caught_by_the_heads_digest() {
        let files = patient(1);
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let (pack, head) = history(&[&refs]);
        let message = PullResponse {
            updates: vec![update(PatientId::random(), head, pack)],
            cursor: 1,
            more: false,
        };
        let (marker, mut raw) = envelope::prepare(&message, 4).expect("prepare");
        let at = raw
            .windows(9)
            .position(|w| w == b"Patient 1")
            .expect("the blob in the message");
        raw[at + 8] = b'2';
        let mut bytes = marker.clone();
        bytes.extend(zstd::bulk::compress(&raw, 3).expect("compress"));
        assert!(matches!(
            envelope::decode::<PullResponse>(&bytes, 1 << 20),
            Err(EnvelopeError::HeadsDigest)
        ));
        // The same message untouched decodes.
        let (marker, raw) = envelope::prepare(&message, 4).expect("prepare");
        let mut bytes = marker;
        bytes.extend(zstd::bulk::compress(&raw, 3).expect("compress"));
        assert!(envelope::decode::<PullResponse>(&bytes, 1 << 20).is_ok());
    }

    /// A push of one record whose pack is `entries` in the linked form
    /// (protocol `version`: 4 to 6 with the contents in the message, 7 in
    /// the batch's columns).
    fn linked(entries: Vec<(u8, Vec<u8>)>, version: u8) -> Vec<u8> {
        linked_with_head(entries, None, version)
    }

    fn linked_with_head(
        entries: Vec<(u8, Vec<u8>)>,
        head: Option<CommitId>,
        version: u8,
    ) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Hostile {
            records: Vec<HostileRecord>,
        }
        #[derive(serde::Serialize)]
        struct HostileRecord {
            id: PatientId,
            expected: Option<CommitId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            head: Option<CommitId>,
            pack: HostilePack,
        }
        enum HostilePack {
            Linked(Vec<(u8, serde_bytes::ByteBuf)>),
        }
        impl serde::Serialize for HostilePack {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[derive(serde::Serialize)]
                enum Form<'a> {
                    Linked(Vec<(u8, &'a serde_bytes::Bytes)>),
                }
                let HostilePack::Linked(list) = self;
                let columns = super::entry_columns();
                Form::Linked(
                    list.iter()
                        .map(|(code, data)| {
                            if columns {
                                super::column_out(*code, data);
                                (*code, serde_bytes::Bytes::new(&[]))
                            } else {
                                (*code, serde_bytes::Bytes::new(data))
                            }
                        })
                        .collect(),
                )
                .serialize(s)
            }
        }
        let message = Hostile {
            records: vec![HostileRecord {
                id: PatientId::random(),
                expected: None,
                head,
                pack: HostilePack::Linked(
                    entries
                        .into_iter()
                        .map(|(k, d)| (k, serde_bytes::ByteBuf::from(d)))
                        .collect(),
                ),
            }],
        };
        envelope::encode_as(&message, version).expect("encode")
    }

    fn commit_body() -> Vec<u8> {
        b"author a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nm\n".to_vec()
    }

    fn linked_commit(distance: &[u8]) -> (u8, Vec<u8>) {
        let mut data = distance.to_vec();
        data.extend(commit_body());
        (LINKED_COMMIT, data)
    }

    fn linked_tree(mode: &str, reference: &[u8]) -> (u8, Vec<u8>) {
        let mut data = format!("{mode} a.yaml\0").into_bytes();
        data.extend_from_slice(reference);
        (LINKED_TREE, data)
    }

    #[test]
    fn malformed_references_are_refused() {
        let blob = (3u8, b"a: 1\n".to_vec());
        let tree = (2u8, b"100644 a.yaml\0aaaaaaaaaaaaaaaaaaaa".to_vec());
        let delta = (7u8, vec![5u8; 24]);
        // Sanity: a well-formed linked pack decodes (with its head said:
        // a derived head needs the batch's digest, which this lacks).
        let entries = vec![
            blob.clone(),
            linked_tree("100644", &[1]),
            linked_commit(&[1]),
        ];
        for version in [4, 6, 7] {
            let good = linked_with_head(entries.clone(), Some(CommitId([7; 20])), version);
            let back: PushRequest = envelope::decode(&good, 1 << 20).expect("a good linked pack");
            assert!(!back.records[0].pack.is_empty());
            assert!(matches!(
                envelope::decode::<PushRequest>(&linked(entries.clone(), version), 1 << 20),
                Err(EnvelopeError::HeadsDigest)
            ));
        }
        type Entries = Vec<(u8, Vec<u8>)>;
        let hostile: Vec<(&str, Entries)> = vec![
            (
                "a reference to itself",
                vec![tree.clone(), linked_commit(&[0])],
            ),
            (
                "before the first entry",
                vec![tree.clone(), linked_commit(&[2])],
            ),
            (
                "forward (the first entry)",
                vec![linked_commit(&[1]), tree.clone()],
            ),
            (
                "a commit's tree that is a blob",
                vec![blob.clone(), linked_commit(&[1])],
            ),
            (
                "a commit's tree that is a delta",
                vec![delta.clone(), linked_commit(&[1])],
            ),
            (
                "a tree entry naming a commit",
                vec![
                    tree.clone(),
                    (1, commit_body()),
                    linked_tree("100644", &[1]),
                ],
            ),
            (
                "a file entry naming a tree",
                vec![tree.clone(), linked_tree("100644", &[1])],
            ),
            (
                "a folder entry naming a blob",
                vec![blob.clone(), linked_tree("40000", &[1])],
            ),
            (
                "a submodule by reference",
                vec![blob.clone(), linked_tree("160000", &[1])],
            ),
            (
                "a tree entry naming a delta",
                vec![delta, linked_tree("100644", &[1])],
            ),
            (
                "a truncated explicit id",
                vec![linked_tree("100644", &[0, 1, 2, 3])],
            ),
            (
                "a varint that never ends",
                vec![blob.clone(), linked_tree("100644", &[0xff; 12])],
            ),
            (
                "a varint past usize",
                vec![
                    blob.clone(),
                    linked_commit(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
                ],
            ),
            ("an empty linked commit", vec![(LINKED_COMMIT, Vec::new())]),
            (
                "a tree entry without its NUL",
                vec![blob.clone(), (LINKED_TREE, b"100644 a.yaml".to_vec())],
            ),
            ("an unknown kind", vec![(10, b"x".to_vec())]),
        ];
        for (what, entries) in hostile {
            // the same references with the contents in the message and in
            // the columns
            for version in [6, 7] {
                let bytes = linked(entries.clone(), version);
                assert!(
                    envelope::decode::<PushRequest>(&bytes, 1 << 20).is_err(),
                    "{what}, protocol {version}: accepted"
                );
            }
        }
        // A version 3 batch may not carry the linked form.
        let good = linked_with_head(entries, Some(CommitId([7; 20])), 4);
        let v3 = {
            let raw = zstd::bulk::decompress(&good[24..], 1 << 20).expect("the message");
            let mut v = b"CSB\x03".to_vec();
            v.extend(zstd::bulk::compress(&raw, 3).expect("compress"));
            v
        };
        assert!(envelope::decode::<PushRequest>(&v3, 1 << 20).is_err());
    }

    #[test]
    fn references_cannot_blow_a_small_batch_up() {
        // 20,000 one-byte references to one blob: each rebuilds to 20 bytes.
        let mut tree = Vec::new();
        for n in 0..20_000 {
            tree.extend(format!("100644 {n:05}\0").into_bytes());
            tree.push(1);
        }
        for version in [6, 7] {
            let bytes = linked(
                vec![(3, b"x".to_vec()), (LINKED_TREE, tree.clone())],
                version,
            );
            assert!(bytes.len() < 64 << 10, "{} bytes", bytes.len());
            assert!(envelope::decode::<PushRequest>(&bytes, 1 << 20).is_err());
        }
    }
}
