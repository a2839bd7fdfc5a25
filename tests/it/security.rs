//! Safe by default, end to end: what central and the satellite refuse to
//! start with, what they write to disk, what they tell a clinic about
//! records outside its scope, who may read `/metrics`, instance revocation
//! and new tokens with the real binary (central running or not), and an
//! audit trail a clinic cannot forge.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, command, wait_healthy};
use crate::support::wire::{Scratch, commit_tree_with, craft_commit, pack_of, push};
use crate::support::{TestCentral, TestSatellite, client, free_port};
use chartsync_protocol::PatientId;
use chartsync_protocol::sync::{PushOutcome, PushRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "security-test-admin-token-0123456789";

/// Runs the binary with `args` (under `umask 000` when `open_umask`).
fn run(args: &[&str], open_umask: bool) -> Output {
    command(args, open_umask).output().expect("run chartsync")
}

/// The one line of a failed command's stderr.
fn failure_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("chartsync: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn central_config(dir: &Path, port: u16, admin_line: &str) -> PathBuf {
    let path = dir.join("central.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"central-data\"\n{admin_line}\n"),
    )
    .expect("central.toml");
    path
}

fn satellite_config(dir: &Path, port: u16, central: &str, id: u64, token_line: &str) -> PathBuf {
    let path = dir.join("satellite.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"satellite-data\"\nname = \"north\"\n[central]\nurl = \"{central}\"\ninstance_id = {id}\n{token_line}\ntimeout_secs = 30\n"
        ),
    )
    .expect("satellite.toml");
    path
}

/// Every file not 0600 and folder not 0700 under `root` (root included).
fn not_private(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{mode:04o} {}", path.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Refusing to start
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satellite_reachable_from_the_network_needs_an_api_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let config = dir.path().join("satellite.toml");
    let text = |api_token: &str| {
        format!(
            "listen = \"0.0.0.0:{port}\"\ndata_dir = \"data\"\n{api_token}\n[central]\nurl = \"http://127.0.0.1:9\"\ninstance_id = 1\ntoken = \"t\"\n"
        )
    };
    std::fs::write(&config, text("")).expect("config");
    let config_arg = config.to_str().expect("utf-8 path");
    let line = failure_line(&run(&["satellite", "run", "--config", config_arg], false));
    assert!(
        line.contains("0.0.0.0") && line.contains("api_token"),
        "{line}"
    );
    assert!(!dir.path().join("data").exists(), "refused before anything");

    // The library refuses such a listener too (whatever its caller checked).
    let open = chartsync_satellite::SatelliteConfig::parse(&text(""), &config).expect("parse");
    let sat = chartsync_satellite::Satellite::open(open).expect("open");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let refused = chartsync_satellite::serve(sat, listener, std::future::pending())
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("api_token"), "{refused}");

    // With a token, it starts, and the local API wants the token.
    std::fs::write(&config, text("api_token = \"a-long-local-api-token\"")).expect("config");
    let _daemon = Daemon::start(&["satellite", "run", "--config", config_arg], false);
    let http = client();
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &url).await;
    let r = http
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_short_admin_token_is_refused_wherever_central_loads_its_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = central_config(
        dir.path(),
        free_port(),
        "admin_token = \"only-24-characters-long!\"",
    );
    let config = config.to_str().expect("utf-8 path");
    for args in [
        vec!["central", "serve", "--config", config],
        vec![
            "central", "instance", "add", "--config", config, "--name", "north",
        ],
        vec!["central", "instance", "list", "--config", config],
        vec!["central", "instance", "revoke", "1", "--config", config],
        vec!["central", "instance", "rotate", "1", "--config", config],
    ] {
        let line = failure_line(&run(&args, false));
        assert!(
            line.contains("admin token") && line.contains("at least 32"),
            "{args:?}: {line}"
        );
        assert!(
            !line.contains("only-24"),
            "the token is never shown: {line}"
        );
    }
    assert!(
        !dir.path().join("central-data").exists(),
        "refused before anything was created"
    );
}

#[test]
fn a_token_file_others_may_read_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let admin = dir.path().join("admin.token");
    std::fs::write(&admin, format!("{ADMIN}\n")).expect("token file");
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = central_config(
        dir.path(),
        free_port(),
        "admin_token_file = \"admin.token\"",
    );
    let config = config.to_str().expect("utf-8 path");
    let add = [
        "central", "instance", "add", "--config", config, "--name", "north",
    ];
    let line = failure_line(&run(&add, false));
    assert!(
        line.contains("admin.token") && line.contains("0644") && line.contains("chmod 600"),
        "{line}"
    );
    assert!(!line.contains(ADMIN), "never the secret: {line}");
    // Private again: accepted.
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let added = stdout_json(&run(&add, false));
    let token = added["token"].as_str().expect("token").to_string();

    // The satellite's token file likewise.
    let sat_token = dir.path().join("satellite.token");
    std::fs::write(&sat_token, &token).expect("token file");
    std::fs::set_permissions(&sat_token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let sat = satellite_config(
        dir.path(),
        free_port(),
        "http://127.0.0.1:9",
        added["id"].as_u64().expect("id"),
        "token_file = \"satellite.token\"",
    );
    let sat = sat.to_str().expect("utf-8 path");
    for args in [
        vec!["satellite", "run", "--config", sat],
        vec!["satellite", "sync", "push", "--config", sat],
    ] {
        let line = failure_line(&run(&args, false));
        assert!(
            line.contains("satellite.token") && line.contains("chmod 600"),
            "{args:?}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_warns_at_every_start_when_it_serves_plain_http_off_loopback() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!("listen = \"0.0.0.0:{port}\"\ndata_dir = \"data\"\nadmin_token = \"{ADMIN}\"\n"),
    )
    .expect("config");
    let args = [
        "central",
        "serve",
        "--config",
        config.to_str().expect("utf-8"),
    ];
    for _ in 0..2 {
        let central = Daemon::start(&args, false);
        let warning = central.wait_for("plain HTTP");
        assert!(
            warning.contains("WARN") && warning.contains("[tls]"),
            "{warning}"
        );
    }
    // On loopback: no warning (serving means it was past the point where
    // it warns).
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nadmin_token = \"{ADMIN}\"\n"),
    )
    .expect("config");
    let central = Daemon::start(&args, false);
    central.wait_for("central listening");
    wait_healthy(&client(), &format!("http://127.0.0.1:{port}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = central.drain();
    assert!(!log.iter().any(|l| l.contains("plain HTTP")), "{log:#?}");
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_central_and_the_satellite_write_is_private_under_umask_000() {
    let dir = tempfile::tempdir().expect("tmp");
    let central_port = free_port();
    let central_toml = central_config(
        dir.path(),
        central_port,
        &format!("admin_token = \"{ADMIN}\""),
    );
    let central_toml = central_toml.to_str().expect("utf-8");
    // A data folder left world-readable (by hand, or an older version) is
    // made private.
    let loose = dir.path().join("central-data");
    std::fs::create_dir(&loose).expect("mkdir");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let added = stdout_json(&run(
        &[
            "central",
            "instance",
            "add",
            "--config",
            central_toml,
            "--name",
            "north",
            "--catchment",
            "north",
        ],
        true,
    ));
    let central = Daemon::start(&["central", "serve", "--config", central_toml], true);
    central.wait_for("central listening");
    let http = client();
    let central_url = format!("http://127.0.0.1:{central_port}");
    // HQ creates a record the satellite will fetch.
    let r = http
        .post(format!("{central_url}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "name: From HQ\ncatchment: north\n"}}))
        .send()
        .await
        .expect("create at central");
    assert_eq!(r.status(), StatusCode::CREATED);

    let sat_port = free_port();
    let token = added["token"].as_str().expect("token");
    let sat_toml = satellite_config(
        dir.path(),
        sat_port,
        &central_url,
        added["id"].as_u64().expect("id"),
        &format!("token = \"{token}\""),
    );
    let sat_toml = sat_toml.to_str().expect("utf-8");
    let _satellite = Daemon::start(&["satellite", "run", "--config", sat_toml], true);
    let sat_url = format!("http://127.0.0.1:{sat_port}");
    wait_healthy(&http, &sat_url).await;
    let r = http
        .post(format!("{sat_url}/v1/patients"))
        .json(&json!({"files": {"patient.yaml": "name: At the clinic\n"}}))
        .send()
        .await
        .expect("create at the clinic");
    assert_eq!(r.status(), StatusCode::CREATED);
    let synced = stdout_json(&run(
        &["satellite", "sync", "all", "--config", sat_toml, "--json"],
        true,
    ));
    assert_eq!(synced["records_sent"], 1, "{synced}");
    assert_eq!(synced["records_received"], 1, "{synced}");
    let loose_after: Vec<String> = ["central-data", "satellite-data"]
        .iter()
        .flat_map(|d| not_private(&dir.path().join(d)))
        .collect();
    assert!(
        loose_after.is_empty(),
        "readable by others under umask 000: {loose_after:#?}"
    );
    // The databases' WAL files exist (so they were checked above).
    for wal in [
        "central-data/central.sqlite-wal",
        "satellite-data/satellite.sqlite-wal",
    ] {
        assert!(dir.path().join(wal).exists(), "{wal}");
    }
}

// ---------------------------------------------------------------------------
// What central tells a clinic about records outside its scope
// ---------------------------------------------------------------------------

/// Status and body, with `id` replaced by `<id>`.
async fn answer(response: reqwest::Response, id: PatientId) -> (StatusCode, String) {
    let status = response.status();
    let body = response.text().await.expect("body");
    (status, body.replace(&id.to_string(), "<id>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_outside_the_scope_is_answered_like_a_record_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path()).start().await;
    let (_, north) = c.add_instance("north", &["north"]).await;
    let http = client();
    let r = http
        .post(format!("{}/v1/patients", c.url))
        .bearer_auth(&c.admin)
        .json(&json!({"files": {"patient.yaml": "name: South\ncatchment: south\n"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    let south: PatientId = body["id"].as_str().expect("id").parse().expect("id");
    let head = body["head"].as_str().expect("head").to_string();
    let unknown = PatientId::random();

    for (method, path, body) in [
        ("GET", "", None),
        ("GET", "/history", None),
        (
            "PUT",
            "",
            Some(json!({"files": {"patient.yaml": "name: X\ncatchment: south\n"}})),
        ),
        ("PATCH", "", Some(json!({"patient.yaml": {"name": "Y"}}))),
    ] {
        let send = |id: PatientId| {
            let url = format!("{}/v1/patients/{id}{path}", c.url);
            let request = match method {
                "GET" => http.get(url),
                "PUT" => http
                    .put(url)
                    .header("If-Match", format!("\"{head}\""))
                    .json(body.as_ref().expect("body")),
                _ => http
                    .patch(url)
                    .header("If-Match", "*")
                    .header("Content-Type", "application/merge-patch+json")
                    .body(body.as_ref().expect("body").to_string()),
            };
            request.bearer_auth(&north).send()
        };
        let outside = answer(send(south).await.expect("send"), south).await;
        let missing = answer(send(unknown).await.expect("send"), unknown).await;
        assert_eq!(
            outside.0,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            outside.1
        );
        assert_eq!(outside, missing, "{method} {path}");
    }
    // HQ still sees it, unchanged.
    let r = http
        .get(format!("{}/v1/patients/{south}", c.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .expect("get");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["head"], head);

    // The sync fetch-one endpoint: an unknown id gets the same 404 body.
    // (Fetching by id is how a clinic brings in a visiting patient, so a
    // known id is fetched whatever its catchment: no record is out of
    // scope there.)
    let fetched = answer(
        crate::support::wire::fetch_one(&http, &c.url, &north, unknown).await,
        unknown,
    )
    .await;
    let api = http
        .get(format!("{}/v1/patients/{unknown}", c.url))
        .bearer_auth(&north)
        .send()
        .await
        .expect("get");
    assert_eq!(fetched.0, StatusCode::NOT_FOUND);
    assert_eq!(fetched, answer(api, unknown).await);
    c.stop().await;
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_api_token_at_the_satellite_and_the_admin_token_at_central() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (id, token) = c.add_instance("north", &["north"]).await;
    let http = client();
    let metrics = |url: &str, token: Option<&str>| {
        let mut r = http.get(format!("{url}/metrics"));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        r.send()
    };
    assert_eq!(
        metrics(&c.url, None).await.expect("m").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metrics(&c.url, Some(&token)).await.expect("m").status(),
        StatusCode::FORBIDDEN
    );
    let r = metrics(&c.url, Some(&c.admin)).await.expect("m");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("text").contains("chartsync_"));

    let guarded = TestSatellite::builder(dir.path().join("guarded"))
        .central(&c.url)
        .instance(id, &token)
        .config("api_token = \"local-api-token-for-tests\"")
        .start()
        .await;
    assert_eq!(
        metrics(&guarded.url, None).await.expect("m").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metrics(&guarded.url, Some("wrong-token"))
            .await
            .expect("m")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = metrics(&guarded.url, Some("local-api-token-for-tests"))
        .await
        .expect("m");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("chartsync_satellite_")
    );
    // Without an api_token (on loopback only), /metrics is open like the API.
    let open = TestSatellite::builder(dir.path().join("open"))
        .central(&c.url)
        .instance(id, &token)
        .start()
        .await;
    assert_eq!(
        metrics(&open.url, None).await.expect("m").status(),
        StatusCode::OK
    );
    guarded.stop().await;
    open.stop().await;
    c.stop().await;
}

/// The token is checked before anything else: without it a malformed id,
/// an unknown record or a method the path does not take all get 401, so
/// nothing about the server is learnt; with it, the JSON 400, 404 and 405
/// (with `Allow`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_anything_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (id, token) = c.add_instance("north", &["north"]).await;
    let sat = TestSatellite::builder(dir.path().join("guarded"))
        .central(&c.url)
        .instance(id, &token)
        .config("api_token = \"local-api-token-for-tests\"")
        .start()
        .await;
    let http = client();
    let sat_token = "local-api-token-for-tests".to_string();
    let unknown = PatientId::random();
    // (server, its token, method, path, status and code with the token)
    let cases = [
        (
            &c.url,
            &c.admin,
            "GET",
            "/v1/patients/nope".to_string(),
            400,
            "invalid_id",
        ),
        (
            &c.url,
            &c.admin,
            "GET",
            format!("/v1/patients/{unknown}"),
            404,
            "not_found",
        ),
        (
            &c.url,
            &c.admin,
            "POST",
            format!("/v1/patients/{unknown}"),
            405,
            "method_not_allowed",
        ),
        (
            &c.url,
            &token,
            "GET",
            "/v1/sync/push".to_string(),
            405,
            "method_not_allowed",
        ),
        (
            &sat.url,
            &sat_token,
            "POST",
            "/v1/conflicts/nope/resolve".to_string(),
            400,
            "invalid_id",
        ),
        (
            &sat.url,
            &sat_token,
            "GET",
            format!("/v1/patients/{unknown}/history"),
            404,
            "not_found",
        ),
        (
            &sat.url,
            &sat_token,
            "DELETE",
            "/v1/conflicts".to_string(),
            405,
            "method_not_allowed",
        ),
    ];
    for (url, good, method, path, status, code) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for bad in [None, Some("wrong-token")] {
            let mut r = http.request(method.clone(), format!("{url}{path}"));
            if let Some(bad) = bad {
                r = r.bearer_auth(bad);
            }
            let r = r.send().await.expect("answer");
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {bad:?}"
            );
            let body: serde_json::Value = r.json().await.expect("JSON");
            assert_eq!(body["error"], "unauthorized", "{method} {path}");
        }
        let r = http
            .request(method.clone(), format!("{url}{path}"))
            .bearer_auth(good)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        if status == 405 {
            let allow = r
                .headers()
                .get("allow")
                .expect("Allow")
                .to_str()
                .expect("text");
            assert!(
                !allow.is_empty() && !allow.contains(method.as_str()),
                "{allow}"
            );
        }
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["error"], code, "{method} {path}: {body}");
    }
    // Paths that need no token answer a wrong method with 405 all the same.
    let r = http
        .delete(format!("{}/healthz", sat.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers().get("allow").expect("Allow"), "GET,HEAD");
    sat.stop().await;
    c.stop().await;
}

// ---------------------------------------------------------------------------
// Instances: list, revoke, rotate with the binary
// ---------------------------------------------------------------------------

/// Polls until `token`'s request to central gets `want`; returns how long
/// it took.
async fn until_status(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    want: StatusCode,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = http
            .get(format!("{url}/v1/patients/{}", PatientId::random()))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
            .status();
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} after {:?}, want {want}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_listed_revoked_and_rotated_whether_or_not_central_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let config = central_config(dir.path(), port, &format!("admin_token = \"{ADMIN}\""));
    let config = config.to_str().expect("utf-8");
    let add = |name: &str, catchment: &str| {
        stdout_json(&run(
            &[
                "central",
                "instance",
                "add",
                "--config",
                config,
                "--name",
                name,
                "--catchment",
                catchment,
            ],
            false,
        ))
    };
    let north = add("clinic-north", "north");
    let south = add("clinic-south", "south");
    let (north_id, south_id) = (
        north["id"].as_u64().expect("id").to_string(),
        south["id"].as_u64().expect("id").to_string(),
    );
    let north_token = north["token"].as_str().expect("token").to_string();
    let south_token = south["token"].as_str().expect("token").to_string();
    // A name is one instance's only.
    let line = failure_line(&run(
        &[
            "central",
            "instance",
            "add",
            "--config",
            config,
            "--name",
            "clinic-north",
        ],
        false,
    ));
    assert!(line.contains("already named"), "{line}");

    // Listed while central is stopped.
    let list = || {
        stdout_json(&run(
            &["central", "instance", "list", "--config", config, "--json"],
            false,
        ))
    };
    let listed = list();
    assert_eq!(
        listed,
        json!([
            {"id": north["id"], "name": "clinic-north", "catchments": ["north"], "revoked": false, "last_seen": null},
            {"id": south["id"], "name": "clinic-south", "catchments": ["south"], "revoked": false, "last_seen": null},
        ])
    );

    let _central = {
        let central = Daemon::start(&["central", "serve", "--config", config], false);
        central.wait_for("central listening");
        central
    };
    let http = client();
    let url = format!("http://127.0.0.1:{port}");
    // Both tokens work (an authenticated GET of an unknown record: 404).
    until_status(&http, &url, &north_token, StatusCode::NOT_FOUND).await;
    until_status(&http, &url, &south_token, StatusCode::NOT_FOUND).await;

    // Revoked while central runs: refused within seconds.
    let revoked = stdout_json(&run(
        &[
            "central", "instance", "revoke", &north_id, "--config", config,
        ],
        false,
    ));
    assert_eq!(revoked["revoked"], true);
    let took = until_status(&http, &url, &north_token, StatusCode::UNAUTHORIZED).await;
    assert!(took < Duration::from_secs(5), "revocation took {took:?}");
    println!("a revocation took effect in a running central after {took:?}");
    // ...and stays revoked: no new token for it.
    let line = failure_line(&run(
        &[
            "central", "instance", "rotate", &north_id, "--config", config,
        ],
        false,
    ));
    assert!(line.contains("revoked"), "{line}");

    // A new token while central runs: the old one is refused within
    // seconds, the new one works.
    let rotated = stdout_json(&run(
        &[
            "central", "instance", "rotate", &south_id, "--config", config,
        ],
        false,
    ));
    assert_eq!(rotated["id"], south["id"]);
    let new_token = rotated["token"].as_str().expect("token").to_string();
    assert_ne!(new_token, south_token);
    let took = until_status(&http, &url, &south_token, StatusCode::UNAUTHORIZED).await;
    assert!(took < Duration::from_secs(5), "rotation took {took:?}");
    until_status(&http, &url, &new_token, StatusCode::NOT_FOUND).await;

    // The list shows who is revoked and when each was last seen.
    let listed = list();
    assert_eq!(listed[0]["revoked"], true);
    assert_eq!(listed[1]["revoked"], false);
    for entry in listed.as_array().expect("array") {
        let seen = entry["last_seen"].as_str().expect("seen, as RFC 3339");
        assert!(seen.ends_with('Z') && seen.contains('T'), "{seen}");
    }
    let table = run(&["central", "instance", "list", "--config", config], false);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("clinic-north") && table.contains("revoked"),
        "{table}"
    );

    // Unknown ids: one line saying what to do.
    for verb in ["revoke", "rotate"] {
        let line = failure_line(&run(
            &["central", "instance", verb, "999", "--config", config],
            false,
        ));
        assert!(
            line.contains("no instance 999") && line.contains("instance list"),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------
// The audit trail
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_naming_another_instance_is_refused_and_the_rest_of_the_batch_applies() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path()).start().await;
    let (_, north) = c.add_instance("north", &["north"]).await;
    let (_, _south) = c.add_instance("south", &["north"]).await;
    let http = client();

    // Honest: made on north (the scratch store's name).
    let sat = Scratch::new();
    let honest = PatientId::random();
    let h1 = sat.create(honest, "name: Honest\n");
    // Forged: a new record whose only commit claims clinic south.
    let forged = PatientId::random();
    let (f1, objects) = forged_commit(&[], "south");
    let forged_new = PushRecord {
        id: forged,
        expected: None,
        head: f1,
        pack: pack_of(&objects),
    };
    // Forged deeper: an honest head on top of a commit claiming south.
    let deep = PatientId::random();
    let d1 = sat.create(deep, "name: Deep\n");
    let r = push(&http, &c.url, &north, vec![sat.record(deep, None)]).await;
    assert!(matches!(r.results[0].outcome, PushOutcome::Applied { .. }));
    let (d2, mut objects) = forged_commit(&[d1], "south");
    let (d3, more) = craft_commit(&[("patient.yaml", "name: Deep\nx: 2\n")], &[d2]);
    objects.extend(more);
    let forged_under = PushRecord {
        id: deep,
        expected: Some(d1),
        head: d3,
        pack: pack_of(&objects),
    };

    let r = push(
        &http,
        &c.url,
        &north,
        vec![sat.record(honest, None), forged_new, forged_under],
    )
    .await;
    assert!(
        matches!(r.results[0].outcome, PushOutcome::Applied { .. }),
        "{:?}",
        r.results[0].outcome
    );
    for (i, commit) in [(1, f1), (2, d2)] {
        match &r.results[i].outcome {
            PushOutcome::Refused { code, message } => {
                assert_eq!(code, "forged_instance", "{message}");
                assert!(message.contains(&commit.to_string()), "{message}");
            }
            other => panic!("expected forged_instance, got {other:?}"),
        }
    }
    let head = |id: PatientId| crate::support::wire::admin_head(&http, &c.url, &c.admin, id);
    assert_eq!(head(honest).await, Some(h1));
    assert_eq!(head(forged).await, None);
    assert_eq!(head(deep).await, Some(d1));

    // Central's history names the instance that pushed; writes through
    // central's record API name the token's instance, or HQ.
    let history = |id: PatientId| {
        http.get(format!("{}/v1/patients/{id}/history", c.url))
            .bearer_auth(&c.admin)
            .send()
    };
    let entries: Vec<Value> = history(honest)
        .await
        .expect("h")
        .json()
        .await
        .expect("json");
    assert_eq!(entries[0]["instance"], "north");
    for (token, name) in [(north.as_str(), "north"), (c.admin.as_str(), "hq")] {
        let r = http
            .patch(format!("{}/v1/patients/{honest}", c.url))
            .bearer_auth(token)
            .header("If-Match", "*")
            .header("Content-Type", "application/merge-patch+json")
            .header("Chartsync-Author", "Dr. Claims Tobe <someone@else.example>")
            .body(json!({"patient.yaml": {"by": name}}).to_string())
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK);
        let entries: Vec<Value> = history(honest)
            .await
            .expect("h")
            .json()
            .await
            .expect("json");
        assert_eq!(entries[0]["instance"], name);
        // The author is the client's claim, kept as given.
        assert_eq!(
            entries[0]["author"],
            "Dr. Claims Tobe <someone@else.example>"
        );
    }
    c.stop().await;
}

/// A commit of a valid record claiming to be made on `instance`.
fn forged_commit(
    parents: &[chartsync_protocol::CommitId],
    instance: &str,
) -> (chartsync_protocol::CommitId, Vec<chartsync_git::Object>) {
    let files: std::collections::BTreeMap<String, Vec<u8>> =
        [("patient.yaml".to_string(), b"name: Forged\n".to_vec())]
            .into_iter()
            .collect();
    let (tree, objects) = chartsync_git::build_tree(&files).expect("tree");
    commit_tree_with(
        tree,
        objects,
        parents,
        &format!("Edit\n\nChartsync-Instance: {instance}\n"),
        &format!("chartsync@{instance}"),
    )
}
