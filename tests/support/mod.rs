//! Starting real satellites and centrals on 127.0.0.1:0 for end-to-end tests.

#![allow(dead_code)]

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
    pub async fn start(
        dir: &Path,
        central_url: &str,
        instance_id: u32,
        extra: &str,
    ) -> TestSatellite {
        let text = format!(
            "data_dir = \"{}\"\nname = \"clinic-{instance_id}\"\n{extra}\n[central]\nurl = \"{central_url}\"\ninstance_id = {instance_id}\ntoken = \"unused\"\n",
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
