//! Every file and folder the store creates is private to its owner (0600,
//! 0700), whatever the umask: this test runs under umask 000 (its own test
//! binary, since the umask is per process).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chartsync_protocol::{Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, Flush, Received, RecordStore, StoreOptions};

fn files(yaml: &str) -> Files {
    [("patient.yaml".to_string(), yaml.to_string())]
        .into_iter()
        .collect()
}

/// Every path under `root` whose mode lets anyone but the owner in.
fn loose_paths(root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(root).expect("read_dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {mode:04o}", path.display()));
        }
        if meta.is_dir() {
            loose_paths(&path, out);
        }
    }
}

#[test]
fn everything_the_store_writes_is_private_under_umask_000() {
    // SAFETY: umask(2) only swaps the process's file-creation mask; this
    // test binary has one test, so no other thread creates files meanwhile.
    unsafe { libc::umask(0o000) };
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("store");
    let store = RecordStore::open(StoreOptions::new(&root, "north")).expect("open");
    let meta = CommitMeta::new("Dr. A", "a@example.org", "edit");
    let id = PatientId::random();
    let mut head = store
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files("name: A\n")),
            &meta,
        )
        .expect("create");
    for i in 0..3 {
        head = store
            .write(
                &id,
                Condition::MatchHead(head),
                Change::Replace(files(&format!("name: A\nvisits: {i}\n"))),
                &meta,
            )
            .expect("update");
    }
    // A conflict's losing commit kept under refs/chartsync/conflicts/.
    store.keep_commit(&id, head).expect("keep");
    // A record received whole from another store.
    let other_dir = tempfile::tempdir().expect("tmp");
    let other =
        RecordStore::open(StoreOptions::new(other_dir.path(), "south")).expect("open other");
    let received = PatientId::random();
    let theirs = other
        .write(
            &received,
            Condition::MustCreate,
            Change::Replace(files("name: B\n")),
            &meta,
        )
        .expect("create there");
    let pack = other.pack_since(&received, theirs, &[]).expect("pack");
    match store
        .prepare_received(&received, None, theirs, &pack, Flush::Now)
        .expect("receive")
    {
        Received::Ready(prepared) => {
            store.publish(prepared, Flush::Now).expect("publish");
        }
        Received::Stale { .. } => panic!("new record is stale"),
    }
    store.repack(&id, 2).expect("repack");
    // Not yet published: a new record staged in tmp/.
    let staged = store
        .prepare(
            &PatientId::random(),
            Condition::MustCreate,
            Change::Replace(files("name: C\n")),
            &meta,
            Flush::Now,
        )
        .expect("stage");
    let mut loose = Vec::new();
    loose_paths(&root, &mut loose);
    drop(staged);
    assert!(loose.is_empty(), "readable by others: {loose:#?}");
}
