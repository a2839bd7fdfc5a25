//! kill -9 of a real central process in the middle of batch pushes, at many
//! different moments: after every restart each acknowledged push is at
//! central (that head or a later one of ours), the database and the git refs
//! agree, pushes whose answer was lost complete when pushed again, and at
//! the end every repository passes `git fsck --strict`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartsync_central::db::CentralDb;
use chartsync_protocol::envelope;
use chartsync_protocol::sync::{
    CONTENT_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION, PushOutcome, PushRecord, PushResponse,
};
use chartsync_protocol::{CommitId, PatientId};

use crate::support::wire::{Scratch, admin_head, encode_push, files};
use crate::support::{self, EXE, free_port, git};

/// Set to keep the data folder of the kill -9 test for a post-mortem.
const KEEP_ENV: &str = "CHARTSYNC_CRASH_KEEP";
const ADMIN: &str = "crash-test-admin-token-0123456789abcdef";
/// Kills (and restarts).
const ROUNDS: usize = 24;
/// New records per batch; the rest are updates of acknowledged records.
const NEW_PER_BATCH: usize = 30;
/// Records per batch (records whose push was cut off come first).
const BATCH: usize = 90;
/// The dead process's patient leases outlive its restart (as with the
/// defaults, 30 s and 5 s): repair and writes must cope with that.
const LEASE_SECS: f64 = 1.0;
const WAIT_SECS: f64 = 0.2;

/// central as a child process.
struct Server {
    /// `None` once killed.
    child: Option<Child>,
    url: String,
    log: Arc<Mutex<String>>,
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("central.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nadmin_token = \"{ADMIN}\"\n\n[locks]\nlease_secs = {LEASE_SECS}\nwait_secs = {WAIT_SECS}\n\n[upkeep]\nrepack_after_packs = 2\n"
        ),
    )
    .expect("config");
    path
}

impl Server {
    /// Starts central on a free port; returns once it listens.
    fn start(dir: &Path) -> Server {
        let port = free_port();
        let config = write_config(dir, port);
        let mut child = Command::new(EXE)
            .args(["central", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn central");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let listening = line.contains("central listening");
                {
                    let mut log = sink.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
                if listening {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "central did not start:\n{}",
                log.lock().expect("log").as_str()
            );
        }
        Server {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// kill -9; returns its log.
    fn kill(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
        let log = self.log.lock().expect("log");
        log.clone()
    }
}

impl Drop for Server {
    /// A failing test leaves no central running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn instance_add(dir: &Path) -> String {
    let config = write_config(dir, free_port());
    let out = Command::new(EXE)
        .args(["central", "instance", "add", "--config"])
        .arg(&config)
        .args(["--name", "crash-north", "--catchment", "north"])
        .output()
        .expect("instance add");
    assert!(
        out.status.success(),
        "instance add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON line {id, token}");
    assert!(line["id"].is_u64());
    line["token"].as_str().expect("token").to_string()
}

/// A push that may be cut off by the kill.
async fn send(
    http: reqwest::Client,
    url: String,
    token: String,
    body: Vec<u8>,
) -> Result<PushResponse, String> {
    let response = http
        .post(format!("{url}/v1/sync/push"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .timeout(Duration::from_secs(120))
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "push answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(envelope::decode(&bytes, 512 << 20).expect("a complete reply decodes"))
}

/// The client's view of one record.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// The last head central acknowledged (Applied).
    acked: Option<CommitId>,
    /// A head pushed (or to push) whose answer was not seen.
    pending: Option<CommitId>,
    /// When it was last sent.
    sent: Option<Instant>,
    version: u32,
}

fn record_files(n: usize, version: u32) -> chartsync_protocol::Files {
    files(&[
        (
            "patient.yaml",
            &format!("name: Patient {n}\ncatchment: north\nvisits: {version}\n"),
        ),
        (
            &format!("encounters/v{}.yaml", version % 4),
            &format!(
                "visit: {version}\nnote: \"{}\"\n",
                "x".repeat(version as usize % 50)
            ),
        ),
    ])
}

struct Client {
    sat: Scratch,
    recs: HashMap<PatientId, Rec>,
    order: Vec<PatientId>,
    next_update: usize,
}

impl Client {
    /// How many records wait for an answer.
    fn pending(&self) -> usize {
        self.recs.values().filter(|r| r.pending.is_some()).count()
    }

    /// The next batch: up to `again` records whose answer was lost (or that
    /// were busy) and that were last sent at least `rest` ago, then `new` new
    /// records, then updates of acknowledged records up to `size`.
    fn batch(&mut self, again: usize, rest: Duration, new: usize, size: usize) -> Vec<PushRecord> {
        let mut ids: Vec<PatientId> = self
            .order
            .iter()
            .copied()
            .filter(|id| {
                let rec = &self.recs[id];
                rec.pending.is_some() && rec.sent.is_none_or(|at| at.elapsed() >= rest)
            })
            .take(again.min(size))
            .collect();
        for _ in 0..new.min(size.saturating_sub(ids.len())) {
            let id = PatientId::random();
            let head = self.sat.create_files(id, record_files(self.order.len(), 0));
            self.recs.insert(
                id,
                Rec {
                    acked: None,
                    pending: Some(head),
                    sent: None,
                    version: 0,
                },
            );
            self.order.push(id);
            ids.push(id);
        }
        let mut tried = 0;
        while ids.len() < size && tried < self.order.len() {
            let id = self.order[self.next_update % self.order.len()];
            self.next_update += 1;
            tried += 1;
            let rec = self.recs[&id];
            if rec.pending.is_some() || rec.acked.is_none() || ids.contains(&id) {
                continue;
            }
            let n = self.order.iter().position(|x| *x == id).unwrap_or(0);
            let head = self.sat.update_files(id, record_files(n, rec.version + 1));
            self.recs.insert(
                id,
                Rec {
                    pending: Some(head),
                    version: rec.version + 1,
                    ..rec
                },
            );
            ids.push(id);
        }
        let now = Instant::now();
        for id in &ids {
            if let Some(rec) = self.recs.get_mut(id) {
                rec.sent = Some(now);
            }
        }
        ids.iter()
            .map(|id| {
                let rec = self.recs[id];
                let head = rec.pending.expect("pending");
                PushRecord {
                    id: *id,
                    expected: rec.acked,
                    head,
                    pack: self
                        .sat
                        .store
                        .pack_since(id, head, rec.acked.as_slice())
                        .expect("pack"),
                }
            })
            .collect()
    }

    /// Takes central's answers; returns (applied, busy).
    fn answers(&mut self, sent: &[PushRecord], response: &PushResponse) -> (usize, usize) {
        assert_eq!(response.results.len(), sent.len());
        let (mut applied, mut busy) = (0, 0);
        for (record, result) in sent.iter().zip(&response.results) {
            // In request order (protocol 5 leaves the ids out).
            assert_eq!(
                result.id.unwrap_or(record.id),
                record.id,
                "results in request order"
            );
            let rec = self.recs.get_mut(&record.id).expect("known");
            match &result.outcome {
                PushOutcome::Applied { .. } => {
                    rec.acked = Some(record.head);
                    rec.pending = None;
                    rec.sent = None;
                    applied += 1;
                }
                PushOutcome::Busy => busy += 1,
                other => panic!(
                    "{}: a lone writer's push (expected {:?}) was answered {other:?}",
                    record.id, record.expected
                ),
            }
        }
        (applied, busy)
    }
}

fn repo_path(data: &Path, id: PatientId) -> PathBuf {
    let hex = id.uuid().simple().to_string();
    data.join("repos")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(format!("{id}.git"))
}

/// The git ref of a record, read as git does (`rev-parse`), or by reading
/// the loose ref file (cheap, for many records).
fn git_ref(data: &Path, id: PatientId, with_git: bool) -> Option<CommitId> {
    let repo = repo_path(data, id);
    if with_git {
        let out = git(&repo, &["rev-parse", "--verify", "-q", "refs/heads/main"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .flatten()
    } else {
        // A loose ref, or packed-refs for a record never updated.
        chartsync_store::refs::read_head(&repo)
            .ok()
            .flatten()
            .and_then(|o| o.to_string().parse().ok())
    }
}

/// After a restart, for every record (cheaply, from central's database and
/// the ref files): an acknowledged record is at its acknowledged head (or at
/// the head of ours whose answer was lost), and its git ref is that head.
async fn verify_database_and_refs(
    db: &chartsync_central::db::sqlite::SqliteDb,
    data: &Path,
    client: &Client,
    round: usize,
) {
    let rows = db.records(&client.order).await.expect("rows");
    for (id, row) in client.order.iter().zip(rows) {
        let rec = client.recs[id];
        match row {
            Some(row) => {
                assert!(
                    Some(row.head) == rec.acked || Some(row.head) == rec.pending,
                    "round {round}: {id} is at {} in central's database; acknowledged {:?}, pushed {:?}",
                    row.head,
                    rec.acked,
                    rec.pending
                );
                assert_eq!(
                    git_ref(data, *id, false),
                    Some(row.head),
                    "round {round}: {id}: the git ref is not the database's head"
                );
            }
            None => assert!(
                rec.acked.is_none(),
                "round {round}: acknowledged record {id} ({:?}) is missing in central's database",
                rec.acked
            ),
        }
    }
}

/// After a restart: the records in `check` are at central with their
/// acknowledged head (or the pending head of ours, if that push went
/// through before the kill), and their git ref is the database's head.
async fn verify(
    http: &reqwest::Client,
    server: &Server,
    data: &Path,
    client: &Client,
    check: &[PatientId],
    with_git: usize,
    round: usize,
) {
    for (i, id) in check.iter().enumerate() {
        let rec = client.recs[id];
        let central = admin_head(http, &server.url, ADMIN, *id).await;
        match central {
            Some(head) => {
                assert!(
                    Some(head) == rec.acked || Some(head) == rec.pending,
                    "round {round}: {id} is at {head} at central; acknowledged {:?}, pushed {:?}",
                    rec.acked,
                    rec.pending
                );
                assert_eq!(
                    git_ref(data, *id, i < with_git),
                    Some(head),
                    "round {round}: {id}: the git ref is not the database's head"
                );
            }
            None => assert!(
                rec.acked.is_none(),
                "round {round}: acknowledged record {id} ({:?}) is missing at central",
                rec.acked
            ),
        }
    }
}

/// Regression: central crashed after accepting heads in its database and
/// before moving the git refs, and was restarted while the dead process's
/// patient leases still lived (a restart takes well under the 30 s default
/// lease). Start-up repair gave up on those patients after `wait_secs`,
/// leaving their refs behind the database, and then removed the dead
/// process's staging folder: a new record the database had accepted (a
/// retried push is answered Applied for it) was gone for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_within_a_crashed_processs_leases_repairs_every_accepted_head() {
    use chartsync_central::db::HeadChange;
    use chartsync_central::db::sqlite::SqliteDb;
    use chartsync_store::{Change, CommitMeta, Condition, Flush, RecordStore, StoreOptions};

    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    let config = chartsync_central::CentralConfig::parse(
        &format!(
            "data_dir = \"data\"\nadmin_token = \"{ADMIN}\"\n[locks]\nlease_secs = 3\nwait_secs = 0.25\n"
        ),
        &dir.path().join("central.toml"),
    )
    .expect("config");
    let meta = CommitMeta::new("HQ", "hq@test", "edit");
    let patient =
        |n: u32| Change::Replace(files(&[("patient.yaml", &format!("name: B\nn: {n}\n"))]));

    // The process that crashes: B exists; then a batch creating A and
    // updating B gets through step 4 (heads accepted in the database, under
    // the patients' leases), not step 5 (refs moved).
    let db = SqliteDb::open(&data.join("central.sqlite")).expect("db");
    let store = RecordStore::open_keep_tmp(StoreOptions::new(&data, "central")).expect("store");
    let (a, b) = (PatientId::random(), PatientId::random());
    let b1 = store
        .write(&b, Condition::MustCreate, patient(1), &meta)
        .expect("b");
    let change = |id, old, new, staging: Option<&Path>| HeadChange {
        id,
        old,
        new,
        catchment: None,
        by: None,
        staging: staging.map(|p| p.to_string_lossy().into_owned()),
    };
    db.apply(&[change(b, None, b1, None)])
        .await
        .expect("apply b1");
    db.clear_ref_pending(&[(b, b1)]).await.expect("clear");
    let new_a = store
        .prepare(&a, Condition::MustCreate, patient(2), &meta, Flush::Now)
        .expect("prepare a");
    let move_b = store
        .prepare(&b, Condition::MatchHead(b1), patient(3), &meta, Flush::Now)
        .expect("prepare b");
    let leases = db
        .try_lock(&[a, b], "host:1:crashed", Duration::from_secs(3))
        .await
        .expect("leases");
    assert_eq!(leases, vec![true, true]);
    let (a2, b2) = (new_a.new, move_b.new);
    let accepted = db
        .apply(&[
            change(a, None, a2, new_a.staging_path()),
            change(b, Some(b1), b2, None),
        ])
        .await
        .expect("apply");
    assert!(
        accepted
            .iter()
            .all(|x| matches!(x, chartsync_central::db::Applied::Ok { .. }))
    );
    // kill -9: the staged repository stays where it was built (forgetting
    // it skips the clean-up a drop would do), no ref moves, and the
    // process's session lock goes with it.
    std::mem::forget(new_a);
    drop(move_b);
    drop(store);
    drop(db);

    // Restart right away, while the leases live.
    let db = SqliteDb::open(&data.join("central.sqlite")).expect("db");
    let central = chartsync_central::Central::open(config, db)
        .await
        .expect("open central");
    assert_eq!(
        central.store.head(&a).expect("head"),
        Some(a2),
        "the accepted new record is there"
    );
    assert_eq!(
        central.store.head(&b).expect("head"),
        Some(b2),
        "the ref is the database's head"
    );
    assert!(central.store.read_at(&a, a2).expect("read").is_some());
    assert!(central.db.ref_pending().await.expect("pending").is_empty());
    let rows = central.db.records(&[a, b]).await.expect("rows");
    assert_eq!(rows[0].as_ref().map(|r| r.head), Some(a2));
    assert_eq!(rows[1].as_ref().map(|r| r.head), Some(b2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_batch_pushes_loses_nothing_acknowledged() {
    let started = Instant::now();
    let mut dir = tempfile::tempdir().expect("tmp");
    if std::env::var_os(KEEP_ENV).is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    let data = dir.path().join("data");
    let token = instance_add(dir.path());
    let http = support::client();
    let mut client = Client {
        sat: Scratch::named("crash-north"),
        recs: HashMap::new(),
        order: Vec::new(),
        next_update: 0,
    };

    // A first batch without a kill, to learn how long a batch takes.
    let mut server = Server::start(dir.path());
    // The test watches central's database (read-only use) to kill it at the
    // moment that matters most.
    let watch = chartsync_central::db::sqlite::SqliteDb::open(&data.join("central.sqlite"))
        .expect("open central's database");
    let batch = client.batch(0, Duration::ZERO, BATCH, BATCH);
    let t = Instant::now();
    let response = send(
        http.clone(),
        server.url.clone(),
        token.clone(),
        encode_push(batch.clone()),
    )
    .await
    .expect("first batch");
    let mut batch_time = t.elapsed();
    let (applied, _) = client.answers(&batch, &response);
    assert_eq!(applied, batch.len());
    eprintln!("a batch of {} takes {batch_time:?}", batch.len());

    let mut repairs = 0usize;
    let mut cut_off = 0;
    for round in 0..ROUNDS {
        // Records cut off in a recent batch are still locked by the dead
        // process's leases (answered Busy): push them again once those
        // ended.
        let lease = Duration::from_secs_f64(LEASE_SECS + 0.5);
        let batch = client.batch(BATCH / 2, lease, NEW_PER_BATCH, BATCH);
        let t = Instant::now();
        let push = tokio::spawn(send(
            http.clone(),
            server.url.clone(),
            token.clone(),
            encode_push(batch.clone()),
        ));
        let moment = if round % 2 == 0 {
            // Moments spread from a few ms to after the reply.
            let fraction = (round as f64 * 0.618_034).fract() * 1.3;
            let delay = batch_time
                .mul_f64(fraction)
                .max(Duration::from_millis(2 + round as u64));
            tokio::time::sleep(delay).await;
            format!("after {delay:?}")
        } else {
            // The narrow moment that matters most: the heads are accepted in
            // the database, the refs not (all) moved yet. Seen from outside
            // as rows in ref_pending; then a little later each time.
            let extra = Duration::from_micros((round as u64 * 1_300) % 6_000);
            loop {
                if push.is_finished() {
                    break format!("after the reply, {:?}", t.elapsed());
                }
                if !watch.ref_pending().await.expect("ref_pending").is_empty() {
                    let seen = t.elapsed();
                    tokio::time::sleep(extra).await;
                    break format!("{extra:?} after heads were accepted ({seen:?})");
                }
                assert!(t.elapsed() < Duration::from_secs(120), "the push hangs");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let log = server.kill();
        let answer = push.await.expect("push task");
        let line = match &answer {
            Ok(response) => {
                let took = t.elapsed();
                let (applied, busy) = client.answers(&batch, response);
                if applied > batch.len() / 2 {
                    batch_time = (batch_time + took) / 2;
                }
                format!("answered: {applied} applied, {busy} busy")
            }
            Err(_) => {
                cut_off += 1;
                "cut off".to_string()
            }
        };
        assert!(!log.contains("panicked"), "central panicked:\n{log}");
        let restart = Instant::now();
        server = Server::start(dir.path());
        let restart = restart.elapsed();
        let restart_log = server.log.lock().expect("log").clone();
        let repaired = restart_log.contains("repaired refs left behind by a crash");
        repairs += usize::from(repaired);
        eprintln!(
            "round {round:2}: {} records, killed {moment}: {line}; restarted in {restart:.1?}{}",
            batch.len(),
            if repaired {
                "; refs repaired at start"
            } else {
                ""
            }
        );
        // Through the record API: every record of the cut batch, and a
        // sample of the others (a different one each round).
        let mut check: Vec<PatientId> = batch.iter().map(|r| r.id).collect();
        check.extend(
            client
                .order
                .iter()
                .skip(round)
                .step_by(1 + client.order.len() / 25)
                .copied(),
        );
        verify(&http, &server, &data, &client, &check, 10, round).await;
        verify_database_and_refs(&watch, &data, &client, round).await;
    }

    let kills_took = started.elapsed();
    // Pushing every unacknowledged record again completes (busy ones wait
    // out the dead process's leases).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = client.pending().min(BATCH);
        let batch = client.batch(waiting, Duration::ZERO, 0, waiting);
        if batch.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} records stay unacknowledged",
            batch.len()
        );
        let response = send(
            http.clone(),
            server.url.clone(),
            token.clone(),
            encode_push(batch.clone()),
        )
        .await
        .expect("push");
        let (_, busy) = client.answers(&batch, &response);
        if busy > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Everything is acknowledged, at central, with refs equal to the
    // database.
    for id in &client.order {
        let rec = client.recs[id];
        assert!(rec.pending.is_none());
        assert_eq!(rec.acked, Some(client.sat.head(*id)));
    }
    let all = client.order.clone();
    verify(&http, &server, &data, &client, &all, 20, ROUNDS).await;
    let log = server.kill();
    assert!(!log.contains("panicked"), "central panicked:\n{log}");

    let checks_took = started.elapsed();
    // Every repository is whole, and there is no repository we did not make.
    let mut repos = Vec::new();
    for a in std::fs::read_dir(data.join("repos")).expect("repos") {
        for b in std::fs::read_dir(a.expect("entry").path()).expect("shard") {
            for repo in std::fs::read_dir(b.expect("entry").path()).expect("shard") {
                repos.push(repo.expect("entry").path());
            }
        }
    }
    assert_eq!(repos.len(), client.order.len(), "one repository per record");
    for repo in &repos {
        let out = git(repo, &["fsck", "--strict", "--no-dangling"]);
        assert!(
            out.status.success(),
            "{}: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "{ROUNDS} kills ({cut_off} replies cut off, {repairs} starts repaired refs), {} records; kills {kills_took:?}, re-push and checks {:?}, fsck {:?}",
        client.order.len(),
        checks_took - kills_took,
        started.elapsed() - checks_took,
    );
    assert!(
        repairs >= 1,
        "no kill landed between accepting heads and moving refs"
    );
}
