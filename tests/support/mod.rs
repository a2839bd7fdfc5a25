//! Starting real satellites and centrals on 127.0.0.1:0 for end-to-end tests.

#![allow(dead_code)]

pub mod proxy;
pub mod wire;

use std::path::Path;
use std::sync::Arc;

use chartsync_satellite::{Satellite, SatelliteConfig};
use tokio::sync::oneshot;

/// Installs the TLS crypto provider once (reqwest needs one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    crypto();
    reqwest::Client::builder().build().expect("client")
}

/// A satellite serving on 127.0.0.1:0.
pub struct TestSatellite {
    pub url: String,
    pub sat: Arc<Satellite>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestSatellite {
    /// Starts one with its data in `dir`; `extra` is appended to the config.
    /// Its commits name it `satellite-<instance_id>` (no `name` is set),
    /// which central accepts from that instance whatever it was registered as.
    pub async fn start(
        dir: &Path,
        central_url: &str,
        instance_id: u32,
        extra: &str,
    ) -> TestSatellite {
        Self::start_with_token(dir, central_url, instance_id, "unused", extra).await
    }

    /// Starts one with a real instance token.
    pub async fn start_with_token(
        dir: &Path,
        central_url: &str,
        instance_id: u32,
        token: &str,
        extra: &str,
    ) -> TestSatellite {
        Self::start_configured(dir, central_url, instance_id, token, extra, "").await
    }

    /// Starts one with a real instance token; `central_extra` is appended
    /// to its `[central]` section (say `timeout_secs = 2`).
    pub async fn start_configured(
        dir: &Path,
        central_url: &str,
        instance_id: u32,
        token: &str,
        extra: &str,
        central_extra: &str,
    ) -> TestSatellite {
        let text = format!(
            "data_dir = \"{}\"\n{extra}\n[central]\nurl = \"{central_url}\"\ninstance_id = {instance_id}\ntoken = \"{token}\"\n{central_extra}\n",
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
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestCentral {
    /// Starts central with its data in `dir` on a free port.
    pub async fn start(dir: &Path, extra: &str) -> TestCentral {
        Self::start_on(dir, "127.0.0.1:0", extra).await
    }

    /// Starts central on `addr` (to restart it where satellites expect it).
    pub async fn start_on(dir: &Path, addr: &str, extra: &str) -> TestCentral {
        crypto();
        let admin = "test-admin-token-0123456789abcdef".to_string();
        let text = format!(
            "data_dir = \"{}\"\nadmin_token = \"{admin}\"\n{extra}\n",
            dir.display()
        );
        let config = chartsync_central::CentralConfig::parse(&text, &dir.join("central.toml"))
            .expect("config");
        std::fs::create_dir_all(dir).expect("dir");
        let db =
            chartsync_central::db::sqlite::SqliteDb::open(&dir.join("central.sqlite")).expect("db");
        let central = chartsync_central::Central::open(config, db)
            .await
            .expect("open central");
        let listener = bind_retrying(addr).await;
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chartsync_central::serve(
            Arc::clone(&central),
            listener,
            None,
            async move {
                let _ = stopped.await;
            },
        ));
        TestCentral {
            url,
            central,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
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
