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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_opens_no_more_connections_than_configured() {
    use crate::db::CentralDb;
    let test = TestDb::new().await;
    let db = std::sync::Arc::new(PgDb::open_with(&test.url, 4).await.expect("open"));
    let ids: Vec<chartsync_protocol::PatientId> = (0..50)
        .map(|_| chartsync_protocol::PatientId::random())
        .collect();
    // 40 readers at once: they queue for the 4 connections, none fails.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (db, ids) = (std::sync::Arc::clone(&db), ids.clone());
            tokio::spawn(async move { db.records(&ids).await.map(|rows| rows.len()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("read"), 50);
    }
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let name = test.url.rsplit('/').next().unwrap_or_default().to_owned();
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        (1..=5).contains(&open),
        "4 for work and at most one for the liveness key, not {open}"
    );
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

/// Runs `sql` (with one BIGINT parameter) on the test database as another
/// client; returns the first column of each row.
async fn pids_of(url: &str, sql: &str, key: i64) -> Vec<i32> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let rows = client.query(sql, &[&key]).await.expect("query");
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}

/// The backend holding liveness key `key`'s advisory lock.
const LIVENESS_PID: &str = "SELECT pid FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND objsubid = 1
    AND ((classid::int8 << 32) | objid::int8) = $1";

/// Tries `db.try_lock(id)` for `holder` until it is taken or `within` has
/// passed; returns how long it took.
async fn lock_within(
    db: &PgDb,
    id: chartsync_protocol::PatientId,
    holder: &str,
    within: std::time::Duration,
) -> Option<std::time::Duration> {
    use crate::db::CentralDb;
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        let got = db
            .try_lock(&[id], holder, std::time::Duration::from_secs(60))
            .await
            .expect("try_lock");
        if got == vec![true] {
            return Some(start.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// Leases of a process whose database session ended go to the next
/// contender at once (not after the 60 s lease), on any server; and a
/// process cut off from the database while it still runs cannot publish
/// under the lease it lost, even where its expected head still matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_an_ended_session_are_taken_over_and_fenced() {
    use crate::db::tests::{create, new_commit, update};
    use crate::db::{Applied, CentralDb};
    use std::time::Duration;

    let test = TestDb::new().await;
    let (a, b) = (test.open().await, test.open().await);
    let long = Duration::from_secs(60);
    let p = chartsync_protocol::PatientId::random();
    let first = new_commit();
    assert_eq!(a.try_lock(&[p], "a", long).await.expect("lock"), vec![true]);
    assert!(matches!(
        a.apply(&[create(p, first, None, None)])
            .await
            .expect("apply")[0],
        Applied::Ok { .. }
    ));
    // While a's session lives, its lease holds (and b cannot write p).
    assert_eq!(
        b.try_lock(&[p], "b", long).await.expect("lock"),
        vec![false]
    );
    assert_eq!(
        b.try_lock(&[p], "b", long).await.expect("lock"),
        vec![false]
    );
    let b_key = b.liveness.current().expect("b's session is open");
    assert!(matches!(
        b.apply(&[update(p, first, new_commit(), None, None)])
            .await
            .expect("apply")[0],
        Applied::Stale { .. }
    ));

    // a's liveness session is ended under it (a network cut, an
    // administrator): a still runs, but b takes the lease over at once.
    let a_key = a.liveness.current().expect("a's session is open");
    let pids = pids_of(&test.url, LIVENESS_PID, a_key).await;
    assert_eq!(pids.len(), 1, "one backend holds a's key");
    pids_of(
        &test.url,
        "SELECT pid FROM (SELECT $1::int8::int4 AS pid) AS t WHERE pg_terminate_backend(pid)",
        i64::from(pids[0]),
    )
    .await;
    let took = lock_within(&b, p, "b", Duration::from_secs(10))
        .await
        .expect("b takes over the lease of a's ended session");
    assert!(took < Duration::from_secs(10));
    // a's write in flight under the lost lease is refused, though its
    // expected head is still the current one; b's goes in.
    let mine = new_commit();
    assert!(matches!(
        a.apply(&[update(p, first, new_commit(), None, None)])
            .await
            .expect("apply")[0],
        Applied::Stale { current: Some(h) } if h == first
    ));
    assert!(matches!(
        b.apply(&[update(p, first, mine, None, None)])
            .await
            .expect("apply")[0],
        Applied::Ok { .. }
    ));
    // a comes back with a new key; b's lease holds against it.
    assert_eq!(
        a.try_lock(&[p], "a", long).await.expect("lock"),
        vec![false]
    );
    let new_key = a.liveness.current().expect("a opened a new session");
    assert_ne!(new_key, a_key);
    assert_eq!(b.liveness.current(), Some(b_key));
    b.unlock(&[p], "b").await.expect("unlock");
    assert_eq!(a.try_lock(&[p], "a", long).await.expect("lock"), vec![true]);
    assert!(matches!(
        a.apply(&[update(p, mine, new_commit(), None, None)])
            .await
            .expect("apply")[0],
        Applied::Ok { .. }
    ));

    // A process that dies (its connections close): its lease goes too.
    let q = chartsync_protocol::PatientId::random();
    let c = test.open().await;
    assert_eq!(c.try_lock(&[q], "c", long).await.expect("lock"), vec![true]);
    assert_eq!(
        b.try_lock(&[q], "b", long).await.expect("lock"),
        vec![false]
    );
    drop(c);
    lock_within(&b, q, "b", Duration::from_secs(10))
        .await
        .expect("b takes over the lease of a process that is gone");
}
