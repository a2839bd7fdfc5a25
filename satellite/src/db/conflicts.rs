//! The conflict queue: central's value is in the record, this clinic's
//! value waits here for a clinician.

use chartsync_protocol::api::ConflictEntry;
use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{OptionalExtension, params};

use super::{Db, DbError, head_from, id_from, sql};

/// A conflict found by a merge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConflict {
    /// The record.
    pub patient: PatientId,
    /// The file.
    pub file: String,
    /// JSON pointer inside it.
    pub path: String,
    /// Value at the common ancestor (`null`: absent).
    pub base: serde_json::Value,
    /// This clinic's value.
    pub ours: serde_json::Value,
    /// Central's value.
    pub theirs: serde_json::Value,
    /// The local commit holding ours.
    pub ours_commit: CommitId,
    /// Central's commit.
    pub theirs_commit: CommitId,
    /// The merge commit.
    pub merge_commit: CommitId,
}

fn time_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

type Row = (
    i64,
    Vec<u8>,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
);

fn entry(row: Row) -> Result<ConflictEntry, DbError> {
    let (id, patient, file, path, base, ours, theirs, ours_commit, merge_commit, created) = row;
    let json = |t: &str| serde_json::from_str(t).map_err(|_| DbError::Damaged("conflicts values"));
    Ok(ConflictEntry {
        id,
        patient: id_from(patient)?,
        file,
        path,
        base: json(&base)?,
        ours: json(&ours)?,
        theirs: json(&theirs)?,
        ours_commit: head_from(Some(ours_commit))?
            .ok_or(DbError::Damaged("conflicts.ours_commit"))?,
        merge_commit: head_from(Some(merge_commit))?
            .ok_or(DbError::Damaged("conflicts.merge_commit"))?,
        created_at: time_text(created),
    })
}

const COLUMNS: &str =
    "id, patient, file, path, base, ours, theirs, ours_commit, merge_commit, created_at";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

impl Db {
    /// Queues conflicts (one found again by a repeated merge of the same two
    /// commits is not queued twice) and marks their records changed, in one
    /// transaction.
    pub fn record_conflicts(&self, conflicts: &[NewConflict]) -> Result<(), DbError> {
        let now = chrono::Utc::now().timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("queueing conflicts"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO conflicts (patient, file, path, base, ours, theirs, ours_commit,
                        theirs_commit, merge_commit, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (patient, ours_commit, theirs_commit, file, path)
                     DO UPDATE SET merge_commit = excluded.merge_commit",
                )
                .map_err(sql("queueing conflicts"))?;
            for c in conflicts {
                stmt.execute(params![
                    c.patient.as_bytes(),
                    c.file,
                    c.path,
                    c.base.to_string(),
                    c.ours.to_string(),
                    c.theirs.to_string(),
                    c.ours_commit.to_string(),
                    c.theirs_commit.to_string(),
                    c.merge_commit.to_string(),
                    now
                ])
                .map_err(sql("queueing conflicts"))?;
            }
        }
        tx.commit().map_err(sql("queueing conflicts"))
    }

    /// Open conflicts, oldest first.
    pub fn open_conflicts(&self) -> Result<Vec<ConflictEntry>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM conflicts WHERE resolved_at IS NULL ORDER BY id"
            ))
            .map_err(sql("listing conflicts"))?;
        let rows = stmt
            .query_map([], read_row)
            .map_err(sql("listing conflicts"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(entry(row.map_err(sql("listing conflicts"))?)?);
        }
        Ok(out)
    }

    /// One conflict and whether it is resolved.
    pub fn conflict(&self, id: i64) -> Result<Option<(ConflictEntry, bool)>, DbError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS}, resolved_at IS NOT NULL FROM conflicts WHERE id = ?1"),
                params![id],
                |r| Ok((read_row(r)?, r.get::<_, bool>(10)?)),
            )
            .optional()
            .map_err(sql("reading a conflict"))?;
        match row {
            None => Ok(None),
            Some((row, resolved)) => Ok(Some((entry(row)?, resolved))),
        }
    }

    /// Marks a conflict resolved by `commit`.
    pub fn resolve_conflict(&self, id: i64, commit: CommitId) -> Result<(), DbError> {
        self.conn()
            .execute(
                "UPDATE conflicts SET resolved_at = ?2, resolution_commit = ?3 WHERE id = ?1",
                params![id, chrono::Utc::now().timestamp(), commit.to_string()],
            )
            .map_err(sql("resolving a conflict"))?;
        Ok(())
    }
}
