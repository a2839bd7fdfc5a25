//! Parsing and verifying complete packs held in memory.

use sha1::{Digest, Sha1};

use super::entry::{
    Budget, Entry, HeaderError, OFS_DELTA, PackLimits, Payload, REF_DELTA, read_type_and_size,
};
use super::error::PackError;
use super::inflate::{InflateError, Inflater};
use super::object::{Kind, Object, oid_from_raw, oid_from_sha1};
use super::resolve::resolve;
use git2::Oid;

const HEADER_LEN: usize = 12;
const TRAILER_LEN: usize = 20;

/// Parses a complete pack (version 2 or 3) held in memory.
///
/// Verifies the header, every entry (types 1-4, OFS_DELTA, REF_DELTA), the
/// object count, the trailing SHA-1, and that nothing follows it. Deltas
/// are applied; REF_DELTA bases not in the pack (thin packs) are asked of
/// `base`, and such bases are not returned. Ids are computed by hashing.
/// Returns the objects in pack order, each id once.
pub fn parse_pack(
    bytes: &[u8],
    limits: &PackLimits,
    base: &mut dyn FnMut(Oid) -> Option<Object>,
) -> Result<Vec<Object>, PackError> {
    let truncated = |offset: usize, what| PackError::Truncated {
        offset: offset as u64,
        what,
    };
    let header = bytes.get(..HEADER_LEN);
    match bytes.get(..4) {
        Some(b"PACK") => {}
        Some(_) => return Err(PackError::BadSignature),
        None if b"PACK".starts_with(bytes) => return Err(truncated(bytes.len(), "pack header")),
        None => return Err(PackError::BadSignature),
    }
    let header = header.ok_or(truncated(bytes.len(), "pack header"))?;
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let version = word(4);
    if version != 2 && version != 3 {
        return Err(PackError::UnsupportedVersion(version));
    }
    let count = word(8);
    if count > limits.max_objects {
        return Err(PackError::TooManyObjects {
            count,
            limit: limits.max_objects,
        });
    }

    // Every entry takes at least 9 bytes (1 header byte, 8 of zlib), so do
    // not trust `count` for the allocation.
    let mut entries = Vec::with_capacity((count as usize).min(bytes.len() / 9));
    let mut budget = Budget {
        used: 0,
        limits: *limits,
    };
    let mut inflater = Inflater::new();
    let mut pos = HEADER_LEN;
    for index in 0..count as usize {
        if bytes.len() - pos == TRAILER_LEN
            && checksum_of(&bytes[..pos]) == oid_from_raw(&bytes[pos..])
        {
            return Err(PackError::CountMismatch {
                declared: count,
                found: index as u32,
            });
        }
        let (entry, next) = parse_entry(bytes, pos, index, &mut budget, &entries, &mut inflater)?;
        entries.push(entry);
        pos = next;
    }

    let remaining = bytes.len() - pos;
    if remaining < TRAILER_LEN {
        return Err(truncated(bytes.len(), "pack checksum"));
    }
    if remaining > TRAILER_LEN {
        return Err(PackError::TrailingData {
            offset: (pos + TRAILER_LEN) as u64,
            len: (remaining - TRAILER_LEN) as u64,
        });
    }
    let expected = oid_from_raw(&bytes[pos..]);
    let actual = checksum_of(&bytes[..pos]);
    if expected != actual {
        return Err(PackError::Checksum { expected, actual });
    }
    resolve(entries, &mut budget, base)
}

fn checksum_of(data: &[u8]) -> Oid {
    let mut hasher = Sha1::new();
    hasher.update(data);
    oid_from_sha1(hasher)
}

/// Parses the entry at `start`; returns it and the offset of the next one.
fn parse_entry(
    bytes: &[u8],
    start: usize,
    index: usize,
    budget: &mut Budget,
    earlier: &[Entry],
    inflater: &mut Inflater,
) -> Result<(Entry, usize), PackError> {
    let bad_header = |reason| PackError::BadHeader {
        index: index as u32,
        offset: start as u64,
        reason,
    };
    let mut pos = start;
    let next_byte = |pos: &mut usize, what| {
        let byte = bytes.get(*pos).copied().ok_or(PackError::Truncated {
            offset: *pos as u64,
            what,
        });
        *pos += 1;
        byte
    };

    let header = read_type_and_size(bytes, pos).map_err(|e| match e {
        HeaderError::Truncated(at) => PackError::Truncated {
            offset: at as u64,
            what: "object header",
        },
        HeaderError::SizeOverflow => bad_header("object size does not fit in 64 bits"),
    })?;
    let (type_code, size) = (header.type_code, header.size);
    pos = header.data_at;

    let kind = match type_code {
        OFS_DELTA => {
            let mut byte = next_byte(&mut pos, "OFS_DELTA base offset")?;
            let mut distance = u64::from(byte & 0x7f);
            while byte & 0x80 != 0 {
                byte = next_byte(&mut pos, "OFS_DELTA base offset")?;
                distance = distance
                    .checked_add(1)
                    .filter(|d| d >> 57 == 0)
                    .ok_or(bad_header("OFS_DELTA base offset does not fit in 64 bits"))?;
                distance = (distance << 7) | u64::from(byte & 0x7f);
            }
            let bad_offset = |reason| PackError::BadBaseOffset {
                index: index as u32,
                offset: start as u64,
                distance,
                reason,
            };
            if distance == 0 {
                return Err(bad_offset("points to the object itself"));
            }
            let base_offset = usize::try_from(distance)
                .ok()
                .and_then(|d| start.checked_sub(d))
                .filter(|&o| o >= HEADER_LEN)
                .ok_or(bad_offset("points before the first object"))?;
            let base_index = earlier
                .binary_search_by_key(&base_offset, |e| e.offset)
                .map_err(|_| bad_offset("does not point to the start of an object"))?;
            EntryKind::Ofs(base_index)
        }
        REF_DELTA => {
            let raw = bytes.get(pos..pos + 20).ok_or(PackError::Truncated {
                offset: pos as u64,
                what: "REF_DELTA base id",
            })?;
            pos += 20;
            EntryKind::Ref(oid_from_raw(raw))
        }
        code => EntryKind::Full(
            Kind::from_type_code(code).ok_or(bad_header("unknown object type code"))?,
        ),
    };

    let size_usize = budget.take(index, start, size)?;
    let input = bytes.get(pos..).unwrap_or_default();
    let (data, used) = inflater
        .inflate_exact(input, size_usize)
        .map_err(|e| match e {
            InflateError::Truncated => PackError::Truncated {
                offset: bytes.len() as u64,
                what: "object zlib data",
            },
            InflateError::Corrupt(source) => match source {
                Some(source) => PackError::Inflate {
                    index: index as u32,
                    offset: start as u64,
                    source,
                },
                None => PackError::InflateStalled {
                    index: index as u32,
                    offset: start as u64,
                },
            },
            InflateError::Overrun => PackError::SizeMismatch {
                index: index as u32,
                offset: start as u64,
                declared: size,
                actual: None,
            },
            InflateError::Short(actual) => PackError::SizeMismatch {
                index: index as u32,
                offset: start as u64,
                declared: size,
                actual: Some(actual),
            },
        })?;
    let payload = match kind {
        EntryKind::Full(kind) => Payload::Full(kind, data),
        EntryKind::Ofs(base) => Payload::Ofs(base, data),
        EntryKind::Ref(id) => Payload::Ref(id, data),
    };
    Ok((
        Entry {
            offset: start,
            payload,
        },
        pos + used,
    ))
}

enum EntryKind {
    Full(Kind),
    Ofs(usize),
    Ref(Oid),
}
