//! Records: accepting heads, reading rows, holders, grants and the refs
//! still to move.

use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{OptionalExtension, Transaction, params};

use super::instances::instance_id;
use super::pool::sql;
use crate::db::{Applied, Counts, DbError, HeadChange, Holders, RecordRow, RefPending, Seq};

/// The columns [`RawRecord::read`] expects, in order (`r` is `records`).
macro_rules! record_columns {
    () => {
        "r.patient, r.head, r.seq, r.catchment, r.created_by, r.holders, r.updated_at, r.updated_by"
    };
}
pub(super) use record_columns;

/// A `records` row as stored, decoded by [`RawRecord::decode`].
#[derive(Debug)]
pub(super) struct RawRecord {
    patient: Vec<u8>,
    head: String,
    /// Its sequence number as stored.
    pub(super) seq: i64,
    catchment: Option<String>,
    created_by: Option<i64>,
    holders: Vec<u8>,
    updated_at: i64,
    updated_by: Option<i64>,
}

impl RawRecord {
    /// Reads the [`record_columns`] of a row.
    pub(super) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
        Ok(RawRecord {
            patient: row.get(0)?,
            head: row.get(1)?,
            seq: row.get(2)?,
            catchment: row.get(3)?,
            created_by: row.get(4)?,
            holders: row.get(5)?,
            updated_at: row.get(6)?,
            updated_by: row.get(7)?,
        })
    }

    /// Checks and converts every value.
    pub(super) fn decode(self) -> Result<RecordRow, DbError> {
        Ok(RecordRow {
            id: patient_from(&self.patient, "records.patient")?,
            head: head_from(&self.head, "records.head")?,
            seq: seq_from(self.seq, "records.seq")?,
            catchment: self.catchment,
            created_by: self
                .created_by
                .map(|raw| instance_id(raw).map_err(|_| DbError::Damaged("records.created_by")))
                .transpose()?,
            holders: Holders::from_bytes(&self.holders),
            updated_at: self.updated_at,
            updated_by: self
                .updated_by
                .map(|raw| instance_id(raw).map_err(|_| DbError::Damaged("records.updated_by")))
                .transpose()?,
        })
    }
}

/// A patient id read from `what`.
pub(super) fn patient_from(bytes: &[u8], what: &'static str) -> Result<PatientId, DbError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| DbError::Damaged(what))?;
    PatientId::from_bytes(bytes).map_err(|_| DbError::Damaged(what))
}

/// A commit id read from `what`.
pub(super) fn head_from(text: &str, what: &'static str) -> Result<CommitId, DbError> {
    text.parse().map_err(|_| DbError::Damaged(what))
}

/// A sequence number read from `what`.
pub(super) fn seq_from(raw: i64, what: &'static str) -> Result<Seq, DbError> {
    Seq::try_from(raw).map_err(|_| DbError::Damaged(what))
}

/// A sequence number as SQLite stores it (numbers beyond SQLite's range
/// are later than any stored one).
pub(super) fn seq_to_sql(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The last sequence number given out.
pub(super) fn last_seq(tx: &Transaction<'_>) -> Result<i64, DbError> {
    tx.prepare_cached("SELECT value FROM counters WHERE name = 'seq'")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
        .map_err(sql("reading the sequence counter"))?
        .filter(|seq| *seq >= 0)
        .ok_or(DbError::Damaged("counters.seq"))
}

/// A record's head, catchment and holders now.
type Current = (CommitId, Option<String>, Holders);

/// Accepts what it can of `changes` (see [`crate::db::CentralDb::apply`]).
pub(super) fn apply(tx: &Transaction<'_>, changes: &[HeadChange]) -> Result<Vec<Applied>, DbError> {
    const CTX: &str = "accepting heads";
    let now = chrono::Utc::now().timestamp();
    let first = last_seq(tx)?;
    let mut seq = first;
    let mut current = tx
        .prepare_cached("SELECT head, catchment, holders FROM records WHERE patient = ?1")
        .map_err(sql(CTX))?;
    let mut create = tx
        .prepare_cached(
            "INSERT INTO records (patient, head, seq, catchment, created_by, holders, created_at, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?5)
             ON CONFLICT (patient) DO NOTHING",
        )
        .map_err(sql(CTX))?;
    let mut update = tx
        .prepare_cached(
            "UPDATE records SET head = ?2, seq = ?3, catchment = ?4, holders = ?5, updated_at = ?6, updated_by = ?8
              WHERE patient = ?1 AND head = ?7",
        )
        .map_err(sql(CTX))?;
    let mut log = tx
        .prepare_cached(
            "INSERT INTO changes (seq, patient, head, instance, time) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql(CTX))?;
    // A record created and changed again before its ref was published
    // keeps its staging folder: repair must still find it there.
    let mut pending = tx
        .prepare_cached(
            "INSERT INTO ref_pending (patient, head, staging) VALUES (?1, ?2, ?3)
             ON CONFLICT (patient) DO UPDATE
                SET head = excluded.head, staging = coalesce(excluded.staging, ref_pending.staging)",
        )
        .map_err(sql(CTX))?;
    let mut grant = tx
        .prepare_cached(
            "INSERT INTO grants (instance, patient, reason, granted_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance, patient) DO NOTHING",
        )
        .map_err(sql(CTX))?;
    let mut read_current = |id: &[u8]| -> Result<Option<Current>, DbError> {
        let row = current
            .query_row(params![id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()
            .map_err(sql(CTX))?;
        row.map(|(head, catchment, holders)| {
            Ok((
                head_from(&head, "records.head")?,
                catchment,
                Holders::from_bytes(&holders),
            ))
        })
        .transpose()
    };

    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let id = &change.id.as_bytes()[..];
        let now_current = read_current(id)?;
        let next = seq + 1;
        let head = change.new.to_string();
        // Instances that held the record when its catchment moved.
        let mut grants: Vec<u32> = Vec::new();
        let written = match (&change.old, now_current) {
            (None, None) => {
                let mut holders = Holders::default();
                if let Some(by) = change.by {
                    holders.insert(by);
                }
                create
                    .execute(params![
                        id,
                        head,
                        next,
                        change.catchment,
                        change.by,
                        holders.to_bytes(),
                        now
                    ])
                    .map_err(sql(CTX))?
            }
            (Some(old), Some((now_head, catchment, mut now_holders))) if now_head == *old => {
                if let Some(by) = change.by {
                    now_holders.insert(by);
                }
                if catchment != change.catchment {
                    grants.extend(now_holders.iter());
                }
                update
                    .execute(params![
                        id,
                        head,
                        next,
                        change.catchment,
                        now_holders.to_bytes(),
                        now,
                        old.to_string(),
                        change.by
                    ])
                    .map_err(sql(CTX))?
            }
            (_, other) => {
                out.push(Applied::Stale {
                    current: other.map(|(head, ..)| head),
                });
                continue;
            }
        };
        if written != 1 {
            // Not reachable inside this write transaction, but never
            // number a change that did not happen.
            let current = read_current(id)?.map(|(head, ..)| head);
            out.push(Applied::Stale { current });
            continue;
        }
        seq = next;
        log.execute(params![seq, id, head, change.by, now])
            .map_err(sql(CTX))?;
        pending
            .execute(params![id, head, change.staging])
            .map_err(sql(CTX))?;
        if let (None, Some(by)) = (&change.old, change.by) {
            grant
                .execute(params![by, id, "created", now])
                .map_err(sql(CTX))?;
        }
        for holder in grants {
            grant
                .execute(params![holder, id, "held", now])
                .map_err(sql(CTX))?;
        }
        out.push(Applied::Ok {
            seq: seq_from(seq, "counters.seq")?,
            time: now,
        });
    }
    if seq != first {
        tx.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'seq'")
            .and_then(|mut s| s.execute(params![seq]))
            .map_err(sql(CTX))?;
    }
    Ok(out)
}

/// The rows of these records, in order.
pub(super) fn get(
    tx: &Transaction<'_>,
    ids: &[PatientId],
) -> Result<Vec<Option<RecordRow>>, DbError> {
    const CTX: &str = "reading records";
    let mut stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            record_columns!(),
            " FROM records r WHERE r.patient = ?1"
        ))
        .map_err(sql(CTX))?;
    ids.iter()
        .map(|id| {
            stmt.query_row(params![&id.as_bytes()[..]], RawRecord::read)
                .optional()
                .map_err(sql(CTX))?
                .map(RawRecord::decode)
                .transpose()
        })
        .collect()
}

/// The record's head after its latest change numbered `at` or lower.
pub(super) fn first_head(
    tx: &Transaction<'_>,
    id: &PatientId,
) -> Result<Option<CommitId>, DbError> {
    let head: Option<String> = tx
        .prepare_cached("SELECT head FROM changes WHERE patient = ?1 ORDER BY seq ASC LIMIT 1")
        .and_then(|mut s| {
            s.query_row(params![&id.as_bytes()[..]], |r| r.get(0))
                .optional()
        })
        .map_err(sql("reading a record's first head"))?;
    head.map(|h| head_from(&h, "changes.head")).transpose()
}

pub(super) fn head_at(
    tx: &Transaction<'_>,
    id: &PatientId,
    at: Seq,
) -> Result<Option<CommitId>, DbError> {
    let head: Option<String> = tx
        .prepare_cached(
            "SELECT head FROM changes WHERE patient = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![&id.as_bytes()[..], seq_to_sql(at)], |r| r.get(0))
                .optional()
        })
        .map_err(sql("reading a past head"))?;
    head.map(|h| head_from(&h, "changes.head")).transpose()
}

/// Sets `instance`'s holder bit on these records (unknown ones ignored).
pub(super) fn add_holder(
    tx: &Transaction<'_>,
    instance: u32,
    ids: &[PatientId],
) -> Result<(), DbError> {
    const CTX: &str = "recording holders";
    let mut read = tx
        .prepare_cached("SELECT holders FROM records WHERE patient = ?1")
        .map_err(sql(CTX))?;
    let mut write = tx
        .prepare_cached("UPDATE records SET holders = ?2 WHERE patient = ?1")
        .map_err(sql(CTX))?;
    for id in ids {
        let id = &id.as_bytes()[..];
        let bytes: Option<Vec<u8>> = read
            .query_row(params![id], |r| r.get(0))
            .optional()
            .map_err(sql(CTX))?;
        let Some(bytes) = bytes else { continue };
        let mut holders = Holders::from_bytes(&bytes);
        if holders.insert(instance) {
            write
                .execute(params![id, holders.to_bytes()])
                .map_err(sql(CTX))?;
        }
    }
    Ok(())
}

/// Every head whose ref may lag.
pub(super) fn ref_pending(tx: &Transaction<'_>) -> Result<Vec<RefPending>, DbError> {
    const CTX: &str = "listing pending refs";
    let mut stmt = tx
        .prepare_cached("SELECT patient, head, staging FROM ref_pending")
        .map_err(sql(CTX))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(sql(CTX))?;
    rows.map(|row| {
        let (patient, head, staging) = row.map_err(sql(CTX))?;
        Ok(RefPending {
            id: patient_from(&patient, "ref_pending.patient")?,
            head: head_from(&head, "ref_pending.head")?,
            staging,
        })
    })
    .collect()
}

/// Forgets pending refs still at the given heads.
pub(super) fn clear_ref_pending(
    tx: &Transaction<'_>,
    done: &[(PatientId, CommitId)],
) -> Result<(), DbError> {
    const CTX: &str = "clearing pending refs";
    let mut stmt = tx
        .prepare_cached("DELETE FROM ref_pending WHERE patient = ?1 AND head = ?2")
        .map_err(sql(CTX))?;
    for (id, head) in done {
        stmt.execute(params![&id.as_bytes()[..], head.to_string()])
            .map_err(sql(CTX))?;
    }
    Ok(())
}

/// Whether `instance` has a grant on the record.
pub(super) fn has_grant(
    tx: &Transaction<'_>,
    instance: u32,
    id: &PatientId,
) -> Result<bool, DbError> {
    tx.prepare_cached("SELECT 1 FROM grants WHERE instance = ?1 AND patient = ?2")
        .and_then(|mut s| s.exists(params![instance, &id.as_bytes()[..]]))
        .map_err(sql("checking a grant"))
}

/// Grants the record to `instance` (a grant it has keeps its first reason).
pub(super) fn grant(
    tx: &Transaction<'_>,
    instance: u32,
    id: &PatientId,
    reason: &str,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT INTO grants (instance, patient, reason, granted_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (instance, patient) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            instance,
            &id.as_bytes()[..],
            reason,
            chrono::Utc::now().timestamp()
        ])
    })
    .map_err(sql("granting a record"))?;
    Ok(())
}

/// Totals.
pub(super) fn counts(tx: &Transaction<'_>) -> Result<Counts, DbError> {
    const CTX: &str = "counting";
    let count = |table_sql: &str, what: &'static str| -> Result<u64, DbError> {
        let n: i64 = tx
            .prepare_cached(table_sql)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(sql(CTX))?;
        u64::try_from(n).map_err(|_| DbError::Damaged(what))
    };
    Ok(Counts {
        records: count("SELECT count(*) FROM records", "records")?,
        instances: count("SELECT count(*) FROM instances", "instances")?,
        seq: seq_from(last_seq(tx)?, "counters.seq")?,
    })
}
