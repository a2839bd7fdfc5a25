//! What changed in an instance's scope after a cursor.
//!
//! One stream per catchment (a range of the `(catchment, seq)` index) and
//! one for the grants, each already in sequence order, merged here and cut
//! at the limit. The streams are read lazily, so the work follows the
//! number of rows returned, not the number of records. Grants are read by
//! whichever is smaller: the instance's grants (`grants` primary key), or
//! the changes after the cursor (`records (seq)` index, each checked
//! against the `grants` primary key).

use rusqlite::{CachedStatement, Rows, Transaction, params};

use super::pool::sql;
use super::records::{RawRecord, last_seq, record_columns, seq_to_sql};
use crate::db::{DbError, RecordRow, Seq};

/// Records of one catchment changed after `?2`.
pub(crate) const BY_CATCHMENT: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM records r INDEXED BY records_catchment_seq
     WHERE r.catchment = ?1 AND r.seq > ?2 ORDER BY r.seq LIMIT ?3"
);

/// Records granted to instance `?1` changed after `?2`, from its grants.
pub(crate) const BY_GRANTS: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM grants g CROSS JOIN records r ON r.patient = g.patient
     WHERE g.instance = ?1 AND r.seq > ?2 ORDER BY r.seq LIMIT ?3"
);

/// Records granted to instance `?1` changed after `?2`, from the changes.
pub(crate) const BY_CHANGES: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM records r INDEXED BY records_seq
     WHERE r.seq > ?2
       AND EXISTS (SELECT 1 FROM grants g WHERE g.instance = ?1 AND g.patient = r.patient)
     ORDER BY r.seq LIMIT ?3"
);

const CTX: &str = "listing changes in an instance's scope";

/// One sorted stream and its next row.
struct Stream<'s> {
    rows: Rows<'s>,
    next: Option<RawRecord>,
}

impl Stream<'_> {
    fn advance(&mut self) -> Result<(), DbError> {
        self.next = match self.rows.next().map_err(sql(CTX))? {
            Some(row) => Some(RawRecord::read(row).map_err(sql(CTX))?),
            None => None,
        };
        Ok(())
    }
}

/// At most `limit` records in the scope of instance `id` (with these
/// catchments) changed after `after`, by sequence number.
pub(super) fn changes(
    tx: &Transaction<'_>,
    id: u32,
    catchments: &[String],
    after: Seq,
    limit: usize,
) -> Result<Vec<RecordRow>, DbError> {
    let after = seq_to_sql(after);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);

    // At most this many records changed after the cursor.
    let changed = last_seq(tx)?.saturating_sub(after).max(0);
    let grants: i64 = tx
        .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM grants WHERE instance = ?1 LIMIT ?2)")
        .and_then(|mut s| s.query_row(params![id, changed], |r| r.get(0)))
        .map_err(sql(CTX))?;
    let grants_sql = if grants < changed {
        BY_GRANTS
    } else {
        BY_CHANGES
    };

    let mut unique: Vec<&String> = Vec::with_capacity(catchments.len());
    for catchment in catchments {
        if !unique.contains(&catchment) {
            unique.push(catchment);
        }
    }
    let mut statements: Vec<(CachedStatement<'_>, Option<&String>)> = Vec::new();
    for catchment in unique {
        statements.push((
            tx.prepare_cached(BY_CATCHMENT).map_err(sql(CTX))?,
            Some(catchment),
        ));
    }
    statements.push((tx.prepare_cached(grants_sql).map_err(sql(CTX))?, None));
    let mut streams = Vec::with_capacity(statements.len());
    for (stmt, catchment) in &mut statements {
        let rows = match catchment {
            Some(c) => stmt.query(params![*c, after, limit_sql]),
            None => stmt.query(params![id, after, limit_sql]),
        }
        .map_err(sql(CTX))?;
        let mut stream = Stream { rows, next: None };
        stream.advance()?;
        streams.push(stream);
    }

    let mut out: Vec<RecordRow> = Vec::new();
    let mut last: Option<i64> = None;
    while out.len() < limit {
        let Some(lowest) = streams
            .iter_mut()
            .filter(|s| s.next.is_some())
            .min_by_key(|s| s.next.as_ref().map(|r| r.seq))
        else {
            break;
        };
        let Some(record) = lowest.next.take() else {
            break;
        };
        lowest.advance()?;
        // A record both in a catchment and granted comes from two streams
        // with the same (unique) sequence number.
        if last == Some(record.seq) {
            continue;
        }
        last = Some(record.seq);
        out.push(record.decode()?);
    }
    Ok(out)
}
