//! A full disk named as such: a satellite whose data folder sits on a tiny
//! file system (a real tmpfs) answers 507 `disk_full` when a record cannot
//! be stored, `/healthz` turns 503 with the reason, and the status words
//! say so. Out of space and out of inodes both.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestSatellite, client};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` with `inodes` inodes at a fresh folder;
    /// `None` where mounting is not allowed (not root). CI runs as root,
    /// so there the test must run.
    fn mount(size: &str, inodes: u32) -> Option<(tempfile::TempDir, Tmpfs)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path().join("fs");
        std::fs::create_dir(&at).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},nr_inodes={inodes},mode=0700"))
            .arg("tmpfs")
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs (it runs as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some((dir, Tmpfs(at)))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Text that zlib cannot shrink much.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Writes records until one is refused; returns the refusal.
async fn fill(http: &reqwest::Client, sat: &TestSatellite, bytes: usize) -> (StatusCode, Value) {
    for i in 0..10_000u64 {
        let yaml = format!("given_name: P{i}\nnote: {}\n", noise(i + 1, bytes));
        let r = http
            .post(format!("{}/v1/patients", sat.url))
            .json(&json!({"files": {"patient.yaml": yaml}}))
            .send()
            .await
            .expect("post");
        if r.status() != StatusCode::CREATED {
            let status = r.status();
            return (status, r.json().await.unwrap_or(Value::Null));
        }
    }
    panic!("the disk never filled up");
}

async fn check_full(kind: &str, size: &str, inodes: u32, record_bytes: usize) {
    let Some((_dir, fs)) = Tmpfs::mount(size, inodes) else {
        return;
    };
    let http = client();
    let sat = TestSatellite::builder(fs.path().join("sat"))
        .config("[disk]\nmin_free_bytes = 262144\nmin_free_inodes = 40")
        .start()
        .await;
    let health = http
        .get(format!("{}/healthz", sat.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK, "{kind}: healthy at first");
    let (first, _) = sat.create(&http, "given_name: First\n").await;

    let (status, body) = fill(&http, &sat, record_bytes).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{kind}: {body}");
    assert_eq!(body["error"], "disk_full", "{kind}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("disk is full")),
        "{kind}: {body}"
    );

    let health = http
        .get(format!("{}/healthz", sat.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE, "{kind}");
    let text = health.text().await.expect("text");
    assert!(text.contains("the disk is full"), "{kind}: {text}");
    let (full, words) =
        chartsync_satellite::words::disk_sentence(&sat.sat.config.data_dir, &sat.sat.config.disk);
    assert!(full, "{kind}: {words}");
    assert!(words.starts_with("the disk is full"), "{kind}: {words}");
    if kind == "inodes" {
        assert!(words.contains("out of inodes"), "{words}");
    }
    // Reading goes on.
    let (status, _, _) = sat.get(&http, &first).await;
    assert_eq!(status, StatusCode::OK, "{kind}");
    sat.stop().await;
}

#[tokio::test]
async fn out_of_space_is_507_and_unhealthy() {
    check_full("space", "6m", 100_000, 200_000).await;
}

#[tokio::test]
async fn out_of_inodes_is_507_and_unhealthy() {
    check_full("inodes", "64m", 400, 10).await;
}
