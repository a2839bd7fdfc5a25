//! Telling a full disk from other failures, so that a client hears "the
//! disk is full" (507) instead of "internal error" (500).

use std::error::Error;
use std::io;

/// The phrases the C libraries underneath (libgit2, SQLite) put in their
/// messages when the disk or the inode table is full: they report errno
/// as text, not as an `io::Error`.
const FULL_PHRASES: [&str; 4] = [
    "no space left on device",
    "disk quota exceeded",
    "database or disk is full",
    "file too large",
];

/// Whether `error`, or any error in its chain of causes, says the disk is
/// full: out of space (`ENOSPC`) or out of inodes (also `ENOSPC`), or over
/// quota (`EDQUOT`).
pub fn is_disk_full(error: &(dyn Error + 'static)) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        let text = e.to_string().to_ascii_lowercase();
        if FULL_PHRASES.iter().any(|p| text.contains(p)) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_real_enospc_is_a_full_disk() {
        // /dev/full answers every write with ENOSPC.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let e = f
            .write_all(b"x")
            .and_then(|_| f.flush())
            .expect_err("/dev/full refuses writes");
        assert!(is_disk_full(&e), "{e:?}");
        // Wrapped as the store wraps it, with its own message on top.
        #[derive(Debug)]
        struct Wrapped(io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("i/o error on objects/pack/tmp")
            }
        }
        impl Error for Wrapped {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_disk_full(&Wrapped(e)));
    }

    #[test]
    fn other_errors_are_not() {
        let e = io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        assert!(!is_disk_full(&e));
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert!(!is_disk_full(&e));
    }

    #[test]
    fn libgit2_and_sqlite_texts_are() {
        let e = io::Error::other("failed to write pack: No space left on device");
        assert!(is_disk_full(&e));
        let e = io::Error::other("database or disk is full");
        assert!(is_disk_full(&e));
    }
}
