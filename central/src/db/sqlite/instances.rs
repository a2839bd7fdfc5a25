//! Registered instances and their catchments.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::pool::sql;
use crate::db::{DbError, Instance, MAX_INSTANCE_ID, NewInstance};

/// An instance's row, before its catchments are attached.
struct InstanceRow {
    id: i64,
    name: String,
    scope_epoch: i64,
    revoked: bool,
}

impl InstanceRow {
    const COLUMNS: &'static str = "id, name, scope_epoch, revoked_at IS NOT NULL";

    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
        Ok(InstanceRow {
            id: row.get(0)?,
            name: row.get(1)?,
            scope_epoch: row.get(2)?,
            revoked: row.get(3)?,
        })
    }

    fn with_catchments(self, catchments: Vec<String>) -> Result<Instance, DbError> {
        Ok(Instance {
            id: instance_id(self.id)?,
            name: self.name,
            catchments,
            scope_epoch: u64::try_from(self.scope_epoch)
                .map_err(|_| DbError::Damaged("instances.scope_epoch"))?,
            revoked: self.revoked,
        })
    }
}

/// An instance id read from the database.
pub(super) fn instance_id(raw: i64) -> Result<u32, DbError> {
    u32::try_from(raw)
        .ok()
        .filter(|id| *id <= MAX_INSTANCE_ID)
        .ok_or(DbError::Damaged("instances.id"))
}

/// Registers an instance (the caller checked a chosen id's range).
pub(super) fn add(tx: &Transaction<'_>, new: &NewInstance) -> Result<Instance, DbError> {
    const CTX: &str = "registering an instance";
    let id = match new.id {
        Some(id) => {
            let taken = tx
                .prepare_cached("SELECT 1 FROM instances WHERE id = ?1")
                .and_then(|mut s| s.exists(params![id]))
                .map_err(sql(CTX))?;
            if taken {
                return Err(DbError::IdTaken(id));
            }
            id
        }
        None => lowest_free(tx)?,
    };
    tx.prepare_cached(
        "INSERT INTO instances (id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            new.name,
            &new.token_hash[..],
            chrono::Utc::now().timestamp()
        ])
    })
    .map_err(sql(CTX))?;
    let mut catchments: Vec<String> = Vec::with_capacity(new.catchments.len());
    for catchment in &new.catchments {
        if !catchments.contains(catchment) {
            catchments.push(catchment.clone());
        }
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO instance_catchments (instance, catchment, position) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql(CTX))?;
    for (position, catchment) in catchments.iter().enumerate() {
        insert
            .execute(params![id, catchment, position as i64])
            .map_err(sql(CTX))?;
    }
    Ok(Instance {
        id,
        name: new.name.clone(),
        catchments,
        scope_epoch: 1,
        revoked: false,
    })
}

/// The lowest id no instance has (revoked instances keep theirs: holders
/// bits and grants still name them).
fn lowest_free(tx: &Transaction<'_>) -> Result<u32, DbError> {
    let free: Option<i64> = tx
        .prepare_cached(
            "SELECT 0 AS id WHERE NOT EXISTS (SELECT 1 FROM instances WHERE id = 0)
             UNION ALL
             SELECT i.id + 1 FROM instances i
              WHERE i.id >= 0 AND i.id < ?1
                AND NOT EXISTS (SELECT 1 FROM instances j WHERE j.id = i.id + 1)
             ORDER BY id LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![MAX_INSTANCE_ID], |r| r.get(0))
                .optional()
        })
        .map_err(sql("choosing an instance id"))?;
    match free {
        Some(id) => instance_id(id),
        None => Err(DbError::IdsExhausted(MAX_INSTANCE_ID)),
    }
}

fn catchments_of(tx: &Transaction<'_>, id: i64) -> Result<Vec<String>, DbError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT catchment FROM instance_catchments WHERE instance = ?1 ORDER BY position",
        )
        .map_err(sql("reading an instance's catchments"))?;
    let rows = stmt
        .query_map(params![id], |r| r.get(0))
        .map_err(sql("reading an instance's catchments"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("reading an instance's catchments"))
}

/// The not revoked instance with this token hash.
pub(super) fn by_token(
    tx: &Transaction<'_>,
    token_hash: &[u8; 32],
) -> Result<Option<Instance>, DbError> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {} FROM instances WHERE token_hash = ?1 AND revoked_at IS NULL",
            InstanceRow::COLUMNS
        ))
        .and_then(|mut s| {
            s.query_row(params![&token_hash[..]], InstanceRow::read)
                .optional()
        })
        .map_err(sql("looking up an instance by token"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let catchments = catchments_of(tx, row.id)?;
    row.with_catchments(catchments).map(Some)
}

/// Every instance, by id.
pub(super) fn all(tx: &Transaction<'_>) -> Result<Vec<Instance>, DbError> {
    const CTX: &str = "listing instances";
    let mut catchments: HashMap<i64, Vec<String>> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT instance, catchment FROM instance_catchments ORDER BY instance, position",
            )
            .map_err(sql(CTX))?;
        let mut rows = stmt.query([]).map_err(sql(CTX))?;
        while let Some(row) = rows.next().map_err(sql(CTX))? {
            let instance: i64 = row.get(0).map_err(sql(CTX))?;
            catchments
                .entry(instance)
                .or_default()
                .push(row.get(1).map_err(sql(CTX))?);
        }
    }
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT {} FROM instances ORDER BY id",
            InstanceRow::COLUMNS
        ))
        .map_err(sql(CTX))?;
    let rows = stmt.query_map([], InstanceRow::read).map_err(sql(CTX))?;
    let mut out = Vec::new();
    for row in rows {
        let row = row.map_err(sql(CTX))?;
        let mine = catchments.remove(&row.id).unwrap_or_default();
        out.push(row.with_catchments(mine)?);
    }
    Ok(out)
}
