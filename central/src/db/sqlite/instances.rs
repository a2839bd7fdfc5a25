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
    last_seen: Option<i64>,
}

impl InstanceRow {
    const COLUMNS: &'static str = "id, name, scope_epoch, revoked_at IS NOT NULL, last_seen";

    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
        Ok(InstanceRow {
            id: row.get(0)?,
            name: row.get(1)?,
            scope_epoch: row.get(2)?,
            revoked: row.get(3)?,
            last_seen: row.get(4)?,
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
            last_seen: self.last_seen,
        })
    }
}

/// The counter that moves whenever who may authenticate changes.
const VERSION: &str = "instances";

/// Moves the instances version (see `CentralDb::instances_version`).
fn bump_version(tx: &Transaction<'_>, context: &'static str) -> Result<(), DbError> {
    tx.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![VERSION]))
        .map_err(sql(context))?;
    Ok(())
}

/// The instances version.
pub(super) fn version(tx: &Transaction<'_>) -> Result<u64, DbError> {
    let value: i64 = tx
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")
        .and_then(|mut s| s.query_row(params![VERSION], |r| r.get(0)))
        .map_err(sql("reading the instances version"))?;
    u64::try_from(value).map_err(|_| DbError::Damaged("counters.instances"))
}

/// One instance by id.
fn by_id(tx: &Transaction<'_>, id: u32, context: &'static str) -> Result<Instance, DbError> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {} FROM instances WHERE id = ?1",
            InstanceRow::COLUMNS
        ))
        .and_then(|mut s| s.query_row(params![id], InstanceRow::read).optional())
        .map_err(sql(context))?
        .ok_or(DbError::NoSuchInstance { id })?;
    let catchments = catchments_of(tx, row.id)?;
    row.with_catchments(catchments)
}

/// Revokes an instance (idempotent).
pub(super) fn revoke(tx: &Transaction<'_>, id: u32) -> Result<Instance, DbError> {
    const CTX: &str = "revoking an instance";
    let instance = by_id(tx, id, CTX)?;
    if instance.revoked {
        return Ok(instance);
    }
    tx.prepare_cached("UPDATE instances SET revoked_at = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, chrono::Utc::now().timestamp()]))
        .map_err(sql(CTX))?;
    bump_version(tx, CTX)?;
    Ok(Instance {
        revoked: true,
        ..instance
    })
}

/// Replaces a not revoked instance's token hash.
pub(super) fn rotate(
    tx: &Transaction<'_>,
    id: u32,
    token_hash: &[u8; 32],
) -> Result<Instance, DbError> {
    const CTX: &str = "giving an instance a new token";
    let instance = by_id(tx, id, CTX)?;
    if instance.revoked {
        return Err(DbError::Revoked { id });
    }
    tx.prepare_cached("UPDATE instances SET token_hash = ?2, token_rotated_at = ?3 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, &token_hash[..], chrono::Utc::now().timestamp()]))
        .map_err(sql(CTX))?;
    bump_version(tx, CTX)?;
    Ok(instance)
}

/// Notes when an instance was last seen (never backwards).
pub(super) fn touch(tx: &Transaction<'_>, id: u32, at: i64) -> Result<(), DbError> {
    tx.prepare_cached(
        "UPDATE instances SET last_seen = ?2 WHERE id = ?1 AND (last_seen IS NULL OR last_seen < ?2)",
    )
    .and_then(|mut s| s.execute(params![id, at]))
    .map_err(sql("noting when an instance was seen"))?;
    Ok(())
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
    let holder: Option<i64> = tx
        .prepare_cached("SELECT id FROM instances WHERE name = ?1")
        .and_then(|mut s| s.query_row(params![new.name], |r| r.get(0)).optional())
        .map_err(sql(CTX))?;
    if let Some(holder) = holder {
        return Err(DbError::NameTaken {
            name: new.name.clone(),
            id: instance_id(holder)?,
        });
    }
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
    bump_version(tx, CTX)?;
    Ok(Instance {
        id,
        name: new.name.clone(),
        catchments,
        scope_epoch: 1,
        revoked: false,
        last_seen: None,
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
