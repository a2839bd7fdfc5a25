//! The sync envelope's decoder on arbitrary bytes, for every message type:
//! never a panic, never more than the limit inflated. Each input is decoded
//! as it is and, so that the fuzzer reaches the MessagePack layer (and the
//! wire packs inside it, protocol 4's linked packs among them), once more
//! wrapped in a valid envelope of protocol 4 (with the digest of no heads)
//! and of protocol 3.

#![no_main]

use chartsync_protocol::envelope::{self, EnvelopeError};
use chartsync_protocol::sync::{
    AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, FetchOneRequest, FetchOneResponse,
    PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest, PushResponse,
};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4 << 20;

fn decode_all(bytes: &[u8]) {
    let _ = envelope::decode::<PushRequest>(bytes, LIMIT);
    let _ = envelope::decode::<PushResponse>(bytes, LIMIT);
    let _ = envelope::decode::<PullRequest>(bytes, LIMIT);
    let _ = envelope::decode::<PullResponse>(bytes, LIMIT);
    let _ = envelope::decode::<FetchNewRequest>(bytes, LIMIT);
    let _ = envelope::decode::<FetchNewResponse>(bytes, LIMIT);
    let _ = envelope::decode::<AckRequest>(bytes, LIMIT);
    let _ = envelope::decode::<AckResponse>(bytes, LIMIT);
    let _ = envelope::decode::<FetchOneRequest>(bytes, LIMIT);
    let _ = envelope::decode::<FetchOneResponse>(bytes, LIMIT);
    if let Err(EnvelopeError::TooLarge { limit }) = envelope::decode::<PushRequest>(bytes, LIMIT) {
        assert_eq!(limit, LIMIT);
    }
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    let Ok(frame) = zstd::bulk::compress(data, 1) else {
        return;
    };
    let mut wrapped = b"CSB".to_vec();
    wrapped.push(PROTOCOL_VERSION);
    // SHA-1 of nothing: the digest of a batch that derives no head.
    wrapped.extend_from_slice(&[
        0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18,
        0x90, 0xaf, 0xd8, 0x07, 0x09,
    ]);
    wrapped.extend_from_slice(&frame);
    decode_all(&wrapped);
    let mut v3 = b"CSB".to_vec();
    v3.push(3);
    v3.extend_from_slice(&frame);
    decode_all(&v3);
});
