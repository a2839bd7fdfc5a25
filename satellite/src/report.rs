//! The report this satellite sends central with every sync call (see
//! `chartsync_common::report`).

use chartsync_common::report::{JobReport, Report};

use crate::Satellite;

/// What to tell central now. Parts that cannot be read are left out: a
/// report never stops a sync.
pub fn build(sat: &Satellite) -> Report {
    let (pending, conflicts) = sat.db.counts().unwrap_or((0, 0));
    let free = chartsync_common::disk::free_space(&sat.config.data_dir).ok();
    let jobs = sat
        .db
        .job_records()
        .unwrap_or_default()
        .into_iter()
        .map(|r| JobReport {
            every: crate::words::schedule_gap(&sat.config, &r.job),
            ok_at: r.last_success.as_ref().map(|(t, _)| *t),
            fail_at: r.last_failure.as_ref().map(|(t, _)| *t),
            ok: r.last_ok,
            error: r
                .last_failure
                .as_ref()
                .map(|(_, detail)| crate::words::failure(&r.job, detail)),
            job: r.job,
        })
        .collect();
    Report {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pending,
        conflicts,
        set_aside: sat.db.set_aside_count().unwrap_or(0),
        cursor: sat.db.state("pull_cursor").unwrap_or(0).max(0) as u64,
        free_bytes: free.map(|f| f.bytes),
        free_inodes: free.and_then(|f| f.inodes),
        disk_full: free.is_some_and(|f| f.shortage(&sat.config.disk).is_some()),
        jobs,
    }
}
