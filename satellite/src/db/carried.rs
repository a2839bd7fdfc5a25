//! Edits carried by central onto the survivor of a merge: they wait here
//! until this satellite holds the survivor (see
//! `crate::jobs::apply::queue_carried_conflicts`).

use chartsync_protocol::{CommitId, PatientId};
use rusqlite::params;

use super::{Db, DbError, head_from, id_from, sql};

/// An edit made here to a record that central had merged into another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The retired record.
    pub retired: PatientId,
    /// Its commit holding this clinic's edits (merged onto the tombstone).
    pub edit: CommitId,
    /// Central's tombstone the edits were merged onto.
    pub tombstone: CommitId,
    /// The record it was merged into.
    pub survivor: PatientId,
}

impl Db {
    /// Notes edits to wait for their survivors.
    pub fn add_carried(&self, carried: &[Carried]) -> Result<(), DbError> {
        if carried.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("noting carried edits"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO carried (retired, edit, tombstone, survivor, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql("noting carried edits"))?;
            for c in carried {
                stmt.execute(params![
                    c.retired.as_bytes(),
                    c.edit.to_string(),
                    c.tombstone.to_string(),
                    c.survivor.as_bytes(),
                    now
                ])
                .map_err(sql("noting carried edits"))?;
            }
        }
        tx.commit().map_err(sql("noting carried edits"))
    }

    /// The edits waiting, oldest first.
    pub fn carried(&self) -> Result<Vec<Carried>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT retired, edit, tombstone, survivor FROM carried ORDER BY created_at, retired",
            )
            .map_err(sql("reading carried edits"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(sql("reading carried edits"))?;
        let mut out = Vec::new();
        for row in rows {
            let (retired, edit, tombstone, survivor) = row.map_err(sql("reading carried edits"))?;
            out.push(Carried {
                retired: id_from(retired)?,
                edit: head_from(Some(edit))?.ok_or(DbError::Damaged("carried.edit"))?,
                tombstone: head_from(Some(tombstone))?
                    .ok_or(DbError::Damaged("carried.tombstone"))?,
                survivor: id_from(survivor)?,
            });
        }
        Ok(out)
    }

    /// Forgets one (its conflicts are queued, or there are none).
    pub fn drop_carried(&self, retired: &PatientId, edit: CommitId) -> Result<(), DbError> {
        self.conn()
            .execute(
                "DELETE FROM carried WHERE retired = ?1 AND edit = ?2",
                params![retired.as_bytes(), edit.to_string()],
            )
            .map_err(sql("forgetting a carried edit"))?;
        Ok(())
    }
}
