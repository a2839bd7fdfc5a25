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
