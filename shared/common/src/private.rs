//! Files and folders only their owner may read: every data folder and
//! SQLite database chartsync creates. The `chartsync` binary also sets its
//! umask to 0077; these helpers make the same true for callers that did
//! not (the library used in tests, other embedders) and repair the mode of
//! folders and files an older version created with looser bits.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the folders chartsync creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files chartsync creates.
pub const FILE_MODE: u32 = 0o600;

/// Why a folder or file could not be made private.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create {path} private to its owner (mode {mode:04o}), or make it so; check that this user may write its parent folder and owns it"
)]
pub struct PrivateError {
    /// The folder or file.
    pub path: PathBuf,
    /// The mode it was to get.
    pub mode: u32,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn fail(path: &Path, mode: u32) -> impl FnOnce(io::Error) -> PrivateError + '_ {
    move |source| PrivateError {
        path: path.to_path_buf(),
        mode,
        source,
    }
}

/// Creates `path` (and missing parents) with mode 0700, or takes away the
/// group and other bits of an existing folder.
pub fn private_dir(path: &Path) -> Result<(), PrivateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(fail(path, DIR_MODE))?;
    tighten(path, DIR_MODE)
}

/// Makes sure the SQLite database `path` exists with mode 0600 before
/// SQLite opens it (SQLite creates a new database with 0644 less the
/// umask, and its `-wal` and `-shm` files with the database's mode), and
/// takes away the group and other bits of an existing database and of its
/// `-wal` and `-shm` files.
pub fn private_database(path: &Path) -> Result<(), PrivateError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(path, FILE_MODE)(e)),
    }
    tighten(path, FILE_MODE)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let side = PathBuf::from(name);
        if side.exists() {
            tighten(&side, FILE_MODE)?;
        }
    }
    Ok(())
}

/// Takes away the permission bits of `path` that `mode` does not have.
fn tighten(path: &Path, mode: u32) -> Result<(), PrivateError> {
    let current = std::fs::metadata(path)
        .map_err(fail(path, mode))?
        .permissions()
        .mode()
        & 0o7777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))
            .map_err(fail(path, mode))?;
        tracing::info!(path = %path.display(), from = format!("{current:04o}"), to = format!("{:04o}", current & mode), "made private to its owner");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn folders_are_created_private_and_loose_ones_are_fixed() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("a/b/data");
        private_dir(&data).expect("create");
        assert_eq!(mode(&data), 0o700);
        let loose = dir.path().join("loose");
        std::fs::create_dir(&loose).expect("mkdir");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&loose).expect("fix");
        assert_eq!(mode(&loose), 0o700);
    }

    #[test]
    fn databases_are_created_private_and_loose_ones_are_fixed() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("x.sqlite");
        private_database(&db).expect("create");
        assert_eq!(mode(&db), 0o600);
        let wal = dir.path().join("x.sqlite-wal");
        std::fs::write(&wal, b"").expect("wal");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        private_database(&db).expect("fix");
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }
}
