//! Writing packs (version 2) and their idx files: of whole objects, or with
//! OFS_DELTA entries against earlier entries of the same pack.

use std::collections::HashSet;

use flate2::{Compress, Compression, FlushCompress, Status};
use sha1::{Digest, Sha1};

use super::delta_encode::encode_delta_within;
use super::entry::OFS_DELTA;
use super::idx_writer::{IdxEntry, write_idx};
use super::object::{Object, oid_from_sha1};
use git2::Oid;

/// A pack and its index, ready to be stored as
/// `objects/pack/pack-<checksum>.pack` and `.idx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackFiles {
    /// The pack file contents.
    pub pack: Vec<u8>,
    /// The idx v2 file contents.
    pub idx: Vec<u8>,
    /// The pack trailer SHA-1, which names both files.
    pub checksum: Oid,
}

/// Writes `objects` as a pack with its idx. Each id is written once (the
/// first occurrence wins); ids are trusted to match the data (see
/// [`Object::is_consistent`]). `level` is the zlib level, clamped to 0..=9;
/// 0 writes stored blocks (for the wire, where the batch is compressed
/// anyway).
///
/// # Panics
///
/// Only if given 2^32 or more distinct objects, which a pack cannot hold.
pub fn write_pack(objects: &[Object], level: u32) -> PackFiles {
    let mut entries = Vec::with_capacity(objects.len());
    let (pack, checksum) = encode_pack(objects, level, Some(&mut entries));
    let idx = write_idx(&mut entries, checksum);
    PackFiles {
        pack,
        idx,
        checksum,
    }
}

/// Like [`write_pack`] but without the idx (for sending over the wire).
///
/// # Panics
///
/// Only if given 2^32 or more distinct objects.
pub fn write_pack_only(objects: &[Object], level: u32) -> Vec<u8> {
    encode_pack(objects, level, None).0
}

/// Writes `objects` as one pack with its idx, each object either whole or,
/// when `bases[i]` names an earlier object (by index) of the same kind and
/// the delta is less than half the object's size, as an OFS_DELTA against
/// it. Duplicated ids are written once; a base that was itself a duplicate
/// or is not earlier is ignored. Delta chains are as long as the caller
/// makes them (git reads up to 4095; keep them short for readers).
///
/// # Panics
///
/// Only if given 2^32 or more distinct objects, or if `bases` is not as long
/// as `objects`.
pub fn write_pack_deltified(objects: &[Object], bases: &[Option<usize>], level: u32) -> PackFiles {
    assert_eq!(objects.len(), bases.len(), "one base (or none) per object");
    let capacity = objects
        .iter()
        .map(|o| o.data.len() / 4 + 32)
        .fold(4096, usize::saturating_add);
    let mut pack = start_pack(capacity);
    let mut compressor = (level > 0).then(|| Compress::new(Compression::new(level.min(9)), true));
    // Offset of each written object, by index (None: a duplicate).
    let mut offsets: Vec<Option<usize>> = vec![None; objects.len()];
    let mut seen = HashSet::with_capacity(objects.len());
    let mut entries = Vec::with_capacity(objects.len());
    let mut count = 0u32;
    for (i, object) in objects.iter().enumerate() {
        if !seen.insert(object.id) {
            continue;
        }
        count = count
            .checked_add(1)
            .expect("a pack holds fewer than 2^32 objects");
        let start = pack.len();
        offsets[i] = Some(start);
        let delta = bases[i]
            .filter(|&b| b < i && objects[b].kind == object.kind)
            .and_then(|b| Some((offsets[b]?, &objects[b])))
            .and_then(|(at, base)| {
                let max = object.data.len() / 2;
                Some((at, encode_delta_within(&base.data, &object.data, max)?))
            });
        let payload: &[u8] = match &delta {
            Some((base_at, delta)) => {
                write_entry_header(&mut pack, OFS_DELTA, delta.len() as u64);
                write_ofs_distance(&mut pack, (start - base_at) as u64);
                delta
            }
            None => {
                write_entry_header(&mut pack, object.kind.type_code(), object.data.len() as u64);
                &object.data
            }
        };
        match compressor.as_mut() {
            Some(compressor) => deflate_into(compressor, payload, &mut pack),
            None => stored_zlib_into(payload, &mut pack),
        }
        entries.push(IdxEntry {
            id: object.id,
            crc32: crc32fast::hash(&pack[start..]),
            offset: start as u64,
        });
    }
    let checksum = finish_pack(&mut pack, count);
    let idx = write_idx(&mut entries, checksum);
    PackFiles {
        pack,
        idx,
        checksum,
    }
}

/// Git's OFS_DELTA distance: big-endian 7-bit groups, each continuation
/// adding one (so that every distance has exactly one encoding).
fn write_ofs_distance(out: &mut Vec<u8>, distance: u64) {
    let mut bytes = [0u8; 10];
    let mut at = bytes.len() - 1;
    let mut n = distance;
    bytes[at] = (n & 0x7f) as u8;
    n >>= 7;
    while n != 0 {
        n -= 1;
        at -= 1;
        bytes[at] = 0x80 | (n & 0x7f) as u8;
        n >>= 7;
    }
    out.extend_from_slice(&bytes[at..]);
}

fn encode_pack(
    objects: &[Object],
    level: u32,
    mut idx_entries: Option<&mut Vec<IdxEntry>>,
) -> (Vec<u8>, Oid) {
    // Room for every entry stored or deflated (deflate falls back to stored
    // blocks for incompressible data), plus the scratch room `deflate_into`
    // reserves beyond the last entry: one Vec, no reallocation.
    let largest = objects.iter().map(|o| o.data.len()).max().unwrap_or(0);
    let capacity = objects
        .iter()
        .map(|o| o.data.len() + o.data.len() / 1024 + 32)
        .fold(largest / 10 + 256, usize::saturating_add);
    let mut pack = start_pack(capacity);
    let mut compressor = (level > 0).then(|| Compress::new(Compression::new(level.min(9)), true));
    let mut seen = HashSet::with_capacity(objects.len());
    let mut count = 0u32;
    for object in objects {
        if !seen.insert(object.id) {
            continue;
        }
        count = count
            .checked_add(1)
            .expect("a pack holds fewer than 2^32 objects");
        let start = pack.len();
        write_entry_header(&mut pack, object.kind.type_code(), object.data.len() as u64);
        match compressor.as_mut() {
            Some(compressor) => deflate_into(compressor, &object.data, &mut pack),
            None => stored_zlib_into(&object.data, &mut pack),
        }
        if let Some(entries) = idx_entries.as_deref_mut() {
            entries.push(IdxEntry {
                id: object.id,
                crc32: crc32fast::hash(&pack[start..]),
                offset: start as u64,
            });
        }
    }
    let checksum = finish_pack(&mut pack, count);
    (pack, checksum)
}

/// A pack's header (version 2), its object count to be set by
/// [`finish_pack`].
pub(crate) fn start_pack(capacity: usize) -> Vec<u8> {
    let mut pack = Vec::with_capacity(capacity);
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&0u32.to_be_bytes());
    pack
}

/// Sets the object count and appends the trailing SHA-1; returns it.
pub(crate) fn finish_pack(pack: &mut Vec<u8>, count: u32) -> Oid {
    pack[8..12].copy_from_slice(&count.to_be_bytes());
    let mut hasher = Sha1::new();
    hasher.update(&pack[..]);
    let checksum = oid_from_sha1(hasher);
    pack.extend_from_slice(checksum.as_bytes());
    checksum
}

/// Pack entry header: type in bits 4-6 of the first byte, size as 4 bits
/// then 7-bit groups, continuation in bit 7.
pub(crate) fn write_entry_header(out: &mut Vec<u8>, type_code: u8, mut size: u64) {
    let mut byte = (type_code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// Appends a zlib stream of stored (uncompressed) blocks holding `data`.
/// Written by hand: resetting a deflate compressor costs more than copying
/// a small object.
pub(crate) fn stored_zlib_into(data: &[u8], out: &mut Vec<u8>) {
    const MAX_BLOCK: usize = 0xffff;
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    out.reserve(data.len() + 5 * blocks + 6);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last)); // BFINAL bit, BTYPE 00 (stored)
        let len = chunk.len() as u16; // chunks are at most 0xffff bytes
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

/// The Adler-32 checksum that ends a zlib stream.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // Largest run of bytes before the sums could overflow 32 bits.
    const NMAX: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(NMAX) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Appends one complete zlib stream of `data` to `out`.
///
/// Compresses into an explicitly sized, zeroed slice rather than with
/// `compress_vec`: flate2's Rust backend zero-fills the whole spare capacity
/// of the Vec on every call, which is quadratic for a pack-sized buffer.
fn deflate_into(compressor: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    compressor.reset();
    let start = out.len();
    // miniz's compress bound; stored blocks (level 0) fit in it too.
    let bound = data
        .len()
        .saturating_add(data.len() / 10)
        .saturating_add(128);
    out.resize(start.saturating_add(bound), 0);
    loop {
        let consumed =
            usize::try_from(compressor.total_in()).map_or(data.len(), |n| n.min(data.len()));
        let written = usize::try_from(compressor.total_out())
            .map_or(out.len(), |n| start.saturating_add(n).min(out.len()));
        if out.len() - written < 64 {
            out.resize(out.len().saturating_add(data.len() / 2 + 1024), 0);
        }
        let rest = data.get(consumed..).unwrap_or_default();
        let target = out.get_mut(written..).unwrap_or_default();
        let status = compressor
            .compress(rest, target, FlushCompress::Finish)
            .expect("deflating in-memory data with FlushCompress::Finish cannot fail");
        if status == Status::StreamEnd {
            break;
        }
    }
    let end = usize::try_from(compressor.total_out())
        .map_or(out.len(), |n| start.saturating_add(n).min(out.len()));
    out.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inflate::Inflater;

    #[test]
    fn stored_streams_inflate() {
        let mut inflater = Inflater::new();
        for len in [0usize, 1, 5551, 5552, 5553, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ 0xff).collect();
            let mut out = Vec::new();
            stored_zlib_into(&data, &mut out);
            let (inflated, used) = inflater.inflate_exact(&out, len).expect("valid stream");
            assert_eq!(inflated, data);
            assert_eq!(used, out.len());
        }
    }
}
