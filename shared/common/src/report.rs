//! What a satellite tells central about itself with every sync call, in a
//! request header (no extra round trip): pending pushes, open conflicts,
//! set-aside records, each job's last runs, its version and its free disk.
//! Central keeps the latest report and a short time series per instance
//! for HQ's page and metrics. A report central cannot read is ignored
//! (with a log line), never a reason to fail the sync call.

use serde::{Deserialize, Serialize};

/// The request header carrying the report (compact JSON, ASCII only).
pub const HEADER: &str = "chartsync-report";

/// The largest report central reads, in bytes.
pub const MAX_BYTES: usize = 4096;

/// The longest error text a report carries per job.
pub const MAX_ERROR_CHARS: usize = 300;

/// A satellite's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The satellite's version (`0.1.0`).
    #[serde(rename = "v")]
    pub version: String,
    /// Records with local changes central has not acknowledged.
    pub pending: u64,
    /// Conflicts waiting for a clinician.
    pub conflicts: u64,
    /// Records set aside (could not be stored or merged there).
    pub set_aside: u64,
    /// The satellite's pull cursor (central's sequence number it has
    /// pulled up to).
    pub cursor: u64,
    /// Free bytes on its data folder's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Free inodes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
    /// Whether the satellite counts its disk as full.
    #[serde(default)]
    pub disk_full: bool,
    /// Each job's last runs.
    #[serde(default)]
    pub jobs: Vec<JobReport>,
}

/// One job's last runs, in a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// `push`, `pull` or `fetch-new`.
    pub job: String,
    /// Unix seconds of the last successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_at: Option<i64>,
    /// Unix seconds of the last failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_at: Option<i64>,
    /// Whether the latest finished run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// The last failure, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Longest gap between two scheduled runs, seconds (absent: not
    /// scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<i64>,
}

/// Why a report was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Over [`MAX_BYTES`].
    #[error("the report is {0} bytes, over the {MAX_BYTES} allowed")]
    TooLarge(usize),
    /// Not UTF-8 / not visible ASCII.
    #[error("the report is not ASCII text")]
    NotText,
    /// Not a report.
    #[error("the report is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Values out of range.
    #[error("the report is not valid: {0}")]
    OutOfRange(&'static str),
}

impl Report {
    /// The header value: compact JSON, only visible ASCII (other
    /// characters in texts become `?`), texts shortened so the whole stays
    /// under [`MAX_BYTES`].
    pub fn encode(&self) -> String {
        let mut report = self.clone();
        report.version = ascii(&report.version, 40);
        report.jobs.truncate(8);
        for job in &mut report.jobs {
            job.job = ascii(&job.job, 20);
            if let Some(e) = &job.error {
                job.error = Some(ascii(e, MAX_ERROR_CHARS));
            }
        }
        serde_json::to_string(&report).unwrap_or_default()
    }

    /// Reads and checks a header value.
    pub fn decode(value: &[u8]) -> Result<Report, ReportError> {
        if value.len() > MAX_BYTES {
            return Err(ReportError::TooLarge(value.len()));
        }
        if !value.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(ReportError::NotText);
        }
        let report: Report = serde_json::from_slice(value)?;
        if report.jobs.len() > 8 {
            return Err(ReportError::OutOfRange("more than 8 jobs"));
        }
        if report.version.len() > 40 {
            return Err(ReportError::OutOfRange("version longer than 40 characters"));
        }
        for job in &report.jobs {
            if !matches!(job.job.as_str(), "push" | "pull" | "fetch-new") {
                return Err(ReportError::OutOfRange("unknown job"));
            }
            if job
                .error
                .as_ref()
                .is_some_and(|e| e.len() > MAX_ERROR_CHARS)
            {
                return Err(ReportError::OutOfRange("error text too long"));
            }
            let times = [job.ok_at, job.fail_at];
            if times
                .iter()
                .flatten()
                .any(|t| !(0..=4_102_444_800).contains(t))
                || job.every.is_some_and(|e| !(1..=366 * 86_400).contains(&e))
            {
                return Err(ReportError::OutOfRange("time out of range"));
            }
        }
        let big = 1u64 << 53;
        if [
            report.pending,
            report.conflicts,
            report.set_aside,
            report.cursor,
        ]
        .iter()
        .any(|n| *n >= big)
        {
            return Err(ReportError::OutOfRange("count out of range"));
        }
        Ok(report)
    }

    /// A job's part, if reported.
    pub fn job(&self, name: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.job == name)
    }
}

fn ascii(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            version: "0.1.0".into(),
            pending: 3,
            conflicts: 1,
            set_aside: 0,
            cursor: 42,
            free_bytes: Some(1 << 30),
            free_inodes: Some(100_000),
            disk_full: false,
            jobs: vec![JobReport {
                job: "push".into(),
                ok_at: Some(1_700_000_000),
                fail_at: Some(1_700_000_100),
                ok: Some(false),
                error: Some("central did not answer: check the link — café\n".into()),
                every: Some(300),
            }],
        }
    }

    #[test]
    fn round_trip_in_ascii() {
        let text = sample().encode();
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        let back = Report::decode(text.as_bytes()).expect("decode");
        assert_eq!(back.pending, 3);
        assert_eq!(
            back.job("push").and_then(|j| j.error.clone()).as_deref(),
            Some("central did not answer: check the link ? caf??")
        );
    }

    #[test]
    fn refuses_bad_reports() {
        for bad in [
            &b"{"[..],
            b"null",
            b"{\"v\":\"1\",\"pending\":-1,\"conflicts\":0,\"set_aside\":0,\"cursor\":0}",
            b"{\"v\":\"1\",\"pending\":0,\"conflicts\":0,\"set_aside\":0,\"cursor\":0,\"extra\":1}",
            b"{\"v\":\"1\",\"pending\":0,\"conflicts\":0,\"set_aside\":0,\"cursor\":0,\"jobs\":[{\"job\":\"rm\"}]}",
            b"{\"v\":\"1\",\"pending\":0,\"conflicts\":0,\"set_aside\":0,\"cursor\":0,\"jobs\":[{\"job\":\"push\",\"ok_at\":-5}]}",
            "{\"v\":\"é\"}".as_bytes(),
        ] {
            assert!(Report::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let huge = format!(
            "{{\"v\":\"{}\",\"pending\":0,\"conflicts\":0,\"set_aside\":0,\"cursor\":0}}",
            "x".repeat(MAX_BYTES)
        );
        assert!(matches!(
            Report::decode(huge.as_bytes()),
            Err(ReportError::TooLarge(_))
        ));
    }
}
