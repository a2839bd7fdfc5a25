//! A pack of whole objects (or, in a thin pack, of whole objects and
//! REF_DELTA entries), taken apart into its entries' type codes and
//! contents and put back together: the sync wire sends the parts, because
//! a pack's framing (zlib headers, Adler-32 and SHA-1 checksums) is about
//! 30 bytes per record that no compressor can shrink, and the receiver
//! hashes every object anyway.

use sha1::{Digest, Sha1};

use super::entry::{REF_DELTA, read_type_and_size};
use super::inflate::Inflater;
use super::object::{Kind, oid_from_raw, oid_from_sha1};
use super::pack_writer::{finish_pack, start_pack, stored_zlib_into, write_entry_header};

const HEADER_LEN: usize = 12;
const TRAILER_LEN: usize = 20;

/// The objects of a well-formed pack of whole objects, in pack order, or
/// `None` when the pack is anything else (a delta, a bad checksum, a
/// truncated or malformed entry): such a pack must travel as it is, so the
/// receiver sees exactly what was sent and refuses it with the reason.
pub fn split_pack(bytes: &[u8]) -> Option<Vec<(Kind, Vec<u8>)>> {
    split_pack_entries(bytes)?
        .into_iter()
        .map(|(code, data)| Some((Kind::from_type_code(code)?, data)))
        .collect()
}

/// Like [`split_pack`], also taking REF_DELTA entries apart (type code 7,
/// contents: the base's 20-byte id, then the delta). `None` for OFS_DELTA
/// entries and anything malformed.
pub fn split_pack_entries(bytes: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || bytes.get(..4)? != b"PACK" {
        return None;
    }
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(i..i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if !matches!(word(4)?, 2 | 3) {
        return None;
    }
    let count = word(8)? as usize;
    let end = bytes.len() - TRAILER_LEN;
    let mut hasher = Sha1::new();
    hasher.update(&bytes[..end]);
    if oid_from_sha1(hasher) != oid_from_raw(&bytes[end..]) {
        return None;
    }
    // Every entry takes at least 9 bytes: do not trust `count` to allocate.
    let mut out = Vec::with_capacity(count.min(end / 9));
    let mut inflater = Inflater::new();
    let mut pos = HEADER_LEN;
    for _ in 0..count {
        let header = read_type_and_size(bytes, pos).ok()?;
        let size = usize::try_from(header.size).ok()?;
        let (prefix, data_at) = match header.type_code {
            REF_DELTA => (
                bytes.get(header.data_at..header.data_at + 20)?,
                header.data_at + 20,
            ),
            code => {
                Kind::from_type_code(code)?;
                (&[][..], header.data_at)
            }
        };
        let (data, used) = inflater
            .inflate_exact(bytes.get(data_at..end)?, size)
            .ok()?;
        pos = data_at + used;
        let mut entry = Vec::with_capacity(prefix.len() + data.len());
        entry.extend_from_slice(prefix);
        entry.extend_from_slice(&data);
        out.push((header.type_code, entry));
    }
    (pos == end).then_some(out)
}

/// A pack (zlib stored blocks, as sync packs are) of these objects, in
/// this order: the inverse of [`split_pack`].
pub fn join_pack<'a>(objects: impl IntoIterator<Item = (Kind, &'a [u8])>) -> Vec<u8> {
    let mut pack = start_pack(0);
    let mut count = 0u32;
    for (kind, data) in objects {
        count = count.saturating_add(1);
        write_entry_header(&mut pack, kind.type_code(), data.len() as u64);
        stored_zlib_into(data, &mut pack);
    }
    finish_pack(&mut pack, count);
    pack
}

/// The inverse of [`split_pack_entries`]: a pack of whole objects and
/// REF_DELTA entries. `None` for any other type code, or a REF_DELTA entry
/// shorter than its base id.
pub fn join_pack_entries<'a>(entries: impl IntoIterator<Item = (u8, &'a [u8])>) -> Option<Vec<u8>> {
    let mut pack = start_pack(0);
    let mut count = 0u32;
    for (code, data) in entries {
        count = count.saturating_add(1);
        if code == REF_DELTA {
            let (base, delta) = (data.get(..20)?, data.get(20..)?);
            write_entry_header(&mut pack, REF_DELTA, delta.len() as u64);
            pack.extend_from_slice(base);
            stored_zlib_into(delta, &mut pack);
        } else {
            Kind::from_type_code(code)?;
            write_entry_header(&mut pack, code, data.len() as u64);
            stored_zlib_into(data, &mut pack);
        }
    }
    finish_pack(&mut pack, count);
    Some(pack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, PackLimits, parse_pack, write_pack_only};

    fn objects() -> Vec<Object> {
        vec![
            Object::new(Kind::Blob, b"name: A\n".to_vec()),
            Object::new(Kind::Blob, vec![b'x'; 70_000]),
            Object::new(Kind::Blob, Vec::new()),
        ]
    }

    fn limits() -> PackLimits {
        PackLimits {
            max_objects: 100,
            max_object_bytes: 1 << 20,
            max_total_bytes: 1 << 22,
            max_delta_depth: 10,
        }
    }

    #[test]
    fn split_and_join_round_trip_at_any_zlib_level() {
        for level in [0, 6] {
            let pack = write_pack_only(&objects(), level);
            let parts = split_pack(&pack).expect("a plain pack splits");
            assert_eq!(parts.len(), 3);
            let joined = join_pack(parts.iter().map(|(k, d)| (*k, d.as_slice())));
            if level == 0 {
                assert_eq!(joined, pack);
            }
            let back = parse_pack(&joined, &limits(), &mut |_| None).expect("parses");
            assert_eq!(back, objects());
        }
    }

    #[test]
    fn anything_but_a_sound_pack_of_whole_objects_is_left_whole() {
        let pack = write_pack_only(&objects(), 0);
        // Any single flipped byte: the checksum no longer matches.
        for at in [0, 5, 9, 12, 20, pack.len() / 2, pack.len() - 1] {
            let mut bad = pack.clone();
            bad[at] ^= 0x40;
            assert!(split_pack(&bad).is_none(), "byte {at}");
        }
        for len in [0, 11, 31, pack.len() - 1] {
            assert!(split_pack(&pack[..len]).is_none(), "length {len}");
        }
        // A declared count larger than the entries (checksum recomputed).
        let mut more = pack[..pack.len() - 20].to_vec();
        more[11] = 4;
        let mut hasher = Sha1::new();
        hasher.update(&more);
        more.extend_from_slice(oid_from_sha1(hasher).as_bytes());
        assert!(split_pack(&more).is_none());
        assert!(split_pack(b"garbage that is not a pack at all!!").is_none());
    }

    #[test]
    fn thin_packs_split_and_join() {
        let base = Object::new(Kind::Blob, b"name: A\nvisits: 1\n".to_vec());
        let target = b"name: A\nvisits: 1\nmore: 2\n".to_vec();
        let delta = crate::encode_delta(&base.data, &target);
        let mut ref_entry = base.id.as_bytes().to_vec();
        ref_entry.extend_from_slice(&delta);
        let entries = vec![(3u8, b"other".to_vec()), (REF_DELTA, ref_entry)];
        let pack =
            join_pack_entries(entries.iter().map(|(c, d)| (*c, d.as_slice()))).expect("joins");
        assert!(split_pack(&pack).is_none(), "not a pack of whole objects");
        assert_eq!(split_pack_entries(&pack).expect("splits"), entries);
        let limits = limits();
        let objects = parse_pack(&pack, &limits, &mut |id| {
            (id == base.id).then(|| base.clone())
        })
        .expect("parses with the base");
        assert_eq!(objects[1], Object::new(Kind::Blob, target));
        assert!(join_pack_entries([(6u8, &b"x"[..])]).is_none());
        assert!(join_pack_entries([(REF_DELTA, &[0u8; 19][..])]).is_none());
    }
}
