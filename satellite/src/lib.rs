//! The chartsync satellite: a clinic's daemon. It serves the record API to
//! the clinic's applications from its own repositories, online or not, and
//! syncs with central on a schedule.

pub mod api;
pub mod client;
pub mod config;
pub mod db;
pub mod jobs;
pub mod local;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod ui;
pub mod words;

use std::sync::Arc;

use chartsync_common::metrics::HttpCounters;
use chartsync_store::{RecordStore, StoreError, StoreOptions};

pub use config::SatelliteConfig;
pub use server::serve;

/// What can stop a satellite from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data folder cannot be created or made private.
    #[error("cannot create the data folder")]
    DataDir(#[from] chartsync_common::private::PrivateError),
    /// The record store cannot be opened.
    #[error("cannot open the record store")]
    Store(#[from] StoreError),
    /// The state database cannot be opened.
    #[error("cannot open the sync-state database")]
    Db(#[from] db::DbError),
}

/// A running satellite's shared state.
#[derive(Debug)]
pub struct Satellite {
    /// The configuration.
    pub config: SatelliteConfig,
    /// The records.
    pub store: RecordStore,
    /// The sync state.
    pub db: db::Db,
    /// HTTP counters.
    pub http: HttpCounters,
    /// Sessions of the clinic's page (`/ui`).
    pub ui: chartsync_http::ui::Sessions,
}

impl Satellite {
    /// Opens the data folder (creating the store and database on first
    /// start, and migrating the database). The data folder is made private
    /// to its owner (0700) if it is not.
    pub fn open(config: SatelliteConfig) -> Result<Arc<Satellite>, StartError> {
        chartsync_common::private::private_dir(&config.data_dir)?;
        let store = RecordStore::open(StoreOptions::new(
            config.data_dir.clone(),
            config.instance_name(),
        ))?;
        let db = db::Db::open(&config.data_dir.join("satellite.sqlite"))?;
        Ok(Arc::new(Satellite {
            config,
            store,
            db,
            http: HttpCounters::default(),
            ui: chartsync_http::ui::Sessions::default(),
        }))
    }
}

/// The satellite's status (`GET /v1/status`, `chartsync satellite status`).
pub fn status(sat: &Satellite) -> Result<chartsync_protocol::api::StatusBody, db::DbError> {
    let (pending_push, open_conflicts) = sat.db.counts()?;
    Ok(chartsync_protocol::api::StatusBody {
        instance_id: sat.config.central.instance_id,
        pending_push,
        open_conflicts,
        cursor: sat.db.state("pull_cursor")?.max(0) as u64,
        last_runs: sat.db.last_runs()?,
        set_aside: sat
            .db
            .set_aside_list()?
            .into_iter()
            .map(|r| chartsync_protocol::api::SetAsideRecord {
                patient: r.patient,
                job: r.job,
                reason: r.reason,
                since: rfc3339(r.since),
                attempts: r.attempts.max(0) as u64,
                retry_at: rfc3339(r.retry_at),
            })
            .collect(),
    })
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// An error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}
