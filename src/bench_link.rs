//! `chartsync bench --link 600ms,256kbit`: a pacing TCP proxy on
//! 127.0.0.1 between the satellites and central (and PouchDB and its
//! server, for `--pouchdb`), so runs see a slow link: half the round-trip
//! time of latency each way, and the bandwidth in each direction (bytes
//! queue behind each other, as on a real link; the two directions do not
//! share it). It counts the bytes it forwards each way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A link: round-trip time and bandwidth per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Round-trip time (half of it each way).
    pub rtt: Duration,
    /// Bytes per second in each direction.
    pub bytes_per_sec: f64,
}

impl Link {
    /// Parses `600ms,256kbit` (round-trip time in `ms` or `s`, then the
    /// bandwidth per direction in `bit`, `kbit` or `mbit` per second).
    pub fn parse(text: &str) -> anyhow::Result<Link> {
        let bad = || {
            anyhow::anyhow!(
                "--link {text:?}: give the round-trip time and the bandwidth, such as 600ms,256kbit (units: ms or s; bit, kbit or mbit per second)"
            )
        };
        let (rtt, rate) = text.split_once(',').ok_or_else(bad)?;
        let (rtt, rate) = (
            rtt.trim().to_ascii_lowercase(),
            rate.trim().to_ascii_lowercase(),
        );
        let number = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
        };
        let rtt = if let Some(ms) = rtt.strip_suffix("ms") {
            number(ms).ok_or_else(bad)? / 1000.0
        } else if let Some(s) = rtt.strip_suffix('s') {
            number(s).ok_or_else(bad)?
        } else {
            return Err(bad());
        };
        let bits = if let Some(k) = rate.strip_suffix("kbit") {
            number(k).ok_or_else(bad)? * 1e3
        } else if let Some(m) = rate.strip_suffix("mbit") {
            number(m).ok_or_else(bad)? * 1e6
        } else if let Some(b) = rate.strip_suffix("bit") {
            number(b).ok_or_else(bad)?
        } else {
            return Err(bad());
        };
        if bits < 1000.0 || rtt > 60.0 {
            bail!("--link {text:?}: at least 1kbit per second and at most 60 s of round trip");
        }
        Ok(Link {
            rtt: Duration::from_secs_f64(rtt),
            bytes_per_sec: bits / 8.0,
        })
    }

    /// `600 ms, 256 kbit/s`.
    pub fn describe(&self) -> String {
        format!(
            "{:.0} ms round trip, {:.0} kbit/s each way",
            self.rtt.as_secs_f64() * 1000.0,
            self.bytes_per_sec * 8.0 / 1000.0
        )
    }
}

/// Bytes forwarded.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client to server.
    pub up: AtomicU64,
    /// Server to client.
    pub down: AtomicU64,
}

/// The proxy, on a thread of its own (the bench blocks its runtime's
/// threads waiting for child processes). Stops when dropped.
#[derive(Debug)]
pub struct LinkProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Bytes forwarded so far.
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Starts a proxy to `target` (`host:port` or `http://host:port`).
    pub fn start(target: &str, link: Link) -> anyhow::Result<LinkProxy> {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("bad proxy target {target}"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("link-proxy".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((client, _)) = listener.accept().await {
                            tokio::spawn(connection(client, target, link, Arc::clone(&shared)));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(LinkProxy {
            url,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Bytes forwarded (up, down) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counters.up.load(Ordering::Relaxed),
            self.counters.down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn connection(client: TcpStream, target: SocketAddr, link: Link, counters: Arc<Counters>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, link, Arc::clone(&counters), true);
    let down = pump(server_read, client_write, link, counters, false);
    tokio::join!(up, down);
}

/// Bytes of one read: what a link would carry as one burst.
const CHUNK: usize = 1460;

/// Forwards one direction: each chunk read leaves once the bytes before it
/// have (at the link's bandwidth) and arrives half a round trip later.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    counters: Arc<Counters>,
    up: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let one_way = link.rtt / 2;
    let reader = async move {
        let mut line_free = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            let start = line_free.max(now);
            line_free = start + Duration::from_secs_f64(n as f64 / link.bytes_per_sec);
            if tx.send((line_free + one_way, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            // Counted first, so the count is complete when the peer has
            // the bytes.
            let counter = if up { &counters.up } else { &counters.down };
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links() {
        let l = Link::parse("600ms,256kbit").expect("parse");
        assert_eq!(l.rtt, Duration::from_millis(600));
        assert!((l.bytes_per_sec - 32_000.0).abs() < 1e-9);
        let l = Link::parse(" 1.5s , 2mbit").expect("parse");
        assert_eq!(l.rtt, Duration::from_millis(1500));
        assert!((l.bytes_per_sec - 250_000.0).abs() < 1e-9);
        for bad in [
            "600ms",
            "600,256kbit",
            "600ms,256",
            "ms,kbit",
            "600ms,10bit",
            "-1ms,1mbit",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
    }

    /// Bytes pass both ways unchanged, and a reply cannot arrive before a
    /// round trip plus the time its bytes take at the link's rate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwards_both_ways_at_the_links_pace() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut got = vec![0u8; 8000];
                    if s.read_exact(&mut got).await.is_ok() {
                        got.reverse();
                        let _ = s.write_all(&got).await;
                    }
                });
            }
        });
        let link = Link::parse("200ms,320kbit").expect("link");
        let proxy = LinkProxy::start(&addr.to_string(), link).expect("proxy");
        let mut c = TcpStream::connect(proxy.url.trim_start_matches("http://"))
            .await
            .expect("connect");
        let sent: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
        let start = std::time::Instant::now();
        c.write_all(&sent).await.expect("write");
        let mut back = vec![0u8; 8000];
        c.read_exact(&mut back).await.expect("read");
        let took = start.elapsed();
        back.reverse();
        assert_eq!(back, sent);
        // 8000 bytes at 40 kB/s each way: 0.2 s up, 0.2 s down, plus 0.2 s
        // of round trip: never less than 0.6 s.
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert_eq!(proxy.bytes(), (8000, 8000));
    }
}
