//! Duplicate patients: identifying fields, blocking keys, pairs, dismissals
//! and the indexing cursor.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::cached::{self, Params, Tx as Transaction};
use chartsync_protocol::{CommitId, PatientId};

use super::{R, big, head_from, patient_from, seq_from, seq_to_sql};
use crate::db::{DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, Seq};

pub(super) async fn cursor(tx: &Transaction<'_>) -> R<Seq> {
    let raw: i64 = cached::query_one(tx, "SELECT seq FROM duplicate_cursor WHERE id = 1", &[])
        .await?
        .get(0);
    Ok(seq_from(raw, "duplicate_cursor.seq")?)
}

/// Records whose latest change is after `after`, in sequence order.
pub(super) async fn changed_after(
    tx: &Transaction<'_>,
    after: Seq,
    limit: usize,
) -> R<Vec<(Seq, PatientId, CommitId)>> {
    let rows = cached::query(
        tx,
        "SELECT seq, patient, head FROM records WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&seq_to_sql(after), &big(limit)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push((
            seq_from(row.get(0), "records.seq")?,
            patient_from(row.get(1), "records.patient")?,
            head_from(row.get(2), "records.head")?,
        ));
    }
    Ok(out)
}

/// The records sharing a block with `keys`, with their stored fields:
/// two queries, the sizes of every key's blocks (from `duplicate_blocks`,
/// so a block too large to search is never read), then the members of
/// the blocks searched, each record once.
pub(super) async fn candidates(
    tx: &Transaction<'_>,
    keys: &[DuplicateKey],
    max_block: usize,
) -> R<Vec<(PatientId, String)>> {
    let levels: Vec<&str> = keys.iter().flat_map(|k| k.levels()).collect();
    let sizes: std::collections::HashMap<String, i64> = cached::query(
        tx,
        "SELECT key, size FROM duplicate_blocks WHERE key = ANY($1)",
        &[&levels],
    )
    .await?
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    let searched: Vec<&str> = keys
        .iter()
        .filter_map(|k| {
            k.searched(max_block, |level| {
                sizes
                    .get(level)
                    .map_or(0, |&n| usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
        .collect();
    if searched.is_empty() {
        return Ok(Vec::new());
    }
    let rows = cached::query(
        tx,
        "SELECT p.patient, p.person FROM duplicate_people p
             WHERE p.patient IN (SELECT patient FROM duplicate_keys WHERE key = ANY($1))
             ORDER BY p.patient",
        &[&searched],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                patient_from(row.get(0), "duplicate_keys.patient")?,
                row.get::<_, String>(1),
            ))
        })
        .collect()
}

/// A pair's two ids in their stored order.
fn ordered(a: &PatientId, b: &PatientId) -> ([u8; 16], [u8; 16]) {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b { (a, b) } else { (b, a) }
}

/// Replaces what is indexed of these records and their pairs, one after
/// another in order (as if each were indexed alone); moves the cursor
/// forward to the last `seq`. Two round trips however many records: their
/// stored keys are read first, then every write is sent at once.
pub(super) async fn index(tx: &Transaction<'_>, updates: &[DuplicateUpdate]) -> R<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<Vec<u8>> = updates.iter().map(|u| u.id.as_bytes().to_vec()).collect();
    let rows = cached::query(
        tx,
        "SELECT patient, keys FROM duplicate_people WHERE patient = ANY($1)",
        &[&ids],
    )
    .await?;
    // Each record's keys as the writes before it leave them.
    let mut keys_now: HashMap<Vec<u8>, Vec<String>> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let keys: Vec<String> = serde_json::from_str(row.get(1))
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        keys_now.insert(row.get(0), keys);
    }
    // The values of every statement, owned here.
    struct One {
        id: Vec<u8>,
        old: Option<Vec<String>>,
        entry: Option<(String, String, Vec<String>)>,
        pairs: Vec<(Vec<u8>, Vec<u8>, f64, String)>,
    }
    let mut all = Vec::with_capacity(updates.len());
    for (update, id) in updates.iter().zip(ids) {
        let old = keys_now.remove(&id);
        let entry = match &update.entry {
            Some(entry) => {
                let keys = serde_json::to_string(&entry.keys)
                    .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
                keys_now.insert(id.clone(), entry.keys.clone());
                Some((entry.person.clone(), keys, entry.keys.clone()))
            }
            None => None,
        };
        let pairs = update
            .pairs
            .iter()
            .map(|pair| (ordered(&pair.a, &pair.b), pair))
            .filter(|((a, b), _)| a != b)
            .map(|((a, b), pair)| (a.to_vec(), b.to_vec(), pair.score, pair.fields.clone()))
            .collect();
        all.push(One {
            id,
            old,
            entry,
            pairs,
        });
    }
    let last = updates.iter().map(|u| u.seq).max().map_or(0, seq_to_sql);

    let mut statements: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
    for one in &all {
        if let Some(old) = &one.old {
            statements.push((
                "WITH gone AS (
                     DELETE FROM duplicate_keys WHERE key = ANY($1) AND patient = $2 RETURNING key
                 )
                 UPDATE duplicate_blocks b SET size = b.size - 1 FROM gone WHERE b.key = gone.key",
                vec![old, &one.id],
            ));
            statements.push((
                "DELETE FROM duplicate_blocks WHERE key = ANY($1) AND size <= 0",
                vec![old],
            ));
        }
        statements.push((
            "DELETE FROM duplicate_people WHERE patient = $1",
            vec![&one.id],
        ));
        statements.push((
            "DELETE FROM duplicate_pairs WHERE a = $1 OR b = $1",
            vec![&one.id],
        ));
        if let Some((person, keys_json, keys)) = &one.entry {
            statements.push((
                "INSERT INTO duplicate_people (patient, person, keys) VALUES ($1, $2, $3)",
                vec![&one.id, person, keys_json],
            ));
            statements.push((
                "WITH added AS (
                     INSERT INTO duplicate_keys (key, patient) SELECT k, $2 FROM unnest($1::text[]) AS k
                     ON CONFLICT DO NOTHING RETURNING key
                 )
                 INSERT INTO duplicate_blocks (key, size) SELECT key, 1 FROM added
                 ON CONFLICT (key) DO UPDATE SET size = duplicate_blocks.size + 1",
                vec![keys, &one.id],
            ));
        }
        for (a, b, score, fields) in &one.pairs {
            statements.push((
                "INSERT INTO duplicate_pairs (a, b, score, fields)
                 SELECT $1, $2, $3, $4
                 WHERE NOT EXISTS (SELECT 1 FROM duplicate_dismissed WHERE a = $1 AND b = $2)
                 ON CONFLICT (a, b) DO UPDATE SET score = excluded.score, fields = excluded.fields",
                vec![a, b, score, fields],
            ));
        }
    }
    statements.push((
        "UPDATE duplicate_cursor SET seq = greatest(seq, $1) WHERE id = 1",
        vec![&last],
    ));
    let statements: Vec<(&str, &Params<'_>)> = statements
        .iter()
        .map(|(sql, params)| (*sql, params.as_slice()))
        .collect();
    cached::execute_all(tx, &statements).await?;
    Ok(())
}

/// Pairs scoring at least `min_score`, highest first.
pub(super) async fn pairs(
    tx: &Transaction<'_>,
    min_score: f64,
    offset: usize,
    limit: usize,
) -> R<Vec<DuplicatePair>> {
    let rows = cached::query(
        tx,
        "SELECT a, b, score, fields FROM duplicate_pairs
             WHERE score >= $1 ORDER BY score DESC, a, b LIMIT $2 OFFSET $3",
        &[&min_score, &big(limit), &big(offset)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(DuplicatePair {
            a: patient_from(row.get(0), "duplicate_pairs.a")?,
            b: patient_from(row.get(1), "duplicate_pairs.b")?,
            score: row.get(2),
            fields: row.get(3),
        });
    }
    Ok(out)
}

/// Marks the pair as two people and forgets it as a pair.
pub(super) async fn dismiss(tx: &Transaction<'_>, a: &PatientId, b: &PatientId, at: i64) -> R<()> {
    let (a, b) = ordered(a, b);
    cached::execute(
        tx,
        "INSERT INTO duplicate_dismissed (a, b, dismissed_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&&a[..], &&b[..], &at],
    )
    .await?;
    cached::execute(
        tx,
        "DELETE FROM duplicate_pairs WHERE a = $1 AND b = $2",
        &[&&a[..], &&b[..]],
    )
    .await?;
    Ok(())
}
