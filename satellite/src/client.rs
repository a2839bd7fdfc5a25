//! The satellite's client of central's sync endpoints.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use chartsync_protocol::api::ErrorBody;
use chartsync_protocol::envelope::{self, EnvelopeError};
use chartsync_protocol::sync::{
    CONTENT_TYPE, MAX_REPLY_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

/// How often a call is tried again while central is busy.
const BUSY_RETRIES: u32 = 5;

/// Environment variable naming the sync protocol version to speak (`2` or
/// `3`; unset: the newest, falling back to 2 when central refuses it).
pub const PROTOCOL_ENV: &str = "CHARTSYNC_SYNC_PROTOCOL";
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE as CT};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, SatelliteConfig};

/// Why a request to central failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No connection, timeout, TLS failure, cut-off reply.
    #[error("cannot reach central at {url}")]
    Unreachable {
        /// Central's URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Central answered with an error.
    #[error("central refused the request ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Central's message.
        message: String,
    },
    /// Central is busy (503 with `Retry-After`), still after a few tries.
    #[error("central is busy: {message} (asked to retry after {retry_after} s)")]
    Busy {
        /// Seconds central asked to wait.
        retry_after: u64,
        /// Central's message.
        message: String,
    },
    /// Central's reply is not a valid batch.
    #[error("central's reply is not a valid batch")]
    BadReply(#[source] EnvelopeError),
    /// The request could not be encoded.
    #[error("could not encode the request")]
    Encode(#[source] EnvelopeError),
    /// No token configured.
    #[error(
        "no instance token: set [central] token or token_file in the configuration, or CHARTSYNC_CENTRAL_TOKEN"
    )]
    NoToken,
    /// Configuration problem (token file, CA certificate).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CA certificate could not be read.
    #[error("cannot use the CA certificate {path}")]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The protocol version asked for in the environment is not spoken.
    #[error(
        "{PROTOCOL_ENV}={0:?}: this satellite speaks sync protocols {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
    )]
    ProtocolSetting(String),
}

impl SyncError {
    /// Whether retrying later may help (network trouble, central busy).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Unreachable { .. } | SyncError::BadReply(_) => true,
            SyncError::Refused { status, .. } => *status == 503 || *status >= 500,
            _ => false,
        }
    }
}

/// Talks to central; counts bytes and round trips.
#[derive(Debug)]
pub struct CentralClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Request bytes sent.
    pub bytes_sent: AtomicU64,
    /// Reply bytes received.
    pub bytes_received: AtomicU64,
    /// Requests made.
    pub round_trips: AtomicU64,
    /// The sync protocol version spoken.
    version: AtomicU8,
    /// The report sent with every call (see [`crate::report`]).
    report: std::sync::Mutex<Option<String>>,
}

impl CentralClient {
    /// A client for the configured central.
    pub fn new(config: &SatelliteConfig) -> Result<CentralClient, SyncError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = config.token()?.ok_or(SyncError::NoToken)?.0;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(config.central.timeout_secs.max(1)))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &config.central.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| SyncError::CaCert {
                path: ca.clone(),
                source: Box::new(e),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SyncError::CaCert {
                    path: ca.clone(),
                    source: Box::new(e),
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let version = match std::env::var(PROTOCOL_ENV) {
            Ok(v) => v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(n))
                .ok_or(SyncError::ProtocolSetting(v))?,
            Err(_) => PROTOCOL_VERSION,
        };
        Ok(CentralClient {
            version: AtomicU8::new(version),
            http: builder.build().map_err(SyncError::Client)?,
            base: config.central.url.trim_end_matches('/').to_string(),
            token,
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            report: std::sync::Mutex::new(None),
        })
    }

    /// Sends this report with the calls from now on.
    pub fn set_report(&self, report: &chartsync_common::report::Report) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.encode());
    }

    /// Central's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The sync protocol version spoken (it drops to 2 when central refuses
    /// version 3, an older central).
    pub fn version(&self) -> u8 {
        self.version.load(Ordering::Relaxed)
    }

    /// Whether packs sent may be thin (deltas on central's version).
    pub fn thin(&self) -> bool {
        self.version() >= 3
    }

    /// One round trip to a sync endpoint. When central says it is busy
    /// (503, every sync slot taken), waits as long as it asks (`Retry-After`,
    /// at most 30 s) and tries again, a few times.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, SyncError> {
        let mut version = self.version();
        let mut body = envelope::encode_as(request, version).map_err(SyncError::Encode)?;
        let mut attempt = 0;
        loop {
            match self.call_once(path, body.clone(), version).await {
                // An older central: speak its version from now on.
                Err(SyncError::Refused {
                    status: 400, code, ..
                }) if code == "protocol_version" && version > MIN_PROTOCOL_VERSION => {
                    tracing::info!(
                        from = version,
                        to = MIN_PROTOCOL_VERSION,
                        "central speaks an older sync protocol"
                    );
                    version = MIN_PROTOCOL_VERSION;
                    self.version.store(version, Ordering::Relaxed);
                    body = envelope::encode_as(request, version).map_err(SyncError::Encode)?;
                }
                Err(SyncError::Busy { retry_after, .. }) if attempt < BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(retry_after.clamp(1, 30))).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once<Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        version: u8,
    ) -> Result<Resp, SyncError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |source| SyncError::Unreachable {
            url: self.base.clone(),
            source,
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let report = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut request = self.http.post(&url);
        if let Some(report) = report {
            request = request.header(chartsync_common::report::HEADER, report);
        }
        let response = request
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(PROTOCOL_HEADER, version.to_string())
            .header(CT, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(unreachable)?;
        self.bytes_received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.error, e.message),
                Err(_) => (
                    "http".to_string(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                ),
            };
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && let Some(retry_after) = retry_after
            {
                return Err(SyncError::Busy {
                    retry_after,
                    message,
                });
            }
            return Err(SyncError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
        envelope::decode(&bytes, MAX_REPLY_BYTES).map_err(SyncError::BadReply)
    }
}
