//! `chartsync bench --database postgres://...`: each central the bench
//! starts runs on a PostgreSQL database of its own, made on that server for
//! the run and dropped afterwards (the url's user must be allowed to create
//! databases).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

/// The server given with `--database`, if any.
static SERVER: OnceLock<String> = OnceLock::new();

/// Whether the centrals started now use PostgreSQL (with `--database`,
/// the bench runs SQLite and PostgreSQL side by side and switches).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Centrals started from now on use PostgreSQL (`true`, needs
/// [`set_server`] first) or SQLite.
pub fn set_active(on: bool) {
    ACTIVE.store(on && SERVER.get().is_some(), Ordering::SeqCst);
}

/// Whether centrals started now use PostgreSQL.
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Remembers the server for the run (and makes it active).
pub fn set_server(url: String) -> anyhow::Result<()> {
    chartsync_central::db::postgres::parse_url(&url).context("--database")?;
    SERVER
        .set(url)
        .map_err(|_| anyhow::anyhow!("--database given twice"))?;
    set_active(true);
    Ok(())
}

/// A database made for one bench central; dropped with it.
#[derive(Debug)]
pub struct BenchDb {
    /// Its url.
    pub url: String,
    name: String,
    server: String,
}

async fn admin(server: &str, sql: String) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .context("cannot reach the PostgreSQL server of --database")?;
    let task = tokio::spawn(conn);
    client.batch_execute(&sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// A new database when `--database` was given.
pub async fn create(tag: &str) -> anyhow::Result<Option<BenchDb>> {
    let Some(server) = SERVER.get().filter(|_| active()) else {
        return Ok(None);
    };
    let name = format!(
        "chartsync_bench_{}_{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id()
    );
    admin(
        server,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await?;
    admin(server, format!("CREATE DATABASE {name}")).await?;
    Ok(Some(BenchDb {
        url: with_db(server, &name),
        name,
        server: server.clone(),
    }))
}

/// `url` naming database `db` instead.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[start..].find('/') {
        Some(slash) => &base[..start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let (server, sql) = (
            self.server.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(admin(&server, sql)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}", self.name);
        }
    }
}
