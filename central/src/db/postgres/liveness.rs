//! This process's liveness, as the database sees it: one connection of its
//! own (outside the pool) holding a session-level advisory lock on a random
//! 64-bit key. Every lease the process takes carries that key (`locks.owner`).
//!
//! PostgreSQL ends the session of a client that dies (kill -9 closes its
//! sockets; a machine that vanishes is found by TCP keepalives, which the
//! session asks the server for), and with the session goes the advisory
//! lock. A contender that finds a patient leased under a key whose lock is
//! free therefore knows the holder is gone, whatever server it ran on, and
//! takes the lease over at once instead of waiting for it to expire.
//!
//! A process whose session ends while it still runs (a network cut, a
//! restarted database, an administrator's `pg_terminate_backend`) may have
//! had its leases taken over: from that moment it treats them as lost.
//! [`Liveness::current`] answers `None` until a new session with a new key is
//! open, and a head change on a patient leased under any other key than the
//! current one is refused (see `records::apply`), so a write that was in
//! flight under a lost lease is answered "busy, try again", never
//! published over the new holder's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use super::{Fail, R};
use crate::db::DbError;

/// How often the session is checked from this side.
const PING_EVERY: Duration = Duration::from_secs(2);
/// How long a check may take before the session counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Asks the server to probe this connection when it is silent, so that a
/// client machine that vanishes without closing its socket is found within
/// about 11 s (ignored on Unix sockets).
const SERVER_KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";

/// The liveness session of one process (shared by the clones of its
/// `PgDb`).
pub(super) struct Liveness {
    config: tokio_postgres::Config,
    /// The open session, if any.
    session: Mutex<Option<Arc<Session>>>,
    /// One opener at a time.
    opening: tokio::sync::Mutex<()>,
}

struct Session {
    key: i64,
    /// Set when the connection ended or stopped answering.
    lost: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Liveness {
    /// Sessions to the database of `config`; none is opened yet.
    pub(super) fn new(mut config: tokio_postgres::Config) -> Liveness {
        config.application_name("chartsync central (liveness)");
        Liveness {
            config,
            session: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The key of the live session; `None` when there is none (never
    /// opened, or lost: then this process's leases count as lost).
    pub(super) fn current(&self) -> Option<i64> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        session
            .as_ref()
            .filter(|s| !s.lost.load(Ordering::SeqCst))
            .map(|s| s.key)
    }

    /// The key of the live session, opening one (with a new key) when there
    /// is none.
    pub(super) async fn key(&self) -> R<i64> {
        if let Some(key) = self.current() {
            return Ok(key);
        }
        let _one = self.opening.lock().await;
        if let Some(key) = self.current() {
            return Ok(key);
        }
        let session = self.open().await?;
        let key = session.key;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(session));
        tracing::debug!(key, "liveness session open");
        Ok(key)
    }

    async fn open(&self) -> R<Session> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| {
            Fail::Db(DbError::Backend {
                context: "making a liveness key",
                source: Box::new(e),
            })
        })?;
        let key = i64::from_le_bytes(bytes);
        let (client, connection) = self.config.connect(NoTls).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&lost);
        let driver = tokio::spawn(async move {
            let result = connection.await;
            // Already set when this side closed it (see the checker below).
            if !ended.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    key,
                    error = result.err().map(tracing::field::display),
                    "this process's liveness session with the database ended: its patient leases \
                     count as lost (others may take them over); a new session is opened at the next write"
                );
            }
        });
        // Dropped on failure: the driver is aborted with it.
        let mut session = Session {
            key,
            lost: Arc::clone(&lost),
            tasks: vec![driver],
        };
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await?;
        if let Err(e) = client.batch_execute(SERVER_KEEPALIVES).await {
            tracing::debug!(error = %e, "the server refused keepalive settings for the liveness session");
        }
        let checked = Arc::clone(&lost);
        session.tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(PING_EVERY).await;
                if checked.load(Ordering::SeqCst) {
                    break;
                }
                let answer =
                    tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(answer, Ok(Ok(_))) {
                    if !checked.swap(true, Ordering::SeqCst) {
                        tracing::warn!(
                            key,
                            "this process's liveness session stopped answering: its patient leases \
                             count as lost; a new session is opened at the next write"
                        );
                    }
                    break;
                }
            }
            // Dropping the client closes the session (and frees the key).
            drop(client);
        }));
        Ok(session)
    }
}
