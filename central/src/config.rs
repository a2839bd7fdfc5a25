//! Central's configuration file (TOML). See `config/central.toml` for a
//! commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use chartsync_common::config::ConfigError;
pub use chartsync_common::config::Secret;
use chartsync_common::config::{parse_toml, read_text, secret};
use serde::Deserialize;

/// `central.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// Where central listens (default `127.0.0.1:7700`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Records and (by default) the SQLite database live here.
    pub data_dir: PathBuf,
    /// The token of HQ clients (full access). Or `admin_token_file`, or the
    /// `CHARTSYNC_ADMIN_TOKEN` environment variable.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// A file holding the admin token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Largest request body, in bytes (default 16 MiB; a push of 1000
    /// records is far below).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most sync batches handled at once; more get 503 with `Retry-After`.
    /// Each holds at most about `max_body_bytes` + 128 MiB in memory (the
    /// body, its decoded message and the packs rebuilt from it), so this
    /// bounds central's memory under load: about 580 MiB with the defaults.
    #[serde(default = "default_max_concurrent_sync")]
    pub max_concurrent_sync: usize,
    /// The database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// TLS (optional; without it central speaks plain HTTP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Patient locks.
    #[serde(default)]
    pub locks: LockConfig,
    /// Repository upkeep.
    #[serde(default)]
    pub upkeep: UpkeepConfig,
    /// Duplicate-patient detection.
    #[serde(default)]
    pub duplicates: DuplicatesConfig,
}

/// `[duplicates]`: where the identifying fields are in `patient.yaml`
/// (JSON pointers; an empty one turns the field off) and the least score
/// listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuplicatesConfig {
    pub given_name: String,
    pub family_name: String,
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub phone: String,
    pub national_id: String,
    /// Pairs at or above are listed (default 0.8).
    pub min_score: f64,
    /// Whether this process indexes new and changed records (default
    /// true). With several processes on one PostgreSQL database, one or
    /// two indexing is enough; every process lists and merges pairs.
    pub index: bool,
}

impl Default for DuplicatesConfig {
    fn default() -> Self {
        let f = chartsync_dedup::Fields::default();
        DuplicatesConfig {
            given_name: f.given_name,
            family_name: f.family_name,
            birth_date: f.birth_date,
            sex: f.sex,
            address: f.address,
            phone: f.phone,
            national_id: f.national_id,
            min_score: chartsync_dedup::DEFAULT_MIN_SCORE,
            index: true,
        }
    }
}

impl DuplicatesConfig {
    /// The field pointers.
    pub fn fields(&self) -> chartsync_dedup::Fields {
        chartsync_dedup::Fields {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            birth_date: self.birth_date.clone(),
            sex: self.sex.clone(),
            address: self.address.clone(),
            phone: self.phone.clone(),
            national_id: self.national_id.clone(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or a path (default: `central.sqlite` in `data_dir`).
    #[serde(default)]
    pub url: Option<String>,
    /// On PostgreSQL: the most connections this process opens for its work
    /// (default 16; one more keeps its liveness key). Every central process
    /// sharing the database opens up to this many plus one, so their sum
    /// must stay under the server's `max_connections` (100 by default).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// On PostgreSQL: the most records this process keeps a git copy of in
    /// `data_dir` (the most recently used; default 50,000, about 2 GB).
    /// The database holds every record's history; a copy dropped is rebuilt
    /// from it when next needed.
    #[serde(default)]
    pub cache_records: Option<usize>,
}

/// Record copies a central process on PostgreSQL keeps, unless configured.
pub const DEFAULT_CACHE_RECORDS: usize = 50_000;
/// The fewest `[database] cache_records` allowed: more than the records
/// that the sync batches handled at once may use.
pub const MIN_CACHE_RECORDS: usize = 1_000;

/// Connections per central process on PostgreSQL, unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// The fewest `[database] max_connections` allowed: a batch's work may use
/// a connection while its locks hold another.
pub const MIN_MAX_CONNECTIONS: usize = 4;

impl DatabaseConfig {
    /// The connections this process may open for its work (PostgreSQL).
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    /// The record copies this process may keep (PostgreSQL).
    pub fn cache_records(&self) -> usize {
        self.cache_records.unwrap_or(DEFAULT_CACHE_RECORDS)
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[locks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// Seconds a patient lock is leased for; a crashed process blocks a
    /// patient no longer than this (default 30). A restart right after a
    /// crash may wait up to this plus `wait_secs` before serving, to repair
    /// the crashed process's last writes under their locks. On PostgreSQL a
    /// dead process's leases are taken over sooner: as soon as its
    /// database session has ended (see `db::postgres`).
    #[serde(default = "default_lease")]
    pub lease_secs: f64,
    /// Seconds a request waits for a patient's lock before it is answered
    /// 503 with Retry-After (default 5).
    #[serde(default = "default_wait")]
    pub wait_secs: f64,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            lease_secs: default_lease(),
            wait_secs: default_wait(),
        }
    }
}

/// `[upkeep]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpkeepConfig {
    /// Repack a record once it has this many pack files (default 16).
    #[serde(default = "default_min_packs")]
    pub repack_after_packs: usize,
    /// Seconds between sweeps over recently changed records (default 600;
    /// 0 turns the sweep off).
    #[serde(default = "default_sweep")]
    pub sweep_secs: u64,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        UpkeepConfig {
            repack_after_packs: default_min_packs(),
            sweep_secs: default_sweep(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_max_concurrent_sync() -> usize {
    4
}

fn default_lease() -> f64 {
    30.0
}
fn default_wait() -> f64 {
    5.0
}
fn default_min_packs() -> usize {
    8
}
fn default_sweep() -> u64 {
    600
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl CentralConfig {
    /// Reads and checks a configuration file. Relative paths in it are
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<CentralConfig, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Parses and checks configuration text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<CentralConfig, ConfigError> {
        let mut config: CentralConfig = parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        if let Some(file) = &config.admin_token_file {
            config.admin_token_file = Some(base.join(file));
        }
        if let Some(tls) = &mut config.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !(config.locks.lease_secs > 0.0 && config.locks.lease_secs <= 3600.0) {
            return Err(invalid(
                "[locks] lease_secs must be between 0 and 3600".into(),
            ));
        }
        if !(config.locks.wait_secs >= 0.0 && config.locks.wait_secs <= 600.0) {
            return Err(invalid(
                "[locks] wait_secs must be between 0 and 600".into(),
            ));
        }
        if config.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes must be at least 1024".into()));
        }
        let bad = config.duplicates.fields().invalid();
        if !bad.is_empty() {
            return Err(invalid(format!(
                "[duplicates] {} must be a JSON pointer such as \"/given_name\" (or empty to turn it off)",
                bad.join(", ")
            )));
        }
        if !(0.0..=1.0).contains(&config.duplicates.min_score) {
            return Err(invalid(
                "[duplicates] min_score must be between 0 and 1".into(),
            ));
        }
        if let Some(n) = config.database.max_connections
            && !(MIN_MAX_CONNECTIONS..=1000).contains(&n)
        {
            return Err(invalid(format!(
                "[database] max_connections must be between {MIN_MAX_CONNECTIONS} and 1000 (it is {n})"
            )));
        }
        if let Some(n) = config.database.cache_records
            && n < MIN_CACHE_RECORDS
        {
            return Err(invalid(format!(
                "[database] cache_records must be at least {MIN_CACHE_RECORDS} (it is {n})"
            )));
        }
        if let Some(url) = &config.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(format!(
                "[database] url {url:?} must be sqlite://<path> or postgres://user@host/db"
            )));
        }
        Ok(config)
    }

    /// The database location.
    pub fn database(&self) -> DatabaseUrl {
        match &self.database.url {
            None => DatabaseUrl::Sqlite(self.data_dir.join("central.sqlite")),
            Some(url) if url.starts_with("postgres") => DatabaseUrl::Postgres(url.clone()),
            Some(url) => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                DatabaseUrl::Sqlite(self.data_dir.join(path))
            }
        }
    }

    /// The admin token: `CHARTSYNC_ADMIN_TOKEN`, else `admin_token_file`,
    /// else `admin_token`. Refused if shorter than [`MIN_ADMIN_TOKEN`]
    /// characters or still the example configuration's value, and (from a
    /// file) if users other than the file's owner may read the file.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        let token = secret(
            "CHARTSYNC_ADMIN_TOKEN",
            self.admin_token_file.as_deref(),
            self.admin_token.as_ref(),
        )?;
        if let Some(token) = &token {
            check_admin_token(&token.0)?;
        }
        Ok(token)
    }
}

/// The shortest admin token accepted, in characters.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// The admin token of `config/central.toml`, refused as a real one.
const EXAMPLE_ADMIN_TOKEN: &str = "replace-with-a-long-random-admin-token";

fn check_admin_token(token: &str) -> Result<(), ConfigError> {
    let weak = |problem: String| ConfigError::WeakSecret {
        what: "the admin token (admin_token, admin_token_file or CHARTSYNC_ADMIN_TOKEN)",
        problem,
    };
    let length = token.chars().count();
    if length < MIN_ADMIN_TOKEN {
        return Err(weak(format!(
            "it is {length} characters long and must be at least {MIN_ADMIN_TOKEN}"
        )));
    }
    if token == EXAMPLE_ADMIN_TOKEN {
        return Err(weak(
            "it is still the example configuration's value".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/central.toml");
        let config = CentralConfig::load(&path).expect("example config loads");
        assert_eq!(config.listen, default_listen());
        assert!(matches!(config.database(), DatabaseUrl::Sqlite(_)));
        assert!(format!("{config:?}").contains("****"));
    }

    #[test]
    fn short_or_example_admin_tokens_are_refused() {
        let p = Path::new("x/central.toml");
        let with = |token: &str| {
            CentralConfig::parse(&format!("data_dir = \"d\"\nadmin_token = \"{token}\"\n"), p)
                .expect("parses")
        };
        for bad in ["tiny-token", &"x".repeat(31), EXAMPLE_ADMIN_TOKEN] {
            let err = with(bad).admin_token().expect_err("refused");
            let line = err.to_string();
            assert!(
                line.contains("openssl rand -hex 32") && !line.contains('\n'),
                "{line}"
            );
            assert!(
                !line.contains(bad),
                "the token itself is never shown: {line}"
            );
        }
        let good = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            with(good).admin_token().expect("accepted").map(|s| s.0),
            Some(good.to_string())
        );
        // No admin token at all: no admin access, nothing to refuse.
        let none = CentralConfig::parse("data_dir = \"d\"\n", p).expect("parses");
        assert!(none.admin_token().expect("fine").is_none());
    }

    #[test]
    fn refuses_bad_values() {
        let p = Path::new("x/central.toml");
        CentralConfig::parse("data_dir = \"d\"\n", p).expect("minimal");
        for bad in [
            "data_dir = \"d\"\nbogus = 1\n",
            "data_dir = \"d\"\n[database]\nurl = \"mysql://x\"\n",
            "data_dir = \"d\"\n[database]\nmax_connections = 3\n",
            "data_dir = \"d\"\n[database]\nmax_connections = 100000\n",
            "data_dir = \"d\"\n[database]\ncache_records = 10\n",
            "data_dir = \"d\"\n[locks]\nlease_secs = 0\n",
            "listen = \"nowhere\"\ndata_dir = \"d\"\n",
        ] {
            assert!(CentralConfig::parse(bad, p).is_err(), "{bad}");
        }
        let pool = |text: &str| {
            CentralConfig::parse(text, p)
                .expect("parses")
                .database
                .max_connections()
        };
        assert_eq!(pool("data_dir = \"d\"\n"), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            pool("data_dir = \"d\"\n[database]\nmax_connections = 6\n"),
            6
        );
    }
}
