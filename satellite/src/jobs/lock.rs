//! The job lock: `<data_dir>/sync.lock`, an `flock` held for the length of
//! a run. The kernel releases it when the process dies, so a crash never
//! leaves it held.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the job lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it for longer than we wait.
    #[error(
        "another sync run is in progress (the lock {path} is held); it did not finish within {waited:?}"
    )]
    Busy {
        /// The lock file.
        path: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file cannot be opened.
    #[error("cannot open the job lock {path}")]
    Io {
        /// The lock file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The held job lock; released on drop.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the lock, waiting up to `wait` (zero: try once).
    pub async fn acquire(data_dir: &Path, wait: Duration) -> Result<JobLock, LockError> {
        let path = data_dir.join("sync.lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(JobLock { _file: file }),
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() >= wait {
                        return Err(LockError::Busy {
                            path: path.display().to_string(),
                            waited: start.elapsed(),
                        });
                    }
                    if !told {
                        tracing::info!("another sync run is in progress; waiting for it to finish");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}
