//! The satellite's client of central's sync endpoints.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chartsync_protocol::api::ErrorBody;
use chartsync_protocol::envelope::{self, EnvelopeError};
use chartsync_protocol::link::{self, LINK_HEADER, LinkEstimate, WORK_HEADER};
use chartsync_protocol::sync::{
    CONTENT_TYPE, MAX_REPLY_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

/// How often a call is tried again while central is busy.
const BUSY_RETRIES: u32 = 5;

/// Environment variable naming the sync protocol version to speak (`2` to
/// `7`; unset: the newest, stepping down one version at a time when
/// central refuses it).
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

/// Calls sending fewer bytes than this measure the round trip (the time to
/// the reply's headers, less central's work).
const SMALL_REQUEST: u64 = 2 << 10;
/// Calls of at least this many bytes measure the bandwidth.
const LARGE_CALL: u64 = 32 << 10;
/// HTTP headers of a call, both ways, about.
const HEADER_BYTES: u64 = 400;
/// Round trips from this long (seconds) may be slow links: see
/// [`CentralClient::slow_start`].
pub const SLOW_START_RTT: f64 = 0.05;

/// The bandwidth (bytes per second) a link is taken to have during slow
/// start, until a large call measures it: 256 kbit/s, a 2G link. The first
/// batches are then compressed as for such a link (zstd 12 for requests,
/// 19 for central's replies) and sized by bytes for `[sync] batch_secs` of
/// it (1,000 new records of 2 KB take about 320 KB at level 19, 10 s), so
/// a first batch on a link as slow as that takes no longer than a measured
/// one; on a faster link with a long round trip this costs a few tenths of
/// a second of CPU once.
pub const SLOW_START_BANDWIDTH: u64 = 32_000;

/// What the satellite knows of its link to central.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkMeasure {
    /// Bytes per second, once a large call measured it.
    pub bytes_per_sec: Option<f64>,
    /// Round-trip time in seconds, once a small call measured it.
    pub rtt: Option<f64>,
}

impl LinkMeasure {
    /// Its bandwidth not measured yet, and its round trip long enough
    /// ([`SLOW_START_RTT`]) that it may be a slow link.
    pub fn slow_start(&self) -> bool {
        self.bytes_per_sec.is_none() && self.rtt.is_some_and(|r| r >= SLOW_START_RTT)
    }

    /// The link as told to central, batches of `batch_secs`: once its
    /// bandwidth is measured, or during slow start as a link of
    /// [`SLOW_START_BANDWIDTH`]; `None` before either.
    pub fn estimate(&self, batch_secs: u32) -> Option<LinkEstimate> {
        let bw = self
            .bytes_per_sec
            .or(self.slow_start().then_some(SLOW_START_BANDWIDTH as f64))?;
        Some(LinkEstimate {
            bytes_per_sec: (bw as u64).max(100),
            rtt_ms: (self.rtt.unwrap_or(0.0) * 1000.0) as u64,
            batch_secs,
        })
    }

    /// Takes one call that sent `sent` bytes and received `received`: its
    /// reply's headers came `to_headers` seconds after it started, its
    /// whole reply `total` seconds after, and central worked `work` of
    /// them. A small request measures the round trip (headers less work);
    /// a large call, less the round trip and the work, the bandwidth. Each
    /// new measure counts half, the ones before the other half.
    pub fn observe(&mut self, sent: u64, received: u64, to_headers: f64, total: f64, work: f64) {
        let mix = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| (o + new) / 2.0));
        if sent < SMALL_REQUEST {
            self.rtt = mix(self.rtt, (to_headers - work).max(0.0));
        }
        let bytes = sent + received;
        if bytes >= LARGE_CALL {
            let transfer = (total - work - self.rtt.unwrap_or(0.0)).max(0.001);
            self.bytes_per_sec = mix(self.bytes_per_sec, bytes as f64 / transfer);
        }
    }
}

/// Talks to central; counts bytes and round trips; measures the link.
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
    /// The link as measured (`[sync] adapt_to_link`: used to pick the
    /// compression and the batches' bytes).
    measure: std::sync::Mutex<LinkMeasure>,
    /// Whether to adapt to the link.
    adapt: bool,
    /// Seconds of link time a batch may take.
    batch_secs: u32,
}

/// How long an idle connection to central is kept for reuse: well under
/// the 10 s after which central closes an idle keep-alive connection.
const POOL_IDLE: Duration = Duration::from_secs(4);

impl CentralClient {
    /// A client for the configured central.
    pub fn new(config: &SatelliteConfig) -> Result<CentralClient, SyncError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = config.token()?.ok_or(SyncError::NoToken)?.0;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(config.central.timeout_secs.max(1)))
            // Below central's idle keep-alive limit (10 s, the header read
            // timeout that also closes idle connections): a connection
            // reused just as central closes it fails with "connection
            // closed before message completed" (seen with 100 clinics,
            // on the acknowledgement after a page took long to store).
            .pool_idle_timeout(POOL_IDLE);
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
            measure: std::sync::Mutex::new(LinkMeasure::default()),
            adapt: config.sync.adapt_to_link,
            batch_secs: config.sync.batch_secs,
        })
    }

    /// What is known of the link.
    pub fn measure(&self) -> LinkMeasure {
        *self.measure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts from what earlier runs measured.
    pub fn set_measure(&self, measure: LinkMeasure) {
        *self.measure.lock().unwrap_or_else(|p| p.into_inner()) = measure;
    }

    /// The link as told to central and used here, once its bandwidth is
    /// known, or during slow start ([`CentralClient::slow_start`]) as a
    /// link of [`SLOW_START_BANDWIDTH`] (`None` when neither, and when
    /// `[sync] adapt_to_link = false`).
    pub fn link(&self) -> Option<LinkEstimate> {
        if !self.adapt {
            return None;
        }
        self.measure().estimate(self.batch_secs)
    }

    /// Whether the link is taken to be a 2G one ([`SLOW_START_BANDWIDTH`]):
    /// adapting to the link, its bandwidth not measured yet, and its round
    /// trip (measured by an earlier small call, such as a run with nothing
    /// to sync) long enough ([`SLOW_START_RTT`]) that it may be a slow link.
    /// A LAN never waits for that.
    pub fn slow_start(&self) -> bool {
        self.adapt && self.measure().slow_start()
    }

    /// The byte budget of a batch of packs: `cap` on a fast or unknown
    /// link, less on a slow one.
    pub fn batch_bytes(&self, cap: usize) -> usize {
        link::batch_bytes_for(self.link().as_ref(), cap)
    }

    /// Sends this report with the calls from now on.
    pub fn set_report(&self, report: &chartsync_common::report::Report) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.encode());
    }

    /// Central's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The sync protocol version spoken (it steps down when central, an
    /// older one, refuses it).
    pub fn version(&self) -> u8 {
        self.version.load(Ordering::Relaxed)
    }

    /// Whether packs sent may be thin (deltas on central's version).
    pub fn thin(&self) -> bool {
        self.version() >= 3
    }

    /// One round trip to a sync endpoint. When central says it is busy
    /// (503, every sync slot taken), waits as long as it asks (`Retry-After`,
    /// at most 30 s) plus up to as long again at random, and tries again, a
    /// few times.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, SyncError> {
        let mut version = self.version();
        let level = link::level_for(self.link().as_ref());
        let mut body = envelope::encode_at(request, version, level).map_err(SyncError::Encode)?;
        let mut attempt = 0;
        let mut resent = false;
        loop {
            match self.call_once(path, body.clone(), version).await {
                // Central closed the connection before answering: most
                // likely a kept-alive connection it had just closed as
                // idle (its idle timer starts once a reply is written,
                // which on a slow link can be long before the satellite
                // has read it). The request is sent once more, on a new
                // connection; every sync request may be repeated (a push
                // repeated after central applied it finds central's head
                // already at its head).
                Err(SyncError::Unreachable { ref source, .. })
                    if !resent && closed_before_reply(source) =>
                {
                    resent = true;
                    tracing::info!(
                        path,
                        "central closed the connection before answering: sending once more"
                    );
                }
                // An older central: speak its version from now on.
                Err(SyncError::Refused {
                    status: 400, code, ..
                }) if code == "protocol_version" && version > MIN_PROTOCOL_VERSION => {
                    // One version down at a time (4, then 3, then 2).
                    let older = version - 1;
                    tracing::info!(
                        from = version,
                        to = older,
                        "central speaks an older sync protocol"
                    );
                    version = older;
                    self.version.store(version, Ordering::Relaxed);
                    body =
                        envelope::encode_at(request, version, level).map_err(SyncError::Encode)?;
                }
                Err(SyncError::Busy { retry_after, .. }) if attempt < BUSY_RETRIES => {
                    attempt += 1;
                    // Plus up to as long again at random: satellites turned
                    // away at the same moment do not all come back at the
                    // same moment (which left central's sync slots idle
                    // between waves of 503s with many clinics).
                    let wait = retry_after.clamp(1, 30);
                    tokio::time::sleep(
                        Duration::from_secs(wait) + crate::scheduler::random_below(wait),
                    )
                    .await;
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
        let sent = body.len() as u64;
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        let report = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut request = self.http.post(&url);
        if let Some(report) = report {
            request = request.header(chartsync_common::report::HEADER, report);
        }
        if let Some(link) = self.link() {
            request = request.header(LINK_HEADER, link.encode());
        }
        let start = Instant::now();
        let response = request
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(PROTOCOL_HEADER, version.to_string())
            .header(CT, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let to_headers = start.elapsed().as_secs_f64();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let work = response
            .headers()
            .get(WORK_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(unreachable)?;
        self.bytes_received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // Only answers from central itself say how long it worked.
        if let Some(work) = work {
            self.measure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(
                    sent + HEADER_BYTES / 2,
                    bytes.len() as u64 + HEADER_BYTES / 2,
                    to_headers,
                    start.elapsed().as_secs_f64(),
                    work as f64 / 1000.0,
                );
        }
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

/// Whether `error` is a connection closed before any of the reply came
/// (hyper's "connection closed before message completed"), as opposed to a
/// refused connection, a timeout or a reply cut off part way.
fn closed_before_reply(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::LinkMeasure;

    #[test]
    fn small_requests_measure_the_round_trip_and_large_calls_the_bandwidth() {
        let mut m = LinkMeasure::default();
        // 100 bytes up, reply headers after 0.65 s of which central worked
        // 0.05 s: a round trip of 0.6 s; too few bytes for a bandwidth.
        m.observe(100, 300, 0.65, 0.66, 0.05);
        assert!(m.rtt.is_some_and(|r| (r - 0.6).abs() < 1e-9));
        assert_eq!(m.bytes_per_sec, None);
        // 64 kB down in 2.65 s: 2 s on the link after the round trip and
        // the work.
        m.observe(100, 64_000, 0.65, 2.65, 0.05);
        let bw = m.bytes_per_sec.expect("bandwidth");
        assert!((bw - 64_100.0 / 2.0).abs() < 1.0, "{bw}");
        // A large request measures no round trip; measures count half.
        m.observe(64_000, 100, 2.65, 2.66, 0.06);
        assert!(m.rtt.is_some_and(|r| (r - 0.6).abs() < 1e-9));
        let again = m.bytes_per_sec.expect("bandwidth");
        assert!((again - (bw + 64_100.0 / 2.0) / 2.0).abs() < 1.0, "{again}");
    }

    #[test]
    fn slow_start_takes_a_long_round_trip_for_a_2g_link_until_measured() {
        let mut m = LinkMeasure::default();
        assert!(!m.slow_start());
        assert_eq!(m.estimate(30), None, "nothing known: nothing said");
        // A LAN's round trip: no slow start, nothing said.
        m.rtt = Some(0.002);
        assert!(!m.slow_start());
        assert_eq!(m.estimate(30), None);
        // 600 ms: a 2G link until a large call says otherwise, so central
        // compresses the first small page as for one (zstd 19).
        m.rtt = Some(0.6);
        assert!(m.slow_start());
        let slow = m.estimate(30).expect("slow start");
        assert_eq!(
            (slow.bytes_per_sec, slow.rtt_ms),
            (super::SLOW_START_BANDWIDTH, 600)
        );
        assert_eq!(slow.streamed_level(), 19);
        // Measured: 10 MB/s; the estimate is the measure.
        m.bytes_per_sec = Some(10e6);
        assert!(!m.slow_start());
        let fast = m.estimate(30).expect("measured");
        assert_eq!(fast.bytes_per_sec, 10_000_000);
        assert_eq!(fast.streamed_level(), 6);
    }
}
