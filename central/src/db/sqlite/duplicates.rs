//! Duplicate patients: identifying fields, blocking keys, pairs, dismissals
//! and the indexing cursor.

use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{OptionalExtension, Transaction, params};

use super::pool::sql;
use super::records::{head_from, patient_from, seq_from, seq_to_sql};
use crate::db::{DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, Seq};

pub(super) fn cursor(tx: &Transaction<'_>) -> Result<Seq, DbError> {
    let raw: i64 = tx
        .prepare_cached("SELECT seq FROM duplicate_cursor WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql("reading the duplicate index cursor"))?;
    seq_from(raw, "duplicate_cursor.seq")
}

/// Records whose latest change is after `after`, in sequence order.
pub(super) fn changed_after(
    tx: &Transaction<'_>,
    after: Seq,
    limit: usize,
) -> Result<Vec<(Seq, PatientId, CommitId)>, DbError> {
    const CTX: &str = "listing changed records";
    let mut stmt = tx
        .prepare_cached(
            "SELECT seq, patient, head FROM records INDEXED BY records_seq
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(sql(CTX))?;
    let rows = stmt
        .query_map(params![seq_to_sql(after), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sql(CTX))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, patient, head) = row.map_err(sql(CTX))?;
        out.push((
            seq_from(seq, "records.seq")?,
            patient_from(&patient, "records.patient")?,
            head_from(&head, "records.head")?,
        ));
    }
    Ok(out)
}

/// The records sharing a block with `keys` (see
/// [`crate::db::CentralDb::duplicate_candidates`]), with their stored
/// fields: two statements, the sizes of every key's blocks (from
/// `duplicate_blocks`, so a block too large to search is never read), then
/// the members of the blocks searched, each record once.
pub(super) fn candidates(
    tx: &Transaction<'_>,
    keys: &[DuplicateKey],
    max_block: usize,
) -> Result<Vec<(PatientId, String)>, DbError> {
    const CTX: &str = "reading duplicate candidates";
    let list = |keys: &[&str]| {
        serde_json::to_string(keys).map_err(|_| DbError::Damaged("duplicate_keys.key"))
    };
    let levels: Vec<&str> = keys.iter().flat_map(|k| k.levels()).collect();
    let mut sizes = std::collections::HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT b.key, b.size FROM json_each(?1) AS j
                 CROSS JOIN duplicate_blocks AS b ON b.key = j.value",
            )
            .map_err(sql(CTX))?;
        let rows = stmt
            .query_map(params![list(&levels)?], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(sql(CTX))?;
        for row in rows {
            let (key, size) = row.map_err(sql(CTX))?;
            sizes.insert(key, usize::try_from(size).unwrap_or(0));
        }
    }
    let searched: Vec<&str> = keys
        .iter()
        .filter_map(|k| k.searched(max_block, |level| sizes.get(level).copied().unwrap_or(0)))
        .collect();
    if searched.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = tx
        .prepare_cached(
            "SELECT p.patient, p.person FROM duplicate_people AS p
             WHERE p.patient IN (
                 SELECT k.patient FROM json_each(?1) AS j
                 CROSS JOIN duplicate_keys AS k ON k.key = j.value
             )",
        )
        .map_err(sql(CTX))?;
    let rows = stmt
        .query_map(params![list(&searched)?], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql(CTX))?;
    let mut found = Vec::new();
    for row in rows {
        let (patient, person) = row.map_err(sql(CTX))?;
        found.push((patient_from(&patient, "duplicate_people.patient")?, person));
    }
    Ok(found)
}

/// Moves the size of `key`'s block by `by` (a key no record holds any
/// more is dropped).
fn resize(tx: &Transaction<'_>, key: &str, by: i64) -> Result<(), DbError> {
    const CTX: &str = "counting a duplicate block";
    tx.prepare_cached(
        "INSERT INTO duplicate_blocks (key, size) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET size = size + excluded.size",
    )
    .and_then(|mut s| s.execute(params![key, by]))
    .map_err(sql(CTX))?;
    if by < 0 {
        tx.prepare_cached("DELETE FROM duplicate_blocks WHERE key = ?1 AND size <= 0")
            .and_then(|mut s| s.execute(params![key]))
            .map_err(sql(CTX))?;
    }
    Ok(())
}

/// A pair's two ids in their stored order.
fn ordered(a: &PatientId, b: &PatientId) -> ([u8; 16], [u8; 16]) {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b { (a, b) } else { (b, a) }
}

/// Replaces what is indexed of one record and its pairs; moves the
/// cursor forward to `update.seq`.
pub(super) fn index(tx: &Transaction<'_>, update: &DuplicateUpdate) -> Result<(), DbError> {
    const CTX: &str = "indexing a record for duplicates";
    let id = &update.id.as_bytes()[..];
    let old: Option<String> = tx
        .prepare_cached("SELECT keys FROM duplicate_people WHERE patient = ?1")
        .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
        .map_err(sql(CTX))?;
    if let Some(old) = old {
        let old: Vec<String> =
            serde_json::from_str(&old).map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        let mut del = tx
            .prepare_cached("DELETE FROM duplicate_keys WHERE key = ?1 AND patient = ?2")
            .map_err(sql(CTX))?;
        for key in old {
            if del.execute(params![key, id]).map_err(sql(CTX))? > 0 {
                resize(tx, &key, -1)?;
            }
        }
    }
    tx.execute(
        "DELETE FROM duplicate_people WHERE patient = ?1",
        params![id],
    )
    .map_err(sql(CTX))?;
    tx.execute(
        "DELETE FROM duplicate_pairs WHERE a = ?1 OR b = ?1",
        params![id],
    )
    .map_err(sql(CTX))?;
    if let Some(entry) = &update.entry {
        let keys = serde_json::to_string(&entry.keys)
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        tx.execute(
            "INSERT INTO duplicate_people (patient, person, keys) VALUES (?1, ?2, ?3)",
            params![id, entry.person, keys],
        )
        .map_err(sql(CTX))?;
        // The keys and their blocks' sizes in two statements, unless the
        // record holds one of them already (its stored list was out of
        // step): then one by one.
        let distinct: std::collections::BTreeSet<&str> =
            entry.keys.iter().map(String::as_str).collect();
        let list = serde_json::to_string(&distinct)
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        let held: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM json_each(?1) AS j
                 CROSS JOIN duplicate_keys AS k ON k.key = j.value AND k.patient = ?2",
            )
            .and_then(|mut s| s.query_row(params![list, id], |r| r.get(0)))
            .map_err(sql(CTX))?;
        if held == 0 {
            tx.prepare_cached(
                "INSERT INTO duplicate_keys (key, patient) SELECT value, ?2 FROM json_each(?1)",
            )
            .and_then(|mut s| s.execute(params![list, id]))
            .map_err(sql(CTX))?;
            tx.prepare_cached(
                "INSERT INTO duplicate_blocks (key, size) SELECT value, 1 FROM json_each(?1) WHERE true
                 ON CONFLICT (key) DO UPDATE SET size = size + 1",
            )
            .and_then(|mut s| s.execute(params![list]))
            .map_err(sql(CTX))?;
        } else {
            let mut add = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO duplicate_keys (key, patient) VALUES (?1, ?2)",
                )
                .map_err(sql(CTX))?;
            for key in distinct {
                if add.execute(params![key, id]).map_err(sql(CTX))? > 0 {
                    resize(tx, key, 1)?;
                }
            }
        }
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO duplicate_pairs (a, b, score, fields)
             SELECT ?1, ?2, ?3, ?4
             WHERE NOT EXISTS (SELECT 1 FROM duplicate_dismissed WHERE a = ?1 AND b = ?2)",
        )
        .map_err(sql(CTX))?;
    for pair in &update.pairs {
        let (a, b) = ordered(&pair.a, &pair.b);
        if a == b {
            continue;
        }
        insert
            .execute(params![&a[..], &b[..], pair.score, pair.fields])
            .map_err(sql(CTX))?;
    }
    tx.execute(
        "UPDATE duplicate_cursor SET seq = max(seq, ?1) WHERE id = 1",
        params![seq_to_sql(update.seq)],
    )
    .map_err(sql(CTX))?;
    Ok(())
}

/// Pairs scoring at least `min_score`, highest first, at most `limit`,
/// skipping the first `offset`.
pub(super) fn pairs(
    tx: &Transaction<'_>,
    min_score: f64,
    offset: usize,
    limit: usize,
) -> Result<Vec<DuplicatePair>, DbError> {
    const CTX: &str = "listing duplicate pairs";
    let mut stmt = tx
        .prepare_cached(
            "SELECT a, b, score, fields FROM duplicate_pairs INDEXED BY duplicate_pairs_score
             WHERE score >= ?1 ORDER BY score DESC, a, b LIMIT ?2 OFFSET ?3",
        )
        .map_err(sql(CTX))?;
    let rows = stmt
        .query_map(params![min_score, limit as i64, offset as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(sql(CTX))?;
    let mut out = Vec::new();
    for row in rows {
        let (a, b, score, fields) = row.map_err(sql(CTX))?;
        out.push(DuplicatePair {
            a: patient_from(&a, "duplicate_pairs.a")?,
            b: patient_from(&b, "duplicate_pairs.b")?,
            score,
            fields,
        });
    }
    Ok(out)
}

/// Marks the pair as two people and forgets it as a pair.
pub(super) fn dismiss(
    tx: &Transaction<'_>,
    a: &PatientId,
    b: &PatientId,
    at: i64,
) -> Result<(), DbError> {
    const CTX: &str = "dismissing a duplicate pair";
    let (a, b) = ordered(a, b);
    tx.execute(
        "INSERT OR IGNORE INTO duplicate_dismissed (a, b, dismissed_at) VALUES (?1, ?2, ?3)",
        params![&a[..], &b[..], at],
    )
    .map_err(sql(CTX))?;
    tx.execute(
        "DELETE FROM duplicate_pairs WHERE a = ?1 AND b = ?2",
        params![&a[..], &b[..]],
    )
    .map_err(sql(CTX))?;
    Ok(())
}
