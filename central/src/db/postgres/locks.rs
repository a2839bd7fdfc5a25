//! Patient leases: a row per locked patient, expiring on the database's
//! clock (Unix milliseconds), with a fence number that grows whenever a
//! lease changes hands.

use std::time::Duration;

use chartsync_protocol::PatientId;
use tokio_postgres::Transaction;

use super::R;

/// The database's clock in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Takes (or renews) the leases it can; per id, whether `holder` now has it.
pub(super) async fn try_lock(
    tx: &Transaction<'_>,
    ids: &[PatientId],
    holder: &str,
    lease: Duration,
) -> R<Vec<bool>> {
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    let mut unique: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    unique.sort();
    unique.dedup();
    // The upsert changes a row only when the lease is free (no row),
    // expired, or already this holder's (then its fence stays).
    let sql = format!(
        "INSERT INTO locks (patient, holder, expires_at, fence)
         SELECT p, $2, {NOW_MS} + $3, nextval('lock_fence') FROM unnest($1::bytea[]) AS p
         ON CONFLICT (patient) DO UPDATE
            SET holder = excluded.holder, expires_at = excluded.expires_at,
                fence = CASE WHEN locks.holder = excluded.holder THEN locks.fence ELSE excluded.fence END
          WHERE locks.expires_at < {NOW_MS} OR locks.holder = excluded.holder
         RETURNING patient"
    );
    let rows = tx.query(&sql, &[&unique, &holder, &lease]).await?;
    let taken: std::collections::HashSet<Vec<u8>> =
        rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
    Ok(ids
        .iter()
        .map(|id| taken.contains(&id.as_bytes()[..]))
        .collect())
}

/// Drops `holder`'s leases on these patients (others' are left alone).
pub(super) async fn unlock(tx: &Transaction<'_>, ids: &[PatientId], holder: &str) -> R<()> {
    let ids: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    tx.execute(
        "DELETE FROM locks WHERE patient = ANY($1) AND holder = $2",
        &[&ids, &holder],
    )
    .await?;
    Ok(())
}

/// Every holder with a lease row.
pub(super) async fn holders(tx: &Transaction<'_>) -> R<Vec<String>> {
    let rows = tx.query("SELECT DISTINCT holder FROM locks", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops every lease of `holder`.
pub(super) async fn release_all(tx: &Transaction<'_>, holder: &str) -> R<u64> {
    Ok(tx
        .execute("DELETE FROM locks WHERE holder = $1", &[&holder])
        .await?)
}
