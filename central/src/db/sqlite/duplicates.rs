//! Duplicate patients: identifying fields, blocking keys, pairs, dismissals
//! and the indexing cursor.

use std::collections::{BTreeSet, HashMap, HashSet};

use chartsync_dedup::{LEVEL_SEPARATOR, block_end};
use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{OptionalExtension, Transaction, params};

use super::pool::sql;
use super::records::{head_from, patient_from, seq_from, seq_to_sql};
use crate::db::{DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, Seq, StoredCandidates};

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
/// [`crate::db::CentralDb::duplicate_candidates`]), each once, with its
/// stored fields. Each level's block is one range of `duplicate_members`
/// (see [`chartsync_dedup::LEVEL_SEPARATOR`]), read in one pass up to one
/// row more than `max_block`: a block that fits is what that key
/// contributes, a larger one sends the search to the key's next level
/// (its rows read so far are dropped), an empty one ends it (every finer
/// block is part of it). A level in `too_large` (found so in this
/// snapshot) or that `known_too_large` tells is not read; the levels found
/// too large are added to `too_large`.
pub(super) fn candidates_into(
    tx: &Transaction<'_>,
    keys: &[DuplicateKey],
    max_block: usize,
    found: &mut StoredCandidates,
    known_too_large: &dyn Fn(&str) -> bool,
    too_large: &mut HashSet<String>,
) -> Result<(), DbError> {
    const CTX: &str = "reading duplicate candidates";
    let mut members = tx.prepare_cached(&block_sql(max_block)).map_err(sql(CTX))?;
    let mut seen = HashSet::new();
    // A block's rows, before knowing whether it fits: ids, and the end of
    // each one's fields in `text`.
    let mut block: Vec<([u8; 16], usize)> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    for key in keys {
        for level in key.levels() {
            if too_large.contains(level) || known_too_large(level) {
                continue;
            }
            let end = block_end(level);
            block.clear();
            text.clear();
            let mut rows = members.query(params![level, end]).map_err(sql(CTX))?;
            while let Some(row) = rows.next().map_err(sql(CTX))? {
                let id: [u8; 16] = row
                    .get_ref(0)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(sql(CTX))?
                    .try_into()
                    .map_err(|_| DbError::Damaged("duplicate_members.patient"))?;
                // Checked to be text when the block is taken (most rows
                // read are in blocks too large to search).
                let fields = row
                    .get_ref(1)
                    .and_then(|v| v.as_bytes().map_err(Into::into))
                    .map_err(sql(CTX))?;
                text.extend_from_slice(fields);
                block.push((id, text.len()));
            }
            drop(rows);
            match block.len() {
                0 => break,
                n if n > max_block => {
                    too_large.insert(level.to_owned());
                    continue;
                }
                _ => {}
            }
            let mut start = 0;
            for &(id, end) in &block {
                if seen.insert(id) {
                    let fields = std::str::from_utf8(&text[start..end])
                        .map_err(|_| DbError::Damaged("duplicate_members.fields"))?;
                    found.push(patient_from(&id, "duplicate_members.patient")?, fields);
                }
                start = end;
            }
            break;
        }
    }
    Ok(())
}

/// The statement reading a block (`?1` to `?2`), up to one row more than
/// `max_block`. The limit is written into it: a bound one made SQLite plan
/// the statement again at each run.
pub(super) fn block_sql(max_block: usize) -> String {
    format!(
        "SELECT patient, fields FROM duplicate_members
         WHERE key >= ?1 AND key < ?2 LIMIT {}",
        max_block.saturating_add(1)
    )
}

/// A pair's two ids in their stored order.
fn ordered(a: &PatientId, b: &PatientId) -> ([u8; 16], [u8; 16]) {
    let (a, b) = (*a.as_bytes(), *b.as_bytes());
    if a <= b { (a, b) } else { (b, a) }
}

/// How many writes have taken members out of the index
/// (`duplicate_removals`), in this transaction's snapshot.
pub(super) fn removals(tx: &Transaction<'_>) -> Result<u64, DbError> {
    let n: i64 = tx
        .prepare_cached("SELECT n FROM duplicate_removals WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql("reading the duplicate index's removals"))?;
    u64::try_from(n).map_err(|_| DbError::Damaged("duplicate_removals.n"))
}

/// Counts a write that takes members out of the index; returns the new
/// count.
pub(super) fn count_removal(tx: &Transaction<'_>) -> Result<u64, DbError> {
    let n: i64 = tx
        .prepare_cached("UPDATE duplicate_removals SET n = n + 1 WHERE id = 1 RETURNING n")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql("counting a removal from the duplicate index"))?;
    u64::try_from(n).map_err(|_| DbError::Damaged("duplicate_removals.n"))
}

/// Most levels [`LargeLevels`] remembers (about 50 bytes each); past it,
/// it starts again.
const MAX_LARGE_LEVELS: usize = 500_000;

/// Levels of the duplicate index found holding more than `max_block`
/// members, each with the count of removals ([`removals`]) of the
/// snapshot it was found in. A block only grows while no member leaves the
/// index, so a level found too large stays so while that count is the
/// same, and a search in a snapshot with that count goes straight to the
/// level's finer keys without reading it. A write that takes members out
/// (and so moves the count on) carries every other level over to its new
/// count; a level of a key it took a member out of is forgotten, and read
/// again when next searched. A write by another process moves the count
/// on without carrying anything over: what was known is not used again.
#[derive(Debug, Default)]
pub(super) struct LargeLevels {
    /// The limit the levels were found over.
    max_block: usize,
    levels: HashMap<String, u64>,
}

impl LargeLevels {
    /// Whether `level` is known to hold more than `max_block` members in
    /// a snapshot whose count of removals is `removals`.
    pub(super) fn known(&self, level: &str, max_block: usize, removals: u64) -> bool {
        self.max_block == max_block && self.levels.get(level) == Some(&removals)
    }

    /// Remembers `levels`, found holding more than `max_block` members in
    /// a snapshot whose count of removals is `removals`.
    pub(super) fn found(
        &mut self,
        levels: impl IntoIterator<Item = String>,
        max_block: usize,
        removals: u64,
    ) {
        if self.max_block != max_block {
            self.levels.clear();
            self.max_block = max_block;
        }
        for level in levels {
            if self.levels.len() >= MAX_LARGE_LEVELS {
                self.levels.clear();
            }
            let at = self.levels.entry(level).or_insert(removals);
            *at = (*at).max(removals);
        }
    }

    /// A write took members out of the index under the stored keys
    /// `removed` and moved the count of removals to `removals`.
    pub(super) fn removed(&mut self, removed: &[String], removals: u64) {
        // Every level of a stored key: it up to each separator, and whole.
        let shrunk: HashSet<&str> = removed
            .iter()
            .flat_map(|key| {
                key.match_indices(LEVEL_SEPARATOR)
                    .map(|(at, _)| &key[..at])
                    .chain(std::iter::once(key.as_str()))
            })
            .collect();
        self.levels.retain(|level, at| {
            if *at + 1 == removals && !shrunk.contains(level.as_str()) {
                *at = removals;
            }
            *at >= removals
        });
    }
}

/// Replaces what is indexed of one record and its pairs; moves the
/// cursor forward to `update.seq`. The stored keys it no longer holds are
/// added to `removed`.
pub(super) fn index(
    tx: &Transaction<'_>,
    update: &DuplicateUpdate,
    removed: &mut Vec<String>,
) -> Result<(), DbError> {
    const CTX: &str = "indexing a record for duplicates";
    let id = &update.id.as_bytes()[..];
    let old: Option<String> = tx
        .prepare_cached("SELECT keys FROM duplicate_people WHERE patient = ?1")
        .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
        .map_err(sql(CTX))?;
    if let Some(old) = old {
        let old: Vec<String> =
            serde_json::from_str(&old).map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        removed.extend(
            old.iter()
                .filter(|k| update.entry.as_ref().is_none_or(|e| !e.keys.contains(k)))
                .cloned(),
        );
        let mut del = tx
            .prepare_cached("DELETE FROM duplicate_members WHERE key = ?1 AND patient = ?2")
            .map_err(sql(CTX))?;
        for key in old {
            del.execute(params![key, id]).map_err(sql(CTX))?;
        }
        tx.prepare_cached("DELETE FROM duplicate_people WHERE patient = ?1")
            .and_then(|mut s| s.execute(params![id]))
            .map_err(sql(CTX))?;
    }
    tx.prepare_cached("DELETE FROM duplicate_pairs WHERE a = ?1 OR b = ?1")
        .and_then(|mut s| s.execute(params![id]))
        .map_err(sql(CTX))?;
    if let Some(entry) = &update.entry {
        let distinct: BTreeSet<&str> = entry.keys.iter().map(String::as_str).collect();
        let keys = serde_json::to_string(&distinct)
            .map_err(|_| DbError::Damaged("duplicate_people.keys"))?;
        tx.prepare_cached("INSERT INTO duplicate_people (patient, keys) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![id, keys]))
            .map_err(sql(CTX))?;
        let mut add = tx
            .prepare_cached(
                "INSERT INTO duplicate_members (key, patient, fields) VALUES (?1, ?2, ?3)",
            )
            .map_err(sql(CTX))?;
        for key in distinct {
            add.execute(params![key, id, entry.person])
                .map_err(sql(CTX))?;
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
    tx.prepare_cached("UPDATE duplicate_cursor SET seq = max(seq, ?1) WHERE id = 1")
        .and_then(|mut s| s.execute(params![seq_to_sql(update.seq)]))
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
