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
    /// A token too short to resist guessing, or still the example's value.
    #[error("{what} is too weak: {problem}; make one with: openssl rand -hex 32")]
    WeakSecret {
        /// Which secret, and where it may come from.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A file holding a secret that other users may read.
    #[error(
        "{path} holds a secret but other users may read it (mode {mode:04o}); make it private with: chmod 600 {path}"
    )]
    SecretFileOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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
/// `file` (trimmed), or the value written in the configuration. A file that
/// users other than its owner may read (any group or other permission bit)
/// is refused: [`ConfigError::SecretFileOpen`].
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
        return read_secret_file(file).map(Some);
    }
    Ok(inline.cloned())
}

/// Reads a secret from a file only its owner may read (trimmed).
pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // The mode of the file actually opened (not of whatever the path
    // names a moment later).
    let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::SecretFileOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::io::read_to_string(file).map_err(read_error)?;
    Ok(Secret(text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn secret_file(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("token-{mode:o}"));
        std::fs::write(&path, "  s3cret-token\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_private_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("dir");
        for mode in [0o600, 0o400] {
            let path = secret_file(dir.path(), mode);
            let secret = secret("CHARTSYNC_TEST_UNSET_VARIABLE", Some(&path), None)
                .expect("private file")
                .expect("a secret");
            assert_eq!(secret.0, "s3cret-token");
        }
    }

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o666] {
            let path = secret_file(dir.path(), mode);
            let err =
                secret("CHARTSYNC_TEST_UNSET_VARIABLE", Some(&path), None).expect_err("refused");
            assert!(
                matches!(err, ConfigError::SecretFileOpen { mode: m, .. } if m == mode),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("chmod 600"), "{text}");
            assert!(!text.contains('\n'), "one line: {text}");
            assert!(!text.contains("s3cret"), "never the secret: {text}");
        }
    }
}
