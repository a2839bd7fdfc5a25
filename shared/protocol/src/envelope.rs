//! The binary envelope around sync messages: a 4-byte marker carrying the
//! protocol's major version, then a zstd frame of MessagePack.
//!
//! Git packs inside are written without zlib compression, so zstd compresses
//! across all records of a batch (their YAML looks alike).

use std::io::Read;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::PatientId;
use super::sync::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use super::wire_pack::{COLUMNS, Column, Scope, get_varint, put_varint};

/// The first version whose packs are linked and whose envelope carries
/// the digest of the heads the receiver derives.
const LINKED_VERSION: u8 = 4;
/// The digest's length (SHA-1).
const DIGEST_LEN: usize = 20;
/// The first version whose records' ids travel as one column before the
/// message.
const ID_COLUMN_VERSION: u8 = 5;
/// The first version whose linked pack entries' contents travel in
/// columns (by kind) before the message.
const ENTRY_COLUMNS_VERSION: u8 = 7;

const MAGIC: [u8; 3] = *b"CSB";

/// zstd level for batches on a LAN or an unknown link ([`crate::link`]
/// picks a higher one for a slow link). Measured on batches of 1000 realistic records:
/// level 3 compresses one in 7 ms, level 6 in 22 ms and 4% smaller, level
/// 9 in 44 ms and 7% smaller. Clinics sync over slow links, where 4% of the
/// bytes is worth more than 15 ms of CPU; beyond level 6 it is not.
const LEVEL: i32 = crate::link::DEFAULT_LEVEL;

/// Why an envelope could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Does not start with the marker.
    #[error("not a chartsync batch (bad marker)")]
    Marker,
    /// Another major version.
    #[error(
        "batch protocol version {0} is not supported (this build speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})"
    )]
    Version(u8),
    /// The zstd frame is broken.
    #[error("batch is not valid zstd data")]
    Compression(#[source] std::io::Error),
    /// Decompresses to more than allowed.
    #[error("batch decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The frame does not say how large it is.
    #[error("batch frame does not declare its decompressed size")]
    UndeclaredSize,
    /// The frame holds more or less than it declares.
    #[error("batch frame declares {declared} bytes but holds {actual} or more")]
    SizeMismatch {
        /// What the frame header says.
        declared: usize,
        /// What decompressing gave (stopped just past the declaration).
        actual: usize,
    },
    /// The message inside does not decode.
    #[error("batch message is malformed")]
    Decode(#[source] rmp_serde::decode::Error),
    /// The heads the receiver derived from the batch's packs are not the
    /// ones the sender meant (protocol 4): an object was corrupted or
    /// rebuilt wrongly.
    #[error(
        "the heads rebuilt from the batch's packs do not match the batch's digest (an object was corrupted in transit)"
    )]
    HeadsDigest,
    /// The message could not be encoded.
    #[error("could not encode batch message")]
    Encode(#[source] rmp_serde::encode::Error),
    /// The id column (protocol 5) is malformed or does not match the
    /// records.
    #[error("the batch's column of record ids is malformed: {0}")]
    Ids(&'static str),
    /// The entry columns (protocol 7) are malformed or do not match the
    /// packs.
    #[error("the batch's columns of pack entries are malformed: {0}")]
    Columns(&'static str),
}

/// Encodes a message (as [`PROTOCOL_VERSION`]).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EnvelopeError> {
    encode_as(message, PROTOCOL_VERSION)
}

/// Encodes a message marked as protocol `version` (a reply to a peer that
/// speaks an older version carries that version). The message itself must
/// be one that version can carry.
pub fn encode_as<T: Serialize>(message: &T, version: u8) -> Result<Vec<u8>, EnvelopeError> {
    encode_at(message, version, LEVEL)
}

/// Like [`encode_as`], compressed at zstd `level` (see
/// [`crate::link::LinkEstimate::level`]).
pub fn encode_at<T: Serialize>(
    message: &T,
    version: u8,
    level: i32,
) -> Result<Vec<u8>, EnvelopeError> {
    let (marker, raw) = prepare(message, version)?;
    let mut out = Vec::with_capacity(raw.len() / 3 + 36);
    out.extend_from_slice(&marker);
    let compressed = zstd::bulk::compress(&raw, level).map_err(EnvelopeError::Compression)?;
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// A message ready to be compressed as it is sent ([`compress_to`]): the
/// envelope's marker (in protocol 4 followed by the heads' digest, 20
/// bytes) and the uncompressed message.
pub fn prepare<T: Serialize>(
    message: &T,
    version: u8,
) -> Result<(Vec<u8>, Vec<u8>), EnvelopeError> {
    let scope = Scope::enter(version, 0);
    let message = rmp_serde::to_vec_named(message).map_err(EnvelopeError::Encode)?;
    let finished = scope.finish();
    let mut marker = Vec::with_capacity(4 + DIGEST_LEN);
    marker.extend_from_slice(&MAGIC);
    marker.push(version);
    if version >= LINKED_VERSION {
        marker.extend_from_slice(&finished.digest);
    }
    if version < ID_COLUMN_VERSION {
        return Ok((marker, message));
    }
    // Protocol 5: the records' ids (left out of their maps) as one column
    // first: a varint count, then 16 bytes each. Random bytes side by side
    // cost zstd 16 bytes an id; spread between the packs, about 21.
    let columns: usize = finished.columns.iter().map(|c| c.bytes.len()).sum();
    let mut raw =
        Vec::with_capacity(message.len() + 10 + 16 * finished.ids.len() + columns * 11 / 10);
    put_varint(&mut raw, finished.ids.len());
    for id in &finished.ids {
        raw.extend_from_slice(id.as_bytes());
    }
    if version >= ENTRY_COLUMNS_VERSION {
        // Protocol 7: the packs' entry contents, a column per kind (commits,
        // trees, blobs, deltas): each column's count and lengths (varints),
        // then the contents of every column back to back. Commits beside
        // commits and files beside files compress better than interleaved
        // with each other and the message's framing.
        for column in &finished.columns {
            put_varint(&mut raw, column.count);
            raw.extend_from_slice(&column.lengths);
        }
        for column in &finished.columns {
            raw.extend_from_slice(&column.bytes);
        }
    }
    raw.extend_from_slice(&message);
    Ok((marker, raw))
}

/// Protocol 7: the entry columns at the start of `raw` (after the id
/// column), and the message after them. Memory: a copy of what the
/// columns hold, whatever counts they claim.
fn entry_columns(raw: &[u8]) -> Result<([Column; COLUMNS], &[u8]), EnvelopeError> {
    let bad = EnvelopeError::Columns;
    let mut rest = raw;
    // (count, the lengths' bytes, their sum) of each column
    let mut heads: [(usize, &[u8], usize); COLUMNS] = [(0, &[], 0); COLUMNS];
    for head in &mut heads {
        let (count, at) = get_varint(rest).map_err(|_| bad("a bad count"))?;
        rest = &rest[at..];
        let start = rest;
        let mut sum = 0usize;
        for _ in 0..count {
            let (n, at) = get_varint(rest).map_err(|_| bad("a bad length"))?;
            rest = &rest[at..];
            sum = sum
                .checked_add(n)
                .filter(|&t| t <= raw.len())
                .ok_or(bad("contents longer than the batch"))?;
        }
        *head = (count, &start[..start.len() - rest.len()], sum);
    }
    let mut columns: [Column; COLUMNS] = Default::default();
    for (column, (count, lengths, sum)) in columns.iter_mut().zip(heads) {
        if sum > rest.len() {
            return Err(bad("contents longer than the batch"));
        }
        let (bytes, after) = rest.split_at(sum);
        *column = Column::new(count, lengths.to_vec(), bytes.to_vec());
        rest = after;
    }
    Ok((columns, rest))
}

/// Protocol 5: the id column at the start of a decompressed batch, and the
/// message after it.
fn id_column(raw: &[u8]) -> Result<(Vec<PatientId>, &[u8]), EnvelopeError> {
    let (count, at) = get_varint(raw).map_err(|_| EnvelopeError::Ids("a bad count"))?;
    let rest = &raw[at..];
    let len = count
        .checked_mul(16)
        .filter(|&n| n <= rest.len())
        .ok_or(EnvelopeError::Ids("more ids than the batch holds"))?;
    let (column, message) = rest.split_at(len);
    let (chunks, _) = column.as_chunks::<16>();
    let ids = chunks
        .iter()
        .map(|c| PatientId::from_bytes(*c).map_err(|_| EnvelopeError::Ids("not a patient id")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, message))
}

/// Compresses a [`prepare`]d message into `out` at zstd `level`, block by
/// block (so the first bytes can leave while the rest is compressed),
/// declaring its size in the frame as [`decode`] requires. The envelope is
/// the marker followed by what this writes.
pub fn compress_to<W: std::io::Write>(raw: &[u8], level: i32, out: W) -> std::io::Result<()> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.set_pledged_src_size(Some(raw.len() as u64))?;
    encoder.include_contentsize(true)?;
    // Each piece is flushed (ends a zstd block, keeps the window), so its
    // bytes leave before the next piece is compressed.
    for piece in raw.chunks(128 << 10) {
        std::io::Write::write_all(&mut encoder, piece)?;
        std::io::Write::flush(&mut encoder)?;
    }
    encoder.finish()?;
    Ok(())
}

/// Decodes a message, refusing anything that decompresses to more than
/// `limit` bytes. The zstd frame must declare its size (every encoder of
/// ours does): a larger declaration is refused before anything is
/// decompressed, and exactly the declared size is allocated, so a small
/// request can never make the receiver allocate more than `limit`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, EnvelopeError> {
    decode_versioned(bytes, limit).map(|(message, _)| message)
}

/// Like [`decode`], also returning the protocol version the batch is
/// marked with (any from [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]).
pub fn decode_versioned<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, u8), EnvelopeError> {
    let rest = bytes.strip_prefix(&MAGIC).ok_or(EnvelopeError::Marker)?;
    let (&version, frame) = rest.split_first().ok_or(EnvelopeError::Marker)?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(EnvelopeError::Version(version));
    }
    let (digest, frame) = if version >= LINKED_VERSION {
        let (digest, frame) = frame
            .split_first_chunk::<DIGEST_LEN>()
            .ok_or(EnvelopeError::Marker)?;
        (Some(*digest), frame)
    } else {
        (None, frame)
    };
    let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => n,
        Ok(None) => return Err(EnvelopeError::UndeclaredSize),
        Err(_) => {
            return Err(EnvelopeError::Compression(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a zstd frame",
            )));
        }
    };
    let size = usize::try_from(declared)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or(EnvelopeError::TooLarge { limit })?;
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(EnvelopeError::Compression)?;
    let mut raw = Vec::with_capacity(size);
    let read = decoder
        .take(size as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(EnvelopeError::Compression)?;
    if read != size {
        return Err(EnvelopeError::SizeMismatch {
            declared: size,
            actual: read,
        });
    }
    // Rebuilding a linked pack's references may add at most as many bytes
    // as the message holds.
    let scope = Scope::enter(version, raw.len());
    let body = if version >= ID_COLUMN_VERSION {
        let (ids, body) = id_column(&raw)?;
        scope.read_ids(ids);
        if version >= ENTRY_COLUMNS_VERSION {
            let (columns, body) = entry_columns(body)?;
            scope.read_columns(columns);
            body
        } else {
            body
        }
    } else {
        &raw[..]
    };
    let message = rmp_serde::from_slice(body).map_err(EnvelopeError::Decode)?;
    let finished = scope.finish();
    if finished.unread > 0 {
        return Err(EnvelopeError::Ids("more ids than records"));
    }
    if finished.unread_entries > 0 {
        return Err(EnvelopeError::Columns("more entries than the packs have"));
    }
    if digest.is_some_and(|sent| sent != finished.digest) {
        return Err(EnvelopeError::HeadsDigest);
    }
    Ok((message, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PatientId;
    use crate::sync::{PushOutcome, PushResponse, PushResult};

    fn sample() -> PushResponse {
        PushResponse {
            results: vec![
                PushResult {
                    id: Some(PatientId::random()),
                    outcome: PushOutcome::Conflict {
                        head: crate::CommitId([7; 20]),
                        seq: 42,
                        pack: vec![1, 2, 3],
                    },
                },
                PushResult {
                    id: Some(PatientId::random()),
                    outcome: PushOutcome::Busy,
                },
            ],
        }
    }

    #[test]
    fn a_message_compressed_as_it_is_sent_decodes() {
        let msg = sample();
        let (marker, raw) = prepare(&msg, PROTOCOL_VERSION).expect("prepare");
        let mut bytes = marker.to_vec();
        compress_to(&raw, 19, &mut bytes).expect("compress");
        let back: PushResponse = decode(&bytes, 1 << 20).expect("decode");
        // Protocol 5 leaves the ids out: results are in request order.
        assert_eq!(back.results[1].id, None);
        assert!(matches!(back.results[1].outcome, PushOutcome::Busy));
    }

    #[test]
    fn round_trips() {
        let msg = sample();
        let bytes = encode(&msg).expect("encode");
        let back: PushResponse = decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(back.results.len(), 2);
        assert_eq!(back.results[0].id, None);
        let v4: PushResponse =
            decode(&encode_as(&msg, 4).expect("encode"), 1 << 20).expect("decode");
        assert_eq!(v4.results[0].id, msg.results[0].id);
        match &back.results[0].outcome {
            PushOutcome::Conflict { pack, seq, .. } => {
                assert_eq!(pack, &vec![1, 2, 3]);
                assert_eq!(*seq, 42);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_input() {
        let bytes = encode(&sample()).expect("encode");
        assert!(matches!(
            decode::<PushResponse>(b"", 100),
            Err(EnvelopeError::Marker)
        ));
        assert!(matches!(
            decode::<PushResponse>(b"XXXX1234", 100),
            Err(EnvelopeError::Marker)
        ));
        // Version 2 batches are still read.
        let v2 = encode_as(&sample(), 2).expect("encode");
        let (_, version) = decode_versioned::<PushResponse>(&v2, 1 << 20).expect("decode v2");
        assert_eq!(version, 2);
        let mut wrong_version = bytes.clone();
        wrong_version[3] = 1;
        assert!(matches!(
            decode::<PushResponse>(&wrong_version, 1 << 20),
            Err(EnvelopeError::Version(1))
        ));
        wrong_version[3] = 9;
        assert!(matches!(
            decode::<PushResponse>(&wrong_version, 1 << 20),
            Err(EnvelopeError::Version(9))
        ));
        assert!(decode::<PushResponse>(&bytes[..bytes.len() - 3], 1 << 20).is_err());
        assert!(matches!(
            decode::<PushResponse>(&bytes, 10),
            Err(EnvelopeError::TooLarge { .. })
        ));
        // A bomb: 64 MiB of zeros compresses to a few KiB.
        let bomb = {
            let mut v = MAGIC.to_vec();
            v.push(PROTOCOL_VERSION);
            v.extend([0u8; DIGEST_LEN]);
            v.extend(zstd::bulk::compress(&vec![0u8; 64 << 20], 3).expect("compress"));
            v
        };
        assert!(matches!(
            decode::<PushResponse>(&bomb, 1 << 20),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    fn framed(zstd_frames: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(PROTOCOL_VERSION);
        out.extend_from_slice(&Scope::enter(PROTOCOL_VERSION, 0).finish().digest);
        out.extend_from_slice(zstd_frames);
        out
    }

    #[test]
    fn a_bomb_is_refused_from_its_declared_size_before_decompressing() {
        // 600 MiB of zeros compress to a few KiB.
        let raw = vec![0u8; 600 << 20];
        let bomb = framed(&zstd::bulk::compress(&raw, 3).expect("compress"));
        drop(raw);
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        assert!(matches!(
            decode::<PushResponse>(&bomb, 64 << 20),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_frame_without_a_declared_size_or_with_a_false_one_is_refused() {
        let message = rmp_serde::to_vec_named(&sample()).expect("encode");
        let mut streamed = Vec::new();
        {
            let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 3).expect("encoder");
            std::io::Write::write_all(&mut encoder, &message).expect("write");
            encoder.finish().expect("finish");
        }
        assert!(matches!(
            decode::<PushResponse>(&framed(&streamed), 1 << 20),
            Err(EnvelopeError::UndeclaredSize)
        ));
        // Two frames: the first declares its own size, the second adds more.
        let mut two = zstd::bulk::compress(&message, 3).expect("compress");
        two.extend(zstd::bulk::compress(&vec![7u8; 1 << 20], 3).expect("compress"));
        assert!(matches!(
            decode::<PushResponse>(&framed(&two), 1 << 20),
            Err(EnvelopeError::SizeMismatch { .. })
        ));
    }

    /// A protocol 5 batch with its id column replaced by `column` (the
    /// message after it kept).
    fn with_column(message: &impl Serialize, column: &[u8]) -> Vec<u8> {
        let (marker, raw) = prepare(message, 5).expect("prepare");
        let (_, body) = id_column(&raw).expect("column");
        let mut new = column.to_vec();
        new.extend_from_slice(body);
        let mut out = marker;
        out.extend(zstd::bulk::compress(&new, 3).expect("compress"));
        out
    }

    #[test]
    fn record_ids_travel_as_one_column_and_must_match_the_records() {
        use crate::sync::{PullResponse, RecordUpdate};
        let updates: Vec<RecordUpdate> = (0..3u8)
            .map(|n| RecordUpdate {
                id: PatientId::random(),
                head: crate::CommitId([n; 20]),
                seq: u64::from(n),
                time: 0,
                base: None,
                pack: b"not a pack".to_vec(),
            })
            .collect();
        let page = PullResponse {
            updates: updates.clone(),
            cursor: 3,
            more: false,
        };
        let bytes = encode_as(&page, 5).expect("encode");
        let back: PullResponse = decode(&bytes, 1 << 20).expect("decode");
        let ids: Vec<PatientId> = back.updates.iter().map(|u| u.id).collect();
        assert_eq!(ids, updates.iter().map(|u| u.id).collect::<Vec<_>>());
        let (_, raw) = prepare(&page, 5).expect("prepare");
        assert_eq!(raw[0], 3, "three ids first");
        assert_eq!(&raw[1..17], updates[0].id.as_bytes());

        let column = |ids: &[PatientId], count: u8| {
            let mut c = vec![count];
            for id in ids {
                c.extend_from_slice(id.as_bytes());
            }
            c
        };
        let two: Vec<PatientId> = ids[..2].to_vec();
        let mut four = ids.clone();
        four.push(PatientId::random());
        let mut not_v4 = column(&ids, 3);
        not_v4[1 + 6] = 0x10;
        for (bad, why) in [
            (column(&two, 2), "more records than ids"),
            (column(&four, 4), "more ids than records"),
            (column(&ids, 9), "a count beyond the batch"),
            (not_v4, "not a version 4 UUID"),
            (vec![0x80], "a truncated count"),
        ] {
            assert!(
                decode::<PullResponse>(&with_column(&page, &bad), 1 << 20).is_err(),
                "{why}"
            );
        }
        // Older versions keep the ids in the records' maps.
        let (_, raw4) = prepare(&page, 4).expect("prepare");
        assert_eq!(raw4[0] & 0xf0, 0x80, "a MessagePack map first");
    }

    /// A push of two records (blob, tree, commit each), heads said.
    fn two_records() -> crate::sync::PushRequest {
        use chartsync_git::{Kind, Object, write_pack_only};
        let record = |n: u8| {
            let blob = Object::new(Kind::Blob, format!("a: {n}\n").into_bytes());
            let mut tree = b"100644 a.yaml\0".to_vec();
            tree.extend_from_slice(blob.id.as_bytes());
            let tree = Object::new(Kind::Tree, tree);
            let commit = Object::new(
                Kind::Commit,
                format!(
                    "tree {}\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nm\n",
                    tree.id
                )
                .into_bytes(),
            );
            crate::sync::PushRecord {
                id: PatientId::random(),
                expected: None,
                head: crate::CommitId([n; 20]),
                pack: write_pack_only(&[commit, tree, blob], 0),
            }
        };
        crate::sync::PushRequest {
            records: vec![record(1), record(2)],
        }
    }

    /// A protocol 7 batch of `ids` (the id column's bytes, count first),
    /// `columns` (count, lengths, contents) and `message`.
    fn v7(ids: &[u8], columns: &[(usize, Vec<u8>, Vec<u8>)], message: &[u8]) -> Vec<u8> {
        let mut raw = ids.to_vec();
        for (count, lengths, _) in columns {
            put_varint(&mut raw, *count);
            raw.extend_from_slice(lengths);
        }
        for (_, _, bytes) in columns {
            raw.extend_from_slice(bytes);
        }
        raw.extend_from_slice(message);
        let mut out = MAGIC.to_vec();
        out.push(7);
        out.extend_from_slice(&Scope::enter(7, 0).finish().digest);
        out.extend(zstd::bulk::compress(&raw, 3).expect("compress"));
        out
    }

    #[test]
    fn entry_columns_round_trip_and_refuse_what_does_not_add_up() {
        let request = two_records();
        let bytes = encode_as(&request, 7).expect("encode");
        let back: crate::sync::PushRequest = decode(&bytes, 1 << 20).expect("decode");
        for (a, b) in request.records.iter().zip(&back.records) {
            assert_eq!((a.id, a.head, &a.pack), (b.id, b.head, &b.pack));
        }
        // Take the batch apart: ids, columns, message.
        let raw = zstd::bulk::decompress(&bytes[24..], 1 << 20).expect("the message");
        let (ids, after_ids) = id_column(&raw).expect("ids");
        assert_eq!(ids.len(), 2);
        let id_bytes = &raw[..raw.len() - after_ids.len()];
        let (columns, message) = entry_columns(after_ids).expect("columns");
        let parts: Vec<(usize, Vec<u8>, Vec<u8>)> = columns
            .iter()
            .map(|c| (c.count, c.lengths.clone(), c.bytes.clone()))
            .collect();
        // commits, trees, blobs: two each; no deltas
        assert_eq!(
            parts.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![2, 2, 2, 0]
        );
        assert_eq!(parts[2].2, b"a: 1\na: 2\n", "the files side by side");
        let good = v7(id_bytes, &parts, message);
        assert!(decode::<crate::sync::PushRequest>(&good, 1 << 20).is_ok());
        let refused = |columns: &[(usize, Vec<u8>, Vec<u8>)], message: &[u8]| {
            decode::<crate::sync::PushRequest>(&v7(id_bytes, columns, message), 1 << 20)
        };
        // one blob more than the packs take
        let mut more = parts.clone();
        more[2] = (3, vec![5, 5, 1], b"a: 1\na: 2\nx".to_vec());
        assert!(matches!(
            refused(&more, message),
            Err(EnvelopeError::Columns(_))
        ));
        // one blob fewer than the packs take
        let mut fewer = parts.clone();
        fewer[2] = (1, vec![5], b"a: 1\n".to_vec());
        assert!(matches!(
            refused(&fewer, message),
            Err(EnvelopeError::Decode(_))
        ));
        // lengths past the batch's end, a count no batch could hold, a
        // length that never ends
        for bad in [
            (2, vec![5, 0xff, 0x7f], b"a: 1\na: 2\n".to_vec()),
            (usize::MAX >> 2, Vec::new(), Vec::new()),
            (2, vec![5, 0xff], Vec::new()),
        ] {
            let mut broken = parts.clone();
            broken[2] = bad;
            let mut raw_message = Vec::new();
            if broken[2].2.is_empty() {
                // nothing after the lengths
            } else {
                raw_message.extend_from_slice(message);
            }
            assert!(matches!(
                refused(&broken, &raw_message),
                Err(EnvelopeError::Columns(_))
            ));
        }
        // Protocol 7 sends no content in the message: protocol 6's message
        // (contents inline) after empty columns is refused.
        let v6 = encode_as(&request, 6).expect("encode");
        let raw6 = zstd::bulk::decompress(&v6[24..], 1 << 20).expect("the message");
        let (_, message6) = id_column(&raw6).expect("ids");
        let empty = vec![(0, Vec::new(), Vec::new()); COLUMNS];
        assert!(matches!(
            refused(&empty, message6),
            Err(EnvelopeError::Decode(_))
        ));
        // and a protocol 7 message marked as 6 does not decode
        let mut as6 = good.clone();
        as6[3] = 6;
        assert!(decode::<crate::sync::PushRequest>(&as6, 1 << 20).is_err());
    }
}
