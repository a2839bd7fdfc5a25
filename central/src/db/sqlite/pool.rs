//! Connections to one SQLite file: one writer behind a mutex, a few
//! read-only readers, and the runners that use them on blocking threads
//! (rusqlite connections are not `Sync`; async threads never wait on
//! SQLite).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chartsync_common::sqlite::{MigrateError, migrate};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use super::MIGRATIONS;
use crate::db::DbError;

/// How long one statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a transaction that still found the database busy is run
/// again (so a write waits for at most about this many busy timeouts).
const BUSY_ATTEMPTS: u32 = 4;
/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// The wrapper of a rusqlite error with what was being done.
pub(super) fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Backend {
        context,
        source: Box::new(source),
    }
}

/// Whether an error says another connection held the lock too long (or was
/// recovering the WAL): worth running the transaction again.
fn is_busy(error: &DbError) -> bool {
    let DbError::Backend { source, .. } = error else {
        return false;
    };
    source
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|code| matches!(code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Runs `attempt` again (a bounded number of times, with a short growing
/// pause) while it fails because the database is busy.
fn retry_busy<T>(mut attempt: impl FnMut() -> Result<T, DbError>) -> Result<T, DbError> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if is_busy(&e) && tries < BUSY_ATTEMPTS => {
                tracing::warn!(
                    attempt = tries,
                    "SQLite database busy; retrying the transaction"
                );
                std::thread::sleep(Duration::from_millis(10 << tries));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Opens one connection with the settings every connection needs. Each
/// keeps up to 32 MiB of pages (SQLite's default is 2 MiB): the duplicate
/// index's blocks are read from all over a large file, and a page read
/// again from the operating system's cache costs a copy and a system call.
fn connect(path: &Path, read_only: bool) -> Result<Connection, DbError> {
    let conn = Connection::open(path).map_err(sql("opening the database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    // Switching a new file to WAL while another process does the same can
    // answer "busy" at once, without waiting out the busy timeout.
    retry_busy(|| {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -32768;",
        )
        .map_err(sql("setting pragmas"))
    })?;
    if read_only {
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(sql("setting pragmas"))?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Migrates, running again if another process was migrating the same file
/// at the same moment (its transaction then fails here, and the next run
/// sees its work).
fn migrate_shared(conn: &mut Connection) -> Result<(), DbError> {
    let mut tries = 1;
    loop {
        match migrate(conn, MIGRATIONS) {
            Ok(_) => return Ok(()),
            Err(MigrateError::Sql { .. }) if tries < BUSY_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(50 * u64::from(tries)));
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The connections of one [`super::SqliteDb`].
#[derive(Debug)]
pub(super) struct Pool {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_returned: Condvar,
}

impl Pool {
    /// Opens the file (creating and migrating it) with `readers` readers.
    pub(super) fn open(path: &Path, readers: usize) -> Result<Pool, DbError> {
        let mut writer = connect(path, false)?;
        migrate_shared(&mut writer)?;
        let readers = (0..readers.max(1))
            .map(|_| connect(path, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            reader_returned: Condvar::new(),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding it rolled its transaction back (Transaction's
        // drop), so the connection is fine to reuse.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> ReaderGuard<'_> {
        let mut free = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = free.pop() {
                return ReaderGuard {
                    pool: self,
                    conn: Some(conn),
                };
            }
            free = self
                .reader_returned
                .wait(free)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A reader taken from the pool, put back on drop.
struct ReaderGuard<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut free = self.pool.readers.lock().unwrap_or_else(|p| p.into_inner());
            free.push(conn);
            self.pool.reader_returned.notify_one();
        }
    }
}

/// Runs `f` on a blocking thread, inside one write transaction (`BEGIN
/// IMMEDIATE`, so two processes never deadlock upgrading a read lock),
/// committed if `f` succeeds. Run again while the database is busy, so `f`
/// must only depend on what it reads in the transaction.
pub(super) async fn write<T, F>(
    pool: &Arc<Pool>,
    context: &'static str,
    mut f: F,
) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnMut(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
{
    let pool = Arc::clone(pool);
    blocking(context, move || {
        let mut conn = pool.writer();
        retry_busy(|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql(context))?;
            let out = f(&tx)?;
            tx.commit().map_err(sql(context))?;
            Ok(out)
        })
    })
    .await
}

/// Runs `f` on a blocking thread with a reader, inside one read transaction
/// (one consistent snapshot).
pub(super) async fn read<T, F>(
    pool: &Arc<Pool>,
    context: &'static str,
    mut f: F,
) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnMut(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
{
    let pool = Arc::clone(pool);
    blocking(context, move || {
        let mut guard = pool.reader();
        let conn = guard
            .conn
            .as_mut()
            .expect("a reader guard holds its connection until dropped");
        retry_busy(|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(sql(context))?;
            let out = f(&tx)?;
            tx.finish().map_err(sql(context))?;
            Ok(out)
        })
    })
    .await
}

async fn blocking<T, F>(context: &'static str, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Backend {
            context,
            source: Box::new(e),
        })?
}
