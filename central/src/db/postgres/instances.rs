//! Registered instances and their catchments.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::cached::{self, Tx as Transaction};

use super::R;
use crate::db::{DbError, Instance, MAX_INSTANCE_ID, NewInstance};

const COLUMNS: &str = "id, name, scope_epoch, revoked_at IS NOT NULL, last_seen";

/// An instance id read from the database.
pub(super) fn instance_id(raw: i64) -> Result<u32, DbError> {
    u32::try_from(raw)
        .ok()
        .filter(|id| *id <= MAX_INSTANCE_ID)
        .ok_or(DbError::Damaged("instances.id"))
}

fn decode(row: &Row, catchments: Vec<String>) -> Result<Instance, DbError> {
    Ok(Instance {
        id: instance_id(row.get(0))?,
        name: row.get(1),
        catchments,
        scope_epoch: u64::try_from(row.get::<_, i64>(2))
            .map_err(|_| DbError::Damaged("instances.scope_epoch"))?,
        revoked: row.get(3),
        last_seen: row.get(4),
    })
}

/// Locks the instances counter: registration, revocation and rotation run
/// one at a time across every process (the next one sees what the one
/// before committed).
async fn serialise(tx: &Transaction<'_>) -> R<()> {
    cached::execute(
        tx,
        "SELECT value FROM counters WHERE name = 'instances' FOR UPDATE",
        &[],
    )
    .await?;
    Ok(())
}

/// Moves the instances version (see `CentralDb::instances_version`).
async fn bump_version(tx: &Transaction<'_>) -> R<()> {
    cached::execute(
        tx,
        "UPDATE counters SET value = value + 1 WHERE name = 'instances'",
        &[],
    )
    .await?;
    Ok(())
}

/// The instances version.
pub(super) async fn version(tx: &Transaction<'_>) -> R<u64> {
    let value: i64 = cached::query_one(
        tx,
        "SELECT value FROM counters WHERE name = 'instances'",
        &[],
    )
    .await?
    .get(0);
    Ok(u64::try_from(value).map_err(|_| DbError::Damaged("counters.instances"))?)
}

async fn catchments_of(tx: &Transaction<'_>, id: i64) -> R<Vec<String>> {
    let rows = cached::query(
        tx,
        "SELECT catchment FROM instance_catchments WHERE instance = $1 ORDER BY position",
        &[&id],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One instance by id.
async fn by_id(tx: &Transaction<'_>, id: u32) -> R<Instance> {
    let row = cached::query_opt(
        tx,
        &format!("SELECT {COLUMNS} FROM instances WHERE id = $1"),
        &[&i64::from(id)],
    )
    .await?
    .ok_or(DbError::NoSuchInstance { id })?;
    let catchments = catchments_of(tx, i64::from(id)).await?;
    Ok(decode(&row, catchments)?)
}

/// Registers an instance (the caller checked a chosen id's range).
pub(super) async fn add(tx: &Transaction<'_>, new: &NewInstance) -> R<Instance> {
    serialise(tx).await?;
    let id = match new.id {
        Some(id) => {
            let taken = cached::query_opt(
                tx,
                "SELECT 1 FROM instances WHERE id = $1",
                &[&i64::from(id)],
            )
            .await?
            .is_some();
            if taken {
                return Err(DbError::IdTaken(id).into());
            }
            id
        }
        None => lowest_free(tx).await?,
    };
    let holder = cached::query_opt(
        tx,
        "SELECT id FROM instances WHERE name = $1 LIMIT 1",
        &[&new.name],
    )
    .await?;
    if let Some(holder) = holder {
        return Err(DbError::NameTaken {
            name: new.name.clone(),
            id: instance_id(holder.get(0))?,
        }
        .into());
    }
    cached::execute(
        tx,
        "INSERT INTO instances (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        &[
            &i64::from(id),
            &new.name,
            &&new.token_hash[..],
            &chrono::Utc::now().timestamp(),
        ],
    )
    .await?;
    let mut catchments: Vec<String> = Vec::with_capacity(new.catchments.len());
    for catchment in &new.catchments {
        if !catchments.contains(catchment) {
            catchments.push(catchment.clone());
        }
    }
    let positions: Vec<i64> = (0..catchments.len() as i64).collect();
    cached::execute(
        tx,
        "INSERT INTO instance_catchments (instance, catchment, position)
         SELECT $1, c, p FROM unnest($2::text[], $3::bigint[]) AS u(c, p)",
        &[&i64::from(id), &catchments, &positions],
    )
    .await?;
    bump_version(tx).await?;
    Ok(Instance {
        id,
        name: new.name.clone(),
        catchments,
        scope_epoch: 1,
        revoked: false,
        last_seen: None,
    })
}

/// The lowest id no instance has (revoked instances keep theirs).
async fn lowest_free(tx: &Transaction<'_>) -> R<u32> {
    let free = cached::query_opt(
        tx,
        "SELECT 0::bigint AS id WHERE NOT EXISTS (SELECT 1 FROM instances WHERE id = 0)
             UNION ALL
             SELECT i.id + 1 FROM instances i
              WHERE i.id >= 0 AND i.id < $1
                AND NOT EXISTS (SELECT 1 FROM instances j WHERE j.id = i.id + 1)
             ORDER BY id LIMIT 1",
        &[&i64::from(MAX_INSTANCE_ID)],
    )
    .await?;
    match free {
        Some(row) => Ok(instance_id(row.get(0))?),
        None => Err(DbError::IdsExhausted(MAX_INSTANCE_ID).into()),
    }
}

/// Revokes an instance (idempotent).
pub(super) async fn revoke(tx: &Transaction<'_>, id: u32) -> R<Instance> {
    serialise(tx).await?;
    let instance = by_id(tx, id).await?;
    if instance.revoked {
        return Ok(instance);
    }
    cached::execute(
        tx,
        "UPDATE instances SET revoked_at = $2 WHERE id = $1",
        &[&i64::from(id), &chrono::Utc::now().timestamp()],
    )
    .await?;
    bump_version(tx).await?;
    Ok(Instance {
        revoked: true,
        ..instance
    })
}

/// Replaces a not revoked instance's token hash.
pub(super) async fn rotate(tx: &Transaction<'_>, id: u32, token_hash: &[u8; 32]) -> R<Instance> {
    serialise(tx).await?;
    let instance = by_id(tx, id).await?;
    if instance.revoked {
        return Err(DbError::Revoked { id }.into());
    }
    cached::execute(
        tx,
        "UPDATE instances SET token_hash = $2, token_rotated_at = $3 WHERE id = $1",
        &[
            &i64::from(id),
            &&token_hash[..],
            &chrono::Utc::now().timestamp(),
        ],
    )
    .await?;
    bump_version(tx).await?;
    Ok(instance)
}

/// Notes when an instance was last seen (never backwards).
pub(super) async fn touch(tx: &Transaction<'_>, id: u32, at: i64) -> R<()> {
    cached::execute(
        tx,
        "UPDATE instances SET last_seen = $2 WHERE id = $1 AND (last_seen IS NULL OR last_seen < $2)",
        &[&i64::from(id), &at],
    )
    .await?;
    Ok(())
}

/// The not revoked instance with this token hash.
pub(super) async fn by_token(tx: &Transaction<'_>, token_hash: &[u8; 32]) -> R<Option<Instance>> {
    let row = cached::query_opt(
        tx,
        &format!("SELECT {COLUMNS} FROM instances WHERE token_hash = $1 AND revoked_at IS NULL"),
        &[&&token_hash[..]],
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let catchments = catchments_of(tx, row.get(0)).await?;
    Ok(Some(decode(&row, catchments)?))
}

/// Every instance, by id.
pub(super) async fn all(tx: &Transaction<'_>) -> R<Vec<Instance>> {
    let mut catchments: HashMap<i64, Vec<String>> = HashMap::new();
    for row in cached::query(
        tx,
        "SELECT instance, catchment FROM instance_catchments ORDER BY instance, position",
        &[],
    )
    .await?
    {
        catchments.entry(row.get(0)).or_default().push(row.get(1));
    }
    let mut out = Vec::new();
    for row in cached::query(
        tx,
        &format!("SELECT {COLUMNS} FROM instances ORDER BY id"),
        &[],
    )
    .await?
    {
        let mine = catchments.remove(&row.get::<_, i64>(0)).unwrap_or_default();
        out.push(decode(&row, mine)?);
    }
    Ok(out)
}
