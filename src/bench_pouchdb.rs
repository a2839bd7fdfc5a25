//! `chartsync bench --pouchdb`: the main run's records replicated the
//! CouchDB way, PouchDB to express-pouchdb with batches of 100
//! (`bench/pouchdb/replicate.js`, Node), through the same pacing proxy as
//! the satellites: one proxy for the push and another for the fetch, so
//! each one's bytes are counted apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::bench_link::{Link, LinkProxy};

/// What PouchDB took.
#[derive(Debug)]
pub struct PouchResult {
    pub batch_size: u64,
    pub push_seconds: f64,
    pub fetch_seconds: f64,
    /// Bytes through the link, both ways, with HTTP headers.
    pub push_link_bytes: u64,
    pub fetch_link_bytes: u64,
}

/// The folder of the Node script: `CHARTSYNC_POUCHDB_DIR`, or
/// `bench/pouchdb` under the current folder (the repository's root).
fn script_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CHARTSYNC_POUCHDB_DIR")
        .map_or_else(|| PathBuf::from("bench/pouchdb"), PathBuf::from);
    if !dir.join("replicate.js").is_file() {
        bail!(
            "{} has no replicate.js: run the bench from the repository's root or set CHARTSYNC_POUCHDB_DIR",
            dir.display()
        );
    }
    if !dir.join("node_modules").is_dir() {
        bail!(
            "{}: run `npm ci` there first (PouchDB and express-pouchdb from the npm registry)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes `records` documents (`doc(i)` with a fresh `_id`) and replicates
/// them with PouchDB through `link` (or directly).
pub async fn run(
    work: &Path,
    records: usize,
    link: Option<Link>,
    doc: impl Fn(usize) -> serde_json::Value,
) -> anyhow::Result<PouchResult> {
    let dir = script_dir()?;
    let file = work.join("pouchdb-records.jsonl");
    let mut text = String::new();
    for i in 0..records {
        let mut d = doc(i);
        d["_id"] = serde_json::json!(uuid_like(i));
        text.push_str(&d.to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port();
    let target = format!("127.0.0.1:{port}");
    let unlimited = Link {
        rtt: std::time::Duration::ZERO,
        bytes_per_sec: 1e12,
    };
    let push = LinkProxy::start(&target, link.unwrap_or(unlimited))?;
    let fetch = LinkProxy::start(&target, link.unwrap_or(unlimited))?;
    let script = std::fs::canonicalize(dir.join("replicate.js"))?;
    let out = Command::new("node")
        .arg(&script)
        .args(["--listen", &port.to_string(), "--push-url", &push.url])
        .args(["--fetch-url", &fetch.url, "--records"])
        .arg(&file)
        .current_dir(work)
        .stdin(Stdio::null())
        .output()
        .context("cannot run node (Node.js 20 or later is needed for --pouchdb)")?;
    if !out.status.success() {
        bail!(
            "the PouchDB run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("the PouchDB run printed {stdout:?}"))?;
    let f = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {line}"));
    let (up, down) = push.bytes();
    let (fup, fdown) = fetch.bytes();
    Ok(PouchResult {
        batch_size: v["batch_size"].as_u64().unwrap_or(0),
        push_seconds: f("push_seconds")?,
        fetch_seconds: f("fetch_seconds")?,
        push_link_bytes: up + down,
        fetch_link_bytes: fup + fdown,
    })
}

/// A UUID-shaped id (CouchDB's own ids are 32 hex digits).
fn uuid_like(i: usize) -> String {
    let mut r = crate::bench::Rng::new(i as u64 + 0x5eed);
    format!("{:016x}{:016x}", r.next(), r.next())
}
