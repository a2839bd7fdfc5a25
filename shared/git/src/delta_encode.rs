//! Making deltas in git's format: the base is indexed by 16-byte blocks, the
//! target is scanned with a rolling hash over 16-byte windows, and every
//! match found in the index is extended both ways into a copy instruction;
//! what matches nothing is inserted literally. Time is linear in the sizes
//! (each lookup follows at most [`MAX_CHAIN`] candidates) and memory is one
//! slot per base block.

/// Window and block size.
const BLOCK: usize = 16;
/// Candidates compared per lookup.
const MAX_CHAIN: usize = 16;
/// Longest copy instruction written (git's own encoder's limit).
const MAX_COPY: usize = 0x10000;
/// Longest insert instruction.
const MAX_INSERT: usize = 0x7f;
/// Multiplier of the rolling hash.
const MUL: u32 = 0x0100_0193;

/// A delta turning `base` into `target`, in git's format (applied by
/// [`crate::apply_delta`]). Never fails: with nothing in common the delta
/// inserts the whole target.
pub fn encode_delta(base: &[u8], target: &[u8]) -> Vec<u8> {
    encode(base, target, usize::MAX).unwrap_or_default()
}

/// Like [`encode_delta`], but gives up (`None`) as soon as the delta would
/// be longer than `max_len` bytes: storing the target whole is then better.
pub fn encode_delta_within(base: &[u8], target: &[u8], max_len: usize) -> Option<Vec<u8>> {
    encode(base, target, max_len)
}

fn write_size(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_inserts(out: &mut Vec<u8>, literal: &[u8]) {
    for chunk in literal.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8); // 1..=127
        out.extend_from_slice(chunk);
    }
}

fn push_copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let size = len.min(MAX_COPY);
        let at = out.len();
        out.push(0x80);
        let mut op = 0x80u8;
        for i in 0..4 {
            let byte = ((offset >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                op |= 1 << i;
                out.push(byte);
            }
        }
        // A size of 0x10000 is written as no size bytes at all.
        if size != MAX_COPY {
            for i in 0..2 {
                let byte = ((size >> (8 * i)) & 0xff) as u8;
                if byte != 0 {
                    op |= 1 << (4 + i);
                    out.push(byte);
                }
            }
        }
        out[at] = op;
        offset += size;
        len -= size;
    }
}

fn window_hash(window: &[u8]) -> u32 {
    window.iter().fold(0u32, |h, &b| {
        h.wrapping_mul(MUL).wrapping_add(u32::from(b) + 1)
    })
}

fn encode(base: &[u8], target: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + target.len().min(max_len) / 8);
    write_size(&mut out, base.len() as u64);
    write_size(&mut out, target.len() as u64);
    // Offsets are 32 bits in the format.
    let indexable = base.len() >= BLOCK && u32::try_from(base.len()).is_ok();
    if !indexable || target.len() < BLOCK {
        push_inserts(&mut out, target);
        return (out.len() <= max_len).then_some(out);
    }
    // Index: hash table heads and per-block chains (later blocks first).
    let blocks = base.len() / BLOCK;
    let bits = (usize::BITS - blocks.leading_zeros()).clamp(4, 24);
    let mask = (1u32 << bits) - 1;
    let mut heads = vec![u32::MAX; 1 << bits];
    let mut next = vec![u32::MAX; blocks];
    for (block, link) in next.iter_mut().enumerate() {
        let at = block * BLOCK;
        let slot = (window_hash(&base[at..at + BLOCK]) & mask) as usize;
        *link = heads[slot];
        heads[slot] = block as u32;
    }
    // MUL^(BLOCK-1), to drop the oldest byte from the rolling hash.
    let top = (1..BLOCK).fold(1u32, |p, _| p.wrapping_mul(MUL));
    let mut literal_start = 0usize;
    let mut pos = 0usize;
    let mut hash = window_hash(&target[..BLOCK]);
    while pos + BLOCK <= target.len() {
        // The best candidate: the longest match extended both ways.
        let mut best: Option<(usize, usize, usize)> = None; // (base start, target start, len)
        let mut candidate = heads[(hash & mask) as usize];
        let mut tries = 0;
        while candidate != u32::MAX && tries < MAX_CHAIN {
            tries += 1;
            let b = candidate as usize * BLOCK;
            candidate = next[candidate as usize];
            if base[b..b + BLOCK] != target[pos..pos + BLOCK] {
                continue;
            }
            let forward = base[b..]
                .iter()
                .zip(&target[pos..])
                .take_while(|(x, y)| x == y)
                .count();
            let back = base[..b]
                .iter()
                .rev()
                .zip(target[literal_start..pos].iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            let len = forward + back;
            if best.is_none_or(|(_, _, l)| len > l) {
                best = Some((b - back, pos - back, len));
            }
        }
        match best {
            Some((b, t, len)) => {
                push_inserts(&mut out, &target[literal_start..t]);
                push_copy(&mut out, b, len);
                if out.len() > max_len {
                    return None;
                }
                pos = t + len;
                literal_start = pos;
                if pos + BLOCK <= target.len() {
                    hash = window_hash(&target[pos..pos + BLOCK]);
                }
            }
            None => {
                if pos + BLOCK < target.len() {
                    let old = u32::from(target[pos]) + 1;
                    let new = u32::from(target[pos + BLOCK]) + 1;
                    hash = hash
                        .wrapping_sub(old.wrapping_mul(top))
                        .wrapping_mul(MUL)
                        .wrapping_add(new);
                }
                pos += 1;
                // A long literal run costs its length: stop early.
                if pos - literal_start > max_len {
                    return None;
                }
            }
        }
    }
    push_inserts(&mut out, &target[literal_start..]);
    (out.len() <= max_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply_delta;
    use proptest::prelude::*;

    fn round_trip(base: &[u8], target: &[u8]) -> Vec<u8> {
        let delta = encode_delta(base, target);
        let rebuilt = apply_delta(base, &delta, target.len()).expect("a valid delta");
        assert_eq!(rebuilt, target);
        delta
    }

    #[test]
    fn an_appended_visit_costs_the_visit() {
        let mut base = String::new();
        for i in 0..300 {
            base.push_str(&format!(
                "- date: 2024-01-{:02}\n  reason: follow-up {i}\n  notes: blood pressure fine\n",
                i % 28 + 1
            ));
        }
        let visit = "- date: 2025-02-03\n  reason: cough\n  notes: a new visit of some length, with details about the patient\n";
        let target = format!("{base}{visit}");
        let delta = round_trip(base.as_bytes(), target.as_bytes());
        assert!(
            delta.len() < visit.len() + 32,
            "{} bytes for a {}-byte visit",
            delta.len(),
            visit.len()
        );
        // The reverse (older from newer) is a single copy.
        let back = round_trip(target.as_bytes(), base.as_bytes());
        assert!(back.len() < 16, "{} bytes", back.len());
    }

    #[test]
    fn edge_cases() {
        round_trip(b"", b"");
        round_trip(b"", b"abc");
        round_trip(b"abc", b"");
        round_trip(&[7u8; 100_000], &[7u8; 200_000]);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let delta = round_trip(&big, &big);
        assert!(delta.len() < 64, "{} bytes", delta.len());
        let mut moved = big[150_000..].to_vec();
        moved.extend_from_slice(&big[..150_000]);
        assert!(round_trip(&big, &moved).len() < 100);
    }

    #[test]
    fn within_gives_up_when_too_long() {
        let base = vec![1u8; 1000];
        let target: Vec<u8> = (0..1000u32).map(|i| (i % 200) as u8 + 2).collect();
        assert!(encode_delta_within(&base, &target, 100).is_none());
        assert!(encode_delta_within(&base, &base, 100).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn apply_undoes_encode(
            base in proptest::collection::vec(0u8..4, 0..3000),
            target in proptest::collection::vec(0u8..4, 0..3000),
        ) {
            round_trip(&base, &target);
        }

        #[test]
        fn edits_of_a_base_round_trip(
            base in proptest::collection::vec(any::<u8>(), 0..5000),
            cuts in proptest::collection::vec((any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        ) {
            let mut target = base.clone();
            for (at, len, insert) in cuts {
                let at = usize::from(at) % (target.len() + 1);
                let end = (at + usize::from(len) % 64).min(target.len());
                target.splice(at..end, insert);
            }
            let delta = round_trip(&base, &target);
            prop_assert!(delta.len() <= target.len() + target.len() / 64 + 16);
        }
    }
}
