//! Patient locks: a lease row per locked patient, with an expiry in Unix
//! milliseconds, so a crashed process blocks a patient no longer than its
//! lease.

use std::time::Duration;

use chartsync_protocol::PatientId;
use rusqlite::{Transaction, params};

use super::pool::sql;
use crate::db::DbError;

/// Takes (or renews) the leases it can; per id, whether `holder` now has it.
pub(super) fn try_lock(
    tx: &Transaction<'_>,
    ids: &[PatientId],
    holder: &str,
    lease: Duration,
) -> Result<Vec<bool>, DbError> {
    const CTX: &str = "taking patient locks";
    let now = chrono::Utc::now().timestamp_millis();
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease);
    // The upsert changes a row only when the lease is free (no row),
    // expired, or already this holder's.
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO locks (patient, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (patient) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE locks.expires_at < ?4 OR locks.holder = excluded.holder",
        )
        .map_err(sql(CTX))?;
    ids.iter()
        .map(|id| {
            let changed = stmt
                .execute(params![&id.as_bytes()[..], holder, expires, now])
                .map_err(sql(CTX))?;
            Ok(changed == 1)
        })
        .collect()
}

/// Drops `holder`'s leases on these patients (others' are left alone).
pub(super) fn unlock(tx: &Transaction<'_>, ids: &[PatientId], holder: &str) -> Result<(), DbError> {
    const CTX: &str = "releasing patient locks";
    let mut stmt = tx
        .prepare_cached("DELETE FROM locks WHERE patient = ?1 AND holder = ?2")
        .map_err(sql(CTX))?;
    for id in ids {
        stmt.execute(params![&id.as_bytes()[..], holder])
            .map_err(sql(CTX))?;
    }
    Ok(())
}

/// Every holder with a lease row.
pub(super) fn holders(conn: &Transaction<'_>) -> Result<Vec<String>, DbError> {
    const CTX: &str = "listing lease holders";
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT holder FROM locks")
        .map_err(sql(CTX))?;
    let rows = stmt.query_map([], |r| r.get(0)).map_err(sql(CTX))?;
    rows.collect::<Result<Vec<String>, _>>().map_err(sql(CTX))
}

/// Drops every lease of `holder`.
pub(super) fn release_all(tx: &Transaction<'_>, holder: &str) -> Result<u64, DbError> {
    let n = tx
        .execute("DELETE FROM locks WHERE holder = ?1", params![holder])
        .map_err(sql("releasing a dead process's leases"))?;
    Ok(n as u64)
}
