//! What the satellite tells people: each job's last runs as sentences, and
//! errors in words a clinic's IT person understands ("central did not
//! answer: check the link"), for `chartsync satellite status` and the
//! clinic's page.

use chartsync_common::disk::{DiskLimits, FreeSpace, free_space};

use crate::db::JobRecord;

/// The words for a failure, from its message and causes (as logged with
/// each run): what went wrong and what to do, in that order.
pub fn problem(chain: &str) -> String {
    let text = chain.to_ascii_lowercase();
    let has = |s: &str| text.contains(s);
    let said = if has("disk_full")
        || chartsync_http::is_disk_full(&std::io::Error::other(chain.to_string()))
    {
        if has("central refused") {
            "central's disk is full: HQ must free space"
        } else {
            "the disk is full: free space on this computer (or add a bigger disk)"
        }
    } else if has("(401 ") {
        "central refused this clinic's token: check [central] token in the configuration (HQ can issue a new one with `instance rotate`)"
    } else if has("(403 ") {
        "central refused this clinic's request: the token may have been revoked at HQ"
    } else if has("protocol_version") {
        "central speaks another version of the sync protocol: upgrade this satellite or central"
    } else if has("certificate") || has("tls") || has("handshake") {
        "central's certificate is not trusted: check [central] ca_cert and central's TLS setup"
    } else if has("dns") || has("failed to lookup") || has("name or service not known") {
        "central's name could not be looked up: check [central] url and this clinic's DNS"
    } else if has("cannot reach central") || has("timed out") || has("connection refused") {
        "central did not answer: check the link"
    } else if has("central is busy") || has("(503 ") {
        "central was busy: the next run tries again"
    } else if has("central refused the request (5") {
        "central had an internal error: HQ's log has the details"
    } else if has("central refused") {
        "central refused the request: the log has the details"
    } else if has("no instance token") {
        "no instance token is configured: set [central] token or token_file"
    } else if has("job lock") || has("another run") {
        "another sync was running: this one waited too long"
    } else if has("database") {
        "the satellite's state database failed: the log has the details"
    } else if has("record store") || has("i/o error") {
        "storing records on this computer failed: the log has the details"
    } else {
        return format!("failed: {chain}");
    };
    said.to_string()
}

/// The longest gap between two runs of a job under its schedule (over the
/// next 100 runs, within the next 8 days: so a Monday-to-Friday schedule
/// counts its weekend), in seconds; `None` when it is not scheduled.
pub fn schedule_gap(config: &crate::SatelliteConfig, job: &str) -> Option<i64> {
    let expr = config
        .schedules()
        .into_iter()
        .find(|(name, _)| name.replace('_', "-") == job.replace('_', "-"))
        .and_then(|(_, e)| e)?;
    let schedule = crate::schedule::Schedule::parse(expr).ok()?;
    let start = chrono::Utc::now();
    let end = start + chrono::Duration::days(8);
    let mut at = schedule.next_after(start)?;
    let mut gap = 0;
    for _ in 0..100 {
        let Some(next) = schedule.next_after(at) else {
            break;
        };
        gap = gap.max((next - at).num_seconds());
        if next > end {
            break;
        }
        at = next;
    }
    (gap > 0).then_some(gap)
}

/// `3 minutes ago`, `2 hours ago`, `just now`.
pub fn ago(now: i64, then: i64) -> String {
    let d = (now - then).max(0);
    let (n, unit) = match d {
        0..=9 => return "just now".to_string(),
        10..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        _ => (d / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn count(detail: &serde_json::Value, key: &str) -> u64 {
    detail.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// What a successful run did, in words: `12 records sent`.
pub fn did(job: &str, detail: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match job {
        "push" => parts.push(plural(
            count(detail, "records_sent"),
            "record sent",
            "records sent",
        )),
        _ => parts.push(plural(
            count(detail, "records_received"),
            "record received",
            "records received",
        )),
    }
    for (key, one, many) in [
        ("merged", "merged", "merged"),
        (
            "conflicts",
            "conflict for a clinician",
            "conflicts for a clinician",
        ),
        ("refused", "refused by central", "refused by central"),
        ("set_aside", "set aside", "set aside"),
        ("deferred", "left for the next run", "left for the next run"),
    ] {
        let n = count(detail, key);
        if n > 0 {
            parts.push(plural(n, one, many));
        }
    }
    parts.join(", ")
}

/// Why a run failed, in words (a run that left records for later counts as
/// failed without an error).
pub fn failure(job: &str, detail: &serde_json::Value) -> String {
    match detail.get("error").and_then(|e| e.as_str()) {
        Some(chain) => problem(chain),
        None => format!("incomplete: {}", did(job, detail)),
    }
}

/// One job's last runs as a sentence: `push: last succeeded 3 minutes ago,
/// 12 records sent; last failure 2 hours ago: central did not answer:
/// check the link`.
pub fn job_sentence(record: &JobRecord, now: i64) -> String {
    let mut s = format!("{}: ", record.job);
    match &record.last_success {
        Some((at, detail)) => s.push_str(&format!(
            "last succeeded {}, {}",
            ago(now, *at),
            did(&record.job, detail)
        )),
        None => s.push_str("never succeeded"),
    }
    if let Some((at, detail)) = &record.last_failure {
        let recent = record.last_ok == Some(false);
        s.push_str(&format!(
            "; {} {}: {}",
            if recent {
                "last run failed"
            } else {
                "last failure"
            },
            ago(now, *at),
            failure(&record.job, detail)
        ));
    }
    if record.running {
        s.push_str("; running now");
    }
    s
}

/// The disk's state in a sentence, and whether it is full under `limits`.
pub fn disk_sentence(data_dir: &std::path::Path, limits: &DiskLimits) -> (bool, String) {
    match free_space(data_dir) {
        Ok(free) => describe_disk(&free, limits),
        Err(e) => (
            false,
            format!(
                "disk: cannot tell the free space of {} ({e})",
                data_dir.display()
            ),
        ),
    }
}

/// See [`disk_sentence`].
pub fn describe_disk(free: &FreeSpace, limits: &DiskLimits) -> (bool, String) {
    match free.shortage(limits) {
        Some(why) => (true, why),
        None => (
            false,
            format!(
                "disk: {} free of {}{}",
                chartsync_common::disk::human_bytes(free.bytes),
                chartsync_common::disk::human_bytes(free.total_bytes),
                free.inodes
                    .map(|n| format!(", room for {n} more files"))
                    .unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_words() {
        assert_eq!(
            problem(
                "cannot reach central at http://10.0.0.1:7700: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            "central did not answer: check the link"
        );
        assert_eq!(
            problem("cannot reach central at http://x: operation timed out"),
            "central did not answer: check the link"
        );
        assert!(
            problem("central refused the request (401 unauthorized): bad token")
                .starts_with("central refused this clinic's token")
        );
        assert!(
            problem("record store error: i/o error on /d/x: No space left on device (os error 28)")
                .starts_with("the disk is full")
        );
        assert!(
            problem("central refused the request (507 disk_full): the server's disk is full")
                .starts_with("central's disk is full")
        );
        assert_eq!(problem("something odd"), "failed: something odd");
    }

    #[test]
    fn schedule_gaps() {
        let text = "data_dir = \"/tmp/x\"\n[central]\nurl = \"http://127.0.0.1:9\"\ninstance_id = 1\ntoken = \"t\"\n[schedule]\npush = \"*/5 * * * *\"\nfetch_new = \"0 2 * * *\"\n";
        let config = crate::SatelliteConfig::parse(text, std::path::Path::new("/tmp/x/s.toml"))
            .expect("config");
        assert_eq!(schedule_gap(&config, "push"), Some(300));
        assert_eq!(schedule_gap(&config, "fetch-new"), Some(86400));
        assert_eq!(schedule_gap(&config, "pull"), None);
    }

    #[test]
    fn a_sentence_per_job() {
        let now = 1_000_000;
        let record = JobRecord {
            job: "push".into(),
            last_started: Some(now - 180),
            running: false,
            last_success: Some((now - 180, serde_json::json!({"records_sent": 12}))),
            last_failure: Some((
                now - 7200,
                serde_json::json!({"error": "cannot reach central at http://x: connection refused"}),
            )),
            last_ok: Some(true),
        };
        assert_eq!(
            job_sentence(&record, now),
            "push: last succeeded 3 minutes ago, 12 records sent; last failure 2 hours ago: central did not answer: check the link"
        );
        let failing = JobRecord {
            last_ok: Some(false),
            last_success: None,
            ..record
        };
        assert_eq!(
            job_sentence(&failing, now),
            "push: never succeeded; last run failed 2 hours ago: central did not answer: check the link"
        );
    }
}
