//! Reading the whole database and loading it into an empty one (`central
//! copy`).

use rusqlite::{Transaction, params};

use super::instances::instance_id;
use super::pool::sql;
use super::records::{RawRecord, head_from, last_seq, patient_from, record_columns, seq_from};
use crate::db::DbError;
use crate::db::dump::{ChangeDump, Dump, GrantDump, InstanceDump, RecordDump, not_empty};

const CTX: &str = "reading the whole database";

pub(super) fn dump(tx: &Transaction<'_>) -> Result<Dump, DbError> {
    let mut out = Dump {
        seq: seq_from(last_seq(tx)?, "counters.seq")?,
        instances_version: super::instances::version(tx)?,
        ..Dump::default()
    };
    let mut stmt = tx
        .prepare(
            "SELECT id, name, token_hash, scope_epoch, created_at, revoked_at, last_seen, token_rotated_at
               FROM instances ORDER BY id",
        )
        .map_err(sql(CTX))?;
    let mut rows = stmt.query([]).map_err(sql(CTX))?;
    while let Some(r) = rows.next().map_err(sql(CTX))? {
        out.instances.push(InstanceDump {
            id: instance_id(r.get(0).map_err(sql(CTX))?)?,
            name: r.get(1).map_err(sql(CTX))?,
            token_hash: r.get(2).map_err(sql(CTX))?,
            scope_epoch: r.get(3).map_err(sql(CTX))?,
            created_at: r.get(4).map_err(sql(CTX))?,
            revoked_at: r.get(5).map_err(sql(CTX))?,
            last_seen: r.get(6).map_err(sql(CTX))?,
            token_rotated_at: r.get(7).map_err(sql(CTX))?,
            catchments: Vec::new(),
        });
    }
    drop(rows);
    let mut stmt = tx
        .prepare("SELECT instance, catchment FROM instance_catchments ORDER BY instance, position")
        .map_err(sql(CTX))?;
    let mut rows = stmt.query([]).map_err(sql(CTX))?;
    while let Some(r) = rows.next().map_err(sql(CTX))? {
        let id = instance_id(r.get(0).map_err(sql(CTX))?)?;
        let catchment: String = r.get(1).map_err(sql(CTX))?;
        if let Some(i) = out.instances.iter_mut().find(|i| i.id == id) {
            i.catchments.push(catchment);
        }
    }
    drop(rows);
    let mut stmt = tx
        .prepare(concat!(
            "SELECT ",
            record_columns!(),
            ", r.created_at FROM records r ORDER BY r.seq"
        ))
        .map_err(sql(CTX))?;
    let mut rows = stmt.query([]).map_err(sql(CTX))?;
    while let Some(r) = rows.next().map_err(sql(CTX))? {
        let created_at: i64 = r.get(8).map_err(sql(CTX))?;
        out.records.push(RecordDump {
            row: RawRecord::read(r).map_err(sql(CTX))?.decode()?,
            created_at,
        });
    }
    drop(rows);
    let mut stmt = tx
        .prepare("SELECT seq, patient, head, instance, time FROM changes ORDER BY seq")
        .map_err(sql(CTX))?;
    let mut rows = stmt.query([]).map_err(sql(CTX))?;
    while let Some(r) = rows.next().map_err(sql(CTX))? {
        let patient: Vec<u8> = r.get(1).map_err(sql(CTX))?;
        let head: String = r.get(2).map_err(sql(CTX))?;
        let instance: Option<i64> = r.get(3).map_err(sql(CTX))?;
        out.changes.push(ChangeDump {
            seq: seq_from(r.get(0).map_err(sql(CTX))?, "changes.seq")?,
            patient: patient_from(&patient, "changes.patient")?,
            head: head_from(&head, "changes.head")?,
            instance: instance.map(instance_id).transpose()?,
            time: r.get(4).map_err(sql(CTX))?,
        });
    }
    drop(rows);
    let mut stmt = tx
        .prepare(
            "SELECT instance, patient, reason, granted_at FROM grants ORDER BY instance, patient",
        )
        .map_err(sql(CTX))?;
    let mut rows = stmt.query([]).map_err(sql(CTX))?;
    while let Some(r) = rows.next().map_err(sql(CTX))? {
        let patient: Vec<u8> = r.get(1).map_err(sql(CTX))?;
        out.grants.push(GrantDump {
            instance: instance_id(r.get(0).map_err(sql(CTX))?)?,
            patient: patient_from(&patient, "grants.patient")?,
            reason: r.get(2).map_err(sql(CTX))?,
            granted_at: r.get(3).map_err(sql(CTX))?,
        });
    }
    Ok(out)
}

pub(super) fn load(tx: &Transaction<'_>, dump: &Dump) -> Result<(), DbError> {
    const CTX: &str = "loading a copy";
    let used: i64 = tx
        .query_row(
            "SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM instances)",
            [],
            |r| r.get(0),
        )
        .map_err(sql(CTX))?;
    if used > 0 {
        return Err(not_empty());
    }
    let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = tx
        .prepare(
            "INSERT INTO instances (id, name, token_hash, scope_epoch, created_at, revoked_at, last_seen, token_rotated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(sql(CTX))?;
    let mut catchment = tx
        .prepare(
            "INSERT INTO instance_catchments (instance, catchment, position) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql(CTX))?;
    for i in &dump.instances {
        stmt.execute(params![
            i.id,
            i.name,
            i.token_hash,
            i.scope_epoch,
            i.created_at,
            i.revoked_at,
            i.last_seen,
            i.token_rotated_at
        ])
        .map_err(sql(CTX))?;
        for (position, c) in i.catchments.iter().enumerate() {
            catchment
                .execute(params![i.id, c, position as i64])
                .map_err(sql(CTX))?;
        }
    }
    let mut stmt = tx
        .prepare(
            "INSERT INTO records (patient, head, seq, catchment, created_by, updated_by, holders, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql(CTX))?;
    for r in &dump.records {
        let row = &r.row;
        stmt.execute(params![
            &row.id.as_bytes()[..],
            row.head.to_string(),
            big(row.seq),
            row.catchment,
            row.created_by,
            row.updated_by,
            row.holders.to_bytes(),
            r.created_at,
            row.updated_at
        ])
        .map_err(sql(CTX))?;
    }
    let mut stmt = tx
        .prepare(
            "INSERT INTO changes (seq, patient, head, instance, time) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql(CTX))?;
    for c in &dump.changes {
        stmt.execute(params![
            big(c.seq),
            &c.patient.as_bytes()[..],
            c.head.to_string(),
            c.instance,
            c.time
        ])
        .map_err(sql(CTX))?;
    }
    let mut stmt = tx
        .prepare(
            "INSERT INTO grants (instance, patient, reason, granted_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql(CTX))?;
    for g in &dump.grants {
        stmt.execute(params![
            g.instance,
            &g.patient.as_bytes()[..],
            g.reason,
            g.granted_at
        ])
        .map_err(sql(CTX))?;
    }
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'seq'",
        params![big(dump.seq)],
    )
    .map_err(sql(CTX))?;
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'instances'",
        params![big(dump.instances_version)],
    )
    .map_err(sql(CTX))?;
    Ok(())
}
