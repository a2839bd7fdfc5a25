//! Making writes durable: per-file fsync for single writes, one `syncfs`
//! for a whole batch (group commit).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// When the bytes written by an operation reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Before the operation returns (fsync of each file and folder).
    Now,
    /// When the caller calls [`RecordStore::flush`](super::RecordStore::flush)
    /// (one `syncfs` for a whole batch). The caller must do so before it
    /// relies on the data, and before it moves any head that refers to it.
    Deferred,
}

/// Mode of every file the store creates: records are patient data, readable
/// by the owner only (whatever the process umask).
pub const FILE_MODE: u32 = 0o600;

/// Mode of every folder the store creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates a folder (and missing parents) with [`DIR_MODE`].
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates one folder (its parent must exist) with [`DIR_MODE`].
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Writes a whole new file at `path` (which must not exist), durably if
/// `flush` is [`Flush::Now`].
pub(crate) fn write_new(path: &Path, bytes: &[u8], flush: Flush) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(bytes)?;
    if flush == Flush::Now {
        file.sync_data()?;
    }
    Ok(())
}

/// fsyncs a folder (so that names created or renamed in it are durable).
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Flushes the whole file system holding `path` (Linux `syncfs`).
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `dir` is an open file descriptor for the whole call; syncfs
        // only reads it.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // No syncfs: fall back to a full sync.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        drop(dir);
        Ok(())
    }
}
