//! Satellites' reports: each sync call may carry a `chartsync-report`
//! header (see `chartsync_common::report`). Central keeps the latest per
//! instance, with how far behind it is (lag: changes in its scope after its
//! pull cursor), and an hourly series, for HQ's page and metrics. A bad
//! report is ignored with a log line; storing one never delays or fails the
//! sync call (it is done in the background).

use std::sync::Arc;

use axum::http::HeaderMap;
use chartsync_common::metrics::sample;
use chartsync_common::report::{HEADER, Report};

use crate::Central;
use crate::db::{CentralDb, Instance, SavedReport};

/// Lag is counted up to this many changes (shown as "1000 or more").
pub const LAG_CAP: usize = 1000;

/// How often received reports are written to the database (the latest
/// per instance, with the number of calls since): one transaction per
/// instance per interval at most, off every sync call's path.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reports received and not yet written, by instance.
#[derive(Debug, Default)]
pub struct Pending {
    map: std::sync::Mutex<std::collections::HashMap<u32, (Instance, Report, i64, u64)>>,
    flusher: std::sync::atomic::AtomicBool,
}

/// Reads the report of a sync call, if any, and queues it; a background
/// task writes the queue every [`FLUSH_EVERY`].
pub fn note<D: CentralDb>(central: &Arc<Central<D>>, instance: &Instance, headers: &HeaderMap) {
    let Some(value) = headers.get(HEADER) else {
        return;
    };
    let report = match Report::decode(value.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(instance = instance.id, error = %e, "ignored a satellite's report header");
            return;
        }
    };
    {
        let mut map = central
            .reports
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let calls = map.get(&instance.id).map_or(0, |e| e.3) + 1;
        map.insert(
            instance.id,
            (
                instance.clone(),
                report,
                chrono::Utc::now().timestamp(),
                calls,
            ),
        );
    }
    if !central
        .reports
        .flusher
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let weak = Arc::downgrade(central);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(central) = weak.upgrade() else {
                    return;
                };
                flush(&central).await;
            }
        });
    }
}

/// Writes the queued reports (each with its lag, counted now).
pub async fn flush<D: CentralDb>(central: &Central<D>) {
    let queued: Vec<_> = {
        let mut map = central
            .reports
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.drain().map(|(_, v)| v).collect()
    };
    for (instance, report, at, calls) in queued {
        let lag = match central
            .db
            .scope_changes(&instance, report.cursor, LAG_CAP)
            .await
        {
            Ok(rows) => rows.len() as u64,
            Err(e) => {
                tracing::warn!(instance = instance.id, error = %e, "could not count an instance's lag");
                continue;
            }
        };
        let saved = SavedReport {
            instance: instance.id,
            at,
            report: serde_json::to_string(&report).unwrap_or_default(),
            lag,
            pending: report.pending,
            conflicts: report.conflicts,
            calls,
        };
        if let Err(e) = central.db.save_report(saved).await {
            tracing::warn!(instance = instance.id, error = %e, "could not store an instance's report");
        }
    }
}

/// A stored report, read back (`None` if it no longer parses).
pub fn parse(saved: &SavedReport) -> Option<Report> {
    serde_json::from_str(&saved.report).ok()
}

/// Per-instance gauges for `/metrics`: when each clinic last reported, its
/// pending pushes, open conflicts, set-aside records, lag, free disk, and
/// per job the last success and the schedule's longest gap.
pub fn render(out: &mut String, instances: &[Instance], reports: &[SavedReport]) {
    let names: std::collections::HashMap<u32, &str> =
        instances.iter().map(|i| (i.id, i.name.as_str())).collect();
    let mut lines: Vec<(&str, &str, String, f64)> = Vec::new();
    let parsed: Vec<(&SavedReport, Option<Report>)> =
        reports.iter().map(|r| (r, parse(r))).collect();
    for (saved, report) in &parsed {
        let name = names.get(&saved.instance).copied().unwrap_or("");
        let labels = format!(
            "instance_id=\"{}\",name=\"{}\"",
            saved.instance,
            escape_label(name)
        );
        lines.push((
            "chartsync_instance_report_seconds",
            "Unix time of the instance's latest report (with a sync call).",
            labels.clone(),
            saved.at as f64,
        ));
        lines.push(("chartsync_instance_lag", "Changes in the instance's scope after its pull cursor, at its latest report (capped at 1000).", labels.clone(), saved.lag as f64));
        let Some(report) = report else { continue };
        lines.push((
            "chartsync_instance_pending_push",
            "Pending pushes the instance reported.",
            labels.clone(),
            report.pending as f64,
        ));
        lines.push((
            "chartsync_instance_open_conflicts",
            "Open conflicts the instance reported.",
            labels.clone(),
            report.conflicts as f64,
        ));
        lines.push((
            "chartsync_instance_set_aside_records",
            "Set-aside records the instance reported.",
            labels.clone(),
            report.set_aside as f64,
        ));
        if let Some(b) = report.free_bytes {
            lines.push((
                "chartsync_instance_disk_free_bytes",
                "Free bytes on the instance's data disk.",
                labels.clone(),
                b as f64,
            ));
        }
        for job in &report.jobs {
            let jl = format!("{labels},job=\"{}\"", escape_label(&job.job));
            if let Some(t) = job.ok_at {
                lines.push((
                    "chartsync_instance_last_success_seconds",
                    "Unix time of the job's last successful run at the instance.",
                    jl.clone(),
                    t as f64,
                ));
            }
            if let Some(e) = job.every {
                lines.push((
                    "chartsync_instance_schedule_seconds",
                    "Longest gap between two scheduled runs of the job at the instance.",
                    jl.clone(),
                    e as f64,
                ));
            }
        }
    }
    lines.sort_by(|a, b| a.0.cmp(b.0));
    let mut last = "";
    for (name, help, labels, value) in lines {
        if name != last {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            last = name;
        }
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Central's own free disk.
pub fn render_disk(out: &mut String, data_dir: &std::path::Path) {
    if let Ok(free) = chartsync_common::disk::free_space(data_dir) {
        sample(
            out,
            "chartsync_disk_free_bytes",
            "gauge",
            "Bytes free on central's data folder's file system.",
            free.bytes as f64,
        );
        if let Some(inodes) = free.inodes {
            sample(
                out,
                "chartsync_disk_free_inodes",
                "gauge",
                "Files that can still be created on central's data folder's file system.",
                inodes as f64,
            );
        }
    }
}
