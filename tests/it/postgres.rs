//! Central on PostgreSQL: several `chartsync central serve` processes, each
//! with a data_dir of its own, sharing one database (a database made for
//! the test on the server named by `CHARTSYNC_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards; a
//! server that cannot be reached fails the test).

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::daemon::{Daemon, command, wait_healthy};
use crate::support::{client, free_port};

const ADMIN: &str = "test-admin-token-0123456789abcdef";

fn admin_url() -> String {
    std::env::var("CHARTSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
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

/// A database of the test's own, dropped with it.
pub struct TestDb {
    pub url: String,
    name: String,
}

async fn admin_sql(sql: String) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(&sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("chartsync_it_{}", uuid::Uuid::new_v4().simple());
        admin_sql(format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} cannot be reached (set CHARTSYNC_TEST_POSTGRES): {e}",
                    admin_url()
                )
            });
        TestDb {
            url: with_db(&admin_url(), &name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(admin_sql(sql))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// A central configuration on `db`, data in `dir`, listening on `port`.
pub fn write_config(dir: &Path, name: &str, port: u16, db: &str) -> std::path::PathBuf {
    write_config_with(dir, name, port, db, "")
}

/// [`write_config`] with `extra` sections (say `[locks]`) at the end.
pub fn write_config_with(
    dir: &Path,
    name: &str,
    port: u16,
    db: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n[database]\nurl = \"{db}\"\n{extra}",
            dir.join(name).display()
        ),
    )
    .expect("write config");
    path
}

/// A client of the test's database (for what the test watches or holds).
async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

/// How many patient leases the central process `pid` holds now (its lease
/// holder name is `host:pid:random`).
async fn leases_of(sql: &tokio_postgres::Client, pid: u32) -> i64 {
    leases_besides(sql, pid, &[]).await
}

/// How many patient leases the central process `pid` holds now on other
/// patients than `besides` (ids as stored).
async fn leases_besides(sql: &tokio_postgres::Client, pid: u32, besides: &[Vec<u8>]) -> i64 {
    sql.query_one(
        "SELECT count(*) FROM locks WHERE holder LIKE $1 AND patient <> ALL($2)",
        &[&format!("%:{pid}:%"), &besides],
    )
    .await
    .expect("count leases")
    .get(0)
}

/// Runs the binary; returns its standard output (it must succeed).
pub fn run_ok(args: &[&str]) -> String {
    let out = command(args, false).output().expect("run");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A central process serving `config` on `port`; waits until it answers.
pub async fn serve(config: &Path, port: u16) -> (Daemon, String) {
    let daemon = Daemon::start(
        &[
            "central",
            "serve",
            "--config",
            config.to_str().expect("path"),
        ],
        false,
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&client(), &url).await;
    (daemon, url)
}

async fn get(http: &reqwest::Client, url: &str, id: &str) -> (StatusCode, Value, String) {
    let r = http
        .get(format!("{url}/v1/patients/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("get");
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().expect("etag").to_owned())
        .unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_centrals_share_one_database() {
    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b) = (free_port(), free_port());
    let a = write_config(dir.path(), "a", port_a, &test.url);
    // b leaves duplicate indexing to a (`[duplicates] index = false`): the
    // indexer reads every new record, and the test checks below that b
    // sends new records without building copies of them.
    let b = write_config_with(
        dir.path(),
        "b",
        port_b,
        &test.url,
        "[duplicates]\nindex = false\n",
    );

    let migrated: Value = serde_json::from_str(&run_ok(&[
        "central",
        "migrate",
        "--config",
        a.to_str().expect("a"),
    ]))
    .expect("json");
    assert_eq!(migrated["database"], "postgres");
    assert!(migrated["schema_version"].as_u64().expect("version") >= 5);
    let added: Value = serde_json::from_str(&run_ok(&[
        "central",
        "instance",
        "add",
        "--config",
        b.to_str().expect("b"),
        "--name",
        "north",
        "--catchment",
        "north",
    ]))
    .expect("json");
    let token = added["token"].as_str().expect("token").to_owned();

    let ((_da, url_a), (_db, url_b)) = (serve(&a, port_a).await, serve(&b, port_b).await);
    let http = client();

    // Written through one process, read through the other: the second
    // builds its copy of the record from the database.
    let r = http
        .post(format!("{url_a}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\ncatchment: north\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, body, etag) = get(&http, &url_b, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["files"], created["files"]);
    assert_eq!(body["head"], created["head"]);

    // Edits alternate between the processes; each builds on the other's.
    let mut etag = etag;
    for (n, url) in [&url_b, &url_a, &url_b, &url_a].into_iter().enumerate() {
        let yaml = format!("given_name: Ann\ncatchment: north\nvisits: {n}\n");
        let r = http
            .put(format!("{url}/v1/patients/{id}"))
            .bearer_auth(ADMIN)
            .header("if-match", &etag)
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::OK, "edit {n} through {url}");
        etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    }
    for url in [&url_a, &url_b] {
        let (status, body, now) = get(&http, url, &id).await;
        assert_eq!((status, now.as_str()), (StatusCode::OK, etag.as_str()));
        assert!(
            body["files"]["patient.yaml"]
                .as_str()
                .expect("yaml")
                .contains("visits: 3")
        );
        let history: Vec<Value> = http
            .get(format!("{url}/v1/patients/{id}/history"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        assert_eq!(history.len(), 5, "the whole history through {url}");
    }
    // A stale write through the other process is refused.
    let r = http
        .put(format!("{url_b}/v1/patients/{id}"))
        .bearer_auth(ADMIN)
        .header(
            "if-match",
            format!("\"{}\"", created["head"].as_str().expect("head")),
        )
        .json(&json!({"files": {"patient.yaml": "given_name: Bob\n"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // The record as a plain git repository, rebuilt from the database.
    let out = dir.path().join("export");
    let exported: Value = serde_json::from_str(&run_ok(&[
        "central",
        "export",
        &id,
        "--config",
        b.to_str().expect("b"),
        "--to",
        out.to_str().expect("out"),
    ]))
    .expect("json");
    assert_eq!(
        format!("\"{}\"", exported["head"].as_str().expect("head")),
        etag
    );
    check_export(&out, &etag, 5, "visits: 3");

    // The instance registered through the CLI on b's configuration
    // authenticates at a, and reads the record in its catchment there.
    let r = http
        .get(format!("{url_a}/v1/patients/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get as instance");
    assert_eq!(r.status(), StatusCode::OK);

    // A clinic's first fetch through a process that has no copy of the
    // records: records whose history is their creation are sent from the
    // database as they are, without a copy being built (the edited one
    // from the copy that process holds).
    let mut new = Vec::new();
    for name in ["Bea", "Cem"] {
        let r = http
            .post(format!("{url_a}/v1/patients"))
            .bearer_auth(ADMIN)
            .json(&json!({"files": {"patient.yaml": format!("given_name: {name}\ncatchment: north\n")}}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        new.push((
            body["id"].as_str().expect("id").to_owned(),
            body["files"]["patient.yaml"].clone(),
        ));
    }
    let instance = added["id"].as_u64().expect("instance id") as u32;
    let sat = crate::support::TestSatellite::builder(dir.path().join("clinic"))
        .central(&url_b)
        .instance(instance, &token)
        .start()
        .await;
    sat.sync(&[chartsync_satellite::jobs::Job::FetchNew]).await;
    let copies = chartsync_store::Layout::new(dir.path().join("b"));
    for (new_id, yaml) in &new {
        let (status, body, _) = sat.get(&http, new_id).await;
        assert_eq!(status, StatusCode::OK, "{new_id} fetched");
        assert_eq!(&body["files"]["patient.yaml"], yaml);
        let parsed: chartsync_protocol::PatientId = new_id.parse().expect("id");
        assert!(
            !copies.repo(&parsed).exists(),
            "no copy of {new_id} was built to send it"
        );
    }
    let (status, body, held) = sat.get(&http, &id).await;
    assert_eq!((status, held.as_str()), (StatusCode::OK, etag.as_str()));
    assert!(
        body["files"]["patient.yaml"]
            .as_str()
            .expect("yaml")
            .contains("visits: 3")
    );
    sat.stop().await;
}

/// `dir` is a plain git repository at `etag` with `commits` commits and
/// `patient.yaml` holding `text`.
pub fn check_export(dir: &Path, etag: &str, commits: usize, text: &str) {
    let repo = git2::Repository::open(dir).expect("a git repository");
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    assert_eq!(format!("\"{}\"", head.id()), etag);
    let mut walk = repo.revwalk().expect("walk");
    walk.push(head.id()).expect("push");
    assert_eq!(walk.count(), commits);
    let yaml = std::fs::read_to_string(dir.join("patient.yaml")).expect("checked out");
    assert!(yaml.contains(text), "{yaml}");
    assert!(repo.remotes().expect("remotes").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_on_sqlite_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let (_d, url) = serve(&path, port).await;
    let http = client();
    let r = http
        .post(format!("{url}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let config = path.to_str().expect("path");
    let out = dir.path().join("out");
    let migrated: Value =
        serde_json::from_str(&run_ok(&["central", "migrate", "--config", config])).expect("json");
    assert_eq!(migrated["database"], "sqlite");
    run_ok(&[
        "central",
        "export",
        &id,
        "--config",
        config,
        "--to",
        out.to_str().expect("out"),
    ]);
    check_export(&out, &etag, 1, "given_name: Ann");
    // A folder in use, an unknown record, a bad id: refused, nothing written.
    for (args, says) in [
        (
            vec![id.as_str(), "--to", out.to_str().expect("out")],
            "not empty",
        ),
        (
            vec![
                "00000000-0000-4000-8000-000000000000",
                "--to",
                "/tmp/never-written-by-chartsync",
            ],
            "no patient record",
        ),
        (
            vec!["not-a-uuid", "--to", "/tmp/never-written-by-chartsync"],
            "not a patient id",
        ),
    ] {
        let mut all = vec!["central", "export", "--config", config];
        all.extend(args);
        let out = command(&all, false).output().expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    assert!(!Path::new("/tmp/never-written-by-chartsync").exists());
}

/// A central on SQLite in `dir/name`, listening on `port`.
fn sqlite_config(dir: &Path, name: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n",
            dir.join(name).display()
        ),
    )
    .expect("config");
    path
}

async fn put(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
    etag: &str,
    yaml: &str,
) -> (StatusCode, String) {
    let r = http
        .put(format!("{url}/v1/patients/{id}"))
        .bearer_auth(token)
        .header("if-match", etag)
        .json(&json!({"files": {"patient.yaml": yaml}}))
        .send()
        .await
        .expect("put");
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().expect("etag").to_owned())
        .unwrap_or_default();
    (status, etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_sqlite_to_postgres_and_back() {
    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = client();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let old = sqlite_config(dir.path(), "old", p1);
    let pg = write_config(dir.path(), "pg", p2, &test.url);
    let back = sqlite_config(dir.path(), "back", p3);
    let s = |p: &std::path::PathBuf| p.to_str().expect("path").to_owned();

    // An SQLite central with an instance, a record it created and one HQ
    // edited three times.
    let added: Value = serde_json::from_str(&run_ok(&[
        "central",
        "instance",
        "add",
        "--config",
        &s(&old),
        "--name",
        "north",
        "--catchment",
        "north",
    ]))
    .expect("json");
    let token = added["token"].as_str().expect("token").to_owned();
    let (daemon, url) = serve(&old, p1).await;
    let r = http
        .post(format!("{url}/v1/patients"))
        .bearer_auth(&token)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let ann = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = http
        .post(format!("{url}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Bob\ncatchment: south\n"}}))
        .send()
        .await
        .expect("post");
    let mut bob_etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let bob = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for n in 0..2 {
        let (status, etag) = put(
            &http,
            &url,
            ADMIN,
            &bob,
            &bob_etag,
            &format!("given_name: Bob\ncatchment: south\nvisits: {n}\n"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        bob_etag = etag;
    }
    drop(daemon);

    // SQLite to PostgreSQL.
    let counts: Value = serde_json::from_str(&run_ok(&[
        "central",
        "copy",
        "--from",
        &s(&old),
        "--to",
        &s(&pg),
    ]))
    .expect("json");
    assert_eq!(counts["records"], 2, "{counts}");
    assert_eq!(counts["commits"], 4, "{counts}");
    assert_eq!(counts["instances"], 1, "{counts}");
    assert_eq!(counts["seq"], 4, "{counts}");
    assert_eq!(counts["verified"], true, "{counts}");
    // A target that is not empty is refused, and left as it was.
    let out = command(
        &["central", "copy", "--from", &s(&old), "--to", &s(&pg)],
        false,
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));

    // The PostgreSQL central serves the copy from an empty data_dir: the
    // instance's token works, its grant too, the history is whole, and the
    // change sequence goes on.
    let (daemon, url) = serve(&pg, p2).await;
    let (status, _, _) = get(&http, &url, &bob).await;
    assert_eq!(status, StatusCode::OK);
    let r = http
        .get(format!("{url}/v1/patients/{ann}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the creator's grant was copied");
    let history: Vec<Value> = http
        .get(format!("{url}/v1/patients/{bob}/history"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history.len(), 3);
    let (status, etag) = put(
        &http,
        &url,
        ADMIN,
        &bob,
        &bob_etag,
        "given_name: Bob\ncatchment: south\nvisits: 9\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    drop(daemon);

    // And back to a new SQLite central.
    let counts: Value = serde_json::from_str(&run_ok(&[
        "central",
        "copy",
        "--from",
        &s(&pg),
        "--to",
        &s(&back),
    ]))
    .expect("json");
    assert_eq!(
        (
            counts["records"].as_u64(),
            counts["commits"].as_u64(),
            counts["seq"].as_u64()
        ),
        (Some(2), Some(5), Some(5)),
        "{counts}"
    );
    let (_daemon, url) = serve(&back, p3).await;
    let (status, body, now) = get(&http, &url, &bob).await;
    assert_eq!((status, now), (StatusCode::OK, etag));
    assert!(
        body["files"]["patient.yaml"]
            .as_str()
            .expect("yaml")
            .contains("visits: 9")
    );
}

/// HAProxy in front of `backends`, listening on `port` (Debian's haproxy;
/// `.ci/run` installs it).
fn haproxy(dir: &Path, port: u16, backends: &[u16]) -> crate::support::KillOnDrop {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(n, p)| format!("    server c{n} 127.0.0.1:{p} check inter 500ms fall 2 rise 2\n"))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    \
             option redispatch\n    retries 3\n\
             frontend f\n    bind 127.0.0.1:{port}\n    default_backend centrals\n\
             backend centrals\n    balance roundrobin\n    option httpchk GET /healthz\n{servers}"
        ),
    )
    .expect("haproxy config");
    let child = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy; .ci/run installs it)");
    crate::support::KillOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_centrals_behind_haproxy() {
    use chartsync_satellite::jobs::Job;

    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = client();
    let ports = [free_port(), free_port(), free_port()];
    let configs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(n, p)| write_config(dir.path(), &format!("c{n}"), *p, &test.url))
        .collect();
    run_ok(&[
        "central",
        "migrate",
        "--config",
        configs[0].to_str().expect("c"),
    ]);
    let mut ids = Vec::new();
    for name in ["north-a", "north-b"] {
        let added: Value = serde_json::from_str(&run_ok(&[
            "central",
            "instance",
            "add",
            "--config",
            configs[1].to_str().expect("c"),
            "--name",
            name,
            "--catchment",
            "north",
        ]))
        .expect("json");
        ids.push((
            added["id"].as_u64().expect("id") as u32,
            added["token"].as_str().expect("token").to_owned(),
        ));
    }
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for (config, port) in configs.iter().zip(ports) {
        let (d, url) = serve(config, port).await;
        daemons.push(d);
        urls.push(url);
    }
    let lb_port = free_port();
    let _lb = haproxy(dir.path(), lb_port, &ports);
    let lb = format!("http://127.0.0.1:{lb_port}");
    wait_healthy(&http, &lb).await;

    // A patient, then 16 writers on it, each through a different process
    // in turn, each adding its own line and retrying when it is stale or
    // busy: every edit lands, none is lost.
    let r = http
        .post(format!("{lb}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\ncatchment: north\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (http, url, id) = (http.clone(), urls[w % 3].clone(), id.clone());
        writers.push(tokio::spawn(async move {
            for attempt in 0..400 {
                let (status, body, etag) = get(&http, &url, &id).await;
                if status != StatusCode::OK {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                let yaml = format!(
                    "{}writer_{w}: {attempt}\n",
                    body["files"]["patient.yaml"].as_str().expect("yaml")
                );
                match put(&http, &url, ADMIN, &id, &etag, &yaml).await.0 {
                    StatusCode::OK => return attempt,
                    StatusCode::PRECONDITION_FAILED | StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(std::time::Duration::from_millis(5 * (w as u64 % 4)))
                            .await;
                    }
                    other => panic!("writer {w}: {other}"),
                }
            }
            panic!("writer {w} never got its edit in");
        }));
    }
    let mut retries = 0;
    for writer in writers {
        retries += writer.await.expect("writer");
    }
    println!("16 writers on one patient through 3 processes: {retries} stale retries in all");
    for url in urls.iter().chain([&lb]) {
        let (status, body, _) = get(&http, url, &id).await;
        assert_eq!(status, StatusCode::OK);
        let yaml = body["files"]["patient.yaml"].as_str().expect("yaml");
        for w in 0..16 {
            assert!(
                yaml.contains(&format!("writer_{w}:")),
                "writer {w} lost through {url}:\n{yaml}"
            );
        }
    }

    // Satellites through the balancer: one pushes, the other fetches it.
    let sats = [
        crate::support::TestSatellite::builder(dir.path().join("sat-a"))
            .central(&lb)
            .instance(ids[0].0, &ids[0].1)
            .start()
            .await,
        crate::support::TestSatellite::builder(dir.path().join("sat-b"))
            .central(&lb)
            .instance(ids[1].0, &ids[1].1)
            .start()
            .await,
    ];
    let (made, _) = sats[0]
        .create(&http, "given_name: Bea\ncatchment: north\n")
        .await;
    assert_eq!(sats[0].sync(&[Job::Push]).await.records_sent, 1);
    let got = sats[1].sync(&[Job::FetchNew]).await;
    assert!(got.records_received >= 2, "{got:?}");
    assert_eq!(sats[1].get(&http, &made).await.0, StatusCode::OK);

    // kill -9 of one process in the middle of writes: what it
    // acknowledged is there through the others; the rest still serve.
    // Four clients create records through it without pause; it is killed
    // once several were acknowledged, with requests in flight.
    let victim = urls[0].clone();
    let acked: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, url, acked) = (http.clone(), victim.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let Ok(r) = http
                    .post(format!("{url}/v1/patients"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"files": {"patient.yaml": format!("given_name: P{c}x{n}\n")}}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != StatusCode::CREATED {
                    return;
                }
                let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let id = body["id"].as_str().expect("id").to_owned();
                acked.lock().expect("lock").push((id, etag));
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "no creations acknowledged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut dead = daemons.remove(0);
    dead.child.kill().expect("kill -9");
    let _ = dead.child.wait();
    for c in clients {
        c.await.expect("client");
    }
    let acknowledged = acked.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 8);
    for (id, etag) in &acknowledged {
        for url in [&urls[1], &urls[2]] {
            let (status, _, now) = get(&http, url, id).await;
            assert_eq!(
                (status, now.as_str()),
                (StatusCode::OK, etag.as_str()),
                "{id} through {url}"
            );
        }
    }
    println!(
        "kill -9 with creations in flight: all {} acknowledged readable through the other processes",
        acknowledged.len()
    );
    // The balancer stops sending to the dead process once its health check
    // fails (within about a second); a client retries meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the balancer does not serve"
        );
        let r = http
            .get(format!("{lb}/v1/patients/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => ok_in_a_row += 1,
            _ => {
                ok_in_a_row = 0;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A central whose database goes away answers `/healthz` with 503 (so a
/// load balancer stops sending it requests), and 200 while it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_when_the_database_is_gone() {
    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), "a", port, &test.url);
    let (_daemon, url) = serve(&config, port).await;
    let http = client();
    let health = || async {
        let r = http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .expect("healthz");
        (r.status(), r.text().await.expect("body"))
    };
    assert_eq!(health().await, (StatusCode::OK, "ok\n".to_owned()));

    // The database is dropped under it (its connections are ended too).
    admin_sql(format!("DROP DATABASE {} WITH (FORCE)", test.name))
        .await
        .expect("drop the database");
    let (status, body) = health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.starts_with("not healthy: the database"), "{body}");
}

/// Issue 11: a patient whose lease holder died mid-write is writable
/// through another process at once, far within the lease (60 s here), and
/// the acknowledged history is whole. Process a is stopped mid-write by
/// holding the change sequence's row from the test (its write then holds
/// the patient's lease, its record staged, its transaction waiting), then
/// killed with SIGKILL. Process b was started before a died, so b never
/// runs its start-up release of same-machine dead holders (the /proc
/// shortcut): what frees the lease is a's ended database session, which
/// works the same across servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_patient_is_writable_through_another_process_within_the_lease() {
    use std::time::{Duration, Instant};

    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b) = (free_port(), free_port());
    let locks = "[locks]\nlease_secs = 60\nwait_secs = 1\n";
    let a = write_config_with(dir.path(), "a", port_a, &test.url, locks);
    let b = write_config_with(dir.path(), "b", port_b, &test.url, locks);
    run_ok(&["central", "migrate", "--config", a.to_str().expect("a")]);
    let ((mut proc_a, url_a), (_proc_b, url_b)) =
        (serve(&a, port_a).await, serve(&b, port_b).await);
    let http = client();

    // A record with edits acknowledged through both processes.
    let r = http
        .post(format!("{url_b}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut yaml = "given_name: Ann\n".to_owned();
    for (n, url) in [&url_a, &url_b, &url_a].into_iter().enumerate() {
        yaml.push_str(&format!("visit_{n}: acknowledged\n"));
        let (status, now) = put(&http, url, ADMIN, &id, &etag, &yaml).await;
        assert_eq!(status, StatusCode::OK);
        etag = now;
    }

    // a's next write stops mid-way: the test holds the sequence row.
    let hold = sql_client(&test.url).await;
    hold.batch_execute("BEGIN; SELECT value FROM counters WHERE name = 'seq' FOR UPDATE")
        .await
        .expect("hold the sequence row");
    let watch = sql_client(&test.url).await;
    let in_flight = {
        let (http, url, id, etag) = (http.clone(), url_a.clone(), id.clone(), etag.clone());
        let yaml = format!("{yaml}visit_3: in flight when a died\n");
        tokio::spawn(async move {
            http.put(format!("{url}/v1/patients/{id}"))
                .bearer_auth(ADMIN)
                .header("if-match", etag)
                .json(&json!({"files": {"patient.yaml": yaml}}))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let pid = proc_a.child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("waiting backends")
            .get(0);
        if leases_of(&watch, pid).await == 1 && waiting >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "a's write never got its lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proc_a.child.kill().expect("kill -9");
    proc_a.child.wait().expect("reap");
    hold.batch_execute("ROLLBACK").await.expect("let go");
    let answer = in_flight.await.expect("request task");
    assert!(
        !matches!(answer, Ok(StatusCode::OK)),
        "a answered {answer:?} though it was killed mid-write"
    );
    assert_eq!(
        leases_of(&watch, pid).await,
        1,
        "the dead process's lease is there"
    );

    // Through b: the patient is writable at once (b's lock wait is 1 s; the
    // lease would hold it for 60 s).
    let start = Instant::now();
    loop {
        let (status, _, head) = get(&http, &url_b, &id).await;
        assert_eq!((status, head.as_str()), (StatusCode::OK, etag.as_str()));
        let next = format!("{yaml}visit_3: through b after a died\n");
        match put(&http, &url_b, ADMIN, &id, &etag, &next).await {
            (StatusCode::OK, now) => {
                etag = now;
                yaml = next;
                break;
            }
            (StatusCode::SERVICE_UNAVAILABLE, _) => assert!(
                start.elapsed() < Duration::from_secs(15),
                "the patient is still busy {:?} after its lease holder died",
                start.elapsed()
            ),
            (other, _) => panic!("b answered {other}"),
        }
    }
    let took = start.elapsed();
    println!(
        "a patient leased by a killed process: written through another process in {took:?} (lease 60 s)"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(leases_of(&watch, pid).await, 0);

    // The acknowledged history is whole: the creation, three edits and b's.
    let (status, body, head) = get(&http, &url_b, &id).await;
    assert_eq!((status, head.as_str()), (StatusCode::OK, etag.as_str()));
    assert_eq!(body["files"]["patient.yaml"].as_str(), Some(yaml.as_str()));
    let history: Vec<Value> = http
        .get(format!("{url_b}/v1/patients/{id}/history"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history.len(), 5, "{history:?}");
}

/// A record's history as HQ sees it through `url`: its commit hashes.
async fn history(http: &reqwest::Client, url: &str, id: &str) -> Vec<String> {
    let r = http
        .get(format!("{url}/v1/patients/{id}/history"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("history");
    assert_eq!(r.status(), StatusCode::OK, "history of {id} through {url}");
    r.json::<Vec<Value>>()
        .await
        .expect("json")
        .iter()
        .map(|e| e["commit"].as_str().expect("commit").to_owned())
        .collect()
}

/// A writer through the balancer: creates a patient, then adds one line at
/// a time (`w<w>_<n>: x`) with conditional PUTs until `stop`. An answer
/// that did not come (its process was killed) is an unknown outcome: the
/// writer reads the record again, and a line that landed is not written
/// twice. Its patient's id goes into `ids`. Returns the patient, the
/// acknowledged heads (ETags), how many lines landed and how many writes
/// had no answer.
async fn api_writer(
    http: reqwest::Client,
    lb: String,
    w: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ids: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) -> (String, Vec<String>, usize, usize) {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let pause = || tokio::time::sleep(Duration::from_millis(20));
    let (id, mut acked) = loop {
        let r = http
            .post(format!("{lb}/v1/patients"))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(30))
            .json(&json!({"files": {"patient.yaml": format!("given_name: W{w}\n")}}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == StatusCode::CREATED
        {
            let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
            let body: Value = r.json().await.expect("json");
            break (body["id"].as_str().expect("id").to_owned(), vec![etag]);
        }
        pause().await;
    };
    let patient: chartsync_protocol::PatientId = id.parse().expect("patient id");
    ids.lock().expect("ids").push(patient.as_bytes().to_vec());
    let (mut n, mut unanswered) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let r = http
            .get(format!("{lb}/v1/patients/{id}"))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let Ok(r) = r else {
            pause().await;
            continue;
        };
        if r.status() != StatusCode::OK {
            pause().await;
            continue;
        }
        let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
        let Ok(body) = r.json::<Value>().await else {
            continue;
        };
        let yaml = body["files"]["patient.yaml"]
            .as_str()
            .expect("yaml")
            .to_owned();
        if yaml.contains(&format!("\nw{w}_{n}:")) {
            // An unknown outcome that landed.
            n += 1;
            continue;
        }
        let r = http
            .put(format!("{lb}/v1/patients/{id}"))
            .bearer_auth(ADMIN)
            .header("if-match", &etag)
            .timeout(Duration::from_secs(30))
            .json(&json!({"files": {"patient.yaml": format!("{yaml}w{w}_{n}: x\n")}}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => {
                acked.push(r.headers()["etag"].to_str().expect("etag").to_owned());
                n += 1;
            }
            // Busy or stale: read again.
            Ok(r) if r.status() != StatusCode::BAD_GATEWAY => pause().await,
            // Cut off by a kill: read again.
            _ => {
                unanswered += 1;
                pause().await;
            }
        }
    }
    (id, acked, n, unanswered)
}

/// A satellite's round: three new records and an edit of an earlier one,
/// written locally, then pushed as one batch (and central's changes
/// pulled); a failed sync (its central process killed) is retried at the
/// next round. Returns every record written with its local commit count,
/// and how many syncs failed.
async fn satellite_writer(
    http: reqwest::Client,
    sat: std::sync::Arc<crate::support::TestSatellite>,
    s: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<(String, usize)>, usize) {
    use chartsync_satellite::jobs::Job;
    use std::sync::atomic::Ordering;

    let mut made: Vec<(String, usize)> = Vec::new();
    let (mut round, mut failed) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        for k in 0..3 {
            let (id, _) = sat
                .create(
                    &http,
                    &format!("given_name: S{s}r{round}k{k}\ncatchment: north\n"),
                )
                .await;
            made.push((id, 1));
        }
        let pick = (round * 7) % made.len();
        let (id, commits) = &mut made[pick];
        let (status, body, etag) = sat.get(&http, id).await;
        assert_eq!(status, StatusCode::OK);
        let yaml = format!(
            "{}edit_{round}: x\n",
            body["files"]["patient.yaml"].as_str().expect("yaml")
        );
        let r = http
            .put(format!("{}/v1/patients/{id}", sat.url))
            .header("if-match", &etag)
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .expect("put at the satellite");
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
        *commits += 1;
        if sat
            .run(&[Job::Push, Job::Pull, Job::FetchNew])
            .await
            .is_err()
        {
            failed += 1;
        }
        round += 1;
    }
    (made, failed)
}

/// Issue 11: kill -9 of one central process after another, ten times, each
/// while it holds patient leases mid-write (satellites' batch pushes and
/// API writes through HAProxy in flight), each restarted: every
/// acknowledged write is readable through every process, each is one
/// commit, and satellites attached to different processes converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_kills_mid_batch_behind_haproxy_lose_nothing_acknowledged() {
    use chartsync_satellite::jobs::Job;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    const KILLS: usize = 10;
    const API_WRITERS: usize = 4;

    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = client();
    let ports = [free_port(), free_port(), free_port()];
    let configs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(n, p)| {
            write_config_with(
                dir.path(),
                &format!("c{n}"),
                *p,
                &test.url,
                "[locks]\nwait_secs = 1\n",
            )
        })
        .collect();
    run_ok(&[
        "central",
        "migrate",
        "--config",
        configs[0].to_str().expect("c"),
    ]);
    let mut instances = Vec::new();
    for name in ["north-a", "north-b"] {
        let added: Value = serde_json::from_str(&run_ok(&[
            "central",
            "instance",
            "add",
            "--config",
            configs[0].to_str().expect("c"),
            "--name",
            name,
            "--catchment",
            "north",
        ]))
        .expect("json");
        instances.push((
            added["id"].as_u64().expect("id") as u32,
            added["token"].as_str().expect("token").to_owned(),
        ));
    }
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for (config, port) in configs.iter().zip(ports) {
        let (d, url) = serve(config, port).await;
        daemons.push(d);
        urls.push(url);
    }
    let lb_port = free_port();
    let _lb = haproxy(dir.path(), lb_port, &ports);
    let lb = format!("http://127.0.0.1:{lb_port}");
    wait_healthy(&http, &lb).await;
    let watch = sql_client(&test.url).await;

    // Satellites attached to two different processes; API writers through
    // the balancer.
    let stop = Arc::new(AtomicBool::new(false));
    let mut sats = Vec::new();
    let mut sat_tasks = Vec::new();
    for (s, (instance, token)) in instances.iter().enumerate() {
        let sat = Arc::new(
            crate::support::TestSatellite::builder(dir.path().join(format!("sat-{s}")))
                .central(&urls[s + 1])
                .instance(*instance, token)
                .start()
                .await,
        );
        sats.push(Arc::clone(&sat));
        sat_tasks.push(tokio::spawn(satellite_writer(
            http.clone(),
            sat,
            s,
            Arc::clone(&stop),
        )));
    }
    let api_ids: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let writers: Vec<_> = (0..API_WRITERS)
        .map(|w| {
            tokio::spawn(api_writer(
                http.clone(),
                lb.clone(),
                w,
                Arc::clone(&stop),
                Arc::clone(&api_ids),
            ))
        })
        .collect();

    // One process after another is killed mid-write, then started again on
    // its port: c0 (API writes only) while it holds a lease, c1 and c2
    // while they hold leases of their satellite's batch push.
    let started = Instant::now();
    for kill in 0..KILLS {
        let victim = kill % 3;
        let pid = daemons[victim].child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let besides = if victim == 0 {
                Vec::new()
            } else {
                api_ids.lock().expect("ids").clone()
            };
            if leases_besides(&watch, pid, &besides).await > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kill {kill}: process c{victim} never held a lease"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        daemons[victim].child.kill().expect("kill -9");
        daemons[victim].child.wait().expect("reap");
        let (d, _) = serve(&configs[victim], ports[victim]).await;
        daemons[victim] = d;
        // Writes go on for a moment before the next kill.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "{KILLS} kills mid-write, each restarted, in {:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    for w in writers {
        written.push(w.await.expect("writer"));
    }
    let (mut made, mut failed_syncs) = (Vec::new(), 0);
    for t in sat_tasks {
        let (records, failed) = t.await.expect("satellite writer");
        made.extend(records);
        failed_syncs += failed;
    }
    assert!(failed_syncs > 0, "no satellite push was cut off by a kill");

    // Every acknowledged API write, through every process: one commit each,
    // every line once.
    let (mut acked_total, mut unanswered_total) = (0, 0);
    for (w, (id, acked, lines, unanswered)) in written.iter().enumerate() {
        acked_total += acked.len() - 1;
        unanswered_total += unanswered;
        for url in &urls {
            let (status, body, etag) = get(&http, url, id).await;
            assert_eq!(status, StatusCode::OK, "{id} through {url}");
            let yaml = body["files"]["patient.yaml"].as_str().expect("yaml");
            for n in 0..*lines {
                assert_eq!(
                    yaml.matches(&format!("\nw{w}_{n}:")).count(),
                    1,
                    "line {n} of writer {w} through {url}:\n{yaml}"
                );
            }
            assert!(!yaml.contains(&format!("\nw{w}_{lines}:")), "{yaml}");
            let commits = history(&http, url, id).await;
            assert_eq!(commits.len(), 1 + lines, "{id} through {url}");
            assert_eq!(format!("\"{}\"", commits[0]), etag);
            for head in acked {
                assert!(
                    commits.iter().any(|c| format!("\"{c}\"") == *head),
                    "acknowledged {head} of {id} missing through {url}"
                );
            }
        }
    }

    // The satellites converge: everything written at either is at central
    // (through every process) and at both, at the same head, each local
    // commit one commit at central.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for sat in &sats {
            let _ = sat.run(&[Job::Push, Job::Pull, Job::FetchNew]).await;
        }
        let mut converged = sats.iter().all(|s| s.status().pending_push == 0);
        for (id, _) in &made {
            if !converged {
                break;
            }
            let (sa, _, ha) = sats[0].get(&http, id).await;
            let (sb, _, hb) = sats[1].get(&http, id).await;
            converged = sa == StatusCode::OK && sb == StatusCode::OK && ha == hb;
        }
        if converged {
            break;
        }
        assert!(Instant::now() < deadline, "the satellites do not converge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, commits) in &made {
        let (_, _, head) = sats[0].get(&http, id).await;
        for url in &urls {
            let (status, _, etag) = get(&http, url, id).await;
            assert_eq!(
                (status, &etag),
                (StatusCode::OK, &head),
                "{id} through {url}"
            );
            assert_eq!(
                history(&http, url, id).await.len(),
                *commits,
                "{id} through {url}"
            );
        }
    }
    println!(
        "{KILLS} kills: {acked_total} acknowledged API edits on {API_WRITERS} patients \
         ({unanswered_total} more cut off) and {} satellite records ({failed_syncs} syncs cut off), \
         all there through 3 processes; the satellites converged",
        made.len()
    );
}

/// The backends holding the advisory lock of liveness key `key`.
async fn liveness_backends(sql: &tokio_postgres::Client, key: i64) -> Vec<i32> {
    sql.query(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND ((classid::int8 << 32) | objid::int8) = $1",
        &[&key],
    )
    .await
    .expect("liveness backends")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A PUT of `yaml` at `etag`, sent from a task of its own; its status.
fn put_in_flight(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    etag: &str,
    yaml: String,
) -> tokio::task::JoinHandle<Result<StatusCode, reqwest::Error>> {
    let (http, url, id, etag) = (http.clone(), url.to_owned(), id.to_owned(), etag.to_owned());
    tokio::spawn(async move {
        http.put(format!("{url}/v1/patients/{id}"))
            .bearer_auth(ADMIN)
            .header("if-match", etag)
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .map(|r| r.status())
    })
}

/// Issue 11: a process that still runs but whose liveness session ended (a
/// network cut, an administrator) while it was mid-write loses that
/// patient's lease to another process, and its write is refused ("busy,
/// try again") even though the head it expects is still the current one:
/// the other process's write goes in, and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_from_the_database_cannot_publish_under_a_lost_lease() {
    use std::time::{Duration, Instant};

    let test = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b) = (free_port(), free_port());
    let locks = "[locks]\nlease_secs = 60\nwait_secs = 1\n";
    let a = write_config_with(dir.path(), "a", port_a, &test.url, locks);
    let b = write_config_with(dir.path(), "b", port_b, &test.url, locks);
    run_ok(&["central", "migrate", "--config", a.to_str().expect("a")]);
    let ((proc_a, url_a), (proc_b, url_b)) = (serve(&a, port_a).await, serve(&b, port_b).await);
    let http = client();
    let r = http
        .post(format!("{url_a}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "given_name: Ann\n"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // a's write stops mid-way, holding the lease (the test holds the
    // sequence row).
    let hold = sql_client(&test.url).await;
    hold.batch_execute("BEGIN; SELECT value FROM counters WHERE name = 'seq' FOR UPDATE")
        .await
        .expect("hold the sequence row");
    let watch = sql_client(&test.url).await;
    let from_a = put_in_flight(&http, &url_a, &id, &etag, "given_name: Ann\nby: a\n".into());
    let (pid_a, pid_b) = (proc_a.child.id(), proc_b.child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while leases_of(&watch, pid_a).await == 0 {
        assert!(Instant::now() < deadline, "a's write never got its lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its liveness session is ended under it; a runs on.
    let key: i64 = watch
        .query_one(
            "SELECT owner FROM locks WHERE holder LIKE $1",
            &[&format!("%:{pid_a}:%")],
        )
        .await
        .expect("a's lease")
        .get(0);
    let backends = liveness_backends(&watch, key).await;
    assert_eq!(backends.len(), 1, "one session holds a's key");
    watch
        .execute("SELECT pg_terminate_backend($1)", &[&backends[0]])
        .await
        .expect("terminate a's liveness session");
    while !liveness_backends(&watch, key).await.is_empty() {
        assert!(Instant::now() < deadline, "a's session does not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // b takes the lease over and its write waits on the sequence row too.
    let from_b = put_in_flight(&http, &url_b, &id, &etag, "given_name: Ann\nby: b\n".into());
    while leases_of(&watch, pid_b).await == 0 {
        assert!(
            Instant::now() < deadline,
            "b never took over the lease of a's ended session"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(leases_of(&watch, pid_a).await, 0);
    hold.batch_execute("ROLLBACK").await.expect("let go");

    let a_answer = from_a.await.expect("task").expect("a answers");
    let b_answer = from_b.await.expect("task").expect("b answers");
    assert_eq!(
        (a_answer, b_answer),
        (StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK),
        "a's write under its lost lease must be refused, b's accepted"
    );
    for url in [&url_a, &url_b] {
        let (status, body, _) = get(&http, url, &id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["files"]["patient.yaml"].as_str(),
            Some("given_name: Ann\nby: b\n"),
            "through {url}"
        );
        assert_eq!(history(&http, url, &id).await.len(), 2, "through {url}");
    }
    // a opens a new session and writes again.
    let (_, _, head) = get(&http, &url_a, &id).await;
    let (status, _) = put(
        &http,
        &url_a,
        ADMIN,
        &id,
        &head,
        "given_name: Ann\nby: b\nthen: a\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
