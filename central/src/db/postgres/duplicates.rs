//! Duplicate patients: identifying fields, blocking keys, pairs, dismissals
//! and the indexing cursor.

use chartsync_protocol::{CommitId, PatientId};
use tokio_postgres::Transaction;

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

/// The records sharing a block with `keys`, with their stored fields.
pub(super) async fn candidates(
    tx: &Transaction<'_>,
    keys: &[DuplicateKey],
    max_block: usize,
) -> R<Vec<(PatientId, String)>> {
    let mut found = std::collections::BTreeMap::new();
    let block = tx
        .prepare(
            "SELECT k.patient, p.person FROM duplicate_keys k
             JOIN duplicate_people p ON p.patient = k.patient
             WHERE k.key = $1 LIMIT $2",
        )
        .await?;
    let cap = big(max_block).saturating_add(1);
    for key in keys {
        // A block this large says little: its finer key's block is read
        // instead (and the record's other keys still find its duplicates).
        let mut rows = tx.query(&block, &[&key.coarse, &cap]).await?;
        if rows.len() > max_block {
            rows = match &key.fine {
                Some(fine) => {
                    let fine_rows = tx.query(&block, &[fine, &cap]).await?;
                    if fine_rows.len() > max_block {
                        Vec::new()
                    } else {
                        fine_rows
                    }
                }
                None => Vec::new(),
            };
        }
        for row in &rows {
            found.insert(
                patient_from(row.get(0), "duplicate_keys.patient")?,
                row.get::<_, String>(1),
            );
        }
    }
    Ok(found.into_iter().collect())
}

/// A pair's two ids in their stored order.
fn ordered(a: &PatientId, b: &PatientId) -> ([u8; 16], [u8; 16]) {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b { (a, b) } else { (b, a) }
}

/// Replaces what is indexed of one record and its pairs; moves the cursor
/// forward to `update.seq`.
pub(super) async fn index(tx: &Transaction<'_>, update: &DuplicateUpdate) -> R<()> {
    let id = &update.id.as_bytes()[..];
    let old = tx
        .query_opt(
            "SELECT keys FROM duplicate_people WHERE patient = $1",
            &[&id],
        )
        .await?;
    if let Some(old) = old {
        let old: Vec<String> = serde_json::from_str(old.get(0))
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        tx.execute(
            "DELETE FROM duplicate_keys WHERE key = ANY($1) AND patient = $2",
            &[&old, &id],
        )
        .await?;
    }
    tx.execute("DELETE FROM duplicate_people WHERE patient = $1", &[&id])
        .await?;
    tx.execute("DELETE FROM duplicate_pairs WHERE a = $1 OR b = $1", &[&id])
        .await?;
    if let Some(entry) = &update.entry {
        let keys = serde_json::to_string(&entry.keys)
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        tx.execute(
            "INSERT INTO duplicate_people (patient, person, keys) VALUES ($1, $2, $3)",
            &[&id, &entry.person, &keys],
        )
        .await?;
        tx.execute(
            "INSERT INTO duplicate_keys (key, patient) SELECT k, $2 FROM unnest($1::text[]) AS k
             ON CONFLICT DO NOTHING",
            &[&entry.keys, &id],
        )
        .await?;
    }
    for pair in &update.pairs {
        let (a, b) = ordered(&pair.a, &pair.b);
        if a == b {
            continue;
        }
        tx.execute(
            "INSERT INTO duplicate_pairs (a, b, score, fields)
             SELECT $1, $2, $3, $4
             WHERE NOT EXISTS (SELECT 1 FROM duplicate_dismissed WHERE a = $1 AND b = $2)
             ON CONFLICT (a, b) DO UPDATE SET score = excluded.score, fields = excluded.fields",
            &[&&a[..], &&b[..], &pair.score, &pair.fields],
        )
        .await?;
    }
    tx.execute(
        "UPDATE duplicate_cursor SET seq = greatest(seq, $1) WHERE id = 1",
        &[&seq_to_sql(update.seq)],
    )
    .await?;
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
