//! Records set aside. One record's trouble never blocks another: a record
//! that cannot be merged, stored or received here is written down with its
//! reason, the job goes on with every other record (and the pull cursor
//! moves past it), and the record is tried again later with a growing
//! pause. A row goes away as soon as the record syncs again (any
//! [`Db::commit_sync`] that names it).

use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{Transaction, params};

use super::{Db, DbError, head_from, id_from, sql};

/// First pause before a record set aside is tried again; it doubles with
/// every attempt, up to [`MAX_RETRY_SECS`].
pub const FIRST_RETRY_SECS: i64 = 60;
/// Longest pause between two attempts.
pub const MAX_RETRY_SECS: i64 = 24 * 3600;

/// Nothing set aside, for [`Db::commit_sync`].
pub const NO_ASIDE: (&str, &[SetAside]) = ("", &[]);

/// A record to set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The record.
    pub id: PatientId,
    /// Why, for people: what is wrong and what to do.
    pub reason: String,
    /// Central's head that could not be stored here, if any.
    pub central_head: Option<CommitId>,
    /// The local head at the time (push skips the record until it moves).
    pub local_head: Option<CommitId>,
}

/// A record set aside, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetAsideRow {
    /// The record.
    pub patient: PatientId,
    /// The job that set it aside.
    pub job: String,
    /// Why.
    pub reason: String,
    /// Unix seconds, first set aside.
    pub since: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// Unix seconds: next attempt.
    pub retry_at: i64,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Writes `items` as set aside by `job` (inside the caller's transaction).
pub(super) fn record(tx: &Transaction<'_>, job: &str, items: &[SetAside]) -> Result<(), DbError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO set_aside (patient, job, reason, central_head, local_head, since, attempts, retry_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?6 + ?7)
             ON CONFLICT (patient) DO UPDATE SET
                job = excluded.job,
                reason = excluded.reason,
                central_head = coalesce(excluded.central_head, set_aside.central_head),
                local_head = excluded.local_head,
                attempts = set_aside.attempts + 1,
                retry_at = excluded.since + min(?8, ?7 << min(set_aside.attempts, 20))",
        )
        .map_err(sql("setting records aside"))?;
    let at = now();
    for item in items {
        stmt.execute(params![
            item.id.as_bytes(),
            job,
            item.reason,
            item.central_head.map(|h| h.to_string()),
            item.local_head.map(|h| h.to_string()),
            at,
            FIRST_RETRY_SECS,
            MAX_RETRY_SECS,
        ])
        .map_err(sql("setting records aside"))?;
    }
    Ok(())
}

/// Forgets records that synced (inside the caller's transaction).
pub(super) fn clear(tx: &Transaction<'_>, ids: &[PatientId]) -> Result<(), DbError> {
    let mut stmt = tx
        .prepare_cached("DELETE FROM set_aside WHERE patient = ?1")
        .map_err(sql("clearing records set aside"))?;
    for id in ids {
        stmt.execute(params![id.as_bytes()])
            .map_err(sql("clearing records set aside"))?;
    }
    Ok(())
}

impl Db {
    /// Sets records aside (outside any sync progress: push's conflicts).
    pub fn set_aside(&self, job: &str, items: &[SetAside]) -> Result<(), DbError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("setting records aside"))?;
        record(&tx, job, items)?;
        tx.commit().map_err(sql("setting records aside"))
    }

    /// Every record set aside, oldest first.
    pub fn set_aside_list(&self) -> Result<Vec<SetAsideRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT patient, job, reason, since, attempts, retry_at FROM set_aside
                 ORDER BY since, patient",
            )
            .map_err(sql("listing records set aside"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(sql("listing records set aside"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, job, reason, since, attempts, retry_at) =
                row.map_err(sql("listing records set aside"))?;
            out.push(SetAsideRow {
                patient: id_from(id)?,
                job,
                reason,
                since,
                attempts,
                retry_at,
            });
        }
        Ok(out)
    }

    /// How many records are set aside.
    pub fn set_aside_count(&self) -> Result<u64, DbError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM set_aside", [], |r| r.get(0))
            .map_err(sql("counting records set aside"))?;
        Ok(n.max(0) as u64)
    }

    /// Records with central's changes not stored here whose next attempt is
    /// due: at most `limit`, longest waiting first. (A record fixed here
    /// meanwhile needs no retry: its new head is pushed, and push merges
    /// central's changes.) Each comes with the local head it
    /// was set aside at.
    pub fn set_aside_due(
        &self,
        limit: usize,
    ) -> Result<Vec<(PatientId, Option<CommitId>)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT patient, local_head FROM set_aside
                 WHERE central_head IS NOT NULL AND retry_at <= ?1
                 ORDER BY retry_at LIMIT ?2",
            )
            .map_err(sql("listing records set aside"))?;
        let rows = stmt
            .query_map(params![now(), limit as i64], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(sql("listing records set aside"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, head) = row.map_err(sql("listing records set aside"))?;
            out.push((id_from(id)?, head_from(head)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_set_aside_again_waits_longer_and_goes_away_when_it_syncs() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("s.sqlite")).expect("db");
        let id = PatientId::random();
        let item = SetAside {
            id,
            reason: "too large".into(),
            central_head: Some(CommitId([1; 20])),
            local_head: Some(CommitId([2; 20])),
        };
        db.set_aside("pull", std::slice::from_ref(&item))
            .expect("aside");
        db.set_aside("pull", std::slice::from_ref(&item))
            .expect("aside");
        let rows = db.set_aside_list().expect("list");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].attempts, 2);
        assert!(rows[0].retry_at - rows[0].since >= 2 * FIRST_RETRY_SECS);
        assert!(db.set_aside_due(10).expect("due").is_empty(), "not due yet");
        let synced = crate::db::CentralState {
            id,
            head: CommitId([1; 20]),
            seq: 1,
            time: 0,
        };
        db.commit_sync(&[synced], &[], &[], NO_ASIDE).expect("sync");
        assert_eq!(db.set_aside_count().expect("count"), 0);
    }
}
