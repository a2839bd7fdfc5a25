//! Starting real satellites and centrals on 127.0.0.1:0 for end-to-end tests,
//! and the helpers the test modules share.

pub mod daemon;
pub mod proxy;
pub mod webdriver;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::Duration;

use chartsync_central::server::Tls;
use chartsync_protocol::PatientId;
use chartsync_protocol::api::StatusBody;
use chartsync_satellite::jobs::{Job, JobError, Summary, no_progress, run_once};
use chartsync_satellite::{Satellite, SatelliteConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The `chartsync` binary.
pub const EXE: &str = env!("CARGO_BIN_EXE_chartsync");

/// Installs the TLS crypto provider once (reqwest needs one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    crypto();
    reqwest::Client::builder().build().expect("client")
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `git --git-dir <repo> <args>`.
pub fn git(repo: &Path, args: &[&str]) -> Output {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git")
}

/// The parsed `patient.yaml` of a record body (`{"files": {...}}`).
pub fn patient_doc(body: &Value) -> Value {
    chartsync_merge::parse_yaml(
        body["files"]["patient.yaml"]
            .as_str()
            .expect("patient.yaml"),
    )
    .expect("yaml")
}

/// A child process killed (SIGKILL) and reaped when dropped, even by a
/// failing test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A satellite serving on 127.0.0.1:0.
pub struct TestSatellite {
    pub url: String,
    pub sat: Arc<Satellite>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// How to start a [`TestSatellite`]; from [`TestSatellite::builder`].
#[must_use = "a builder does nothing until started"]
pub struct SatelliteBuilder {
    dir: PathBuf,
    central: String,
    instance_id: u32,
    token: String,
    extra: String,
    central_extra: String,
}

impl SatelliteBuilder {
    /// Central's URL (by default `http://127.0.0.1:9`, where nothing
    /// listens: the satellite works offline).
    pub fn central(mut self, url: &str) -> Self {
        self.central = url.to_string();
        self
    }

    /// The instance id and token central knows it by (by default 1 and a
    /// token central refuses). Its commits name it `satellite-<id>` (no `name`
    /// is set), which central accepts from that instance whatever it was
    /// registered as.
    pub fn instance(mut self, id: u32, token: &str) -> Self {
        self.instance_id = id;
        self.token = token.to_string();
        self
    }

    /// Appends this to the top of the configuration (say `[sync]` settings).
    pub fn config(mut self, extra: &str) -> Self {
        self.extra.push_str(extra);
        self.extra.push('\n');
        self
    }

    /// Appends this to the `[central]` section (say `timeout_secs = 2`).
    pub fn central_config(mut self, extra: &str) -> Self {
        self.central_extra.push_str(extra);
        self.central_extra.push('\n');
        self
    }

    /// Opens the satellite and serves it on a free port.
    pub async fn start(self) -> TestSatellite {
        let SatelliteBuilder {
            dir,
            central,
            instance_id,
            token,
            extra,
            central_extra,
        } = self;
        let text = format!(
            "data_dir = \"{}\"\n{extra}\n[central]\nurl = \"{central}\"\ninstance_id = {instance_id}\ntoken = \"{token}\"\n{central_extra}\n",
            dir.display()
        );
        let config = SatelliteConfig::parse(&text, &dir.join("satellite.toml")).expect("config");
        let sat = Satellite::open(config).expect("open satellite");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chartsync_satellite::serve(
            Arc::clone(&sat),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        TestSatellite {
            url,
            sat,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl TestSatellite {
    /// A satellite with its data in `dir`, offline until given a central.
    pub fn builder(dir: impl AsRef<Path>) -> SatelliteBuilder {
        SatelliteBuilder {
            dir: dir.as_ref().to_path_buf(),
            central: "http://127.0.0.1:9".to_string(),
            instance_id: 1,
            token: "unused".to_string(),
            extra: String::new(),
            central_extra: String::new(),
        }
    }

    /// Runs sync jobs once (30 s to get the job lock).
    pub async fn run(&self, jobs: &[Job]) -> Result<Summary, JobError> {
        run_once(&self.sat, jobs, Duration::from_secs(30), no_progress()).await
    }

    /// Runs sync jobs once; they must succeed.
    pub async fn sync(&self, jobs: &[Job]) -> Summary {
        self.run(jobs)
            .await
            .unwrap_or_else(|e| panic!("sync failed: {}", chartsync_satellite::error_chain(&e)))
    }

    /// The satellite's status.
    pub fn status(&self) -> StatusBody {
        chartsync_satellite::status(&self.sat).expect("status")
    }

    /// Creates a record holding `patient.yaml` through the local API (201);
    /// returns its id and ETag.
    pub async fn create(&self, http: &reqwest::Client, yaml: &str) -> (String, String) {
        let r = http
            .post(format!("{}/v1/patients", self.url))
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        let etag = r.headers()["etag"].to_str().expect("etag").to_string();
        let body: Value = r.json().await.expect("json");
        (body["id"].as_str().expect("id").to_string(), etag)
    }

    /// Reads a record through the local API: status, body (`null` if not
    /// JSON) and ETag (empty if none).
    pub async fn get(&self, http: &reqwest::Client, id: &str) -> (StatusCode, Value, String) {
        let r = http
            .get(format!("{}/v1/patients/{id}", self.url))
            .send()
            .await
            .expect("get");
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().expect("etag").to_string())
            .unwrap_or_default();
        (status, r.json().await.unwrap_or(Value::Null), etag)
    }

    /// A JSON merge patch of a record at `etag` through the local API (200);
    /// returns the new ETag.
    pub async fn patch(&self, http: &reqwest::Client, id: &str, etag: &str, body: Value) -> String {
        let r = http
            .patch(format!("{}/v1/patients/{id}", self.url))
            .header("content-type", "application/merge-patch+json")
            .header("if-match", etag)
            .json(&body)
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
        r.headers()["etag"].to_str().expect("etag").to_string()
    }

    /// Stops serving (finishing requests in flight).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

/// A central serving on 127.0.0.1:0 (SQLite backend).
pub struct TestCentral {
    pub url: String,
    pub central: Arc<chartsync_central::Central<chartsync_central::db::sqlite::SqliteDb>>,
    pub admin: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// How to start a [`TestCentral`]; from [`TestCentral::builder`].
#[must_use = "a builder does nothing until started"]
pub struct CentralBuilder {
    dir: PathBuf,
    addr: String,
    extra: String,
    tls: Option<Tls>,
}

impl CentralBuilder {
    /// Where to listen (by default `127.0.0.1:0`); say the address of a
    /// stopped central, to restart it where satellites expect it.
    pub fn addr(mut self, addr: &str) -> Self {
        self.addr = addr.to_string();
        self
    }

    /// Appends this to the configuration (say a `[locks]` section).
    pub fn config(mut self, extra: &str) -> Self {
        self.extra.push_str(extra);
        self.extra.push('\n');
        self
    }

    /// Serves HTTPS with this certificate; the URL is then
    /// `https://localhost:<port>`.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Opens central and serves it.
    pub async fn start(self) -> TestCentral {
        let CentralBuilder {
            dir,
            addr,
            extra,
            tls,
        } = self;
        crypto();
        let admin = "test-admin-token-0123456789abcdef".to_string();
        let text = format!(
            "data_dir = \"{}\"\nadmin_token = \"{admin}\"\n{extra}\n",
            dir.display()
        );
        let config = chartsync_central::CentralConfig::parse(&text, &dir.join("central.toml"))
            .expect("config");
        std::fs::create_dir_all(&dir).expect("dir");
        let db =
            chartsync_central::db::sqlite::SqliteDb::open(&dir.join("central.sqlite")).expect("db");
        let central = chartsync_central::Central::open(config, db)
            .await
            .expect("open central");
        let listener = bind_retrying(&addr).await;
        let local = listener.local_addr().expect("addr");
        let url = match tls {
            Some(_) => format!("https://localhost:{}", local.port()),
            None => format!("http://{local}"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chartsync_central::serve(
            Arc::clone(&central),
            listener,
            tls,
            async move {
                let _ = stopped.await;
            },
        ));
        TestCentral {
            url,
            central,
            admin,
            addr: local,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl TestCentral {
    /// A central with its data in `dir`, on a free port.
    pub fn builder(dir: impl AsRef<Path>) -> CentralBuilder {
        CentralBuilder {
            dir: dir.as_ref().to_path_buf(),
            addr: "127.0.0.1:0".to_string(),
            extra: String::new(),
            tls: None,
        }
    }

    /// Where it listens (`host:port`), to start it there again.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Registers an instance; returns its id and token.
    pub async fn add_instance(&self, name: &str, catchments: &[&str]) -> (u32, String) {
        let (instance, token) = chartsync_central::auth::register_instance(
            &self.central.db,
            None,
            name.to_string(),
            catchments.iter().map(|c| c.to_string()).collect(),
        )
        .await
        .expect("add instance");
        self.central.refresh_instances().await.expect("refresh");
        (instance.id, token)
    }

    /// Creates a record holding `patient.yaml` as HQ (201); returns its id
    /// and ETag.
    pub async fn create(&self, http: &reqwest::Client, yaml: &str) -> (PatientId, String) {
        let r = http
            .post(format!("{}/v1/patients", self.url))
            .bearer_auth(&self.admin)
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        let etag = r.headers()["etag"].to_str().expect("etag").to_string();
        let body: Value = r.json().await.expect("json");
        (body["id"].as_str().expect("id").parse().expect("id"), etag)
    }

    /// How many commits a record's history has, read as HQ (200).
    pub async fn history_len(&self, http: &reqwest::Client, id: PatientId) -> usize {
        let r = http
            .get(format!("{}/v1/patients/{id}/history", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("history");
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Vec<Value>>().await.expect("json").len()
    }

    /// Stops serving.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

async fn bind_retrying(addr: &str) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}
