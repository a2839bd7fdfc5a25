//! What central's and the satellite's configuration files have in common:
//! TOML parsing with clear errors, and secrets that never get printed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A secret (a token): read from the file, a file, or the environment;
/// never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or unknown keys.
    #[error("{path} is not a valid configuration")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A value out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads a configuration file's text.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses configuration text that came from `path`.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// A secret from, in order: the environment variable `env`, the file
/// `file` (trimmed), or the value written in the configuration.
pub fn secret(
    env: &str,
    file: Option<&Path>,
    inline: Option<&Secret>,
) -> Result<Option<Secret>, ConfigError> {
    if let Ok(value) = std::env::var(env)
        && !value.is_empty()
    {
        return Ok(Some(Secret(value)));
    }
    if let Some(file) = file {
        return Ok(Some(Secret(read_text(file)?.trim().to_string())));
    }
    Ok(inline.cloned())
}
