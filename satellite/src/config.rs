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
    /// If set, local API clients must send `Authorization: Bearer <api_token>`.
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
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            batch_size: default_batch(),
            max_attempts: default_attempts(),
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
        if config.sync.max_attempts == 0 {
            return Err(invalid("[sync] max_attempts must be at least 1".into()));
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
            ("[schedule]\npush = \"every minute\"\n", "cron"),
            ("bogus = 1\n", "unknown key"),
        ] {
            let text = format!("{base}\n{extra}");
            assert!(SatelliteConfig::parse(&text, p).is_err(), "{why} accepted");
        }
    }
}
