//! Property tests: arbitrary input never panics.

use proptest::prelude::*;

use super::fix_checksum;
use super::hostile::small_delta_pack;
use crate::*;
use git2::Oid;

fn limits() -> PackLimits {
    PackLimits {
        max_objects: 1000,
        max_object_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
        max_delta_depth: 10,
    }
}

fn try_parse(bytes: &[u8]) {
    let mut base =
        |id: Oid| (id == hash_object(Kind::Blob, b"")).then(|| Object::new(Kind::Blob, Vec::new()));
    let _ = parse_pack(bytes, &limits(), &mut base);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        try_parse(&bytes);
    }

    #[test]
    fn random_bodies_with_valid_header_never_panic(
        count in 0u32..8,
        body in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut pack = b"PACK\0\0\0\x02".to_vec();
        pack.extend_from_slice(&count.to_be_bytes());
        pack.extend_from_slice(&body);
        pack.extend_from_slice(&[0; 20]);
        fix_checksum(&mut pack);
        try_parse(&pack);
    }

    #[test]
    fn mutated_packs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
        fix in any::<bool>(),
    ) {
        let mut pack = small_delta_pack();
        for (pos, byte) in edits {
            let len = pack.len();
            pack[pos % len] = byte;
        }
        if let Some(cut) = cut {
            pack.truncate(cut % (pack.len() + 1));
        }
        if fix {
            fix_checksum(&mut pack);
        }
        try_parse(&pack);
    }

    #[test]
    fn trees_and_commits_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_tree(&bytes);
        let _ = parse_commit(&bytes);
        let _ = apply_delta(b"0123456789", &bytes, 1 << 16);
    }

    #[test]
    fn written_packs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12), level in 0u32..10) {
        let objects: Vec<Object> = blobs.into_iter().map(|b| Object::new(Kind::Blob, b)).collect();
        let mut unique = Vec::new();
        for o in &objects {
            if !unique.iter().any(|u: &Object| u.id == o.id) {
                unique.push(o.clone());
            }
        }
        let pack = write_pack_only(&objects, level);
        let parsed = parse_pack(&pack, &limits(), &mut |_| None);
        prop_assert_eq!(parsed.ok(), Some(unique));
    }
}
