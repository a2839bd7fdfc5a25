//! The satellite as users run it: the `chartsync` binary with the example
//! configuration, its schedule, one-shot runs from system cron, and TLS with
//! HQ's own certificate authority.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{EXE, KillOnDrop, TestCentral, client, crypto, free_port};

/// The example configuration with this test's paths, central and token,
/// and (to run within a test) schedules that fire every second.
fn example_config(dir: &std::path::Path, central: &str, id: u32, token: &str, port: u16) -> String {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/satellite.toml"
    ))
    .expect("example config");
    let mut out = String::new();
    for line in example.lines() {
        let line = if line.starts_with("listen =") {
            format!("listen = \"127.0.0.1:{port}\"")
        } else if line.starts_with("data_dir =") {
            format!("data_dir = \"{}\"", dir.join("data").display())
        } else if line.starts_with("url =") {
            format!("url = \"{central}\"")
        } else if line.starts_with("instance_id =") {
            format!("instance_id = {id}")
        } else if line.starts_with("token =") {
            format!("token = \"{token}\"")
        } else if line.starts_with("push =")
            || line.starts_with("pull =")
            || line.starts_with("fetch_new =")
        {
            let job = line.split(' ').next().unwrap_or_default();
            format!("{job} = \"* * * * * *\"")
        } else if line.starts_with("jitter_secs =") {
            "jitter_secs = 0".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

async fn status(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_runs_its_jobs_on_schedule_and_one_shot_runs_never_overlap() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (id, token) = central.add_instance("clinic-north", &["north"]).await;
    let port = free_port();
    let config = dir.path().join("satellite.toml");
    std::fs::write(
        &config,
        example_config(dir.path(), &central.url, id, &token, port),
    )
    .expect("config");
    let _daemon = KillOnDrop(
        Command::new(EXE)
            .args(["satellite", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    let http = client();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A record created at the clinic reaches central on the push schedule.
    let r = http
        .post(format!("{url}/v1/patients"))
        .json(&json!({"files": {"patient.yaml": "name: Scheduled\n"}}))
        .send()
        .await
        .expect("create");
    let body: Value = r.json().await.expect("json");
    let pid = body["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{}/v1/patients/{pid}", central.url))
            .bearer_auth(&central.admin)
            .send()
            .await
            .expect("get");
        if r.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the scheduled push never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every job ran on its schedule.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&http, &url).await;
        let jobs: Vec<&str> = s["last_runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["ok"] == true)
            .filter_map(|r| r["job"].as_str())
            .collect();
        if ["fetch-new", "pull", "push"]
            .iter()
            .all(|j| jobs.contains(j))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not every job ran: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A run in progress (we hold the job lock, as a long run would):
    let data_dir = dir.path().join("data");
    let lock = chartsync_satellite::jobs::JobLock::acquire(&data_dir, Duration::from_secs(30))
        .await
        .expect("the job lock is free between runs");
    let runs_before = runs_logged(&data_dir);
    // a one-shot run that may not wait refuses cleanly, with a reason;
    let out = Command::new(EXE)
        .args(["satellite", "sync", "push", "--wait-secs", "1", "--config"])
        .arg(&config)
        .output()
        .expect("run sync");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another sync run is in progress"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("chartsync:"))
            .count(),
        1
    );
    // the daemon's scheduled runs skip their turns meanwhile;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        runs_logged(&data_dir),
        runs_before,
        "a run overlapped the one in progress"
    );
    // and a one-shot run that may wait, waits, then completes.
    let waiting = std::thread::spawn({
        let config = config.clone();
        move || {
            Command::new(EXE)
                .args([
                    "satellite",
                    "sync",
                    "all",
                    "--json",
                    "--wait-secs",
                    "60",
                    "--config",
                ])
                .arg(&config)
                .output()
                .expect("run sync")
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "the one-shot run did not wait");
    drop(lock);
    let out = waiting.join().expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(summary["job"], "all");
    // Status from the command line.
    let out = Command::new(EXE)
        .args(["satellite", "status", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("status");
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["instance_id"], id);
    assert_eq!(s["pending_push"], 0);
}

/// How many job runs the state database has logged.
fn runs_logged(data_dir: &std::path::Path) -> i64 {
    let config = chartsync_satellite::SatelliteConfig::parse(
        &format!(
            "data_dir = \"{}\"\n[central]\nurl = \"http://127.0.0.1:9\"\ninstance_id = 0\n",
            data_dir.display()
        ),
        &data_dir.join("x.toml"),
    )
    .expect("config");
    let sat = chartsync_satellite::Satellite::open(config).expect("open");
    sat.db.run_count().expect("count runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_hq_certificate_authority() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    crypto();
    let dir = tempfile::tempdir().expect("tmp");
    // HQ's own CA, and central's certificate signed by it.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let ca_pem = dir.path().join("hq-ca.pem");
    std::fs::File::create(&ca_pem)
        .and_then(|mut f| f.write_all(ca.pem().as_bytes()))
        .expect("ca pem");
    let tls = chartsync_central::server::Tls::from_pem(
        leaf.pem().into_bytes(),
        leaf_key.serialize_pem().into_bytes(),
    )
    .await
    .expect("tls config");

    // Central over TLS.
    let central = TestCentral::builder(dir.path().join("central"))
        .tls(tls)
        .start()
        .await;
    let (instance_id, token) = central.add_instance("tls-clinic", &["north"]).await;
    let url = &central.url;

    let satellite = |name: &str, ca: Option<&std::path::Path>| {
        let ca_line = ca
            .map(|p| format!("ca_cert = \"{}\"\n", p.display()))
            .unwrap_or_default();
        let text = format!(
            "data_dir = \"{}\"\n[central]\nurl = \"{url}\"\ninstance_id = {}\ntoken = \"{token}\"\ntimeout_secs = 10\n{ca_line}",
            dir.path().join(name).display(),
            instance_id
        );
        let config = chartsync_satellite::SatelliteConfig::parse(
            &text,
            &dir.path().join(format!("{name}.toml")),
        )
        .expect("config");
        chartsync_satellite::Satellite::open(config).expect("satellite")
    };
    // With HQ's CA: syncs.
    let trusting = satellite("trusting", Some(&ca_pem));
    let id = chartsync_protocol::PatientId::random();
    trusting.db.mark_dirty(&id).expect("dirty");
    trusting
        .store
        .write(
            &id,
            chartsync_store::Condition::MustCreate,
            chartsync_store::Change::Replace(chartsync_protocol::Files::from([(
                "patient.yaml".to_string(),
                "name: Over TLS\n".to_string(),
            )])),
            &chartsync_store::CommitMeta::new("T", "t@x", "create"),
        )
        .expect("create");
    let s = chartsync_satellite::jobs::run_once(
        &trusting,
        &[chartsync_satellite::jobs::Job::Push],
        Duration::from_secs(5),
        chartsync_satellite::jobs::no_progress(),
    )
    .await
    .expect("push over TLS");
    assert_eq!(s.records_sent, 1);
    // Without it: refused, with a reason that points at the certificate.
    let doubting = satellite("doubting", None);
    let err = chartsync_satellite::jobs::run_once(
        &doubting,
        &[chartsync_satellite::jobs::Job::Pull],
        Duration::from_secs(5),
        chartsync_satellite::jobs::no_progress(),
    )
    .await
    .expect_err("an unknown CA is refused");
    let text = chartsync_satellite::error_chain(&err).to_lowercase();
    assert!(
        text.contains("cannot reach central") && text.contains("certificate"),
        "{text}"
    );
    central.stop().await;
}
