//! The record store against real repositories on disk, read back with the
//! `git` command.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chartsync_protocol::api::FilePatch;
use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{
    Change, CommitMeta, Condition, Flush, Received, RecordStore, StoreError, StoreOptions,
};

fn store(dir: &Path, name: &str) -> RecordStore {
    RecordStore::open(StoreOptions::new(dir.join(name), name)).expect("open store")
}

fn files(pairs: &[(&str, &str)]) -> Files {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(msg: &str) -> CommitMeta {
    CommitMeta::new("Dr. Ada Obi", "ada@clinic.example", msg)
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fsck(repo: &Path) {
    git(repo, &["fsck", "--strict", "--full", "--no-dangling"]);
}

/// Records half-built in `tmp/` (inside any session folder).
fn tmp_leftovers(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

const PATIENT: &str =
    "name: Amina Diallo\nborn: 1987-03-14\ncatchment: north\nallergies:\n  - penicillin\n";

#[test]
fn create_write_read_history_and_plain_git_reads_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "clinic-a");
    let id = PatientId::random();
    let h1 = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("Register patient"),
        )
        .expect("create");
    let h2 = s
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[
                ("patient.yaml", PATIENT),
                (
                    "encounters/2026-11-02.yaml",
                    "reason: fever\ntemp_c: 38.9\n",
                ),
            ])),
            &meta("Add encounter"),
        )
        .expect("update");
    let snap = s.read(&id).expect("read");
    assert_eq!(snap.head, h2);
    assert_eq!(snap.files.len(), 2);
    let history = s.history(&id).expect("history");
    assert_eq!(
        history.iter().map(|h| h.commit).collect::<Vec<_>>(),
        vec![h2, h1]
    );
    assert_eq!(history[0].message, "Add encounter");
    assert_eq!(history[0].instance.as_deref(), Some("clinic-a"));
    assert_eq!(history[0].author, "Dr. Ada Obi <ada@clinic.example>");

    let repo = s.layout().repo(&id);
    assert!(repo.starts_with(dir.path().join("clinic-a/repos")));
    fsck(&repo);
    let log = git(&repo, &["log", "-p", "--format=%H %an %s%n%b"]);
    assert!(log.contains(&h2.to_string()) && log.contains("Add encounter"));
    assert!(log.contains("Chartsync-Instance: clinic-a"));
    assert!(log.contains("+temp_c: 38.9"));
    assert_eq!(
        git(&repo, &["show", "HEAD:encounters/2026-11-02.yaml"]),
        "reason: fever\ntemp_c: 38.9\n"
    );
}

#[test]
fn a_write_that_changes_nothing_makes_no_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    let f = files(&[("patient.yaml", PATIENT)]);
    let h1 = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(f.clone()),
            &meta("c"),
        )
        .expect("create");
    let h2 = s
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(f),
            &meta("same"),
        )
        .expect("noop");
    assert_eq!(h1, h2);
    assert_eq!(s.history(&id).expect("history").len(), 1);
}

#[test]
fn stale_writes_are_refused_with_the_paths_that_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    let h1 = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[(
                "patient.yaml",
                "name: A\nphone: '1'\nweight: 60\n",
            )])),
            &meta("c"),
        )
        .expect("create");
    let h2 = s
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[(
                "patient.yaml",
                "name: A\nphone: '2'\nweight: 60\n",
            )])),
            &meta("phone"),
        )
        .expect("update");
    // A whole-file write based on h1 is refused, naming /phone.
    let err = s
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[(
                "patient.yaml",
                "name: B\nphone: '1'\nweight: 60\n",
            )])),
            &meta("stale"),
        )
        .expect_err("stale");
    let StoreError::Conflict(c) = err else {
        panic!("expected a conflict, got {err:?}")
    };
    assert_eq!(c.current_head, Some(h2));
    assert_eq!(c.expected_head, Some(h1));
    assert_eq!(c.changed.len(), 1);
    assert_eq!(
        (c.changed[0].file.as_str(), c.changed[0].path.as_str()),
        ("patient.yaml", "/phone")
    );
    assert_eq!(c.changed[0].current, serde_json::json!("2"));
    assert_eq!(s.read(&id).expect("read").head, h2, "nothing changed");

    // A patch based on h1 touching a field that did not change applies.
    let patch = |v: serde_json::Value| {
        Change::Patch(BTreeMap::from([(
            "patient.yaml".to_string(),
            FilePatch::Merge(v),
        )]))
    };
    let h3 = s
        .write(
            &id,
            Condition::MatchHead(h1),
            patch(serde_json::json!({"weight": 61})),
            &meta("w"),
        )
        .expect("patch on a stale version, untouched field");
    let doc = s.read(&id).expect("read").files["patient.yaml"].clone();
    assert!(
        doc.contains("phone: '2'") || doc.contains("phone: \"2\""),
        "{doc}"
    );
    assert!(doc.contains("weight: 61"), "{doc}");
    // A patch based on h1 touching /phone (changed since) is refused.
    let err = s
        .write(
            &id,
            Condition::MatchHead(h1),
            patch(serde_json::json!({"phone": "3"})),
            &meta("p"),
        )
        .expect_err("touched field changed");
    let StoreError::Conflict(c) = err else {
        panic!("expected a conflict")
    };
    assert_eq!(c.changed[0].path, "/phone");
    assert_eq!(c.changed[0].wanted, serde_json::json!("3"));
    assert_eq!(s.read(&id).expect("read").head, h3);
}

#[test]
fn invalid_candidates_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    let h1 = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("c"),
        )
        .expect("create");
    let big = "x".repeat(2 << 20);
    for bad in [
        files(&[("../escape.yaml", "a: 1\n")]),
        files(&[(".git/config", "x")]),
        files(&[("/abs.yaml", "a: 1\n")]),
        files(&[("a//b.yaml", "a: 1\n")]),
        files(&[("patient.yaml", "name: [unclosed\n")]),
        files(&[("patient.yaml", "a: 1\n---\nb: 2\n")]),
        files(&[("patient.yaml", "a: &x 1\nb: *x\n")]),
        files(&[("patient.yaml", "a: !!str 1\n")]),
        files(&[("patient.yaml", "[".repeat(1000).as_str())]),
        files(&[("patient.yaml", "nid: 12345678901234567890123\n")]),
        files(&[("notes.txt", big.as_str())]),
        files(&[]),
    ] {
        let err = s
            .write(
                &id,
                Condition::MatchHead(h1),
                Change::Replace(bad.clone()),
                &meta("bad"),
            )
            .expect_err("refused");
        assert!(matches!(err, StoreError::Invalid(_)), "{bad:?}: {err:?}");
    }
    assert_eq!(s.read(&id).expect("read").head, h1);
    assert_eq!(s.history(&id).expect("history").len(), 1);
    assert_eq!(s.pack_count(&id).expect("packs"), 1);
}

#[test]
fn must_create_raced_by_many_threads_has_exactly_one_winner() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("race");
    // Separate store instances (as separate processes would have), sharing
    // the folder: only the file system arbitrates.
    let stores: Vec<Arc<RecordStore>> = (0..8)
        .map(|i| {
            Arc::new(RecordStore::open(StoreOptions::new(&root, format!("w{i}"))).expect("open"))
        })
        .collect();
    for _round in 0..10 {
        let id = PatientId::random();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let s = Arc::clone(&stores[t % stores.len()]);
                let b = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    b.wait();
                    s.write(
                        &id,
                        Condition::MustCreate,
                        Change::Replace(files(&[("patient.yaml", &format!("writer: {t}\n"))])),
                        &meta("create"),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let winners: Vec<CommitId> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Exists { .. } | StoreError::Conflict(_)),
                    "loser got {e:?}"
                );
            }
        }
        assert_eq!(stores[0].read(&id).expect("read").head, winners[0]);
    }
    assert_eq!(tmp_leftovers(&root), 0, "no leftovers");
}

#[test]
fn concurrent_read_modify_write_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("rmw");
    let first = RecordStore::open(StoreOptions::new(&root, "w")).expect("open");
    let id = PatientId::random();
    first
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("log.yaml", "entries: []\n")])),
            &meta("c"),
        )
        .expect("create");
    // Two store instances (two "processes") and eight threads each.
    let stores = [
        Arc::new(first),
        Arc::new(RecordStore::open(StoreOptions::new(&root, "v")).expect("open")),
    ];
    const THREADS: usize = 16;
    const EACH: usize = 12;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&stores[t % 2]);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for n in 0..EACH {
                    let item = format!("t{t}-n{n}");
                    loop {
                        let snap = s.read(&id).expect("read");
                        let mut doc =
                            chartsync_merge::parse_yaml(&snap.files["log.yaml"]).expect("yaml");
                        doc["entries"]
                            .as_array_mut()
                            .expect("list")
                            .push(item.clone().into());
                        let text = chartsync_merge::to_yaml(&doc);
                        match s.write(
                            &id,
                            Condition::MatchHead(snap.head),
                            Change::Replace(files(&[("log.yaml", &text)])),
                            &meta(&item),
                        ) {
                            Ok(head) => {
                                acked.push((item, head));
                                break;
                            }
                            Err(StoreError::Conflict(_)) | Err(StoreError::Busy { .. }) => continue,
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<(String, CommitId)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(acked.len(), THREADS * EACH);
    let snap = stores[0].read(&id).expect("read");
    let doc = chartsync_merge::parse_yaml(&snap.files["log.yaml"]).expect("yaml");
    let entries: Vec<&str> = doc["entries"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        entries.len(),
        THREADS * EACH,
        "every acknowledged append is present exactly once"
    );
    for (item, _) in &acked {
        assert_eq!(entries.iter().filter(|e| *e == item).count(), 1, "{item}");
    }
    let history = stores[0].history(&id).expect("history");
    assert_eq!(
        history.len(),
        THREADS * EACH + 1,
        "one commit per acknowledged write"
    );
    let commits: std::collections::HashSet<CommitId> = history.iter().map(|h| h.commit).collect();
    for (_, head) in &acked {
        assert!(commits.contains(head));
    }
    fsck(&stores[0].layout().repo(&id));
}

#[test]
fn records_travel_as_packs_and_bad_packs_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = store(dir.path(), "a");
    let b = store(dir.path(), "b");
    let id = PatientId::random();
    let h1 = a
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("c"),
        )
        .expect("create");
    // Whole record to b.
    let pack = a.pack_since(&id, h1, &[]).expect("pack");
    let Received::Ready(p) = b
        .prepare_received(&id, None, h1, &pack, Flush::Deferred)
        .expect("verify")
    else {
        panic!("fresh record is not stale")
    };
    b.flush().expect("flush");
    // The pack central keeps as a created record's history (PostgreSQL):
    // taken from the staged repository, it brings the whole record to a
    // third store.
    let staged = b.prepared_pack(&p).expect("staged pack");
    b.publish(p, Flush::Deferred).expect("publish");
    b.flush().expect("flush");
    assert_eq!(
        b.read(&id).expect("read").files,
        a.read(&id).expect("read").files
    );
    fsck(&b.layout().repo(&id));
    let c = store(dir.path(), "c");
    let Received::Ready(p) = c
        .prepare_received(&id, None, h1, &staged, Flush::Deferred)
        .expect("the staged pack verifies")
    else {
        panic!("fresh record is not stale")
    };
    c.publish(p, Flush::Deferred).expect("publish");
    c.flush().expect("flush");
    assert_eq!(
        c.read(&id).expect("read").files,
        a.read(&id).expect("read").files
    );

    // An update as a thin pack.
    let h2 = a
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[
                ("patient.yaml", PATIENT),
                ("notes.txt", "hello\n"),
            ])),
            &meta("u"),
        )
        .expect("update");
    let update = a.pack_since(&id, h2, &[h1]).expect("pack");
    assert!(update.len() < pack.len() + 200);

    // Hostile variants, each refused with the head unmoved.
    let mut flipped = update.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>, Option<CommitId>, CommitId)> = vec![
        ("corrupt", flipped, Some(h1), h2),
        (
            "truncated",
            update[..update.len() - 5].to_vec(),
            Some(h1),
            h2,
        ),
        ("garbage", b"not a pack".to_vec(), Some(h1), h2),
        ("wrong head", update.clone(), Some(h1), CommitId([9; 20])),
    ];
    for (what, bytes, expected, head) in cases {
        let r = b.prepare_received(&id, expected, head, &bytes, Flush::Now);
        assert!(matches!(r, Err(StoreError::Received(_))), "{what}: {r:?}");
        assert_eq!(b.read(&id).expect("read").head, h1, "{what}");
    }
    // A pack missing the objects the update builds on: a fresh record with
    // only the update's objects.
    let other = PatientId::random();
    let r = b.prepare_received(&other, None, h2, &update, Flush::Now);
    assert!(matches!(r, Err(StoreError::Received(_))), "{r:?}");
    assert!(!b.exists(&other));

    // The good update applies; applying it again is harmless.
    for _ in 0..2 {
        match b
            .prepare_received(&id, Some(h1), h2, &update, Flush::Now)
            .expect("verify")
        {
            Received::Ready(p) => {
                b.publish(p, Flush::Now).expect("publish");
            }
            Received::Stale { current } => panic!("stale {current:?}"),
        }
    }
    assert_eq!(b.read(&id).expect("read").head, h2);
    // Expecting h1 again now: stale.
    let h3 = a
        .write(
            &id,
            Condition::MatchHead(h2),
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("u3"),
        )
        .expect("update");
    let p3 = a.pack_since(&id, h3, &[h2]).expect("pack");
    assert!(matches!(
        b.prepare_received(&id, Some(h1), h3, &p3, Flush::Now).expect("verify"),
        Received::Stale { current: Some(h) } if h == h2
    ));
    fsck(&b.layout().repo(&id));
}

/// Commits `files` (top-level names only) on top of `parent` in a bare
/// repository with plain git, as another implementation might.
fn git_commit(repo: &Path, parent: CommitId, files: &[(&str, &str)]) -> CommitId {
    let mut tree = String::new();
    for (name, content) in files {
        let path = repo.join(format!("blob-{name}"));
        std::fs::write(&path, content).expect("write blob");
        let path = path.to_str().expect("utf-8 path");
        let blob = git(repo, &["hash-object", "-w", path]);
        tree.push_str(&format!("100644 blob {}\t{name}\n", blob.trim()));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '{tree}' | git --git-dir \"$0\" mktree | xargs git --git-dir \"$0\" commit-tree -p {parent} -m crafted"
        ))
        .arg(repo)
        .env("GIT_AUTHOR_NAME", "x")
        .env("GIT_AUTHOR_EMAIL", "x@example.org")
        .env("GIT_COMMITTER_NAME", "x")
        .env("GIT_COMMITTER_EMAIL", "x@example.org")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("commit id")
}

/// Received packs are checked like writes: anchors and aliases, tags, deep
/// nesting and inexact numbers are refused with the file and line, and
/// nothing is stored.
#[test]
fn received_yaml_is_checked_like_written_yaml() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = store(dir.path(), "a");
    let b = store(dir.path(), "b");
    let id = PatientId::random();
    let h1 = a
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("c"),
        )
        .expect("create");
    let whole = a.pack_since(&id, h1, &[]).expect("pack");
    let Received::Ready(p) = b
        .prepare_received(&id, None, h1, &whole, Flush::Now)
        .expect("verify")
    else {
        panic!("fresh record is not stale")
    };
    b.publish(p, Flush::Now).expect("publish");

    let bomb = format!(
        "note: &n \"{}\"\nnotes: [{}]\n",
        "x".repeat(50_000),
        vec!["*n"; 10_000].join(", ")
    );
    let deep = "{a: ".repeat(100_000);
    for (content, expected) in [
        (
            bomb.as_str(),
            "visit.yaml: line 1, column 7: YAML anchor &n refused",
        ),
        (
            "x: !!binary aGk=\n",
            "visit.yaml: line 1, column 4: YAML tag !!binary refused",
        ),
        (
            deep.as_str(),
            "visit.yaml: line 1, column 257: nesting deeper than 64",
        ),
        (
            "nid: 12345678901234567890123\n",
            "visit.yaml: line 1, column 6: number",
        ),
    ] {
        let repo = a.layout().repo(&id);
        let crafted = git_commit(
            &repo,
            h1,
            &[("patient.yaml", PATIENT), ("visit.yaml", content)],
        );
        let pack = a.pack_since(&id, crafted, &[h1]).expect("pack");
        match b.prepare_received(&id, Some(h1), crafted, &pack, Flush::Now) {
            Err(StoreError::Received(e)) => {
                assert_eq!(e.code(), "invalid_yaml");
                assert!(e.to_string().contains(expected), "{e}");
            }
            other => panic!("{expected}: {other:?}"),
        }
        assert_eq!(b.read(&id).expect("read").head, h1);
    }
}

#[test]
fn a_received_head_must_descend_from_the_expected_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = store(dir.path(), "a");
    let b = store(dir.path(), "b");
    let id = PatientId::random();
    let h1 = a
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", PATIENT)])),
            &meta("c"),
        )
        .expect("create");
    let full = a.pack_since(&id, h1, &[]).expect("pack");
    let Received::Ready(p) = b
        .prepare_received(&id, None, h1, &full, Flush::Now)
        .expect("ok")
    else {
        panic!()
    };
    b.publish(p, Flush::Now).expect("publish");
    // b moves on; a's unrelated record with the same id is not a descendant.
    let hb = b
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[("patient.yaml", "name: B\n")])),
            &meta("b"),
        )
        .expect("b");
    let stranger = PatientId::random();
    let hs = a
        .write(
            &stranger,
            Condition::MustCreate,
            Change::Replace(files(&[("x.yaml", "a: 1\n")])),
            &meta("s"),
        )
        .expect("s");
    let pack = a.pack_since(&stranger, hs, &[]).expect("pack");
    let r = b.prepare_received(&id, Some(hb), hs, &pack, Flush::Now);
    assert!(
        matches!(r, Err(StoreError::Received(ref e)) if e.code() == "not_descendant"),
        "{r:?}"
    );
}

#[test]
fn merging_keeps_both_sides_and_reports_true_conflicts() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = store(dir.path(), "central");
    let clinic = store(dir.path(), "clinic");
    let id = PatientId::random();
    let base = "name: A\nphone: '1'\nallergies:\n  - penicillin\n";
    let h0 = clinic
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", base)])),
            &meta("c"),
        )
        .expect("create");
    let full = clinic.pack_since(&id, h0, &[]).expect("pack");
    let Received::Ready(p) = central
        .prepare_received(&id, None, h0, &full, Flush::Now)
        .expect("ok")
    else {
        panic!()
    };
    central.publish(p, Flush::Now).expect("publish");
    let theirs = central
        .write(
            &id,
            Condition::MatchHead(h0),
            Change::Replace(files(&[(
                "patient.yaml",
                "name: A\nphone: '2'\nallergies:\n  - penicillin\n  - latex\n",
            )])),
            &meta("central edit"),
        )
        .expect("central");
    let ours = clinic
        .write(
            &id,
            Condition::MatchHead(h0),
            Change::Replace(files(&[(
                "patient.yaml",
                "name: A\nphone: '3'\nallergies:\n  - penicillin\n  - sulfa\n",
            )])),
            &meta("clinic edit"),
        )
        .expect("clinic");
    let update = central.pack_since(&id, theirs, &[h0]).expect("pack");
    clinic
        .ingest(&id, theirs, &update, Flush::Now)
        .expect("ingest");
    let outcome = clinic
        .prepare_merge(&id, ours, theirs, &meta("Merge central"), Flush::Now)
        .expect("merge")
        .expect("head unchanged");
    assert!(outcome.merged);
    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(outcome.conflicts[0].path, "/phone");
    assert_eq!(outcome.conflicts[0].ours, Some(serde_json::json!("3")));
    let merged = clinic
        .publish(outcome.prepared, Flush::Now)
        .expect("publish");
    clinic.keep_commit(&id, ours).expect("keep");
    let doc = chartsync_merge::parse_yaml(&clinic.read(&id).expect("read").files["patient.yaml"])
        .expect("yaml");
    assert_eq!(doc["phone"], "2", "central's value wins in the record");
    assert_eq!(
        doc["allergies"],
        serde_json::json!(["penicillin", "latex", "sulfa"])
    );
    assert!(clinic.is_ancestor(&id, theirs, merged).expect("anc"));
    assert!(clinic.is_ancestor(&id, ours, merged).expect("anc"));
    let repo = clinic.layout().repo(&id);
    assert_eq!(
        git(
            &repo,
            &["rev-parse", &format!("refs/chartsync/conflicts/{ours}")]
        )
        .trim(),
        ours.to_string()
    );
    fsck(&repo);
}

#[test]
fn repack_merges_packs_and_keeps_everything_reachable() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    let mut head = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("p.yaml", "n: 0\n")])),
            &meta("c"),
        )
        .expect("create");
    for n in 1..20 {
        head = s
            .write(
                &id,
                Condition::MatchHead(head),
                Change::Replace(files(&[("p.yaml", &format!("n: {n}\n"))])),
                &meta("u"),
            )
            .expect("write");
    }
    assert_eq!(s.pack_count(&id).expect("count"), 20);
    let stats = s.repack(&id, 10).expect("repack");
    assert!(stats.repacked);
    assert_eq!(s.pack_count(&id).expect("count"), 1);
    assert_eq!(s.history(&id).expect("history").len(), 20);
    assert_eq!(s.read(&id).expect("read").files["p.yaml"], "n: 19\n");
    fsck(&s.layout().repo(&id));
    // Writes go on afterwards.
    s.write(
        &id,
        Condition::MatchHead(head),
        Change::Replace(files(&[("p.yaml", "n: 20\n")])),
        &meta("u"),
    )
    .expect("write after repack");
}

#[test]
fn a_lock_left_by_a_dead_writer_is_taken_over() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    let h = s
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("p.yaml", "n: 0\n")])),
            &meta("c"),
        )
        .expect("create");
    // What a writer killed between locking and renaming leaves behind.
    let lock = s.layout().repo(&id).join("packed-refs.lock");
    std::fs::write(&lock, "0000000000000000000000000000000000000000\n").expect("lock");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .and_then(|f| f.set_modified(old))
        .expect("age");
    let h2 = s
        .write(
            &id,
            Condition::MatchHead(h),
            Change::Replace(files(&[("p.yaml", "n: 1\n")])),
            &meta("u"),
        )
        .expect("write takes over the stale lock");
    assert_ne!(h, h2);
    assert!(!lock.exists());
}

/// A commit of `yaml` on `parent` with this message and committer email,
/// as a hostile satellite could build it: its objects and id.
fn forged(
    yaml: &str,
    parents: &[CommitId],
    message: &str,
    committer: &str,
) -> (CommitId, Vec<chartsync_git::Object>) {
    use chartsync_git::{self as git, Commit, Kind, Object, Signature};
    let map: BTreeMap<String, Vec<u8>> = [("patient.yaml".to_string(), yaml.as_bytes().to_vec())]
        .into_iter()
        .collect();
    let (tree, mut objects) = git::build_tree(&map).expect("tree");
    let sig = |email: &str| Signature::new("chartsync", email, 1_767_225_600, 0).expect("sig");
    let commit = Commit {
        tree,
        parents: parents
            .iter()
            .map(|p| git2::Oid::from_bytes(p.as_bytes()).expect("oid"))
            .collect(),
        author: sig("dr@clinic.example"),
        committer: sig(committer),
        message: message.to_string(),
    };
    let object = Object::new(Kind::Commit, git::encode_commit(&commit));
    let id = CommitId::from_slice(object.id.as_bytes()).expect("id");
    objects.push(object);
    (id, objects)
}

fn receive_from(
    central: &RecordStore,
    id: &PatientId,
    expected: Option<CommitId>,
    head: CommitId,
    pack: &[u8],
    from: &chartsync_store::Attribution,
) -> Result<CommitId, StoreError> {
    match central.prepare_received_from(id, expected, head, pack, Flush::Now, from)? {
        Received::Ready(p) => central.publish(p, Flush::Now),
        Received::Stale { current } => panic!("stale at {current:?}"),
    }
}

fn forged_code(result: Result<CommitId, StoreError>) -> (String, String) {
    match result {
        Err(StoreError::Received(e)) => (e.code().to_string(), e.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn received_commits_must_name_their_sender() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = store(dir.path(), "hq");
    let north = store(dir.path(), "north");
    let from_north = chartsync_store::Attribution {
        names: vec!["north".into(), "satellite-1".into()],
        sender: "instance 1 (north)".into(),
    };
    let from_south = chartsync_store::Attribution {
        names: vec!["south".into()],
        sender: "instance 2 (south)".into(),
    };
    let id = PatientId::random();
    let h0 = north
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(files(&[("patient.yaml", "name: A\nphone: '1'\n")])),
            &meta("create"),
        )
        .expect("create");
    let full = north.pack_since(&id, h0, &[]).expect("pack");
    // Someone else's commits are refused, for a new record too.
    let (code, message) = forged_code(receive_from(&central, &id, None, h0, &full, &from_south));
    assert_eq!(code, "forged_instance");
    assert!(
        message.contains("\"north\"") && message.contains("instance 2 (south)"),
        "{message}"
    );
    assert!(!central.exists(&id), "a refusal stores nothing");
    receive_from(&central, &id, None, h0, &full, &from_north).expect("north's own");

    // A forged commit under an honest head: every new commit is checked.
    let (f, mut objects) = forged(
        "name: A\nphone: '2'\n",
        &[h0],
        "Edit\n\nChartsync-Instance: south\n",
        "chartsync@south",
    );
    let (h, more) = forged(
        "name: A\nphone: '3'\n",
        &[f],
        "Edit\n\nChartsync-Instance: north\n",
        "chartsync@north",
    );
    objects.extend(more);
    let pack = chartsync_git::write_pack_only(&objects, 0);
    let (code, message) = forged_code(receive_from(&central, &id, Some(h0), h, &pack, &from_north));
    assert_eq!(code, "forged_instance");
    assert!(
        message.contains(&f.to_string()),
        "names the forged commit: {message}"
    );
    assert!(message.contains("\"south\""), "{message}");
    // Other disguises: no trailer; the right trailer but another committer;
    // two trailer lines (one read as the instance, one not).
    for (message, committer) in [
        ("Edit\n", "chartsync@north"),
        ("Edit\n\nChartsync-Instance: north\n", "chartsync@south"),
        (
            "Edit\n\nChartsync-Instance: south\nChartsync-Instance: north\n",
            "chartsync@north",
        ),
        ("Edit\n\nchartsync-instance : south\n", "chartsync@south"),
    ] {
        let (c, objects) = forged("name: A\nphone: '4'\n", &[h0], message, committer);
        let pack = chartsync_git::write_pack_only(&objects, 0);
        let (code, _) = forged_code(receive_from(&central, &id, Some(h0), c, &pack, &from_north));
        assert_eq!(code, "forged_instance", "{message:?} by {committer}");
    }
    assert_eq!(central.head(&id).expect("head"), Some(h0), "nothing moved");
    // Its other name (the default of a satellite without `name`) is its own.
    let (c, objects) = forged(
        "name: A\nphone: '5'\n",
        &[h0],
        "Edit\n\nChartsync-Instance: satellite-1\n",
        "chartsync@satellite-1",
    );
    let pack = chartsync_git::write_pack_only(&objects, 0);
    let h1 =
        receive_from(&central, &id, Some(h0), c, &pack, &from_north).expect("own default name");

    // Commits central already has are not checked again: HQ's edit comes
    // back inside north's merge, whose commits all name north.
    let theirs = central
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(files(&[(
                "patient.yaml",
                "name: A\nphone: '5'\nallergy: latex\n",
            )])),
            &meta("HQ edit"),
        )
        .expect("hq edit");
    north
        .ingest(
            &id,
            h1,
            &central.pack_since(&id, h1, &[h0]).expect("pack"),
            Flush::Now,
        )
        .expect("ingest h1");
    let ours = north
        .write(
            &id,
            Condition::MatchHead(h0),
            Change::Replace(files(&[("patient.yaml", "name: B\nphone: '1'\n")])),
            &meta("north edit"),
        )
        .expect("north edit");
    north
        .ingest(
            &id,
            theirs,
            &central.pack_since(&id, theirs, &[h0]).expect("pack"),
            Flush::Now,
        )
        .expect("ingest theirs");
    let merge = north
        .prepare_merge(&id, ours, theirs, &meta("Merge central"), Flush::Now)
        .expect("merge")
        .expect("head unchanged");
    let merged = north.publish(merge.prepared, Flush::Now).expect("publish");
    // The whole history, central's commits included.
    let everything = north.pack_since(&id, merged, &[]).expect("pack");
    receive_from(
        &central,
        &id,
        Some(theirs),
        merged,
        &everything,
        &from_north,
    )
    .expect("an honest merge");
    let history = central.history(&id).expect("history");
    assert_eq!(
        history[0].instance.as_deref(),
        Some("north"),
        "the merge is north's"
    );
}

/// Disk use of a record's packs.
fn pack_bytes(repo: &Path) -> u64 {
    std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .map(|e| e.metadata().expect("metadata").len())
        .sum()
}

#[test]
fn repacked_records_are_delta_compressed_like_git_does() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "a");
    let id = PatientId::random();
    // A visit list that grows by one visit per write, and a folder of
    // encounters that grows by one file.
    let mut visits = String::from("name: Jane\nvisits:\n");
    let mut encounters: Vec<(String, String)> = Vec::new();
    let mut head: Option<CommitId> = None;
    for n in 0..120 {
        visits.push_str(&format!(
            "- date: 2026-{:02}-{:02}\n  note: visit {n}, fever {} days, advised fluids and rest\n",
            n % 12 + 1,
            n % 28 + 1,
            n % 5
        ));
        encounters.push((
            format!("encounters/{n:04}.yaml"),
            format!("n: {n}\nbp: 12{}/80\n", n % 10),
        ));
        let mut all: Vec<(&str, &str)> = vec![("patient.yaml", visits.as_str())];
        all.extend(encounters.iter().map(|(p, t)| (p.as_str(), t.as_str())));
        let condition = head.map_or(Condition::MustCreate, Condition::MatchHead);
        head = Some(
            s.write(&id, condition, Change::Replace(files(&all)), &meta("visit"))
                .expect("write"),
        );
        // Packs stay bounded as the record grows.
        s.repack(&id, 8).expect("repack");
        assert!(s.pack_count(&id).expect("count") < 8);
    }
    let repo = s.layout().repo(&id);
    s.repack(&id, 2).expect("repack");
    assert_eq!(s.pack_count(&id).expect("count"), 1);
    let ours = pack_bytes(&repo);
    fsck(&repo);
    let idx = std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".idx"))
        .expect("an idx")
        .path();
    let verify = git(&repo, &["verify-pack", "-v", &idx.display().to_string()]);
    assert!(verify.contains("chain length = 1"), "no deltas: {verify}");
    assert!(
        !verify.contains("chain length = 51"),
        "chains over 50: {verify}"
    );
    // Every version reads back (through the deltas).
    assert_eq!(s.history(&id).expect("history").len(), 120);
    assert_eq!(s.read(&id).expect("read").files["patient.yaml"], visits);
    // Next to git's own repack of the same history.
    let copy = dir.path().join("copy.git");
    let st = Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(&repo)
        .arg(&copy)
        .status()
        .expect("git clone");
    assert!(st.success());
    git(&copy, &["repack", "-adfq"]);
    let theirs = pack_bytes(&copy);
    assert!(ours <= 2 * theirs, "{ours} bytes, git repack -adf {theirs}");
    eprintln!("repacked: {ours} bytes, git repack -adf: {theirs}");
}

#[test]
fn thin_packs_carry_what_changed_and_rebuild_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = store(dir.path(), "a");
    let b = store(dir.path(), "b");
    let id = PatientId::random();
    let mut visits = String::from("name: Jane\nvisits:\n");
    for n in 0..300 {
        visits.push_str(&format!(
            "- date: 2026-{:02}-{:02}\n  note: visit {n}, fever {} days, advised fluids and rest, review in one week\n",
            n % 12 + 1,
            n % 28 + 1,
            n % 5
        ));
    }
    let mut all: Vec<(String, String)> = vec![("patient.yaml".into(), visits.clone())];
    for n in 0..300 {
        all.push((
            format!("encounters/{n:04}.yaml"),
            format!("n: {n}\nbp: 12{}/80\n", n % 10),
        ));
    }
    let as_files = |all: &[(String, String)]| {
        files(
            &all.iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let h1 = a
        .write(
            &id,
            Condition::MustCreate,
            Change::Replace(as_files(&all)),
            &meta("c"),
        )
        .expect("create");
    let whole = a.pack_since(&id, h1, &[]).expect("pack");
    let Received::Ready(p) = b
        .prepare_received(&id, None, h1, &whole, Flush::Now)
        .expect("verify")
    else {
        panic!("fresh record is not stale")
    };
    b.publish(p, Flush::Now).expect("publish");
    // One appended visit and one new encounter.
    all[0].1.push_str(
        "- date: 2026-12-02\n  note: a new visit, cough for two days, chest clear, paracetamol\n",
    );
    all.push(("encounters/0300.yaml".into(), "n: 300\nbp: 118/76\n".into()));
    let h2 = a
        .write(
            &id,
            Condition::MatchHead(h1),
            Change::Replace(as_files(&all)),
            &meta("u"),
        )
        .expect("update");
    let full = a.pack_since(&id, h2, &[h1]).expect("pack");
    let thin = a.pack_since_thin(&id, h2, &[h1]).expect("thin pack");
    // Commit, the new encounter, and three deltas (root, encounters/,
    // patient.yaml): well under a kilobyte, against the whole file and
    // folder.
    assert!(
        thin.len() < 1000,
        "{} bytes thin, {} whole",
        thin.len(),
        full.len()
    );
    assert!(full.len() > 20_000, "{} bytes", full.len());
    let Received::Ready(p) = b
        .prepare_received(&id, Some(h1), h2, &thin, Flush::Now)
        .expect("verify")
    else {
        panic!("not stale")
    };
    b.publish(p, Flush::Now).expect("publish");
    assert_eq!(
        b.read(&id).expect("read").files,
        a.read(&id).expect("read").files
    );
    assert_eq!(b.read(&id).expect("read").head, h2);
    fsck(&b.layout().repo(&id));
    // A receiver without the base refuses it and stores nothing.
    let c = store(dir.path(), "c");
    let r = c.prepare_received(&id, None, h2, &thin, Flush::Now);
    assert!(matches!(r, Err(StoreError::Received(_))), "{r:?}");
    assert!(c.head(&id).expect("head").is_none());
    // A corrupted delta is refused, the head unmoved.
    let b2 = store(dir.path(), "b2");
    let Received::Ready(p) = b2
        .prepare_received(&id, None, h1, &whole, Flush::Now)
        .expect("verify")
    else {
        panic!("fresh")
    };
    b2.publish(p, Flush::Now).expect("publish");
    // A delta whose last literal byte is changed: a sound pack, whose
    // rebuilt file no longer has the id the tree names.
    let mut entries = chartsync_git::split_pack_entries(&thin).expect("splits");
    let delta = entries
        .iter_mut()
        .filter(|(code, _)| *code == 7)
        .max_by_key(|(_, d)| d.len())
        .expect("a delta");
    let last = delta.1.len() - 1;
    delta.1[last] ^= 0x01;
    let bad = chartsync_git::join_pack_entries(entries.iter().map(|(c, d)| (*c, d.as_slice())))
        .expect("joins");
    let r = b2.prepare_received(&id, Some(h1), h2, &bad, Flush::Now);
    assert!(matches!(r, Err(StoreError::Received(_))), "{r:?}");
    assert_eq!(b2.head(&id).expect("head"), Some(h1));
}
