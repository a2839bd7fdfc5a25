//! Pack index (`.idx`) version 2 writer.

use sha1::{Digest, Sha1};

use super::object::oid_from_sha1;
use git2::Oid;

/// Offsets above this need the 8-byte large-offset table.
const MAX_SMALL_OFFSET: u64 = 0x7fff_ffff;

/// One object's index record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdxEntry {
    /// Object id.
    pub id: Oid,
    /// CRC-32 of the entry's raw bytes in the pack (header and zlib data).
    pub crc32: u32,
    /// Offset of the entry in the pack.
    pub offset: u64,
}

/// Writes an idx v2 for a pack whose trailer checksum is `pack_checksum`.
/// Sorts `entries` by id in place; ids must be unique. Offsets above
/// 2^31 - 1 go to the large-offset table, as git does.
///
/// # Panics
///
/// Only with 2^31 or more large offsets, which no pack can have.
pub fn write_idx(entries: &mut [IdxEntry], pack_checksum: Oid) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.id);
    let n = entries.len();
    let large = entries
        .iter()
        .filter(|e| e.offset > MAX_SMALL_OFFSET)
        .count();
    let mut out = Vec::with_capacity(8 + 256 * 4 + n * 28 + large * 8 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());

    let mut fanout = [0u32; 256];
    for entry in entries.iter() {
        let first = entry.id.as_bytes().first().copied().unwrap_or(0);
        fanout[usize::from(first)] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for entry in entries.iter() {
        out.extend_from_slice(entry.id.as_bytes());
    }
    for entry in entries.iter() {
        out.extend_from_slice(&entry.crc32.to_be_bytes());
    }
    let mut large_offsets = Vec::with_capacity(large);
    for entry in entries.iter() {
        let word = if entry.offset > MAX_SMALL_OFFSET {
            let slot = u32::try_from(large_offsets.len())
                .expect("an index holds fewer than 2^31 large offsets");
            large_offsets.push(entry.offset);
            0x8000_0000 | slot
        } else {
            entry.offset as u32
        };
        out.extend_from_slice(&word.to_be_bytes());
    }
    for offset in large_offsets {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum.as_bytes());
    let mut hasher = Sha1::new();
    hasher.update(&out);
    out.extend_from_slice(oid_from_sha1(hasher).as_bytes());
    out
}
