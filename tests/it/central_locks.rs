//! A process that dies holding a patient's lock (a lease row in central's
//! SQLite database) blocks that patient no longer than the lease, and never
//! blocks other patients. The dead holder is a real second process, killed
//! with SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chartsync_central::db::CentralDb;
use chartsync_protocol::PatientId;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{self, KillOnDrop, TestCentral};

const CHILD_ENV: &str = "CHARTSYNC_LOCK_CHILD";
const LEASE: Duration = Duration::from_secs(3);
const WAIT_SECS: f64 = 1.0;

/// Wall-clock Unix milliseconds (the clock the lease rows use).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

/// The child's test name, as libtest knows it (its module path without the
/// crate's name).
fn lease_holder_child_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::lease_holder_child")
}

/// The child: takes patient P's lease in central's database for `LEASE`,
/// prints "locked <unix ms before taking it>", then sleeps until killed.
/// Does nothing unless started by the parent test.
#[test]
fn lease_holder_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (db_path, id) = spec.split_once('|').expect("db|patient");
    let id: PatientId = id.parse().expect("patient id");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = now_ms();
    let taken = runtime.block_on(async {
        let db = chartsync_central::db::sqlite::SqliteDb::open(std::path::Path::new(db_path))
            .expect("open central's database");
        db.try_lock(&[id], "doomed-child-process", LEASE)
            .await
            .expect("try_lock")
    });
    assert_eq!(taken, vec![true], "the child takes the free lease");
    println!("locked {before}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One PUT: status, new ETag (on 200), Retry-After (on 503).
async fn put(
    http: &reqwest::Client,
    c: &TestCentral,
    id: PatientId,
    etag: &str,
    yaml: &str,
) -> (StatusCode, Option<String>, Option<u64>) {
    let r = http
        .put(format!("{}/v1/patients/{id}", c.url))
        .bearer_auth(&c.admin)
        .header("if-match", etag)
        .json(&json!({"files": {"patient.yaml": yaml}}))
        .send()
        .await
        .expect("put");
    let status = r.status();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    let etag = header("etag");
    let retry = header("retry-after").map(|v| v.parse().expect("Retry-After seconds"));
    (
        status,
        (status == StatusCode::OK).then_some(etag).flatten(),
        retry,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_process_holding_a_patient_lock_blocks_it_no_longer_than_the_lease_and_no_one_else()
{
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path())
        .config(&format!(
            "[locks]\nwait_secs = {WAIT_SECS}\nlease_secs = 30\n"
        ))
        .start()
        .await;
    let http = support::client();
    let (p, p_etag) = c.create(&http, "name: P\n").await;
    let (q, mut q_etag) = c.create(&http, "name: Q\n").await;

    // The child takes P's lease, says so, and is killed with SIGKILL.
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("exe"))
            .arg(lease_holder_child_name())
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}|{p}", dir.path().join("central.sqlite").display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test central_locks::lease_holder_child ... "
            // before it.
            if let Some((_, at)) = line.rsplit_once("locked ") {
                let _ = tx.send(at.trim().parse().expect("unix ms"));
            }
        }
    });
    let locked_at = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("reader");
    let Ok(locked_at) = locked_at else {
        panic!("the child did not take the lock");
    };
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reap the child");
    let killed = Instant::now();
    // The lease cannot end before this instant (it was taken after it).
    let expires_no_earlier = locked_at + i64::try_from(LEASE.as_millis()).expect("ms");

    // Other patients are written right away, all through the dead lease.
    let (http2, c_url, admin) = (http.clone(), c.url.clone(), c.admin.clone());
    let others = tokio::spawn(async move {
        let mut done = Vec::new();
        let deadline = Instant::now() + LEASE + Duration::from_secs(2);
        let mut n = 0;
        while Instant::now() < deadline || done.len() < 3 {
            n += 1;
            let started = Instant::now();
            let r = http2
                .put(format!("{c_url}/v1/patients/{q}"))
                .bearer_auth(&admin)
                .header("if-match", &q_etag)
                .json(&json!({"files": {"patient.yaml": format!("name: Q\nn: {n}\n")}}))
                .send()
                .await
                .expect("put");
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "write {n} to another patient was refused: {:?}",
                r.text().await
            );
            q_etag = r.headers()["etag"].to_str().expect("etag").to_string();
            done.push((started.elapsed(), now_ms()));
        }
        done
    });

    // P: 503 with Retry-After while the dead lease lives, then success.
    let mut busy = 0;
    let (success_ms, blocked) = loop {
        let (status, etag, retry) = put(&http, &c, p, &p_etag, "name: P\nphone: '1'\n").await;
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert!(
                    retry.is_some_and(|s| s >= 1),
                    "a 503 says when to retry: {retry:?}"
                );
                assert!(
                    killed.elapsed() < LEASE + Duration::from_secs(30),
                    "P is still locked {:?} after its holder died",
                    killed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            StatusCode::OK => {
                assert!(etag.is_some());
                break (now_ms(), killed.elapsed());
            }
            other => panic!("P answered {other}"),
        }
    };
    let q_writes = others.await.expect("other writer");
    eprintln!(
        "P: {busy} busy answers, blocked {blocked:?} after the kill (lease {LEASE:?}); Q: {} writes, slowest {:?}",
        q_writes.len(),
        q_writes.iter().map(|w| w.0).max().unwrap_or_default()
    );
    assert!(busy >= 1, "the dead process's lease blocked P for a while");
    assert!(
        success_ms >= expires_no_earlier,
        "P was written {} ms before the dead holder's lease ended",
        expires_no_earlier - success_ms
    );
    let bound = LEASE + Duration::from_secs_f64(WAIT_SECS) + Duration::from_secs(3);
    assert!(
        blocked <= bound,
        "P was blocked {blocked:?}, more than the lease allows ({bound:?})"
    );
    // Q was never blocked: every write succeeded at the first try (checked
    // above), several of them while P's lease still held, none taking as
    // long as the lease.
    let during = q_writes
        .iter()
        .filter(|(_, at)| *at < expires_no_earlier)
        .count();
    assert!(
        during >= 2,
        "only {during} writes to Q completed while P was locked"
    );
    for (took, _) in &q_writes {
        assert!(*took < LEASE, "a write to Q took {took:?}");
    }
    // P's write is there, once.
    assert_eq!(c.history_len(&http, p).await, 2);
    assert_eq!(c.history_len(&http, q).await, 1 + q_writes.len());
    c.stop().await;
}
