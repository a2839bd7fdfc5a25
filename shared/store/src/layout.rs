//! Where records live on disk.
//!
//! ```text
//! <root>/repos/ab/cd/abcd….git   one bare repository per patient
//! <root>/tmp/<session>/          records being created by one process
//! <root>/tmp/<session>.lock       held (flock) by that process while it lives
//! ```
//!
//! A new record is built completely in `tmp/` (skeleton, objects, head) and
//! then renamed into place. `rename(2)` onto an existing repository fails, so
//! of two creators of one id exactly one wins, and a crash leaves either no
//! record or a complete one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use super::durable::{FILE_MODE, Flush, create_dir, create_dir_all, sync_dir, write_new};
use chartsync_protocol::id::PatientId;

/// The name of every record's one branch.
pub const BRANCH: &str = "refs/heads/main";

/// `HEAD` of every record.
const HEAD: &[u8] = b"ref: refs/heads/main\n";

/// Paths under a store's root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    session: Option<std::sync::Arc<Session>>,
}

/// This process's private folder in `tmp/`, with the lock file that tells
/// other processes it is alive.
#[derive(Debug)]
struct Session {
    dir: PathBuf,
    _lock: fs::File,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: PathBuf) -> Layout {
        Layout {
            root,
            session: None,
        }
    }

    /// Creates this process's folder in `tmp/`, where it builds new records.
    pub fn start_session(&mut self) -> io::Result<()> {
        let mut rand = [0u8; 8];
        getrandom::fill(&mut rand).map_err(|e| io::Error::other(e.to_string()))?;
        let name = format!("{:016x}", u64::from_le_bytes(rand));
        let lock = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(self.tmp().join(format!("{name}.lock")))?;
        lock.lock()?;
        let dir = self.tmp().join(format!("{name}.session"));
        create_dir(&dir)?;
        self.session = Some(std::sync::Arc::new(Session { dir, _lock: lock }));
        Ok(())
    }

    fn session_dir(&self) -> PathBuf {
        match &self.session {
            Some(s) => s.dir.clone(),
            None => self.tmp(),
        }
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/repos`.
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    /// `<root>/tmp`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The shard folder of a record: `<root>/repos/ab/cd`.
    pub fn shard(&self, id: &PatientId) -> PathBuf {
        let hex = id.uuid().simple().to_string();
        self.repos().join(&hex[0..2]).join(&hex[2..4])
    }

    /// The repository of a record.
    pub fn repo(&self, id: &PatientId) -> PathBuf {
        self.shard(id).join(format!("{id}.git"))
    }

    /// Creates the root folders.
    pub fn init(&self) -> io::Result<()> {
        create_dir_all(&self.repos())?;
        create_dir_all(&self.tmp())?;
        Ok(())
    }

    /// Removes leftovers of creations cut off by a crash: the folders of
    /// sessions whose process is gone (nobody holds their lock file).
    pub fn clean_tmp(&self) -> io::Result<usize> {
        let mine = self.session.as_ref().map(|s| s.dir.clone());
        let mut removed = 0;
        for entry in fs::read_dir(self.tmp())? {
            let path = entry?.path();
            if Some(&path) == mine.as_ref() {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if let Some(session) = name.strip_suffix(".session") {
                let lock = self.tmp().join(format!("{session}.lock"));
                if let Ok(file) = fs::File::open(&lock)
                    && file.try_lock().is_err()
                {
                    continue; // a live process
                }
                fs::remove_dir_all(&path)?;
                match fs::remove_file(&lock) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                removed += 1;
            } else if name.ends_with(".lock") {
                let session = self.tmp().join(name.replace(".lock", ".session"));
                if !session.exists()
                    && let Ok(file) = fs::File::open(&path)
                    && file.try_lock().is_ok()
                {
                    fs::remove_file(&path)?;
                }
            } else if path.is_dir() {
                fs::remove_dir_all(&path)?;
                removed += 1;
            } else {
                fs::remove_file(&path)?;
            }
        }
        Ok(removed)
    }

    /// A new, unique folder in `tmp/` holding an empty bare repository: the
    /// least git needs (`HEAD`, `objects/pack/`, `refs/`; no `config`, whose
    /// defaults are right), because every file and folder costs an inode.
    pub fn new_skeleton(&self, id: &PatientId, flush: Flush) -> io::Result<PathBuf> {
        let mut rand = [0u8; 8];
        getrandom::fill(&mut rand).map_err(|e| io::Error::other(e.to_string()))?;
        let name = format!("{id}.{:016x}.git", u64::from_le_bytes(rand));
        let dir = self.session_dir().join(name);
        create_dir(&dir)?;
        create_dir_all(&dir.join("objects/pack"))?;
        create_dir(&dir.join("refs"))?;
        write_new(&dir.join("HEAD"), HEAD, flush)?;
        if flush == Flush::Now {
            for sub in ["objects/pack", "objects", "refs", ""] {
                sync_dir(&dir.join(sub))?;
            }
        }
        Ok(dir)
    }

    /// A new, unused path in this session's `tmp/` folder for a record's
    /// repository that is being removed (see `RecordStore::drop_copy`).
    pub fn doomed(&self, id: &PatientId) -> io::Result<PathBuf> {
        let mut rand = [0u8; 8];
        getrandom::fill(&mut rand).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self
            .session_dir()
            .join(format!("{id}.{:016x}.dropped", u64::from_le_bytes(rand))))
    }

    /// Makes sure a record's shard folder exists (durably).
    pub fn ensure_shard(&self, id: &PatientId, flush: Flush) -> io::Result<PathBuf> {
        let shard = self.shard(id);
        if shard.is_dir() {
            return Ok(shard);
        }
        let parent = shard
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.repos());
        let parent_existed = parent.is_dir();
        create_dir_all(&shard)?;
        if flush == Flush::Now {
            sync_dir(&parent)?;
            if !parent_existed {
                sync_dir(&self.repos())?;
            }
        }
        Ok(shard)
    }
}
