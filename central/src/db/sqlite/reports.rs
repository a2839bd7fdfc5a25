//! Instances' reports and their hourly activity.

use rusqlite::{Transaction, params};

use super::instances::instance_id;
use super::pool::sql;
use crate::db::{ACTIVITY_KEEP_HOURS, ActivityRow, DbError, SavedReport};

pub(super) fn save(tx: &Transaction<'_>, r: &SavedReport) -> Result<(), DbError> {
    let context = "storing an instance's report";
    let lag = i64::try_from(r.lag).unwrap_or(i64::MAX);
    let pending = i64::try_from(r.pending).unwrap_or(i64::MAX);
    let conflicts = i64::try_from(r.conflicts).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO instance_reports (instance, at, report, lag) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (instance) DO UPDATE SET at = excluded.at, report = excluded.report, lag = excluded.lag",
    )
    .and_then(|mut s| s.execute(params![r.instance, r.at, r.report, lag]))
    .map_err(sql(context))?;
    let hour = r.at.div_euclid(3600);
    tx.prepare_cached(
        "INSERT INTO instance_activity (instance, hour, calls, lag, pending, conflicts)
         VALUES (?1, ?2, ?6, ?3, ?4, ?5)
         ON CONFLICT (instance, hour) DO UPDATE SET calls = calls + excluded.calls, lag = excluded.lag,
             pending = excluded.pending, conflicts = excluded.conflicts",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.instance,
            hour,
            lag,
            pending,
            conflicts,
            i64::try_from(r.calls.max(1)).unwrap_or(1)
        ])
    })
    .map_err(sql(context))?;
    tx.prepare_cached("DELETE FROM instance_activity WHERE instance = ?1 AND hour < ?2")
        .and_then(|mut s| s.execute(params![r.instance, hour - ACTIVITY_KEEP_HOURS]))
        .map_err(sql(context))?;
    Ok(())
}

pub(super) fn latest(tx: &Transaction<'_>) -> Result<Vec<SavedReport>, DbError> {
    let context = "reading instance reports";
    let mut stmt = tx
        .prepare_cached(
            "SELECT r.instance, r.at, r.report, r.lag,
                    coalesce(a.pending, 0), coalesce(a.conflicts, 0)
             FROM instance_reports r
             LEFT JOIN instance_activity a
               ON a.instance = r.instance AND a.hour = r.at / 3600
             ORDER BY r.instance",
        )
        .map_err(sql(context))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(sql(context))?;
    let mut out = Vec::new();
    for row in rows {
        let (instance, at, report, lag, pending, conflicts) = row.map_err(sql(context))?;
        out.push(SavedReport {
            instance: instance_id(instance)?,
            at,
            report,
            lag: lag.max(0) as u64,
            pending: pending.max(0) as u64,
            conflicts: conflicts.max(0) as u64,
            calls: 0,
        });
    }
    Ok(out)
}

pub(super) fn activity(tx: &Transaction<'_>, since_hour: i64) -> Result<Vec<ActivityRow>, DbError> {
    let context = "reading instance activity";
    let mut stmt = tx
        .prepare_cached(
            "SELECT instance, hour, calls, lag, pending, conflicts FROM instance_activity
             WHERE hour >= ?1 ORDER BY instance, hour",
        )
        .map_err(sql(context))?;
    let rows = stmt
        .query_map(params![since_hour], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(sql(context))?;
    let mut out = Vec::new();
    for row in rows {
        let (instance, hour, calls, lag, pending, conflicts) = row.map_err(sql(context))?;
        out.push(ActivityRow {
            instance: instance_id(instance)?,
            hour,
            calls: calls.max(0) as u64,
            lag: lag.max(0) as u64,
            pending: pending.max(0) as u64,
            conflicts: conflicts.max(0) as u64,
        });
    }
    Ok(out)
}
