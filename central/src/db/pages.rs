//! Fetch-new pages remembered for acknowledgement by token (sync protocol
//! 6): what both backends store of a page (see `CentralDb::record_page`).

use chartsync_protocol::PatientId;

use super::{DbError, Seq};

/// A page as recorded: its cursor and the ids it offered, in order.
pub type OfferedPage = (Seq, Vec<PatientId>);

/// How long a page's ids are kept unacknowledged (a week): a satellite
/// offline longer acknowledges its last page by the ids instead.
pub const KEEP_SECS: i64 = 7 * 24 * 3600;

/// A token as stored: central gives out tokens from 1 to `i64::MAX`, so
/// any other value was never recorded.
pub fn token_to_sql(page: u64) -> Option<i64> {
    i64::try_from(page).ok().filter(|&t| t > 0)
}

/// A new token: random, from 1 to `i64::MAX` (from a random patient id:
/// its 122 random bits, so no other source of randomness is needed).
pub fn new_token() -> u64 {
    loop {
        let bytes = *PatientId::random().as_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[8..]);
        let t = u64::from_le_bytes(t) >> 1;
        if t != 0 {
            return t;
        }
    }
}

/// The ids as one byte string, 16 bytes each.
pub fn ids_blob(ids: &[PatientId]) -> Vec<u8> {
    ids.iter().flat_map(|id| *id.as_bytes()).collect()
}

/// The ids of a stored byte string.
pub fn ids_from_blob(blob: &[u8]) -> Result<Vec<PatientId>, DbError> {
    let (chunks, rest) = blob.as_chunks::<16>();
    if !rest.is_empty() {
        return Err(DbError::Damaged("fetch_pages.ids"));
    }
    chunks
        .iter()
        .map(|c| PatientId::from_bytes(*c).map_err(|_| DbError::Damaged("fetch_pages.ids")))
        .collect()
}
