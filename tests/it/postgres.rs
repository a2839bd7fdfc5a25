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
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n[database]\nurl = \"{db}\"\n",
            dir.join(name).display()
        ),
    )
    .expect("write config");
    path
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
    let b = write_config(dir.path(), "b", port_b, &test.url);

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
