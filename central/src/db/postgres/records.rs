//! Records: accepting heads, reading rows, holders, grants, scopes and
//! the refs still to move.

use std::collections::{HashMap, HashSet};

use chartsync_protocol::{CommitId, PatientId};
use tokio_postgres::Row;

use super::cached::{self, Params, Tx as Transaction};

use super::instances::instance_id;
use super::{R, big, head_from, patient_from, seq_from, seq_to_sql};
use crate::db::{Applied, Counts, DbError, HeadChange, Holders, RecordRow, RefPending, Seq};

/// The columns [`decode`] expects, in order (`r` is `records`).
macro_rules! record_columns {
    () => {
        "r.patient, r.head, r.seq, r.catchment, r.created_by, r.holders, r.updated_at, r.updated_by"
    };
}

fn opt_instance(raw: Option<i64>, what: &'static str) -> Result<Option<u32>, DbError> {
    raw.map(|raw| instance_id(raw).map_err(|_| DbError::Damaged(what)))
        .transpose()
}

/// A row of [`record_columns`].
fn decode(row: &Row) -> Result<RecordRow, DbError> {
    Ok(RecordRow {
        id: patient_from(row.get(0), "records.patient")?,
        head: head_from(row.get(1), "records.head")?,
        seq: seq_from(row.get(2), "records.seq")?,
        catchment: row.get(3),
        created_by: opt_instance(row.get(4), "records.created_by")?,
        holders: Holders::from_bytes(row.get(5)),
        updated_at: row.get(6),
        updated_by: opt_instance(row.get(7), "records.updated_by")?,
    })
}

fn ids_sql(ids: &[PatientId]) -> Vec<Vec<u8>> {
    ids.iter().map(|id| id.as_bytes().to_vec()).collect()
}

/// The last sequence number given out, its row locked until commit.
const LAST_SEQ_FOR_UPDATE: &str = "SELECT value FROM counters WHERE name = 'seq' FOR UPDATE";

/// The last sequence number given out.
pub(super) async fn last_seq(tx: &Transaction<'_>) -> R<i64> {
    let row = cached::query_opt(tx, "SELECT value FROM counters WHERE name = 'seq'", &[]).await?;
    seq_value(row.as_ref())
}

/// The value of the `seq` counter's row.
fn seq_value(row: Option<&Row>) -> R<i64> {
    let value: i64 = row.ok_or(DbError::Damaged("counters.seq"))?.get(0);
    if value < 0 {
        return Err(DbError::Damaged("counters.seq").into());
    }
    Ok(value)
}

/// A record as the batch leaves it.
struct State {
    head: CommitId,
    seq: i64,
    catchment: Option<String>,
    created_by: Option<i64>,
    holders: Holders,
    created_at: i64,
    updated_by: Option<i64>,
    /// Whether its row exists (else it is inserted).
    stored: bool,
    /// Whether the batch changed it.
    changed: bool,
}

/// Accepts what it can of `changes` (see [`crate::db::CentralDb::apply`]).
/// With `packs` (one per change), each accepted change's pack is stored in
/// `record_history` and no `ref_pending` row is written. A change to a
/// patient whose lease another process holds (any liveness key but
/// `owner`) is refused as stale: its writer's lease was taken over.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    changes: &[HeadChange],
    packs: Option<&[Vec<u8>]>,
    owner: Option<i64>,
) -> R<Vec<Applied>> {
    if packs.is_some_and(|p| p.len() != changes.len()) {
        return Err(DbError::Backend {
            context: "accepting heads",
            source: "one pack per change is needed".into(),
        }
        .into());
    }
    let now = chrono::Utc::now().timestamp();
    let mut ids: Vec<Vec<u8>> = changes.iter().map(|c| c.id.as_bytes().to_vec()).collect();
    ids.sort();
    ids.dedup();
    // Sent together, run in this order: first the `seq` counter's row lock,
    // where writers of heads queue (see the module documentation of
    // `postgres`: the sequence is gap-free and in commit order), then the
    // records' rows, locked in patient order, then the leases of others.
    let mut read = cached::query_all(
        tx,
        &[
            (LAST_SEQ_FOR_UPDATE, &[]),
            (
                "SELECT patient, head, seq, catchment, created_by, holders, created_at, updated_by
                   FROM records WHERE patient = ANY($1) ORDER BY patient FOR UPDATE",
                &[&ids],
            ),
            (super::locks::LEASED_BY_OTHERS, &[&ids, &owner]),
        ],
    )
    .await?
    .into_iter();
    let (Some(counter), Some(rows), Some(leased)) = (read.next(), read.next(), read.next()) else {
        return Err(DbError::Damaged("counters.seq").into());
    };
    let first = seq_value(counter.first())?;
    let fenced: HashSet<Vec<u8>> = leased.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
    let mut states: HashMap<PatientId, State> = HashMap::with_capacity(rows.len());
    for row in &rows {
        states.insert(
            patient_from(row.get(0), "records.patient")?,
            State {
                head: head_from(row.get(1), "records.head")?,
                seq: row.get(2),
                catchment: row.get(3),
                created_by: row.get(4),
                holders: Holders::from_bytes(row.get(5)),
                created_at: row.get(6),
                updated_by: row.get(7),
                stored: true,
                changed: false,
            },
        );
    }

    let mut seq = first;
    let mut out = Vec::with_capacity(changes.len());
    // The change log, the pending refs (latest per record; a record created
    // and changed again in one batch keeps its staging folder) and grants.
    let mut log: Vec<(i64, PatientId, String, Option<i64>)> = Vec::new();
    let mut history: Vec<(i64, PatientId, String, &[u8])> = Vec::new();
    let mut pending: HashMap<PatientId, (String, Option<String>)> = HashMap::new();
    let mut grants: Vec<(i64, PatientId, &'static str)> = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        let by = change.by.map(i64::from);
        let current = states.get(&change.id).map(|s| s.head);
        if fenced.contains(&change.id.as_bytes()[..]) {
            out.push(Applied::Stale { current });
            continue;
        }
        match (&change.old, current) {
            (None, None) => {
                let mut holders = Holders::default();
                if let Some(by) = change.by {
                    holders.insert(by);
                }
                states.insert(
                    change.id,
                    State {
                        head: change.new,
                        seq: seq + 1,
                        catchment: change.catchment.clone(),
                        created_by: by,
                        holders,
                        created_at: now,
                        updated_by: by,
                        stored: false,
                        changed: true,
                    },
                );
                if let Some(by) = by {
                    grants.push((by, change.id, "created"));
                }
            }
            (Some(old), Some(head)) if head == *old => {
                let Some(state) = states.get_mut(&change.id) else {
                    continue;
                };
                if let Some(by) = change.by {
                    state.holders.insert(by);
                }
                if state.catchment != change.catchment {
                    for holder in state.holders.iter() {
                        grants.push((i64::from(holder), change.id, "held"));
                    }
                }
                state.head = change.new;
                state.seq = seq + 1;
                state.catchment = change.catchment.clone();
                state.updated_by = by;
                state.changed = true;
            }
            (_, current) => {
                out.push(Applied::Stale { current });
                continue;
            }
        }
        seq += 1;
        let head = change.new.to_string();
        log.push((seq, change.id, head.clone(), by));
        if let Some(packs) = packs {
            history.push((seq, change.id, head.clone(), &packs[index][..]));
        }
        let staging = match pending.remove(&change.id) {
            Some((_, before)) => change.staging.clone().or(before),
            None => change.staging.clone(),
        };
        pending.insert(change.id, (head, staging));
        out.push(Applied::Ok {
            seq: seq_from(seq, "counters.seq")?,
            time: now,
        });
    }
    if seq == first {
        return Ok(out);
    }

    // Rows of records: new ones inserted, changed ones updated.
    let (mut new, mut old) = (Columns::default(), Columns::default());
    for (id, state) in states.iter().filter(|(_, s)| s.changed) {
        let columns = if state.stored { &mut old } else { &mut new };
        columns.push(id, state);
    }
    let mut log_seq = Vec::with_capacity(log.len());
    let mut log_patient = Vec::with_capacity(log.len());
    let mut log_head = Vec::with_capacity(log.len());
    let mut log_by = Vec::with_capacity(log.len());
    for (s, id, h, by) in log {
        log_seq.push(s);
        log_patient.push(id.as_bytes().to_vec());
        log_head.push(h);
        log_by.push(by);
    }
    let mut p_patient = Vec::with_capacity(pending.len());
    let mut p_head = Vec::with_capacity(pending.len());
    let mut p_staging = Vec::with_capacity(pending.len());
    for (id, (head, staging)) in pending {
        p_patient.push(id.as_bytes().to_vec());
        p_head.push(head);
        p_staging.push(staging);
    }
    let mut h_seq = Vec::with_capacity(history.len());
    let mut h_patient = Vec::with_capacity(history.len());
    let mut h_head = Vec::with_capacity(history.len());
    let mut h_pack = Vec::with_capacity(history.len());
    for (s, id, head, pack) in history {
        h_seq.push(s);
        h_patient.push(id.as_bytes().to_vec());
        h_head.push(head);
        h_pack.push(pack);
    }
    let mut seen = HashSet::new();
    let (mut g_instance, mut g_patient, mut g_reason) = (Vec::new(), Vec::new(), Vec::new());
    for (instance, id, reason) in grants {
        if seen.insert((instance, id)) {
            g_instance.push(instance);
            g_patient.push(id.as_bytes().to_vec());
            g_reason.push(reason.to_owned());
        }
    }

    // The writes, sent together (one round trip), run in this order.
    let insert_records: &Params<'_> = &[
        &new.patient,
        &new.head,
        &new.seq,
        &new.catchment,
        &new.created_by,
        &new.holders,
        &new.created_at,
        &now,
        &new.updated_by,
    ];
    let update_records: &Params<'_> = &[
        &old.patient,
        &old.head,
        &old.seq,
        &old.catchment,
        &old.holders,
        &now,
        &old.updated_by,
    ];
    let insert_changes: &Params<'_> = &[&log_seq, &log_patient, &log_head, &log_by, &now];
    let insert_pending: &Params<'_> = &[&p_patient, &p_head, &p_staging];
    let insert_history: &Params<'_> = &[&h_patient, &h_seq, &h_head, &h_pack];
    let insert_grants: &Params<'_> = &[&g_instance, &g_patient, &g_reason, &now];
    let set_seq: &Params<'_> = &[&seq];
    let mut writes: Vec<(&str, &Params<'_>)> = Vec::with_capacity(7);
    if !new.patient.is_empty() {
        writes.push((
            "INSERT INTO records (patient, head, seq, catchment, created_by, holders, created_at, updated_at, updated_by)
             SELECT patient, head, seq, catchment, created_by, holders, created_at, $8, updated_by
               FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bytea[], $7::bigint[], $9::bigint[])
                 AS u(patient, head, seq, catchment, created_by, holders, created_at, updated_by)",
            insert_records,
        ));
    }
    if !old.patient.is_empty() {
        writes.push((
            "UPDATE records r
                SET head = u.head, seq = u.seq, catchment = u.catchment, holders = u.holders,
                    updated_at = $6, updated_by = u.updated_by
               FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::bytea[], $7::bigint[])
                 AS u(patient, head, seq, catchment, holders, updated_by)
              WHERE r.patient = u.patient",
            update_records,
        ));
    }
    writes.push((
        "INSERT INTO changes (seq, patient, head, instance, time)
         SELECT seq, patient, head, instance, $5
           FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bigint[]) AS u(seq, patient, head, instance)",
        insert_changes,
    ));
    if packs.is_none() {
        writes.push((
            "INSERT INTO ref_pending (patient, head, staging)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[])
             ON CONFLICT (patient) DO UPDATE
                SET head = excluded.head, staging = coalesce(excluded.staging, ref_pending.staging)",
            insert_pending,
        ));
    }
    if !h_patient.is_empty() {
        writes.push((
            "INSERT INTO record_history (patient, seq, head, pack)
             SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::bytea[])",
            insert_history,
        ));
    }
    if !g_patient.is_empty() {
        writes.push((
            "INSERT INTO grants (instance, patient, reason, granted_at)
             SELECT instance, patient, reason, $4
               FROM unnest($1::bigint[], $2::bytea[], $3::text[]) AS u(instance, patient, reason)
             ON CONFLICT (instance, patient) DO NOTHING",
            insert_grants,
        ));
    }
    writes.push(("UPDATE counters SET value = $1 WHERE name = 'seq'", set_seq));
    cached::execute_all(tx, &writes).await?;
    Ok(out)
}

/// Columns of record rows to write in bulk.
#[derive(Default)]
struct Columns {
    patient: Vec<Vec<u8>>,
    head: Vec<String>,
    seq: Vec<i64>,
    catchment: Vec<Option<String>>,
    created_by: Vec<Option<i64>>,
    holders: Vec<Vec<u8>>,
    created_at: Vec<i64>,
    updated_by: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, id: &PatientId, state: &State) {
        self.patient.push(id.as_bytes().to_vec());
        self.head.push(state.head.to_string());
        self.seq.push(state.seq);
        self.catchment.push(state.catchment.clone());
        self.created_by.push(state.created_by);
        self.holders.push(state.holders.to_bytes());
        self.created_at.push(state.created_at);
        self.updated_by.push(state.updated_by);
    }
}

/// The rows of these records, in order.
pub(super) async fn get(tx: &Transaction<'_>, ids: &[PatientId]) -> R<Vec<Option<RecordRow>>> {
    let rows = cached::query(
        tx,
        concat!(
            "SELECT ",
            record_columns!(),
            " FROM records r WHERE r.patient = ANY($1)"
        ),
        &[&ids_sql(ids)],
    )
    .await?;
    let mut found: HashMap<PatientId, RecordRow> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let record = decode(row)?;
        found.insert(record.id, record);
    }
    Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
}

/// The record's first head.
pub(super) async fn first_head(tx: &Transaction<'_>, id: &PatientId) -> R<Option<CommitId>> {
    let row = cached::query_opt(
        tx,
        "SELECT head FROM changes WHERE patient = $1 ORDER BY seq ASC LIMIT 1",
        &[&&id.as_bytes()[..]],
    )
    .await?;
    Ok(row
        .map(|r| head_from(r.get(0), "changes.head"))
        .transpose()?)
}

/// The record's head after its latest change numbered `at` or lower.
pub(super) async fn head_at(tx: &Transaction<'_>, id: &PatientId, at: Seq) -> R<Option<CommitId>> {
    let row = cached::query_opt(
        tx,
        "SELECT head FROM changes WHERE patient = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
        &[&&id.as_bytes()[..], &seq_to_sql(at)],
    )
    .await?;
    Ok(row
        .map(|r| head_from(r.get(0), "changes.head"))
        .transpose()?)
}

/// Sets `instance`'s holder bit on these records (unknown ones ignored),
/// in one statement: the rows are locked in patient order (as
/// [`apply`] locks them), and the bit is set in the stored bytes where it
/// is not set yet (bit `i` is bit `i % 8` of byte `i / 8`, the layout of
/// [`Holders`]; a string too short for it is first extended with zero
/// bytes, so no trailing zero byte is ever stored).
pub(super) async fn add_holder(tx: &Transaction<'_>, instance: u32, ids: &[PatientId]) -> R<()> {
    let mut ids = ids_sql(ids);
    ids.sort();
    ids.dedup();
    let bit = i64::from(instance);
    let byte = i32::try_from(instance / 8).map_err(|_| DbError::IdOutOfRange(instance))?;
    cached::execute(
        tx,
        "WITH locked AS MATERIALIZED (
             SELECT patient FROM records WHERE patient = ANY($1) ORDER BY patient FOR UPDATE
         )
         UPDATE records r
            SET holders = set_bit(
                    CASE WHEN length(r.holders) > $3 THEN r.holders
                         ELSE r.holders || decode(repeat('00', $3 + 1 - length(r.holders)), 'hex')
                    END,
                    $2, 1)
           FROM locked
          WHERE r.patient = locked.patient
            AND CASE WHEN length(r.holders) > $3 THEN get_bit(r.holders, $2) = 0 ELSE true END",
        &[&ids, &bit, &byte],
    )
    .await?;
    Ok(())
}

/// Every head whose ref may lag.
pub(super) async fn ref_pending(tx: &Transaction<'_>) -> R<Vec<RefPending>> {
    let rows = cached::query(tx, "SELECT patient, head, staging FROM ref_pending", &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(RefPending {
            id: patient_from(row.get(0), "ref_pending.patient")?,
            head: head_from(row.get(1), "ref_pending.head")?,
            staging: row.get(2),
        });
    }
    Ok(out)
}

/// Forgets pending refs still at the given heads.
pub(super) async fn clear_ref_pending(
    tx: &Transaction<'_>,
    done: &[(PatientId, CommitId)],
) -> R<()> {
    let patients: Vec<Vec<u8>> = done.iter().map(|(id, _)| id.as_bytes().to_vec()).collect();
    let heads: Vec<String> = done.iter().map(|(_, head)| head.to_string()).collect();
    cached::execute(
        tx,
        "DELETE FROM ref_pending p USING unnest($1::bytea[], $2::text[]) AS d(patient, head)
          WHERE p.patient = d.patient AND p.head = d.head",
        &[&patients, &heads],
    )
    .await?;
    Ok(())
}

/// Whether `instance` has a grant on the record.
pub(super) async fn has_grant(tx: &Transaction<'_>, instance: u32, id: &PatientId) -> R<bool> {
    Ok(cached::query_opt(
        tx,
        "SELECT 1 FROM grants WHERE instance = $1 AND patient = $2",
        &[&i64::from(instance), &&id.as_bytes()[..]],
    )
    .await?
    .is_some())
}

/// Grants the record to `instance` (a grant it has keeps its first reason).
pub(super) async fn grant(
    tx: &Transaction<'_>,
    instance: u32,
    id: &PatientId,
    reason: &str,
) -> R<()> {
    cached::execute(
        tx,
        "INSERT INTO grants (instance, patient, reason, granted_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance, patient) DO NOTHING",
        &[
            &i64::from(instance),
            &&id.as_bytes()[..],
            &reason,
            &chrono::Utc::now().timestamp(),
        ],
    )
    .await?;
    Ok(())
}

/// The changes of an instance's scope: each catchment's range of the
/// `(catchment, seq)` index (a `LATERAL` range scan that stops at the
/// limit: `catchment = ANY(..)` was planned as a bitmap scan of every row
/// after the cursor, 0.62 s a page at a million records against 2 ms),
/// and the grants' part given as `$grants`, merged and cut at the limit.
macro_rules! scope_sql {
    ($grants:expr) => {
        concat!(
            "SELECT ",
            record_columns!(),
            " FROM (
                (SELECT c.* FROM unnest($2::text[]) AS k(name),
                   LATERAL (SELECT * FROM records WHERE catchment = k.name AND seq > $3
                            ORDER BY seq LIMIT $4) c)
                UNION
                (",
            $grants,
            ")
             ) r ORDER BY r.seq LIMIT $4"
        )
    };
}

/// The scope with the records granted to instance `$1` read from its
/// grants: as many lookups as it has grants. (`OFFSET 0` keeps each
/// lookup a probe of the primary key, whatever the planner guesses of the
/// number of grants.)
const SCOPE_BY_GRANTS: &str = scope_sql!(
    "SELECT rr.* FROM grants g,
       LATERAL (SELECT * FROM records x WHERE x.patient = g.patient AND x.seq > $3 OFFSET 0) rr
     WHERE g.instance = $1 ORDER BY rr.seq LIMIT $4"
);

/// The scope with the records granted to instance `$1` read from the
/// changes after the cursor, each checked against its grants: stops once
/// the limit is granted. (The check is a scalar subquery, which the
/// planner keeps as a filter on the walk: as `EXISTS` it became a join
/// driven from the grants once the tables' statistics grew, 3.3 s a page
/// for a clinic with a million grants.)
const SCOPE_BY_CHANGES: &str = scope_sql!(
    "SELECT rr.* FROM records rr
     WHERE rr.seq > $3
       AND (SELECT count(*) FROM (SELECT 1 FROM grants g
                                  WHERE g.instance = $1 AND g.patient = rr.patient LIMIT 1) x) > 0
     ORDER BY rr.seq LIMIT $4"
);

/// An instance with fewer grants than this many pages' worth (and fewer
/// than the changes after the cursor) has its grants read one by one.
const GRANT_PAGES: usize = 10;

/// At most `limit` records in the scope of instance `id` (with these
/// catchments) changed after `after`, by sequence number.
///
/// The grants are read by whichever costs less, as on SQLite: an
/// instance's grants when it has fewer than the changes after the cursor
/// and than [`GRANT_PAGES`] pages, else the changes after the cursor
/// until the limit is granted. A generic plan does neither: with no
/// grants (the usual clinic) it walked every change after the cursor
/// looking for one (0.77 s a page at a million records, a walk from the
/// start quadratic); a custom plan depends on the table's statistics
/// being current. Counting is bounded by the same number.
pub(super) async fn scope_changes(
    tx: &Transaction<'_>,
    id: u32,
    catchments: &[String],
    after: Seq,
    limit: usize,
) -> R<Vec<RecordRow>> {
    let cap = big(limit.saturating_mul(GRANT_PAGES));
    let row = cached::query_one(
        tx,
        "WITH cap AS (SELECT LEAST(GREATEST(value - $2, 0), $3) AS n FROM counters WHERE name = 'seq')
         SELECT (SELECT count(*) FROM (SELECT 1 FROM grants WHERE instance = $1
                                       ORDER BY instance, patient LIMIT (SELECT n FROM cap)) g),
                (SELECT n FROM cap)",
        &[&i64::from(id), &seq_to_sql(after), &cap],
    )
    .await?;
    let grants: i64 = row.get(0);
    let bound: Option<i64> = row.get(1);
    let bound = bound.ok_or(DbError::Damaged("counters.seq"))?;
    let sql = if grants < bound {
        SCOPE_BY_GRANTS
    } else {
        SCOPE_BY_CHANGES
    };
    let rows = cached::query(
        tx,
        sql,
        &[&i64::from(id), &catchments, &seq_to_sql(after), &big(limit)],
    )
    .await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

/// Totals.
pub(super) async fn counts(tx: &Transaction<'_>) -> R<Counts> {
    let row = cached::query_one(
        tx,
        "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM instances)",
        &[],
    )
    .await?;
    Ok(Counts {
        records: u64::try_from(row.get::<_, i64>(0)).map_err(|_| DbError::Damaged("records"))?,
        instances: u64::try_from(row.get::<_, i64>(1))
            .map_err(|_| DbError::Damaged("instances"))?,
        seq: seq_from(last_seq(tx).await?, "counters.seq")?,
    })
}

/// A record's stored packs after the change that made `after` its head.
pub(super) async fn history_after(
    tx: &Transaction<'_>,
    id: &PatientId,
    after: Option<CommitId>,
) -> R<Vec<(CommitId, Vec<u8>)>> {
    let id = &id.as_bytes()[..];
    let from: i64 = match after {
        Some(head) => cached::query_opt(
                tx,
                "SELECT seq FROM record_history WHERE patient = $1 AND head = $2 ORDER BY seq DESC LIMIT 1",
                &[&id, &head.to_string()],
            )
            .await?
            .map_or(0, |r| r.get(0)),
        None => 0,
    };
    let rows = cached::query(
        tx,
        "SELECT head, pack FROM record_history WHERE patient = $1 AND seq > $2 ORDER BY seq",
        &[&id, &from],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push((head_from(row.get(0), "record_history.head")?, row.get(1)));
    }
    Ok(out)
}

/// See `CentralDb::whole_packs`.
pub(super) async fn whole_packs(
    tx: &Transaction<'_>,
    ids: &[PatientId],
) -> R<Vec<Option<crate::db::WholePack>>> {
    let rows = cached::query(
        tx,
        // Each id is looked up in the primary key (patient, seq): the
        // LATERAL subqueries with LIMIT cannot be turned into a join over
        // the whole table, which a NOT EXISTS form was (a parallel scan of
        // every record's history for each page: 70 records/s at a million
        // records). Only the first two changes' heads are read, and the
        // pack only of records that have one.
        "WITH firsts AS (
           SELECT i.patient, h.seq, h.head, count(*) OVER (PARTITION BY i.patient) AS n
             FROM unnest($1::bytea[]) AS i(patient),
             LATERAL (SELECT r.seq, r.head FROM record_history r
                       WHERE r.patient = i.patient ORDER BY r.seq LIMIT 2) h
         )
         SELECT f.patient, f.head, p.pack FROM firsts f,
           LATERAL (SELECT r.pack FROM record_history r
                     WHERE r.patient = f.patient AND r.seq = f.seq LIMIT 1) p
          WHERE f.n = 1",
        &[&ids_sql(ids)],
    )
    .await?;
    let mut found: HashMap<PatientId, (CommitId, Vec<u8>)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        found.insert(
            patient_from(row.get(0), "record_history.patient")?,
            (head_from(row.get(1), "record_history.head")?, row.get(2)),
        );
    }
    Ok(ids.iter().map(|id| found.remove(id)).collect())
}

/// [`head_at`] of several records in one query.
pub(super) async fn heads_at(
    tx: &Transaction<'_>,
    ids: &[PatientId],
    at: Seq,
) -> R<Vec<Option<CommitId>>> {
    let rows = cached::query(
        tx,
        "SELECT DISTINCT ON (patient) patient, head FROM changes
              WHERE patient = ANY($1) AND seq <= $2 ORDER BY patient, seq DESC",
        &[&ids_sql(ids), &seq_to_sql(at)],
    )
    .await?;
    let mut found: HashMap<PatientId, CommitId> = HashMap::with_capacity(rows.len());
    for row in &rows {
        found.insert(
            patient_from(row.get(0), "changes.patient")?,
            head_from(row.get(1), "changes.head")?,
        );
    }
    Ok(ids.iter().map(|id| found.get(id).copied()).collect())
}

/// [`first_head`] of several records in one query.
pub(super) async fn first_heads(
    tx: &Transaction<'_>,
    ids: &[PatientId],
) -> R<Vec<Option<CommitId>>> {
    let rows = cached::query(
        tx,
        "SELECT DISTINCT ON (patient) patient, head FROM changes
          WHERE patient = ANY($1) ORDER BY patient, seq ASC",
        &[&ids_sql(ids)],
    )
    .await?;
    let mut found: HashMap<PatientId, CommitId> = HashMap::with_capacity(rows.len());
    for row in &rows {
        found.insert(
            patient_from(row.get(0), "changes.patient")?,
            head_from(row.get(1), "changes.head")?,
        );
    }
    Ok(ids.iter().map(|id| found.get(id).copied()).collect())
}
