//! The log of job runs.

use chartsync_protocol::api::JobRun;
use rusqlite::params;

use super::{Db, DbError, sql};

/// A run's totals, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRow {
    /// The job.
    pub job: String,
    /// Unix seconds of the last successful run.
    pub last_success: Option<i64>,
    /// Records moved by successful runs.
    pub records: u64,
    /// Bytes on the wire of successful runs.
    pub bytes: u64,
}

fn time_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Db {
    /// Logs the start of a run; returns its id.
    pub fn start_run(&self, job: &str) -> Result<i64, DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (job, started_at) VALUES (?1, ?2)",
            params![job, chrono::Utc::now().timestamp()],
        )
        .map_err(sql("logging a run"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Logs the end of a run.
    pub fn finish_run(&self, id: i64, ok: bool, detail: &serde_json::Value) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE runs SET finished_at = ?2, ok = ?3, detail = ?4 WHERE id = ?1",
            params![id, chrono::Utc::now().timestamp(), ok, detail.to_string()],
        )
        .map_err(sql("logging a run"))?;
        // Keep the log bounded.
        conn.execute("DELETE FROM runs WHERE id < ?1 - 10000", params![id])
            .map_err(sql("trimming the run log"))?;
        Ok(())
    }

    /// The latest run of each job.
    pub fn last_runs(&self) -> Result<Vec<JobRun>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT job, started_at, finished_at, ok, detail FROM runs
                 WHERE id IN (SELECT max(id) FROM runs GROUP BY job) ORDER BY job",
            )
            .map_err(sql("reading runs"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(sql("reading runs"))?;
        let mut out = Vec::new();
        for row in rows {
            let (job, started, finished, ok, detail) = row.map_err(sql("reading runs"))?;
            out.push(JobRun {
                job,
                started_at: time_text(started),
                finished_at: finished.map(time_text),
                ok,
                detail: detail
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(serde_json::Value::Null),
            });
        }
        Ok(out)
    }

    /// Per job: the last success and the totals of successful runs.
    pub fn run_totals(&self) -> Result<Vec<RunRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT job, max(finished_at),
                        coalesce(sum(json_extract(detail, '$.records_sent') + json_extract(detail, '$.records_received')), 0),
                        coalesce(sum(json_extract(detail, '$.bytes_sent') + json_extract(detail, '$.bytes_received')), 0)
                 FROM runs WHERE ok = 1 GROUP BY job ORDER BY job",
            )
            .map_err(sql("summing runs"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunRow {
                    job: r.get(0)?,
                    last_success: r.get(1)?,
                    records: r.get::<_, i64>(2)?.max(0) as u64,
                    bytes: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(sql("summing runs"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(sql("summing runs"))?);
        }
        Ok(out)
    }
}

impl Db {
    /// How many runs are logged.
    pub fn run_count(&self) -> Result<i64, DbError> {
        self.conn()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .map_err(sql("counting runs"))
    }
}

/// One job's recent record, for the words operators read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// push, pull or fetch-new.
    pub job: String,
    /// Unix seconds the last run started.
    pub last_started: Option<i64>,
    /// Whether a run is under way (started, not finished).
    pub running: bool,
    /// Unix seconds the last successful run finished, and its summary.
    pub last_success: Option<(i64, serde_json::Value)>,
    /// Unix seconds the last failed run finished, and its detail.
    pub last_failure: Option<(i64, serde_json::Value)>,
    /// Whether the latest finished run succeeded.
    pub last_ok: Option<bool>,
}

impl Db {
    /// Per job: the last run, the last success and the last failure.
    pub fn job_records(&self) -> Result<Vec<JobRecord>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT j.job,
                    (SELECT started_at FROM runs WHERE job = j.job ORDER BY id DESC LIMIT 1),
                    (SELECT finished_at IS NULL FROM runs WHERE job = j.job ORDER BY id DESC LIMIT 1),
                    (SELECT finished_at FROM runs WHERE job = j.job AND ok = 1 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1),
                    (SELECT detail FROM runs WHERE job = j.job AND ok = 1 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1),
                    (SELECT finished_at FROM runs WHERE job = j.job AND ok = 0 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1),
                    (SELECT detail FROM runs WHERE job = j.job AND ok = 0 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1),
                    (SELECT ok FROM runs WHERE job = j.job AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1)
                 FROM (SELECT DISTINCT job FROM runs) j ORDER BY j.job",
            )
            .map_err(sql("reading runs"))?;
        let json = |d: Option<String>| {
            d.and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<bool>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<bool>>(7)?,
                ))
            })
            .map_err(sql("reading runs"))?;
        let mut out = Vec::new();
        for row in rows {
            let (job, started, running, ok_at, ok_detail, bad_at, bad_detail, last_ok) =
                row.map_err(sql("reading runs"))?;
            out.push(JobRecord {
                job,
                last_started: started,
                running: running.unwrap_or(false),
                last_success: ok_at.map(|t| (t, json(ok_detail))),
                last_failure: bad_at.map(|t| (t, json(bad_detail))),
                last_ok,
            });
        }
        Ok(out)
    }
}
