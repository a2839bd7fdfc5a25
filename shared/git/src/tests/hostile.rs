//! Corrupt, truncated, malicious and oversized packs must give errors.

use super::{Craft, delta, fix_checksum, zlib};
use crate::*;

fn parse(pack: &[u8]) -> Result<Vec<Object>, PackError> {
    parse_pack(pack, &PackLimits::default(), &mut |_| None)
}

fn parse_with(pack: &[u8], limits: PackLimits) -> Result<Vec<Object>, PackError> {
    parse_pack(pack, &limits, &mut |_| None)
}

/// A small pack with a full object, an OFS_DELTA and a REF_DELTA.
pub(super) fn small_delta_pack() -> Vec<u8> {
    let mut craft = Craft::new();
    let base = b"name: Jane Doe\nborn: 1970\n";
    let base_offset = craft.full(3, base);
    // copy 0..15 ("name: Jane Doe\n") + insert "x\n"
    craft.ofs(base_offset, &delta(26, 17, &[0x90, 15, 2, b'x', b'\n']));
    let base_id = hash_object(Kind::Blob, base);
    craft.refd(base_id, &delta(26, 3, &[3, b'a', b'b', b'c']));
    craft.full(2, b"");
    craft.finish()
}

#[test]
fn small_delta_pack_is_valid() {
    let objects = parse(&small_delta_pack()).expect("valid");
    let data: Vec<&[u8]> = objects.iter().map(|o| &o.data[..]).collect();
    assert_eq!(
        data,
        [
            &b"name: Jane Doe\nborn: 1970\n"[..],
            b"name: Jane Doe\nx\n",
            b"abc",
            b""
        ]
    );
    assert_eq!(objects[3].kind, Kind::Tree);
}

#[test]
fn header_errors() {
    assert!(matches!(parse(b""), Err(PackError::Truncated { .. })));
    assert!(matches!(parse(b"PAC"), Err(PackError::Truncated { .. })));
    assert!(matches!(
        parse(b"PACK\0\0"),
        Err(PackError::Truncated { .. })
    ));
    assert!(matches!(
        parse(b"KCAP\0\0\0\x02\0\0\0\0"),
        Err(PackError::BadSignature)
    ));
    assert!(matches!(parse(b"x"), Err(PackError::BadSignature)));
    let mut craft = Craft::new();
    craft.version = 9;
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::UnsupportedVersion(9))
    ));
}

#[test]
fn every_truncation_fails() {
    let pack = small_delta_pack();
    for len in 0..pack.len() {
        assert!(
            parse(&pack[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
}

#[test]
fn every_bit_flip_fails() {
    let pack = small_delta_pack();
    for pos in 0..pack.len() {
        for bit in 0..8 {
            let mut bad = pack.clone();
            bad[pos] ^= 1 << bit;
            assert!(
                parse(&bad).is_err(),
                "flip of bit {bit} at byte {pos} accepted"
            );
        }
    }
}

#[test]
fn checksum_trailing_data_and_count() {
    let mut pack = small_delta_pack();
    let last = pack.len() - 1;
    pack[last] ^= 1;
    assert!(matches!(parse(&pack), Err(PackError::Checksum { .. })));

    let mut pack = small_delta_pack();
    pack.extend_from_slice(b"garbage");
    assert!(matches!(
        parse(&pack),
        Err(PackError::TrailingData { len: 7, .. })
    ));

    let mut craft = Craft::new();
    craft.full(3, b"one");
    craft.full(3, b"two");
    craft.count = Some(3);
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::CountMismatch {
            declared: 3,
            found: 2
        })
    ));
    craft.count = Some(1);
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::TrailingData { .. })
    ));
    craft.count = Some(u32::MAX);
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::TooManyObjects { .. })
    ));
    let few = PackLimits {
        max_objects: 1,
        ..PackLimits::default()
    };
    craft.count = None;
    assert!(matches!(
        parse_with(&craft.finish(), few),
        Err(PackError::TooManyObjects { count: 2, limit: 1 })
    ));
}

#[test]
fn oversized_declarations() {
    // Declared 4 GiB: refused by the per-object limit before any allocation.
    let mut craft = Craft::new();
    craft.raw(3, 4 << 30, &[], &zlib(b"tiny", 6));
    let pack = craft.finish();
    assert!(matches!(parse(&pack), Err(PackError::ObjectTooLarge { size, .. }) if size == 4 << 30));
    // Even with no limits, a lying size cannot make us allocate it.
    let unlimited = PackLimits {
        max_objects: u32::MAX,
        max_object_bytes: usize::MAX,
        max_total_bytes: usize::MAX,
        max_delta_depth: u32::MAX,
    };
    assert!(matches!(
        parse_with(&pack, unlimited),
        Err(PackError::SizeMismatch {
            actual: Some(4),
            ..
        })
    ));
    // A size varint that overflows 64 bits.
    let mut craft = Craft::new();
    craft.raw(3, 0, &[], &[]);
    let mut pack = craft.finish();
    pack.splice(
        12..13,
        [
            0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
    );
    fix_checksum(&mut pack);
    assert!(matches!(parse(&pack), Err(PackError::BadHeader { .. })));
    // Total over the limit.
    let mut craft = Craft::new();
    for i in 0..10u8 {
        craft.full(3, &[i; 1000]);
    }
    let total = PackLimits {
        max_total_bytes: 5000,
        ..PackLimits::default()
    };
    assert!(matches!(
        parse_with(&craft.finish(), total),
        Err(PackError::TotalTooLarge { index: 5, .. })
    ));
}

#[test]
fn zip_bombs() {
    let zeros = vec![0u8; 1 << 20];
    let small = PackLimits {
        max_object_bytes: 64 << 10,
        ..PackLimits::default()
    };
    let mut craft = Craft::new();
    craft.full(3, &zeros);
    assert!(matches!(
        parse_with(&craft.finish(), small),
        Err(PackError::ObjectTooLarge { .. })
    ));
    // Same bomb with a lying small header: inflation stops just past it.
    let mut craft = Craft::new();
    craft.raw(3, 100, &[], &zlib(&zeros, 9));
    assert!(matches!(
        parse_with(&craft.finish(), small),
        Err(PackError::SizeMismatch { actual: None, .. })
    ));
    // And a delta whose result is huge.
    let mut craft = Craft::new();
    let base = craft.full(3, b"abc");
    craft.ofs(base, &delta(3, 1 << 30, &[]));
    assert!(matches!(
        parse_with(&craft.finish(), small),
        Err(PackError::ObjectTooLarge { .. })
    ));
}

fn one_delta(ops_delta: Vec<u8>) -> Result<Vec<Object>, PackError> {
    let mut craft = Craft::new();
    let base = craft.full(3, b"0123456789");
    craft.ofs(base, &ops_delta);
    parse(&craft.finish())
}

#[test]
fn bad_deltas() {
    let is_delta_err = |r: Result<Vec<Object>, PackError>, want: fn(&DeltaError) -> bool| match r {
        Err(PackError::Delta {
            index: 1, reason, ..
        }) => want(&reason),
        _ => false,
    };
    assert!(is_delta_err(
        one_delta(delta(10, 5, &[0x91, 8, 5])),
        |e| matches!(e, DeltaError::CopyOutOfRange { .. })
    ));
    assert!(is_delta_err(
        one_delta(delta(10, 5, &[0x90, 4])),
        |e| matches!(e, DeltaError::ResultSize { .. })
    ));
    assert!(is_delta_err(
        one_delta(delta(10, 3, &[0x90, 4])),
        |e| matches!(e, DeltaError::ResultSize { .. })
    ));
    assert!(is_delta_err(one_delta(delta(10, 1, &[0])), |e| matches!(
        e,
        DeltaError::ZeroOpcode { .. }
    )));
    assert!(is_delta_err(
        one_delta(delta(11, 1, &[1, b'a'])),
        |e| matches!(e, DeltaError::BaseSize { .. })
    ));
    assert!(is_delta_err(one_delta(vec![0x80]), |e| matches!(
        e,
        DeltaError::Truncated { .. }
    )));
    assert!(one_delta(delta(10, 4, &[0x91, 6, 4])).is_ok());
}

#[test]
fn bad_bases() {
    let mut craft = Craft::new();
    craft.refd(
        hash_object(Kind::Blob, b"nowhere"),
        &delta(7, 1, &[1, b'a']),
    );
    let err = super::fails(parse(&craft.finish()), "missing base");
    assert!(
        matches!(err, PackError::MissingBase { index: 0, .. }),
        "{err}"
    );

    let mut craft = Craft::new();
    craft.full(3, b"x");
    craft.ofs_distance(1000, &delta(1, 1, &[1, b'a']));
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::BadBaseOffset { .. })
    ));
    let mut craft = Craft::new();
    craft.full(3, b"x");
    craft.ofs_distance(0, &delta(1, 1, &[1, b'a']));
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::BadBaseOffset { distance: 0, .. })
    ));
    let mut craft = Craft::new();
    craft.full(3, b"x");
    craft.ofs_distance(3, &delta(1, 1, &[1, b'a']));
    assert!(
        matches!(parse(&craft.finish()), Err(PackError::BadBaseOffset { .. })),
        "mid-object"
    );
    let mut craft = Craft::new();
    craft.raw(6, 0, &[0xff; 12], &[]);
    assert!(
        matches!(parse(&craft.finish()), Err(PackError::BadHeader { .. })),
        "offset overflow"
    );
    let mut craft = Craft::new();
    craft.raw(5, 1, &[], &zlib(b"x", 6));
    assert!(
        matches!(parse(&craft.finish()), Err(PackError::BadHeader { .. })),
        "type 5"
    );

    // Two REF_DELTAs that are each other's base never resolve.
    let (a, b) = (b"aaaa", b"bbbb");
    let mut craft = Craft::new();
    craft.refd(
        hash_object(Kind::Blob, b),
        &delta(4, 4, &[4, b'a', b'a', b'a', b'a']),
    );
    craft.refd(
        hash_object(Kind::Blob, a),
        &delta(4, 4, &[4, b'b', b'b', b'b', b'b']),
    );
    assert!(matches!(
        parse(&craft.finish()),
        Err(PackError::MissingBase { .. })
    ));
}

/// A chain: one full blob, then `n` deltas each based on the previous one.
fn chain(n: usize, by_ref_reversed: bool) -> Vec<u8> {
    let content = |i: usize| format!("{i:016}").into_bytes();
    let delta_for = |i: usize| {
        let mut ops = vec![16u8];
        ops.extend_from_slice(&content(i));
        delta(16, 16, &ops)
    };
    let mut craft = Craft::new();
    if by_ref_reversed {
        for i in (1..=n).rev() {
            craft.refd(hash_object(Kind::Blob, &content(i - 1)), &delta_for(i));
        }
        craft.full_stored(3, &content(0));
    } else {
        let mut prev = craft.full_stored(3, &content(0));
        for i in 1..=n {
            prev = craft.ofs(prev, &delta_for(i));
        }
    }
    craft.finish()
}

#[test]
fn delta_chains_are_bounded_and_iterative() {
    let long = chain(99_999, false);
    let err = super::fails(parse(&long), "too deep");
    assert!(
        matches!(err, PackError::DeltaTooDeep { limit: 50, .. }),
        "{err}"
    );
    assert_eq!(parse(&chain(50, false)).map(|o| o.len()).ok(), Some(51));
    let deep = PackLimits {
        max_delta_depth: u32::MAX,
        ..PackLimits::default()
    };
    let objects = parse_with(&long, deep).expect("deep chain without recursion");
    assert_eq!(objects.len(), 100_000);
    assert_eq!(objects[99_999].data, b"0000000000099999");
    let objects = parse_with(&chain(20_000, true), deep).expect("reversed REF chain");
    assert_eq!(objects.len(), 20_001);
    assert_eq!(objects[0].data, b"0000000000020000");
    let err = super::fails(parse(&chain(60, true)), "too deep");
    assert!(matches!(err, PackError::DeltaTooDeep { .. }), "{err}");
}

#[test]
fn duplicates_are_dropped() {
    let mut craft = Craft::new();
    craft.full(3, b"same");
    craft.full(3, b"other");
    craft.full(3, b"same");
    let objects = parse(&craft.finish()).expect("duplicates are accepted");
    assert_eq!(objects.len(), 2);
}

#[test]
fn errors_say_what_is_wrong() {
    let mut craft = Craft::new();
    craft.full(3, b"x");
    let missing = hash_object(Kind::Blob, b"gone");
    let offset = craft.refd(missing, &delta(4, 1, &[1, b'a']));
    let text = super::fails(parse(&craft.finish()), "missing").to_string();
    assert_eq!(
        text,
        format!("pack object 1 at offset {offset}: delta base {missing} is missing")
    );
}
