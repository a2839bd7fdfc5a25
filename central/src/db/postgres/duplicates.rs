//! Duplicate patients: identifying fields, blocking keys, pairs, dismissals
//! and the indexing cursor.

use std::collections::HashMap;

use chartsync_dedup::block_end;
use chartsync_protocol::{CommitId, PatientId};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::cached::{self, Params};
use super::{R, big, head_from, patient_from, seq_from, seq_to_sql};
use crate::db::{DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, Seq};

pub(super) async fn cursor(tx: &Transaction<'_>) -> R<Seq> {
    let raw: i64 = tx
        .query_one("SELECT seq FROM duplicate_cursor WHERE id = 1", &[])
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
    let rows = tx
        .query(
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

/// The records sharing a block with `keys`, each once, with their stored
/// fields: two queries, the size of every key's blocks (each level's
/// block is one range of `duplicate_members`, see
/// [`chartsync_dedup::LEVEL_SEPARATOR`], counted up to one more than
/// `max_block`, so a block too large to search costs no more than that),
/// then the members of the blocks searched.
pub(super) async fn candidates(
    tx: &Transaction<'_>,
    keys: &[DuplicateKey],
    max_block: usize,
) -> R<Vec<(PatientId, String)>> {
    let levels: Vec<&str> = keys.iter().flat_map(|k| k.levels()).collect();
    let ends: Vec<String> = levels.iter().map(|l| block_end(l)).collect();
    let sizes: Vec<i64> = tx
        .query(
            "SELECT (SELECT count(*) FROM (
                         SELECT 1 FROM duplicate_members m
                         WHERE m.key >= l.k COLLATE \"C\" AND m.key < l.e COLLATE \"C\"
                         LIMIT $3
                     ) AS s)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS l(k, e, i)
             ORDER BY l.i",
            &[&levels, &ends, &big(max_block.saturating_add(1))],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if sizes.len() != levels.len() {
        return Err(DbError::Damaged("duplicate_members.key").into());
    }
    let size_of: std::collections::HashMap<&str, i64> = levels.iter().copied().zip(sizes).collect();
    let searched: Vec<&str> = keys
        .iter()
        .filter_map(|k| {
            k.searched(max_block, |level| {
                size_of
                    .get(level)
                    .map_or(0, |&n| usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
        .collect();
    if searched.is_empty() {
        return Ok(Vec::new());
    }
    let ends: Vec<String> = searched.iter().map(|l| block_end(l)).collect();
    let rows = tx
        .query(
            "SELECT m.patient, m.fields
             FROM unnest($1::text[], $2::text[]) AS l(k, e)
             JOIN duplicate_members m
               ON m.key >= l.k COLLATE \"C\" AND m.key < l.e COLLATE \"C\"",
            &[&searched, &ends],
        )
        .await?;
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for row in &rows {
        let id = patient_from(row.get(0), "duplicate_members.patient")?;
        if seen.insert(id) {
            found.push((id, row.get::<_, String>(1)));
        }
    }
    Ok(found)
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
pub(super) async fn index(tx: &cached::Tx<'_>, updates: &[DuplicateUpdate]) -> R<()> {
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
        /// The fields compared, the distinct keys as JSON, and as a list.
        entry: Option<(String, String, Vec<String>)>,
        pairs: Vec<(Vec<u8>, Vec<u8>, f64, String)>,
    }
    let mut all = Vec::with_capacity(updates.len());
    for (update, id) in updates.iter().zip(ids) {
        let old = keys_now.remove(&id);
        let entry = match &update.entry {
            Some(entry) => {
                let distinct: Vec<String> = entry
                    .keys
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let keys = serde_json::to_string(&distinct)
                    .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
                keys_now.insert(id.clone(), distinct.clone());
                Some((entry.person.clone(), keys, distinct))
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
                "DELETE FROM duplicate_members WHERE key = ANY($1) AND patient = $2",
                vec![old, &one.id],
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
                "INSERT INTO duplicate_people (patient, keys) VALUES ($1, $2)",
                vec![&one.id, keys_json],
            ));
            statements.push((
                "INSERT INTO duplicate_members (key, patient, fields)
                 SELECT k, $2, $3 FROM unnest($1::text[]) AS k",
                vec![keys, &one.id, person],
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
    let rows = tx
        .query(
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
    tx.execute(
        "INSERT INTO duplicate_dismissed (a, b, dismissed_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&&a[..], &&b[..], &at],
    )
    .await?;
    tx.execute(
        "DELETE FROM duplicate_pairs WHERE a = $1 AND b = $2",
        &[&&a[..], &&b[..]],
    )
    .await?;
    Ok(())
}
