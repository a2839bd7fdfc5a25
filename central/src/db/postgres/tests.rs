//! PostgreSQL test databases, and tests that need PostgreSQL itself.
//!
//! Every test makes a database of its own (a unique name) on the server
//! named by `CHARTSYNC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards.
//! A server that cannot be reached fails the test: it is never skipped.

use super::PgDb;

/// The server tests use.
pub(crate) fn admin_url() -> String {
    std::env::var("CHARTSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database made for one test, dropped with it.
#[derive(Debug)]
pub(crate) struct TestDb {
    /// Its url.
    pub(crate) url: String,
    name: String,
}

impl TestDb {
    /// A new, empty database.
    pub(crate) async fn new() -> TestDb {
        let name = format!(
            "chartsync_test_{}",
            chartsync_protocol::PatientId::random()
                .to_string()
                .replace('-', "")
        );
        let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} cannot be reached (set CHARTSYNC_TEST_POSTGRES): {e}",
                    admin_url()
                )
            });
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        drop(client);
        let _ = task.await;
        let url = url_with_db(&admin_url(), &name);
        TestDb { url, name }
    }

    /// A handle on it (migrated).
    pub(crate) async fn open(&self) -> PgDb {
        PgDb::open(&self.url).await.expect("open the test database")
    }
}

/// `url` with its database name replaced.
pub(crate) fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a
        // thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let (client, conn) =
                    tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
                let task = tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                drop(client);
                let _ = task.await;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

#[tokio::test]
async fn migrate_is_idempotent_and_refuses_a_newer_schema() {
    let test = TestDb::new().await;
    let db = test.open().await;
    assert_eq!(db.migrate().await.expect("again"), super::SCHEMA_VERSION);
    // Two processes migrating at once: one waits for the other.
    let (a, b) = tokio::join!(db.migrate(), test.open());
    assert_eq!(a.expect("a"), super::SCHEMA_VERSION);
    drop(b);
    let (client, conn) = tokio_postgres::connect(&test.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
            &[],
        )
        .await
        .expect("insert");
    let err = PgDb::open(&test.url).await.expect_err("too new");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = PgDb::open("postgres://postgres@127.0.0.1:1/none?connect_timeout=2")
        .await
        .expect_err("unreachable");
    assert!(err.to_string().contains("database"), "{err}");
    let err = PgDb::open("postgres://postgres@127.0.0.1:5432/db?sslmode=bogus")
        .await
        .expect_err("bad url");
    assert!(err.to_string().contains("url"), "{err}");
}

#[test]
fn test_urls_name_the_database() {
    assert_eq!(
        url_with_db("postgres://u@h:1/postgres", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(url_with_db("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(
        url_with_db("postgres://u@h/p?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
