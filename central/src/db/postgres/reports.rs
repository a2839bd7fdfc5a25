//! Instances' reports and their hourly activity.

use super::cached::{self, Tx as Transaction};

use super::R;
use super::instances::instance_id;
use crate::db::{ACTIVITY_KEEP_HOURS, ActivityRow, SavedReport};

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn save(tx: &Transaction<'_>, r: &SavedReport) -> R<()> {
    let instance = i64::from(r.instance);
    let lag = big(r.lag);
    cached::execute(
        tx,
        "INSERT INTO instance_reports (instance, at, report, lag) VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance) DO UPDATE SET at = excluded.at, report = excluded.report, lag = excluded.lag",
        &[&instance, &r.at, &r.report, &lag],
    )
    .await?;
    let hour = r.at.div_euclid(3600);
    cached::execute(
        tx,
        "INSERT INTO instance_activity (instance, hour, calls, lag, pending, conflicts)
         VALUES ($1, $2, $6, $3, $4, $5)
         ON CONFLICT (instance, hour) DO UPDATE SET calls = instance_activity.calls + excluded.calls,
             lag = excluded.lag, pending = excluded.pending, conflicts = excluded.conflicts",
        &[
            &instance,
            &hour,
            &lag,
            &big(r.pending),
            &big(r.conflicts),
            &big(r.calls.max(1)),
        ],
    )
    .await?;
    cached::execute(
        tx,
        "DELETE FROM instance_activity WHERE instance = $1 AND hour < $2",
        &[&instance, &(hour - ACTIVITY_KEEP_HOURS)],
    )
    .await?;
    Ok(())
}

pub(super) async fn latest(tx: &Transaction<'_>) -> R<Vec<SavedReport>> {
    let rows = cached::query(
        tx,
        "SELECT r.instance, r.at, r.report, r.lag,
                    coalesce(a.pending, 0), coalesce(a.conflicts, 0)
             FROM instance_reports r
             LEFT JOIN instance_activity a
               ON a.instance = r.instance AND a.hour = div(r.at, 3600)
             ORDER BY r.instance",
        &[],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(SavedReport {
            instance: instance_id(row.get(0))?,
            at: row.get(1),
            report: row.get(2),
            lag: row.get::<_, i64>(3).max(0) as u64,
            pending: row.get::<_, i64>(4).max(0) as u64,
            conflicts: row.get::<_, i64>(5).max(0) as u64,
            calls: 0,
        });
    }
    Ok(out)
}

pub(super) async fn activity(tx: &Transaction<'_>, since_hour: i64) -> R<Vec<ActivityRow>> {
    let rows = cached::query(
        tx,
        "SELECT instance, hour, calls, lag, pending, conflicts FROM instance_activity
             WHERE hour >= $1 ORDER BY instance, hour",
        &[&since_hour],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(ActivityRow {
            instance: instance_id(row.get(0))?,
            hour: row.get(1),
            calls: row.get::<_, i64>(2).max(0) as u64,
            lag: row.get::<_, i64>(3).max(0) as u64,
            pending: row.get::<_, i64>(4).max(0) as u64,
            conflicts: row.get::<_, i64>(5).max(0) as u64,
        });
    }
    Ok(out)
}
