//! `apply_delta` on an arbitrary base and delta: never a panic, never more
//! than the limit allocated, and a result always of the declared size; and
//! `encode_delta` round trips: applying its delta rebuilds the target.
//! Input: two bytes of base length (little endian), the base, the delta.

#![no_main]

use chartsync_git::{DeltaError, apply_delta, delta_header, encode_delta};
use libfuzzer_sys::fuzz_target;

/// The pack parser's default limit for one object.
const MAX_RESULT: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let base_len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (base, delta) = rest.split_at(base_len);
    // The rest of the input, taken as a target made from the base.
    let encoded = encode_delta(base, delta);
    assert_eq!(
        apply_delta(base, &encoded, delta.len()).as_deref(),
        Ok(delta),
        "encode_delta's delta does not rebuild its target"
    );
    match apply_delta(base, delta, MAX_RESULT) {
        Ok(result) => {
            let header = delta_header(delta).expect("an applied delta has a header");
            assert_eq!(header.base_size, base.len() as u64);
            assert_eq!(header.result_size, result.len() as u64);
            assert!(result.len() <= MAX_RESULT);
        }
        Err(DeltaError::ResultTooLarge { size, limit }) => {
            assert!(size > limit);
        }
        Err(_) => {}
    }
});
