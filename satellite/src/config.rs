//! The satellite's configuration file (TOML). See `config/satellite.toml`
//! for a commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use chartsync_common::config::ConfigError;
pub use chartsync_common::config::Secret;
use chartsync_common::config::{parse_toml, read_text, secret};
use serde::Deserialize;

use crate::schedule::Schedule;

/// `satellite.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SatelliteConfig {
    /// Where the local API listens (default `127.0.0.1:7800`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Records, sync state and the job lock live here.
    pub data_dir: PathBuf,
    /// This clinic's name, written into every commit made here (default
    /// `satellite-<instance_id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Largest request body of the local API (default 16 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// If set, local API clients (and `/metrics`) must send
    /// `Authorization: Bearer <api_token>`. Required when `listen` is not a
    /// loopback address.
    #[serde(default)]
    pub api_token: Option<Secret>,
    /// How to reach central.
    pub central: CentralConfig,
    /// When the jobs run.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Batching.
    #[serde(default)]
    pub sync: SyncConfig,
    /// `[disk]`: below these free bytes / inodes in `data_dir`, `/healthz`
    /// answers 503 and status says the disk is full.
    #[serde(default)]
    pub disk: chartsync_common::disk::DiskLimits,
}

/// Why the satellite refuses to serve its local API.
#[derive(Debug, thiserror::Error)]
#[error(
    "listen = {address} is not a loopback address, so the local record API would be open to the network without a password; set api_token in the satellite's configuration (clients then send Authorization: Bearer <api_token>), or listen on 127.0.0.1"
)]
pub struct ExposedApi {
    /// The address it would listen on.
    pub address: SocketAddr,
}

/// `[central]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// Central's base URL, e.g. `https://hq.example.org:7700`.
    pub url: String,
    /// This satellite's id at central (from `chartsync central instance add`).
    pub instance_id: u32,
    /// The token printed by `instance add` (or `token_file`, or the
    /// `CHARTSYNC_CENTRAL_TOKEN` environment variable).
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate of HQ's own certificate authority, if central's
    /// certificate is not signed by a public one.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Seconds before a request to central is given up (default 120).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// `[schedule]`: cron expressions; an absent job is not scheduled.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Push local changes.
    #[serde(default)]
    pub push: Option<String>,
    /// Pull central's changes.
    #[serde(default)]
    pub pull: Option<String>,
    /// Fetch records new to this clinic.
    #[serde(default)]
    pub fetch_new: Option<String>,
    /// Most seconds of random delay before a scheduled run (default 30), so
    /// that clinics do not all call central in the same second.
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
}

/// `[sync]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Records per batch (default and maximum 1000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Merge-and-push-again attempts per record and run (default 5).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Whether to fit compression and batches to the link to central as
    /// measured from the sync calls (default true): harder compression and
    /// batches of fewer bytes on a slow link.
    #[serde(default = "default_adapt")]
    pub adapt_to_link: bool,
    /// Seconds of link time one batch should take at most on a slow link
    /// (default 30, 1 to 600): a cut link loses at most this much work.
    #[serde(default = "default_batch_secs")]
    pub batch_secs: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            batch_size: default_batch(),
            max_attempts: default_attempts(),
            adapt_to_link: default_adapt(),
            batch_secs: default_batch_secs(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7800))
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_timeout() -> u64 {
    120
}
fn default_jitter() -> u64 {
    30
}
fn default_batch() -> usize {
    1000
}
fn default_attempts() -> u32 {
    5
}
fn default_adapt() -> bool {
    true
}
fn default_batch_secs() -> u32 {
    chartsync_protocol::link::DEFAULT_BATCH_SECS
}

impl SatelliteConfig {
    /// Reads and checks a configuration file. Relative paths in it are
    /// taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<SatelliteConfig, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Parses and checks configuration text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<SatelliteConfig, ConfigError> {
        let mut config: SatelliteConfig = parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        if let Some(ca) = &config.central.ca_cert {
            config.central.ca_cert = Some(base.join(ca));
        }
        if let Some(file) = &config.central.token_file {
            config.central.token_file = Some(base.join(file));
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if config.sync.batch_size == 0 || config.sync.batch_size > 1000 {
            return Err(invalid(format!(
                "[sync] batch_size is {}; it must be between 1 and 1000",
                config.sync.batch_size
            )));
        }
        if config
            .api_token
            .as_ref()
            .is_some_and(|t| t.0.trim().is_empty())
        {
            return Err(invalid(
                "api_token is empty; set a long random value, or leave the line out to serve on a loopback address without one".into(),
            ));
        }
        if config.sync.max_attempts == 0 {
            return Err(invalid("[sync] max_attempts must be at least 1".into()));
        }
        let most = chartsync_protocol::link::MAX_BATCH_SECS;
        if config.sync.batch_secs == 0 || config.sync.batch_secs > most {
            return Err(invalid(format!(
                "[sync] batch_secs is {}; it must be between 1 and {most}",
                config.sync.batch_secs
            )));
        }
        if !(config.central.url.starts_with("http://")
            || config.central.url.starts_with("https://"))
        {
            return Err(invalid(format!(
                "[central] url {:?} must start with https:// (or http:// on a trusted network)",
                config.central.url
            )));
        }
        for (job, expr) in config.schedules() {
            if let Some(expr) = expr {
                Schedule::parse(expr).map_err(|e| invalid(format!("[schedule] {job}: {e}")))?;
            }
        }
        Ok(config)
    }

    /// Refuses to serve the local API on `address` (the configured `listen`
    /// or the address actually bound) when it is reachable from other
    /// machines and no `api_token` is set.
    pub fn check_listen(&self, address: SocketAddr) -> Result<(), ExposedApi> {
        if address.ip().is_loopback() || self.api_token.is_some() {
            return Ok(());
        }
        Err(ExposedApi { address })
    }

    /// The name written into commits made here.
    pub fn instance_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("satellite-{}", self.central.instance_id))
    }

    /// The schedule expressions by job name.
    pub fn schedules(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("push", self.schedule.push.as_ref()),
            ("pull", self.schedule.pull.as_ref()),
            ("fetch_new", self.schedule.fetch_new.as_ref()),
        ]
    }

    /// The instance token: `CHARTSYNC_CENTRAL_TOKEN`, else `token_file`,
    /// else `token`.
    pub fn token(&self) -> Result<Option<Secret>, ConfigError> {
        secret(
            "CHARTSYNC_CENTRAL_TOKEN",
            self.central.token_file.as_deref(),
            self.central.token.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/satellite.toml");
        let config = SatelliteConfig::load(&path).expect("example config loads");
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.sync.batch_size, 1000);
        assert!(config.schedule.push.is_some());
        assert!(
            format!("{config:?}").contains("****"),
            "secrets are hidden in Debug"
        );
    }

    #[test]
    fn a_non_loopback_listen_needs_an_api_token() {
        let text = |extra: &str| {
            format!(
                "{extra}\ndata_dir = \"d\"\n[central]\nurl = \"http://127.0.0.1:7700\"\ninstance_id = 1\ntoken = \"t\"\n"
            )
        };
        let p = Path::new("x/satellite.toml");
        for listen in ["127.0.0.1:7800", "[::1]:7800", "127.0.0.2:7800"] {
            let config =
                SatelliteConfig::parse(&text(&format!("listen = \"{listen}\"")), p).expect("parse");
            config.check_listen(config.listen).expect(listen);
        }
        for listen in ["0.0.0.0:7800", "[::]:7800", "192.168.1.10:7800"] {
            let open =
                SatelliteConfig::parse(&text(&format!("listen = \"{listen}\"")), p).expect("parse");
            let err = open.check_listen(open.listen).expect_err(listen);
            let line = err.to_string();
            assert!(line.contains("api_token") && !line.contains('\n'), "{line}");
            let guarded = SatelliteConfig::parse(
                &text(&format!(
                    "listen = \"{listen}\"\napi_token = \"a-long-local-token\""
                )),
                p,
            )
            .expect("parse");
            guarded.check_listen(guarded.listen).expect(listen);
        }
    }

    #[test]
    fn refuses_bad_values() {
        let base = r#"
            data_dir = "d"
            [central]
            url = "http://127.0.0.1:7700"
            instance_id = 1
            token = "t"
        "#;
        let p = Path::new("x/satellite.toml");
        SatelliteConfig::parse(base, p).expect("minimal config");
        for (extra, why) in [
            ("[sync]\nbatch_size = 1001\n", "batch"),
            ("[sync]\nbatch_secs = 0\n", "batch_secs 0"),
            ("[sync]\nbatch_secs = 601\n", "batch_secs 601"),
            (
                "[sync]\nadapt_to_link = \"yes\"\n",
                "adapt_to_link not a bool",
            ),
            ("[schedule]\npush = \"every minute\"\n", "cron"),
            ("bogus = 1\n", "unknown key"),
            ("api_token = \"  \"\n", "empty api_token"),
        ] {
            let text = format!("{base}\n{extra}");
            assert!(SatelliteConfig::parse(&text, p).is_err(), "{why} accepted");
        }
    }
}
