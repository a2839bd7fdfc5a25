//! The satellite's sync state in SQLite (`<data_dir>/satellite.sqlite`).
//!
//! The git repositories are the truth about records; this database says
//! what central has acknowledged of them. Order of writes keeps the two
//! consistent across crashes: a record is marked dirty here *before* its
//! head moves, and the push job clears the mark only after comparing the
//! head with what central acknowledged.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chartsync_common::sqlite::{MigrateError, Migration, migrate};
use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{Connection, OptionalExtension, params};

/// The satellite's migrations (`migrations/satellite/`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/satellite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "set_aside",
        sql: include_str!("../../../migrations/satellite/0002_set_aside.sql"),
    },
    Migration {
        version: 3,
        name: "carried",
        sql: include_str!("../../../migrations/satellite/0003_carried.sql"),
    },
    Migration {
        version: 4,
        name: "ack_pages",
        sql: include_str!("../../../migrations/satellite/0004_ack_pages.sql"),
    },
    Migration {
        version: 5,
        name: "ack_tokens",
        sql: include_str!("../../../migrations/satellite/0005_ack_tokens.sql"),
    },
    Migration {
        version: 6,
        name: "pull_checks_all",
        sql: include_str!("../../../migrations/satellite/0006_pull_checks_all.sql"),
    },
];

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("sync-state database error while {context}")]
    Sql {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// Migrating failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// A stored value is damaged.
    #[error("sync-state database holds a damaged value in {0}")]
    Damaged(&'static str),
    /// The database file cannot be made private to its owner.
    #[error(transparent)]
    Private(#[from] chartsync_common::private::PrivateError),
}

pub(crate) fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sql { context, source }
}

/// The state database.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

/// One record's sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordState {
    /// The record.
    pub id: PatientId,
    /// The head central last acknowledged.
    pub central_head: Option<CommitId>,
    /// Its local-change counter.
    pub changes: i64,
}

pub(crate) fn id_from(bytes: Vec<u8>) -> Result<PatientId, DbError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| DbError::Damaged("records.patient"))?;
    PatientId::from_bytes(bytes).map_err(|_| DbError::Damaged("records.patient"))
}

pub(crate) fn head_from(text: Option<String>) -> Result<Option<CommitId>, DbError> {
    text.map(|t| {
        t.parse()
            .map_err(|_| DbError::Damaged("a commit hash column"))
    })
    .transpose()
}

impl Db {
    /// Opens (creating and migrating) the database. The file and its
    /// `-wal` and `-shm` files are readable by their owner only.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        chartsync_common::private::private_database(path)?;
        let mut conn = Connection::open(path).map_err(sql("opening the database"))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql("setting the busy timeout"))?;
        // Switching a new file to WAL while another process (the daemon and
        // a one-shot sync starting together) does the same can answer
        // "busy" at once, without waiting out the busy timeout.
        let mut tries = 0;
        loop {
            match conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;",
            ) {
                Err(e)
                    if tries < 5
                        && matches!(
                            e.sqlite_error_code(),
                            Some(
                                rusqlite::ErrorCode::DatabaseBusy
                                    | rusqlite::ErrorCode::DatabaseLocked
                            )
                        ) =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20 << tries));
                }
                other => break other.map_err(sql("setting pragmas"))?,
            }
        }
        migrate(&mut conn, MIGRATIONS)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// The connection (callers run on blocking threads).
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a record as possibly changed locally (before its head moves).
    pub fn mark_dirty(&self, id: &PatientId) -> Result<(), DbError> {
        self.mark_dirty_many(std::slice::from_ref(id))
    }

    /// A record's sync state.
    pub fn record(&self, id: &PatientId) -> Result<Option<RecordState>, DbError> {
        let row = self
            .conn()
            .query_row(
                "SELECT central_head, changes FROM records WHERE patient = ?1",
                params![id.as_bytes()],
                |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(sql("reading a record's state"))?;
        match row {
            None => Ok(None),
            Some((head, changes)) => Ok(Some(RecordState {
                id: *id,
                central_head: head_from(head)?,
                changes,
            })),
        }
    }

    /// A single value from `state` (0 when unset).
    pub fn state(&self, key: &str) -> Result<i64, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM state WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading state"))?
            .unwrap_or(0))
    }

    /// Records with local changes not yet acknowledged, and open conflicts.
    pub fn counts(&self) -> Result<(u64, u64), DbError> {
        let conn = self.conn();
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM records WHERE dirty = 1", [], |r| {
                r.get(0)
            })
            .map_err(sql("counting pending pushes"))?;
        let conflicts: i64 = conn
            .query_row(
                "SELECT count(*) FROM conflicts WHERE resolved_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(sql("counting conflicts"))?;
        Ok((pending.max(0) as u64, conflicts.max(0) as u64))
    }
}

mod carried;
mod conflicts;
mod runs;
mod set_aside;
mod sync;

pub use carried::Carried;
pub use conflicts::NewConflict;
pub use runs::{JobRecord, RunRow};
pub use set_aside::{NO_ASIDE, SetAside, SetAsideRow};
pub use sync::{CentralState, DirtyRecord, Known, PendingAck};
