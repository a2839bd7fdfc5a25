//! A record's head: `refs/heads/main` (a loose ref, or in `packed-refs` for
//! a record never updated), moved by compare-and-swap.
//!
//! The protocol is git's own, so plain `git` and other git tools interoperate
//! with it: create `main.lock` exclusively (this is the lock), read the
//! current value, compare it with the expected one, write the new value to
//! the lock file, make it durable, and rename it over `main`.
//!
//! The holder also keeps an `flock` on its lock file, which the kernel drops
//! when the process dies. A lock file that nobody holds an `flock` on and
//! that is older than [`STALE_GRACE`] was left by a crash and is taken over,
//! so a crashed writer blocks its record for seconds, not until someone
//! deletes the file by hand.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use git2::Oid;

use super::durable::{Flush, sync_dir};

/// A lock file nobody holds, older than this, was left by a crash. (The
/// grace covers the instant between creating the file and locking it.)
pub const STALE_GRACE: Duration = Duration::from_secs(2);

/// What went wrong with a head.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// Another writer holds the lock for longer than we wait.
    #[error("the record's head is locked by another writer ({path}); try again")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The file does not hold a commit hash.
    #[error("the head file {path} is damaged: {content:?}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it holds (truncated).
        content: String,
    },
    /// Reading or writing failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RefError + '_ {
    move |source| RefError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn ref_path(repo: &Path) -> PathBuf {
    repo.join("refs/heads/main")
}

fn parse_hex(path: &Path, text: &str) -> Result<Oid, RefError> {
    let hex = text.trim_end_matches('\n');
    if hex.len() != 40 {
        return Err(RefError::Damaged {
            path: path.to_path_buf(),
            content: text.chars().take(80).collect(),
        });
    }
    Oid::from_str(hex).map_err(|_| RefError::Damaged {
        path: path.to_path_buf(),
        content: text.chars().take(80).collect(),
    })
}

/// Reads a record's head (`None` when the branch does not exist). Falls back
/// to `packed-refs`, in case someone ran `git pack-refs` on the repository.
pub fn read_head(repo: &Path) -> Result<Option<Oid>, RefError> {
    let path = ref_path(repo);
    match fs::read_to_string(&path) {
        Ok(text) => return parse_hex(&path, &text).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let packed = repo.join("packed-refs");
    match fs::read_to_string(&packed) {
        Ok(text) => {
            for line in text.lines() {
                if let Some(hex) = line.strip_suffix(" refs/heads/main") {
                    return parse_hex(&packed, hex).map(Some);
                }
            }
            Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&packed)(e)),
    }
}

/// The held lock of a record's head. Dropping it without [`RefLock::commit`]
/// releases the lock and leaves the head as it was.
///
/// A record's head lives in `packed-refs` (a record chartsync created and
/// updated) or, once someone wrote a loose `refs/heads/main` (plain git
/// does), in that file, which then wins. The lock follows git's protocol
/// for the file that holds it: `packed-refs.lock` or
/// `refs/heads/main.lock`. Updating `packed-refs` in place needs no
/// `refs/heads/` folder: one inode less for a record's first update.
#[derive(Debug)]
pub struct RefLock {
    file: File,
    lock: PathBuf,
    target: PathBuf,
    packed: bool,
    current: Option<Oid>,
    staged: bool,
    done: bool,
}

/// Takes `lock` (create exclusively, then flock), waiting until `deadline`.
fn take_lock_file(lock: &Path, deadline: Instant) -> Result<File, RefError> {
    let mut pause = Duration::from_micros(200);
    loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(super::durable::FILE_MODE)
            .open(lock)
        {
            Ok(file) => {
                // Nobody else can hold it: the file is new and ours.
                file.lock().map_err(io_err(lock))?;
                return Ok(file);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if remove_if_stale(lock).map_err(io_err(lock))? {
                    tracing::warn!(path = %lock.display(), "took over a head lock left by a crashed writer");
                    continue;
                }
                if Instant::now() >= deadline {
                    return Err(RefError::Locked {
                        path: lock.to_path_buf(),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(lock)(e)),
        }
    }
}

impl RefLock {
    /// Takes the lock of a repository's head, waiting up to `wait` for
    /// another writer to finish.
    pub fn acquire(repo: &Path, wait: Duration) -> Result<RefLock, RefError> {
        let deadline = Instant::now() + wait;
        let loose = ref_path(repo);
        loop {
            let packed = !loose.is_file();
            let (lock, target) = if packed {
                (repo.join("packed-refs.lock"), repo.join("packed-refs"))
            } else {
                (repo.join("refs/heads/main.lock"), loose.clone())
            };
            let file = take_lock_file(&lock, deadline)?;
            let mut held = RefLock {
                file,
                lock,
                target,
                packed,
                current: None,
                staged: false,
                done: false,
            };
            if packed && loose.is_file() {
                // Someone wrote a loose ref meanwhile: it wins; lock that.
                drop(held);
                continue;
            }
            held.current = read_head(repo)?;
            return Ok(held);
        }
    }

    /// The head as read under the lock.
    pub fn current(&self) -> Option<Oid> {
        self.current
    }

    /// Writes the new head into the lock file (not yet visible).
    pub fn stage(&mut self, new: Oid, flush: Flush) -> Result<(), RefError> {
        let content = if self.packed {
            let old = match fs::read_to_string(&self.target) {
                Ok(text) => text,
                Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
                Err(e) => return Err(io_err(&self.target)(e)),
            };
            packed_refs_with(&old, new)
        } else {
            format!("{new}\n")
        };
        self.file.set_len(0).map_err(io_err(&self.lock))?;
        (&self.file)
            .write_all(content.as_bytes())
            .map_err(io_err(&self.lock))?;
        if flush == Flush::Now {
            self.file.sync_data().map_err(io_err(&self.lock))?;
        }
        self.staged = true;
        Ok(())
    }

    /// Moves the head: renames the staged lock file over the file holding it.
    pub fn commit(mut self, flush: Flush) -> Result<(), RefError> {
        debug_assert!(self.staged, "commit of a head lock that was never staged");
        fs::rename(&self.lock, &self.target).map_err(io_err(&self.target))?;
        self.done = true;
        if flush == Flush::Now
            && let Some(dir) = self.target.parent()
        {
            sync_dir(dir).map_err(io_err(dir))?;
        }
        Ok(())
    }
}

/// `packed-refs` text with `refs/heads/main` at `head`, every other ref kept
/// (with its peeled line), sorted by name as git writes it.
fn packed_refs_with(old: &str, head: Oid) -> String {
    let mut refs: Vec<(String, String)> = Vec::new(); // (name, lines)
    for line in old.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('^') {
            if let Some(last) = refs.last_mut() {
                last.1.push_str(line);
                last.1.push('\n');
            }
            continue;
        }
        let Some((_, name)) = line.split_once(' ') else {
            continue;
        };
        refs.push((name.to_string(), format!("{line}\n")));
    }
    refs.retain(|(name, _)| name != "refs/heads/main");
    refs.push((
        "refs/heads/main".to_string(),
        format!("{head} refs/heads/main\n"),
    ));
    refs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::from("# pack-refs with: peeled fully-peeled sorted \n");
    for (_, lines) in refs {
        out.push_str(&lines);
    }
    out
}

impl Drop for RefLock {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = fs::remove_file(&self.lock)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::error!(path = %self.lock.display(), error = %e, "could not release a head lock");
        }
    }
}

/// Removes `lock` if its writer died: nobody holds its `flock` and it is
/// older than [`STALE_GRACE`]. True if it was removed (or vanished).
fn remove_if_stale(lock: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let file = match File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let age = meta
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age < STALE_GRACE {
        return Ok(false);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(false),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    // Still the same file at that path (not a new writer's)?
    match fs::metadata(lock) {
        Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    }
    match fs::remove_file(lock) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Sets a ref other than the head (e.g. the ref that keeps a conflict's
/// losing commit), unconditionally and durably. `name` is relative to `refs/`.
pub fn set_aux_ref(repo: &Path, name: &str, value: Oid) -> Result<(), RefError> {
    let path = repo.join("refs").join(name);
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo.join("refs"));
    super::durable::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tmp = path.with_extension("lock");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(super::durable::FILE_MODE)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(io_err(&tmp))?;
        file.sync_data().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(&dir).map_err(io_err(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_refs_keep_other_refs_sorted_with_their_peeled_lines() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let old = format!(
            "# pack-refs with: peeled fully-peeled sorted \n{a} refs/chartsync/conflicts/x\n{a} refs/heads/main\n{a} refs/tags/v1\n^{b}\n"
        );
        let new = packed_refs_with(&old, b);
        assert_eq!(
            new,
            format!(
                "# pack-refs with: peeled fully-peeled sorted \n{a} refs/chartsync/conflicts/x\n{b} refs/heads/main\n{a} refs/tags/v1\n^{b}\n"
            )
        );
        assert_eq!(
            packed_refs_with("", a),
            format!("# pack-refs with: peeled fully-peeled sorted \n{a} refs/heads/main\n")
        );
    }

    #[test]
    fn a_loose_ref_written_by_git_takes_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = dir.path();
        fs::create_dir_all(repo.join("refs/heads")).expect("dirs");
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let c = Oid::from_str("3333333333333333333333333333333333333333").expect("oid");
        fs::write(repo.join("packed-refs"), packed_refs_with("", a)).expect("packed");
        let mut lock = RefLock::acquire(repo, Duration::from_secs(1)).expect("lock");
        assert_eq!(lock.current(), Some(a));
        lock.stage(b, Flush::Now).expect("stage");
        lock.commit(Flush::Now).expect("commit");
        assert_eq!(read_head(repo).expect("read"), Some(b));
        assert!(!repo.join("refs/heads/main").exists(), "still packed");
        // Plain git writes a loose ref; from then on that is the head.
        fs::write(repo.join("refs/heads/main"), format!("{c}\n")).expect("loose");
        let mut lock = RefLock::acquire(repo, Duration::from_secs(1)).expect("lock");
        assert_eq!(lock.current(), Some(c));
        lock.stage(a, Flush::Now).expect("stage");
        lock.commit(Flush::Now).expect("commit");
        assert_eq!(read_head(repo).expect("read"), Some(a));
        assert_eq!(
            fs::read_to_string(repo.join("refs/heads/main")).expect("loose"),
            format!("{a}\n")
        );
    }
}
