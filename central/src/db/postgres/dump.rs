//! Reading the whole database and loading it into an empty one (`central
//! copy`), and a record's history for a copy from SQLite.

use chartsync_protocol::{CommitId, PatientId};
use tokio_postgres::Transaction;

use super::instances::instance_id;
use super::{R, head_from, patient_from, seq_from, seq_to_sql};
use crate::db::dump::{ChangeDump, Dump, GrantDump, InstanceDump, RecordDump, not_empty};
use crate::db::{DbError, Holders, RecordRow};

pub(super) async fn dump(tx: &Transaction<'_>) -> R<Dump> {
    let counters = tx
        .query_one(
            "SELECT (SELECT value FROM counters WHERE name = 'seq'),
                    (SELECT value FROM counters WHERE name = 'instances')",
            &[],
        )
        .await?;
    let mut out = Dump {
        seq: seq_from(counters.get(0), "counters.seq")?,
        instances_version: u64::try_from(counters.get::<_, i64>(1))
            .map_err(|_| DbError::Damaged("counters.instances"))?,
        ..Dump::default()
    };
    for r in tx
        .query(
            "SELECT id, name, token_hash, scope_epoch, created_at, revoked_at, last_seen, token_rotated_at,
                    coalesce((SELECT array_agg(catchment ORDER BY position) FROM instance_catchments c
                               WHERE c.instance = i.id), '{}')
               FROM instances i ORDER BY id",
            &[],
        )
        .await?
    {
        out.instances.push(InstanceDump {
            id: instance_id(r.get(0))?,
            name: r.get(1),
            token_hash: r.get(2),
            scope_epoch: r.get(3),
            created_at: r.get(4),
            revoked_at: r.get(5),
            last_seen: r.get(6),
            token_rotated_at: r.get(7),
            catchments: r.get(8),
        });
    }
    let opt = |raw: Option<i64>| raw.map(instance_id).transpose();
    for r in tx
        .query(
            "SELECT patient, head, seq, catchment, created_by, holders, updated_at, updated_by, created_at
               FROM records ORDER BY seq",
            &[],
        )
        .await?
    {
        out.records.push(RecordDump {
            row: RecordRow {
                id: patient_from(r.get(0), "records.patient")?,
                head: head_from(r.get(1), "records.head")?,
                seq: seq_from(r.get(2), "records.seq")?,
                catchment: r.get(3),
                created_by: opt(r.get(4))?,
                holders: Holders::from_bytes(r.get(5)),
                updated_at: r.get(6),
                updated_by: opt(r.get(7))?,
            },
            created_at: r.get(8),
        });
    }
    for r in tx
        .query(
            "SELECT seq, patient, head, instance, time FROM changes ORDER BY seq",
            &[],
        )
        .await?
    {
        out.changes.push(ChangeDump {
            seq: seq_from(r.get(0), "changes.seq")?,
            patient: patient_from(r.get(1), "changes.patient")?,
            head: head_from(r.get(2), "changes.head")?,
            instance: opt(r.get(3))?,
            time: r.get(4),
        });
    }
    for r in tx
        .query(
            "SELECT instance, patient, reason, granted_at FROM grants ORDER BY instance, patient",
            &[],
        )
        .await?
    {
        out.grants.push(GrantDump {
            instance: instance_id(r.get(0))?,
            patient: patient_from(r.get(1), "grants.patient")?,
            reason: r.get(2),
            granted_at: r.get(3),
        });
    }
    Ok(out)
}

pub(super) async fn load(tx: &Transaction<'_>, dump: &Dump) -> R<()> {
    // Nothing else may register or write meanwhile.
    tx.batch_execute("LOCK TABLE instances, records IN EXCLUSIVE MODE")
        .await?;
    let used: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM records) OR EXISTS (SELECT 1 FROM instances)",
            &[],
        )
        .await?
        .get(0);
    if used {
        return Err(not_empty().into());
    }
    for i in &dump.instances {
        let id = i64::from(i.id);
        tx.execute(
            "INSERT INTO instances (id, name, token_hash, scope_epoch, created_at, revoked_at, last_seen, token_rotated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id,
                &i.name,
                &i.token_hash,
                &i.scope_epoch,
                &i.created_at,
                &i.revoked_at,
                &i.last_seen,
                &i.token_rotated_at,
            ],
        )
        .await?;
        let positions: Vec<i64> = (0..i.catchments.len() as i64).collect();
        tx.execute(
            "INSERT INTO instance_catchments (instance, catchment, position)
             SELECT $1, c, p FROM unnest($2::text[], $3::bigint[]) AS u(c, p)",
            &[&id, &i.catchments, &positions],
        )
        .await?;
    }
    for chunk in dump.records.chunks(5000) {
        let patients: Vec<Vec<u8>> = chunk.iter().map(|r| r.row.id.as_bytes().to_vec()).collect();
        let heads: Vec<String> = chunk.iter().map(|r| r.row.head.to_string()).collect();
        let seqs: Vec<i64> = chunk.iter().map(|r| seq_to_sql(r.row.seq)).collect();
        let catchments: Vec<Option<String>> =
            chunk.iter().map(|r| r.row.catchment.clone()).collect();
        let created_by: Vec<Option<i64>> = chunk
            .iter()
            .map(|r| r.row.created_by.map(i64::from))
            .collect();
        let updated_by: Vec<Option<i64>> = chunk
            .iter()
            .map(|r| r.row.updated_by.map(i64::from))
            .collect();
        let holders: Vec<Vec<u8>> = chunk.iter().map(|r| r.row.holders.to_bytes()).collect();
        let created_at: Vec<i64> = chunk.iter().map(|r| r.created_at).collect();
        let updated_at: Vec<i64> = chunk.iter().map(|r| r.row.updated_at).collect();
        tx.execute(
            "INSERT INTO records (patient, head, seq, catchment, created_by, updated_by, holders, created_at, updated_at)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                                  $6::bigint[], $7::bytea[], $8::bigint[], $9::bigint[])",
            &[&patients, &heads, &seqs, &catchments, &created_by, &updated_by, &holders, &created_at, &updated_at],
        )
        .await?;
    }
    for chunk in dump.changes.chunks(5000) {
        let seqs: Vec<i64> = chunk.iter().map(|c| seq_to_sql(c.seq)).collect();
        let patients: Vec<Vec<u8>> = chunk
            .iter()
            .map(|c| c.patient.as_bytes().to_vec())
            .collect();
        let heads: Vec<String> = chunk.iter().map(|c| c.head.to_string()).collect();
        let instances: Vec<Option<i64>> = chunk.iter().map(|c| c.instance.map(i64::from)).collect();
        let times: Vec<i64> = chunk.iter().map(|c| c.time).collect();
        tx.execute(
            "INSERT INTO changes (seq, patient, head, instance, time)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bigint[], $5::bigint[])",
            &[&seqs, &patients, &heads, &instances, &times],
        )
        .await?;
    }
    for chunk in dump.grants.chunks(5000) {
        let instances: Vec<i64> = chunk.iter().map(|g| i64::from(g.instance)).collect();
        let patients: Vec<Vec<u8>> = chunk
            .iter()
            .map(|g| g.patient.as_bytes().to_vec())
            .collect();
        let reasons: Vec<String> = chunk.iter().map(|g| g.reason.clone()).collect();
        let times: Vec<i64> = chunk.iter().map(|g| g.granted_at).collect();
        tx.execute(
            "INSERT INTO grants (instance, patient, reason, granted_at)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bigint[])",
            &[&instances, &patients, &reasons, &times],
        )
        .await?;
    }
    tx.execute(
        "UPDATE counters SET value = $1 WHERE name = 'seq'",
        &[&seq_to_sql(dump.seq)],
    )
    .await?;
    tx.execute(
        "UPDATE counters SET value = $1 WHERE name = 'instances'",
        &[&i64::try_from(dump.instances_version).unwrap_or(i64::MAX)],
    )
    .await?;
    Ok(())
}

/// Stores a record's whole history as one pack at its head's change
/// (a copy from SQLite); a record that has history is left as it is.
pub(super) async fn import_history(
    tx: &Transaction<'_>,
    id: &PatientId,
    seq: i64,
    head: &CommitId,
    pack: &[u8],
) -> R<()> {
    tx.execute(
        "INSERT INTO record_history (patient, seq, head, pack)
         SELECT $1, $2, $3, $4
          WHERE NOT EXISTS (SELECT 1 FROM record_history WHERE patient = $1)",
        &[&&id.as_bytes()[..], &seq, &head.to_string(), &pack],
    )
    .await?;
    Ok(())
}
