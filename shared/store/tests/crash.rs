//! kill -9 of a writing process at random moments: every record stays at an
//! old or new head, whole (`git fsck --strict`), and nothing acknowledged is
//! lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, RecordStore, StoreOptions};

/// Records half-built in `tmp/` (inside any session folder).
fn tmp_leftovers(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

const CHILD_ENV: &str = "CHARTSYNC_CRASH_CHILD_DIR";

fn files(n: usize) -> Files {
    let mut f = Files::new();
    f.insert("patient.yaml".into(), format!("name: P\nvisits: {n}\n"));
    f.insert(
        format!("encounters/e{}.yaml", n % 7),
        format!("n: {n}\nnote: \"{}\"\n", "x".repeat(n % 300)),
    );
    f
}

/// The child: writes forever, printing "<id> <head>" after each
/// acknowledged write. Does nothing unless started by the parent test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = RecordStore::open(StoreOptions::new(dir, "crash")).expect("open");
    let ids: Vec<PatientId> =
        std::fs::read_to_string(Path::new(&std::env::var(CHILD_ENV).expect("env")).join("ids"))
            .expect("ids")
            .lines()
            .map(|l| l.parse().expect("id"))
            .collect();
    let meta = CommitMeta::new("Crash Test", "crash@test", "write");
    let mut n = 0usize;
    loop {
        n += 1;
        // Half the writes create fresh records, half update known ones.
        if n.is_multiple_of(2) {
            let id = PatientId::random();
            let head = store
                .write(&id, Condition::MustCreate, Change::Replace(files(n)), &meta)
                .expect("create");
            println!("{id} {head}");
        } else {
            let id = ids[n % ids.len()];
            let head = store.head(&id).expect("head").expect("exists");
            let head = store
                .write(
                    &id,
                    Condition::MatchHead(head),
                    Change::Replace(files(n)),
                    &meta,
                )
                .expect("write");
            println!("{id} {head}");
        }
    }
}

#[test]
fn kill_9_at_random_moments_leaves_every_record_whole() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("store");
    let store = RecordStore::open(StoreOptions::new(&root, "setup")).expect("open");
    let meta = CommitMeta::new("Setup", "setup@test", "create");
    let ids: Vec<PatientId> = (0..4).map(|_| PatientId::random()).collect();
    for id in &ids {
        store
            .write(id, Condition::MustCreate, Change::Replace(files(0)), &meta)
            .expect("create");
    }
    std::fs::write(
        root.join("ids"),
        ids.iter().map(|i| format!("{i}\n")).collect::<String>(),
    )
    .expect("ids");
    drop(store);
    let mut acked: std::collections::HashMap<PatientId, CommitId> =
        std::collections::HashMap::new();
    let exe = std::env::current_exe().expect("exe");
    for round in 0..20u64 {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((id, head)) = line.split_once(' ')
                    && let (Ok(id), Ok(head)) = (id.parse::<PatientId>(), head.parse::<CommitId>())
                    && tx.send((id, head)).is_err()
                {
                    break;
                }
            }
        });
        // Let it acknowledge a varying number of writes, then kill it at a
        // varying moment of the next ones.
        let wanted = 5 + (round * 7) % 40;
        let mut got = 0;
        while got < wanted {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((id, head)) => {
                    acked.insert(id, head);
                    got += 1;
                }
                Err(e) => panic!("round {round}: the child stopped writing: {e}"),
            }
        }
        std::thread::sleep(Duration::from_micros(round * 1777 % 3000));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        reader.join().expect("reader");
        for (id, head) in rx.try_iter() {
            acked.insert(id, head);
        }
        // Recovery: open (cleans tmp/), every record readable, acknowledged
        // heads present.
        let store = RecordStore::open(StoreOptions::new(&root, "check")).expect("reopen");
        for (id, head) in &acked {
            let snap = store
                .read(id)
                .unwrap_or_else(|e| panic!("round {round}: {id}: {e}"));
            assert!(
                store.is_ancestor(id, *head, snap.head).expect("ancestry"),
                "round {round}: acknowledged {head} of {id} is not in its history"
            );
        }
        assert_eq!(
            tmp_leftovers(&root),
            0,
            "round {round}: half-built records left"
        );
        let sessions = std::fs::read_dir(root.join("tmp"))
            .expect("tmp")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .count();
        assert_eq!(
            sessions, 1,
            "round {round}: the dead writer's session was cleaned"
        );
    }
    eprintln!("acknowledged records: {}", acked.len());
    // Every repository is whole.
    let store = RecordStore::open(StoreOptions::new(&root, "check")).expect("reopen");
    let all = store.list().expect("list");
    assert!(all.len() >= ids.len());
    for id in all {
        let repo = store.layout().repo(&id);
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["fsck", "--strict", "--full", "--no-dangling"])
            .output()
            .expect("git fsck");
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        store.read(&id).expect("readable");
    }
}
