//! Patient leases: a row per locked patient, expiring on the database's
//! clock (Unix milliseconds), with a fence number that grows whenever a
//! lease changes hands, and the liveness key of the process that holds it
//! (`owner`, see the `liveness` module).
//!
//! A lease is taken when it is free, expired, already the holder's, or
//! held under a key whose advisory lock is free: its process's database
//! session ended, so the process is gone (or counts its leases as lost).

use std::collections::HashSet;
use std::time::Duration;

use super::cached::{self, Tx as Transaction};
use chartsync_protocol::PatientId;

use super::R;

/// The database's clock in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Takes (or renews) the leases it can for `holder`, whose process's
/// liveness key is `owner`; per id, whether `holder` now has it.
pub(super) async fn try_lock(
    tx: &Transaction<'_>,
    ids: &[PatientId],
    holder: &str,
    lease: Duration,
    owner: i64,
) -> R<Vec<bool>> {
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    let mut unique: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    unique.sort();
    unique.dedup();
    let mut taken = upsert(tx, &unique, holder, lease, owner, &[]).await?;
    if taken.len() < unique.len() {
        // Busy ones: are their holders still alive?
        let busy: Vec<Vec<u8>> = unique
            .iter()
            .filter(|p| !taken.contains(*p))
            .cloned()
            .collect();
        let dead = dead_owners(tx, &busy, owner).await?;
        if !dead.is_empty() {
            let over = upsert(tx, &busy, holder, lease, owner, &dead).await?;
            tracing::info!(
                leases = over.len(),
                processes = dead.len(),
                "took over patient leases of central processes whose database session ended"
            );
            taken.extend(over);
        }
    }
    Ok(ids
        .iter()
        .map(|id| taken.contains(&id.as_bytes()[..]))
        .collect())
}

/// The upsert: changes a row only when the lease is free (no row), expired,
/// already this holder's (then its fence stays, unless its key changed),
/// or held under one of the `dead` keys. Returns the patients now held.
async fn upsert(
    tx: &Transaction<'_>,
    patients: &[Vec<u8>],
    holder: &str,
    lease: i64,
    owner: i64,
    dead: &[i64],
) -> R<HashSet<Vec<u8>>> {
    let sql = format!(
        "INSERT INTO locks (patient, holder, expires_at, fence, owner)
         SELECT p, $2, {NOW_MS} + $3, nextval('lock_fence'), $4 FROM unnest($1::bytea[]) AS p
         ON CONFLICT (patient) DO UPDATE
            SET holder = excluded.holder, expires_at = excluded.expires_at, owner = excluded.owner,
                fence = CASE WHEN locks.holder = excluded.holder
                              AND locks.owner IS NOT DISTINCT FROM excluded.owner
                             THEN locks.fence ELSE excluded.fence END
          WHERE locks.expires_at < {NOW_MS} OR locks.holder = excluded.holder
             OR locks.owner = ANY($5::bigint[])
         RETURNING patient"
    );
    let rows = cached::query(tx, &sql, &[&patients, &holder, &lease, &owner, &dead]).await?;
    Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
}

/// The liveness keys of other processes holding unexpired leases on these
/// patients whose advisory lock is free: their sessions ended. The probe
/// takes each free lock for the rest of this transaction, so the key cannot
/// be judged alive and dead at once (keys are never reused).
async fn dead_owners(tx: &Transaction<'_>, patients: &[Vec<u8>], owner: i64) -> R<Vec<i64>> {
    let sql = format!(
        "SELECT o FROM (SELECT DISTINCT owner AS o FROM locks
                         WHERE patient = ANY($1) AND owner IS NOT NULL AND owner <> $2
                           AND expires_at >= {NOW_MS}) AS held
          WHERE pg_try_advisory_xact_lock(o)"
    );
    let rows = cached::query(tx, &sql, &[&patients, &owner]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The query for the patients among `$1` leased (unexpired) by another
/// process than the one whose liveness key is `$2` (`NULL`: this process
/// has no live session, so every lease counts as another's); its rows'
/// first column is a patient. A head change on them is refused: the fence
/// for a writer whose lease was taken over. (The clock is `NOW_MS`.)
pub(super) const LEASED_BY_OTHERS: &str = "SELECT patient FROM locks
  WHERE patient = ANY($1) AND owner IS DISTINCT FROM $2
    AND expires_at >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Drops `holder`'s leases on these patients (others' are left alone).
pub(super) async fn unlock(tx: &Transaction<'_>, ids: &[PatientId], holder: &str) -> R<()> {
    let ids: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    cached::execute(
        tx,
        "DELETE FROM locks WHERE patient = ANY($1) AND holder = $2",
        &[&ids, &holder],
    )
    .await?;
    Ok(())
}

/// Every holder with a lease row.
pub(super) async fn holders(tx: &Transaction<'_>) -> R<Vec<String>> {
    let rows = cached::query(tx, "SELECT DISTINCT holder FROM locks", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops every lease of `holder`.
pub(super) async fn release_all(tx: &Transaction<'_>, holder: &str) -> R<u64> {
    cached::execute(tx, "DELETE FROM locks WHERE holder = $1", &[&holder]).await
}
