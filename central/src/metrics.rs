//! Central's Prometheus metrics.

use std::time::Duration;

use chartsync_common::metrics::{Counter, HttpCounters, sample};

use crate::db::Counts;

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class.
    pub http: HttpCounters,
    /// Writes refused because the record moved (412s and push conflicts).
    pub conflicts: Counter,
    /// Pushed records central could not store through a fault of its own
    /// (a full disk, an I/O error): each is pushed again later.
    pub store_failures: Counter,
    /// Patient lock acquisitions.
    pub lock_acquisitions: Counter,
    /// Total time waited for patient locks, in milliseconds.
    pub lock_wait_ms: Counter,
    /// Patients that could not be locked in time.
    pub lock_busy: Counter,
    /// Sync batches served, by kind.
    pub push_batches: Counter,
    /// Records in push batches.
    pub push_records: Counter,
    /// Pull pages served.
    pub pull_batches: Counter,
    /// Records sent by pulls.
    pub pull_records: Counter,
    /// Fetch-new pages served.
    pub fetch_batches: Counter,
    /// Records sent by fetch-new and fetch-one.
    pub fetch_records: Counter,
    /// Repositories repacked.
    pub repacks: Counter,
    /// Sync requests turned away (503) because every sync slot was taken.
    pub sync_busy: Counter,
}

impl Metrics {
    /// Records one lock acquisition.
    pub fn lock_wait(&self, waited: Duration, busy: usize) {
        self.lock_acquisitions.inc();
        self.lock_wait_ms.add(waited.as_millis() as u64);
        self.lock_busy.add(busy as u64);
    }

    /// The text exposition.
    pub fn render(&self, counts: &Counts) -> String {
        let mut out = String::new();
        let c = |out: &mut String, name: &str, help: &str, v: &Counter| {
            sample(out, name, "counter", help, v.get() as f64);
        };
        c(
            &mut out,
            "chartsync_conflicts_total",
            "Writes refused because the record had moved.",
            &self.conflicts,
        );
        c(
            &mut out,
            "chartsync_sync_busy_total",
            "Sync requests turned away with 503 because every sync slot was taken (raise max_concurrent_sync if this grows while memory allows).",
            &self.sync_busy,
        );
        c(
            &mut out,
            "chartsync_store_failures_total",
            "Pushed records central could not store through a fault of its own (disk full, I/O error).",
            &self.store_failures,
        );
        c(
            &mut out,
            "chartsync_lock_acquisitions_total",
            "Patient lock acquisitions.",
            &self.lock_acquisitions,
        );
        c(
            &mut out,
            "chartsync_lock_wait_milliseconds_total",
            "Time waited for patient locks.",
            &self.lock_wait_ms,
        );
        c(
            &mut out,
            "chartsync_lock_busy_total",
            "Patients that could not be locked in time (503/busy).",
            &self.lock_busy,
        );
        c(
            &mut out,
            "chartsync_push_batches_total",
            "Push batches.",
            &self.push_batches,
        );
        c(
            &mut out,
            "chartsync_push_records_total",
            "Records in push batches.",
            &self.push_records,
        );
        c(
            &mut out,
            "chartsync_pull_batches_total",
            "Pull pages.",
            &self.pull_batches,
        );
        c(
            &mut out,
            "chartsync_pull_records_total",
            "Records sent by pulls.",
            &self.pull_records,
        );
        c(
            &mut out,
            "chartsync_fetch_batches_total",
            "Fetch-new pages.",
            &self.fetch_batches,
        );
        c(
            &mut out,
            "chartsync_fetch_records_total",
            "Records sent by fetch-new and fetch-one.",
            &self.fetch_records,
        );
        c(
            &mut out,
            "chartsync_repacks_total",
            "Repositories repacked.",
            &self.repacks,
        );
        sample(
            &mut out,
            "chartsync_records",
            "gauge",
            "Patient records.",
            counts.records as f64,
        );
        sample(
            &mut out,
            "chartsync_instances",
            "gauge",
            "Registered instances.",
            counts.instances as f64,
        );
        sample(
            &mut out,
            "chartsync_sequence",
            "gauge",
            "The last change sequence number.",
            counts.seq as f64,
        );
        self.http.render(&mut out);
        out
    }
}
