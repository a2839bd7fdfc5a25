//! Prometheus text exposition, by hand: a few counters and gauges need no
//! metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Writes one sample with its `# HELP` and `# TYPE` lines.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a family of labelled samples (`labels` are `key="value"` lists).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// HTTP request counts by method class and status class.
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_class: [Counter; 6],
}

impl HttpCounters {
    /// Counts a response status.
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.by_class[class].inc();
    }

    /// Writes `chartsync_http_responses_total{class="2xx"}` etc.
    pub fn render(&self, out: &mut String) {
        let samples: Vec<(String, f64)> = (1..6)
            .map(|c| (format!("class=\"{c}xx\""), self.by_class[c].get() as f64))
            .collect();
        family(
            out,
            "chartsync_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &samples,
        );
    }
}
