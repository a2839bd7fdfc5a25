//! Tests that need SQLite itself: raw SQL beside the backend, query plans,
//! and the large suite on a file. The backend-neutral suites are in
//! `db/tests.rs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chartsync_protocol::PatientId;
use rusqlite::{Connection, params};

use super::SqliteDb;
use super::scope::{BY_CATCHMENT, BY_CHANGES, BY_GRANTS};
use crate::db::tests::{create, new_commit, new_instance, suite_scale, token};
use crate::db::{CentralDb, DbError, MAX_INSTANCE_ID};

fn fresh() -> (tempfile::TempDir, PathBuf, SqliteDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("central.sqlite");
    let db = SqliteDb::open(&path).expect("open");
    (dir, path, db)
}

/// A second, plain connection to the same file (WAL lets both work).
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open raw");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// The plan SQLite chooses for `sql`, one line per step.
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(unbound), |r| {
        r.get::<_, String>(3)
    })
    .expect("explain")
    .collect::<Result<_, _>>()
    .expect("explain rows")
}

/// Checks `sql` scans no table in full and its plan has every `wanted`
/// step (one of several written `a OR b`).
fn assert_plan(conn: &Connection, sql: &str, wanted: &[&str]) {
    let steps = plan(conn, sql);
    let text = steps.join("\n");
    println!("{sql}\n  -> {}", steps.join(" | "));
    assert!(
        !steps.iter().any(|s| s.starts_with("SCAN")),
        "a full scan in:\n{text}"
    );
    for want in wanted {
        assert!(
            want.split(" OR ").any(|w| text.contains(w)),
            "expected {want:?} in:\n{text}"
        );
    }
}

fn assert_scope_plans(conn: &Connection) {
    assert_plan(
        conn,
        BY_CATCHMENT,
        &["USING INDEX records_catchment_seq (catchment=? AND seq>?)"],
    );
    assert_plan(
        conn,
        BY_GRANTS,
        &[
            "SEARCH g USING PRIMARY KEY (instance=?)",
            "SEARCH r USING PRIMARY KEY (patient=?)",
        ],
    );
    assert_plan(
        conn,
        BY_CHANGES,
        &[
            "SEARCH r USING INDEX records_seq (seq>?)",
            // The primary key or the patient index: one point look-up.
            "SEARCH g EXISTS USING ",
            "(patient=? AND instance=?) OR (instance=? AND patient=?)",
        ],
    );
    assert_plan(
        conn,
        "SELECT head FROM changes WHERE patient = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        &["USING INDEX changes_patient_seq (patient=? AND seq<?)"],
    );
}

#[tokio::test]
async fn scope_queries_use_their_indexes_on_an_empty_database() {
    let (_dir, path, _db) = fresh();
    assert_scope_plans(&raw(&path));
}

/// 100,000 records through `apply`, then pulls and query plans on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_100k_records_in_100_catchments() {
    let started = Instant::now();
    let (_dir, path, db) = fresh();
    suite_scale(&db).await;
    let conn = raw(&path);
    assert_scope_plans(&conn);
    // Statistics change no plan.
    conn.execute_batch("ANALYZE").expect("analyze");
    assert_scope_plans(&conn);
    println!("scale test ran in {:?}", started.elapsed());
}

#[tokio::test]
async fn revoked_instances_are_not_found_by_token() {
    let (_dir, path, db) = fresh();
    let inst = db
        .add_instance(new_instance(None, "gone", &["north"], 7))
        .await
        .expect("add");
    assert!(
        db.instance_by_token(token(7))
            .await
            .expect("lookup")
            .is_some()
    );
    raw(&path)
        .execute(
            "UPDATE instances SET revoked_at = 1 WHERE id = ?1",
            params![inst.id],
        )
        .expect("revoke");
    assert!(
        db.instance_by_token(token(7))
            .await
            .expect("lookup")
            .is_none()
    );
    let all = db.instances().await.expect("instances");
    assert!(all[0].revoked, "still listed, as revoked");
    // Its id stays taken.
    let next = db
        .add_instance(new_instance(None, "next", &[], 8))
        .await
        .expect("add");
    assert_eq!(next.id, inst.id + 1);
}

#[tokio::test]
async fn ids_run_out_after_the_last_one() {
    let (_dir, path, db) = fresh();
    raw(&path)
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO instances (id, name, token_hash, created_at)
             SELECT i, 'bulk', randomblob(32), 0 FROM n",
            params![MAX_INSTANCE_ID],
        )
        .expect("fill");
    let timed = Instant::now();
    let result = db
        .add_instance(new_instance(None, "one too many", &[], 1))
        .await;
    println!(
        "looking for a free id among 65536 took {:?}",
        timed.elapsed()
    );
    assert!(matches!(
        result,
        Err(DbError::IdsExhausted(MAX_INSTANCE_ID))
    ));
    raw(&path)
        .execute("DELETE FROM instances WHERE id = 40000", [])
        .expect("free one");
    let got = db
        .add_instance(new_instance(None, "fits", &[], 1))
        .await
        .expect("add");
    assert_eq!(got.id, 40000);
}

#[tokio::test]
async fn damaged_values_are_reported_not_trusted() {
    let (_dir, path, db) = fresh();
    let id = PatientId::random();
    db.apply(&[create(id, new_commit(), None, None)])
        .await
        .expect("create");
    let conn = raw(&path);
    conn.execute(
        "UPDATE records SET head = 'not a hash' WHERE patient = ?1",
        params![&id.as_bytes()[..]],
    )
    .expect("damage");
    assert!(matches!(
        db.records(&[id]).await,
        Err(DbError::Damaged("records.head"))
    ));
    conn.execute("UPDATE ref_pending SET patient = x'00'", [])
        .expect("damage");
    assert!(matches!(
        db.ref_pending().await,
        Err(DbError::Damaged("ref_pending.patient"))
    ));
    conn.execute("UPDATE counters SET value = -1", [])
        .expect("damage");
    assert!(matches!(
        db.counts().await,
        Err(DbError::Damaged("counters.seq"))
    ));
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrates_once() {
    let (dir, path, db) = fresh();
    let id = PatientId::random();
    let head = new_commit();
    db.apply(&[create(id, head, Some("north"), None)])
        .await
        .expect("create");
    drop(db);
    let again = SqliteDb::open(&path).expect("reopen");
    let row = again.records(&[id]).await.expect("records")[0]
        .clone()
        .expect("kept");
    assert_eq!(row.head, head);
    let versions: i64 = raw(&path)
        .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
        .expect("versions");
    assert_eq!(versions, super::MIGRATIONS.len() as i64);
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    drop(dir);
}

/// Several processes starting at once on a new file: one migrates, the
/// others wait or run again and find it done.
#[tokio::test]
async fn handles_opened_at_once_on_a_new_file_all_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("central.sqlite");
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || SqliteDb::open(&path))
        })
        .collect();
    for opener in openers {
        let db = opener.join().expect("thread").expect("open");
        assert_eq!(db.counts().await.expect("counts").seq, 0);
    }
}

#[tokio::test]
async fn a_database_of_the_first_schema_upgrades_with_its_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("central.sqlite");
    {
        let mut conn = Connection::open(&path).expect("open");
        chartsync_common::sqlite::migrate(&mut conn, &super::MIGRATIONS[..1]).expect("schema 1");
        conn.execute(
            "INSERT INTO instances (id, name, token_hash, created_at) VALUES (4, 'old', ?1, 0)",
            params![&token(4)[..]],
        )
        .expect("an instance of the old schema");
    }
    let db = SqliteDb::open(&path).expect("upgrade");
    let old = db
        .instance_by_token(token(4))
        .await
        .expect("lookup")
        .expect("kept");
    assert_eq!((old.id, old.name.as_str(), old.last_seen), (4, "old", None));
    let before = db.instances_version().await.expect("version");
    db.revoke_instance(4).await.expect("revoke");
    assert_ne!(db.instances_version().await.expect("version"), before);
    assert!(
        db.instance_by_token(token(4))
            .await
            .expect("lookup")
            .is_none()
    );
}

#[tokio::test]
async fn the_database_and_its_wal_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path, db) = fresh();
    db.apply(&[create(PatientId::random(), new_commit(), None, None)])
        .await
        .expect("a write, so the WAL exists");
    for name in ["central.sqlite", "central.sqlite-wal", "central.sqlite-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    drop(db);
    drop(path);
}

/// A block's members are read in its range of the primary key, never by
/// a scan.
#[test]
fn duplicate_blocks_are_read_in_their_range_of_the_index() {
    let (_dir, path, _db) = fresh();
    let conn = raw(&path);
    for max_block in [1, 100] {
        let sql = super::duplicates::block_sql(max_block);
        let text = plan(&conn, &sql).join("\n");
        assert!(!text.contains("SCAN duplicate_members"), "{text}");
        assert!(
            text.contains("SEARCH duplicate_members USING PRIMARY KEY (key>? AND key<?)"),
            "{text}"
        );
    }
}

/// The migration to the index by block empties the duplicate index and
/// starts indexing again from the first change, keeping the pairs listed
/// and the dismissals.
#[tokio::test]
async fn the_duplicate_index_of_schema_5_is_rebuilt_keeping_pairs_and_dismissals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("central.sqlite");
    let (a, b, c) = (
        *PatientId::random().as_bytes(),
        *PatientId::random().as_bytes(),
        *PatientId::random().as_bytes(),
    );
    {
        let mut conn = Connection::open(&path).expect("open");
        chartsync_common::sqlite::migrate(&mut conn, &super::MIGRATIONS[..5]).expect("schema 5");
        conn.execute_batch(
            "INSERT INTO duplicate_keys (key, patient) VALUES ('n:ann', x'01010101010101010101010101010101');
             INSERT INTO duplicate_blocks (key, size) VALUES ('n:ann', 1);
             INSERT INTO duplicate_people (patient, person, keys)
                 VALUES (x'01010101010101010101010101010101', '{}', '[\"n:ann\"]');
             UPDATE duplicate_cursor SET seq = 9;",
        )
        .expect("an index of the old schema");
        conn.execute(
            "INSERT INTO duplicate_pairs (a, b, score, fields) VALUES (?1, ?2, 0.9, '[]')",
            params![&a[..], &b[..]],
        )
        .expect("pair");
        conn.execute(
            "INSERT INTO duplicate_dismissed (a, b, dismissed_at) VALUES (?1, ?2, 1)",
            params![&b[..], &c[..]],
        )
        .expect("dismissed");
    }
    let db = SqliteDb::open(&path).expect("upgrade");
    assert_eq!(db.duplicates_cursor().await.expect("cursor"), 0);
    let pairs = db.duplicate_pairs(0.0, 0, 10).await.expect("pairs");
    assert_eq!(pairs.len(), 1);
    let key = crate::db::DuplicateKey {
        coarse: "n:ann".to_owned(),
        fine: None,
        finest: None,
    };
    assert!(
        db.duplicate_candidates(vec![key], 10)
            .await
            .expect("candidates")
            .is_empty()
    );
    let conn = raw(&path);
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(count("duplicate_dismissed"), 1);
    assert_eq!(count("duplicate_people"), 0);
    for gone in ["duplicate_keys", "duplicate_blocks"] {
        let exists: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
                params![gone],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(exists, 0, "{gone}");
    }
}
