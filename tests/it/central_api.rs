//! End to end against an in-process central on 127.0.0.1:0 with a real HTTP
//! client: many writers on one patient through the record API, and every
//! edge of `/v1/sync/push`, built by hand from a scratch store and git
//! plumbing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chartsync_central::db::CentralDb;
use chartsync_git::{self as git, Kind, Object};
use chartsync_protocol::sync::{PROTOCOL_VERSION, PushOutcome, PushRecord, PushResponse};
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::Flush;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::wire::{
    Scratch, admin_head, commit_tree, craft_commit, craft_commit_bytes, encode_push, error_code,
    pack_of, push, push_raw,
};
use crate::support::{self, TestCentral, patient_doc};

// ---------------------------------------------------------------------------
// Many read-modify-write clients on one patient
// ---------------------------------------------------------------------------

/// What one acknowledged append cost.
#[derive(Debug, Clone)]
struct Append {
    /// From the first GET to the 200.
    started: Instant,
    done: Instant,
    /// PUTs answered 412.
    stale: u32,
    /// PUTs answered 503.
    busy: u32,
    /// How long each PUT took.
    puts: Vec<Duration>,
}

fn items_of(body: &Value) -> Vec<String> {
    let doc = patient_doc(body);
    doc["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("string item").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn yaml_with(items: &[String]) -> String {
    let mut out = String::from("name: Contended\nitems:\n");
    for item in items {
        out.push_str(&format!("- '{item}'\n"));
    }
    if items.is_empty() {
        out = "name: Contended\nitems: []\n".to_string();
    }
    out
}

/// Reads the record, appends `item` to its list and writes it back with
/// `If-Match`, again from the read on 412 and after `Retry-After` on 503.
/// The item is appended blindly on every try: if a 412 or 503 were ever
/// answered for a write that was applied, the item would appear twice.
async fn append(http: &reqwest::Client, c: &TestCentral, id: PatientId, item: &str) -> Append {
    let started = Instant::now();
    let (mut stale, mut busy) = (0, 0);
    let mut puts = Vec::new();
    loop {
        let r = http
            .get(format!("{}/v1/patients/{id}", c.url))
            .bearer_auth(&c.admin)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()["etag"].to_str().expect("etag").to_string();
        let body: Value = r.json().await.expect("json");
        let mut items = items_of(&body);
        items.push(item.to_string());
        let put = Instant::now();
        let r = http
            .put(format!("{}/v1/patients/{id}", c.url))
            .bearer_auth(&c.admin)
            .header("if-match", &etag)
            .json(&json!({"files": {"patient.yaml": yaml_with(&items)}}))
            .send()
            .await
            .expect("put");
        puts.push(put.elapsed());
        match r.status() {
            StatusCode::OK => {
                let new = r.headers()["etag"].to_str().expect("etag").to_string();
                assert_ne!(new, etag, "an append makes a new version");
                return Append {
                    started,
                    done: Instant::now(),
                    stale,
                    busy,
                    puts,
                };
            }
            StatusCode::PRECONDITION_FAILED => {
                let body: Value = r.json().await.expect("conflict body");
                assert_eq!(body["error"], "conflict");
                assert_eq!(body["expected_head"], etag.trim_matches('"'));
                stale += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let secs: u64 = r
                    .headers()
                    .get("retry-after")
                    .expect("a 503 carries Retry-After")
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                busy += 1;
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            other => panic!("PUT answered {other}: {:?}", r.text().await),
        }
    }
}

async fn record_of(http: &reqwest::Client, c: &TestCentral, id: PatientId) -> (Vec<String>, usize) {
    let r = http
        .get(format!("{}/v1/patients/{id}", c.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let items = items_of(&r.json().await.expect("json"));
    (items, c.history_len(http, id).await)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_patient_lose_and_duplicate_nothing_and_block_no_one_else() {
    const CLIENTS: usize = 16;
    const APPENDS: usize = 3;
    const OTHERS: usize = 4;
    let dir = tempfile::tempdir().expect("tmp");
    let c = Arc::new(TestCentral::builder(dir.path()).start().await);
    let http = support::client();
    let (contended, _) = c.create(&http, &yaml_with(&[])).await;
    let mut others = Vec::new();
    for _ in 0..OTHERS {
        others.push(c.create(&http, &yaml_with(&[])).await.0);
    }

    let contention_over = Arc::new(AtomicBool::new(false));
    let window_start = Instant::now();
    // The writers of the other patients: one each, writing until the
    // contention is over (at least a few writes).
    let mut other_tasks = Vec::new();
    for (k, id) in others.iter().copied().enumerate() {
        let (http, c, over) = (http.clone(), Arc::clone(&c), Arc::clone(&contention_over));
        other_tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while done.len() < 3 || (!over.load(Ordering::SeqCst) && done.len() < 400) {
                let item = format!("o{k}-{}", done.len());
                done.push((item.clone(), append(&http, &c, id, &item).await));
            }
            done
        }));
    }
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (http, c) = (http.clone(), Arc::clone(&c));
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for n in 0..APPENDS {
                let item = format!("c{client:02}-{n}");
                done.push((item.clone(), append(&http, &c, contended, &item).await));
            }
            done
        }));
    }
    let mut acked: Vec<(String, Append)> = Vec::new();
    for task in clients {
        acked.extend(task.await.expect("client"));
    }
    let window_end = Instant::now();
    contention_over.store(true, Ordering::SeqCst);
    let mut other_acked: Vec<Vec<(String, Append)>> = Vec::new();
    for task in other_tasks {
        other_acked.push(task.await.expect("other writer"));
    }

    // Every acknowledged append is there exactly once, one commit each.
    let (items, history) = record_of(&http, &c, contended).await;
    assert_eq!(acked.len(), CLIENTS * APPENDS);
    for (item, _) in &acked {
        assert_eq!(
            items.iter().filter(|i| *i == item).count(),
            1,
            "{item} must be in the record exactly once: {items:?}"
        );
    }
    assert_eq!(items.len(), acked.len(), "nothing else in the list");
    assert_eq!(
        history,
        1 + acked.len(),
        "one commit per acknowledged write"
    );
    let stale: u32 = acked.iter().map(|(_, a)| a.stale).sum();
    let busy: u32 = acked.iter().map(|(_, a)| a.busy).sum();
    assert!(stale > 0, "16 writers on one patient met stale versions");

    // The other patients: all their writes, one commit each, never refused.
    for (id, writes) in others.iter().zip(&other_acked) {
        let (items, history) = record_of(&http, &c, *id).await;
        let wanted: Vec<String> = writes.iter().map(|(i, _)| i.clone()).collect();
        assert_eq!(items, wanted, "every write of a lone writer, in order");
        assert_eq!(history, 1 + writes.len());
        for (item, a) in writes {
            assert_eq!(
                a.stale, 0,
                "{item}: a lone writer never sees a stale version"
            );
            assert_eq!(a.busy, 0, "{item}: a lone writer's patient is never busy");
        }
    }

    // ...and they were not blocked by the contended patient: each of them
    // kept completing writes while the contention lasted, and their PUTs
    // did not queue with the contended patient's (which wait for up to 15
    // others each; with one lock for all patients both would wait alike).
    for (k, writes) in other_acked.iter().enumerate() {
        let inside = writes
            .iter()
            .filter(|(_, a)| a.started >= window_start && a.done <= window_end)
            .count();
        assert!(
            inside >= 2,
            "patient {k} completed only {inside} writes during {:?} of contention",
            window_end - window_start
        );
    }
    let contended_put = median(acked.iter().flat_map(|(_, a)| a.puts.clone()).collect());
    let other_put = median(
        other_acked
            .iter()
            .flatten()
            .filter(|(_, a)| a.done <= window_end)
            .flat_map(|(_, a)| a.puts.clone())
            .collect(),
    );
    eprintln!(
        "contention {:?}: {} appends, {stale} stale and {busy} busy answers; median PUT {contended_put:?} on the contended patient, {other_put:?} on the others ({} writes)",
        window_end - window_start,
        acked.len(),
        other_acked.iter().map(Vec::len).sum::<usize>(),
    );
    assert!(
        other_put * 2 < contended_put,
        "PUTs to other patients ({other_put:?}) wait like the contended patient's ({contended_put:?})"
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop().await,
        Err(_) => panic!("central still shared"),
    }
}

// ---------------------------------------------------------------------------
// Push edge cases
// ---------------------------------------------------------------------------

struct PushWorld {
    _dir: tempfile::TempDir,
    c: TestCentral,
    http: reqwest::Client,
    north: String,
    south: String,
}

/// Central with a 1 MiB body limit, a "north" and a "south" instance.
async fn push_world() -> PushWorld {
    let dir = tempfile::tempdir().expect("tmp");
    let c = TestCentral::builder(dir.path())
        .config("max_body_bytes = 1048576")
        .start()
        .await;
    let (_, north) = c.add_instance("north", &["north"]).await;
    let (_, south) = c.add_instance("south", &["south"]).await;
    PushWorld {
        _dir: dir,
        c,
        http: support::client(),
        north,
        south,
    }
}

/// What central stores, to show a refusal stored nothing.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    records: u64,
    seq: u64,
    on_disk: usize,
    half_built: usize,
    heads: Vec<Option<CommitId>>,
    packs: Vec<usize>,
}

impl PushWorld {
    async fn push(&self, token: &str, records: Vec<PushRecord>) -> PushResponse {
        push(&self.http, &self.c.url, token, records).await
    }

    async fn head(&self, id: PatientId) -> Option<CommitId> {
        admin_head(&self.http, &self.c.url, &self.c.admin, id).await
    }

    /// [`PushWorld::stored`] taken as a `before`: first repacks the records
    /// the way central's upkeep does (under the patient lock), so a repack
    /// that an earlier accepted write queued is done, or finds nothing to
    /// do, and cannot change the pack counts between this snapshot and the
    /// next. Only `before` snapshots settle: an `after` one sees any pack a
    /// refused or repeated push wrongly left.
    async fn settled(&self, ids: &[PatientId]) -> Stored {
        for id in ids {
            chartsync_central::upkeep::repack_one(&self.c.central, *id).await;
        }
        self.stored(ids).await
    }

    async fn stored(&self, ids: &[PatientId]) -> Stored {
        let counts = self.c.central.db.counts().await.expect("counts");
        let store = &self.c.central.store;
        let mut heads = Vec::new();
        let mut packs = Vec::new();
        for id in ids {
            heads.push(self.head(*id).await);
            packs.push(if store.exists(id) {
                store.pack_count(id).expect("packs")
            } else {
                0
            });
        }
        let tmp = store.layout().tmp();
        let half_built = std::fs::read_dir(&tmp)
            .expect("tmp")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
            .sum();
        Stored {
            records: counts.records,
            seq: counts.seq,
            on_disk: store.list().expect("list").len(),
            half_built,
            heads,
            packs,
        }
    }

    /// Pushes one record and expects it refused with `code`, storing nothing
    /// (`ids`: the records whose state must not change).
    async fn refused(&self, token: &str, record: PushRecord, code: &str, ids: &[PatientId]) {
        let before = self.settled(ids).await;
        let response = self.push(token, vec![record]).await;
        match &response.results[0].outcome {
            PushOutcome::Refused { code: got, message } => {
                assert_eq!(got, code, "refused for the wrong reason: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected Refused {code}, got {other:?}"),
        }
        assert_eq!(
            self.stored(ids).await,
            before,
            "a refusal ({code}) stored nothing"
        );
    }

    /// Sends a raw body and expects an HTTP error with `code`, storing nothing.
    async fn http_refused(
        &self,
        token: Option<&str>,
        protocol: Option<&str>,
        body: Vec<u8>,
        status: StatusCode,
        code: &str,
        ids: &[PatientId],
    ) {
        let before = self.settled(ids).await;
        let response = push_raw(&self.http, &self.c.url, token, protocol, body).await;
        assert_eq!(error_code(response).await, (status, code.to_string()));
        assert_eq!(
            self.stored(ids).await,
            before,
            "a refusal ({code}) stored nothing"
        );
    }
}

/// The sequence number of an applied result (central then holds the
/// pushed head; the tests read it back from central).
fn applied(response: &PushResponse, i: usize) -> u64 {
    match &response.results[i].outcome {
        PushOutcome::Applied { seq, .. } => *seq,
        other => panic!("expected Applied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_applied_conflicted_or_retried_exactly_as_the_protocol_says() {
    let w = push_world().await;
    let sat = Scratch::new();
    let a = PatientId::random();
    let b = PatientId::random();

    // Applied: two new records in one batch, then an update of one.
    let a1 = sat.create(a, "name: A\n");
    let b1 = sat.create(b, "name: B\n");
    let r = w
        .push(&w.north, vec![sat.record(a, None), sat.record(b, None)])
        .await;
    assert_eq!(r.results.len(), 2);
    // In request order; protocol 5 leaves the ids out.
    assert_eq!((r.results[0].id, r.results[1].id), (None, None));
    let seq_a1 = applied(&r, 0);
    let seq_b1 = applied(&r, 1);
    assert_eq!(seq_b1, seq_a1 + 1, "one batch, consecutive numbers");
    assert_eq!(w.head(a).await, Some(a1));
    assert_eq!(w.head(b).await, Some(b1));
    let a2 = sat.update(a, "name: A\nphone: '1'\n");
    let update = sat.record(a, Some(a1));
    let r = w.push(&w.north, vec![update.clone()]).await;
    let seq_a2 = applied(&r, 0);
    assert!(
        seq_a2 > seq_b1,
        "every accepted change gets the next number"
    );
    assert_eq!(w.head(a).await, Some(a2));

    // A retry of an applied push (its reply was lost): Applied again, same
    // number, no new commit, nothing stored.
    let before = w.settled(&[a, b]).await;
    let history = w.c.central.store.history(&a).expect("history").len();
    let r = w.push(&w.north, vec![update]).await;
    assert_eq!(applied(&r, 0), seq_a2);
    assert_eq!(w.head(a).await, Some(a2));
    assert_eq!(w.stored(&[a, b]).await, before);
    assert_eq!(
        w.c.central.store.history(&a).expect("history").len(),
        history
    );
    // ...also the retry of a creation.
    let r = w.push(&w.north, vec![sat.record(b, None)]).await;
    assert_eq!(applied(&r, 0), seq_b1);
    assert_eq!(w.head(b).await, Some(b1));
    assert_eq!(w.stored(&[a, b]).await, before);

    // Stale expected head: HQ edits A meanwhile; the satellite's next push
    // meets a Conflict carrying central's head and the commits it lacks.
    let r = w
        .http
        .put(format!("{}/v1/patients/{a}", w.c.url))
        .bearer_auth(&w.c.admin)
        .header("if-match", format!("\"{a2}\""))
        .json(&json!({"files": {"patient.yaml": "name: A\nphone: '1'\nweight: 70\n"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let hq = w.head(a).await.expect("a");
    sat.update(a, "name: A\nphone: '2'\n");
    let before = w.settled(&[a, b]).await;
    let r = w.push(&w.north, vec![sat.record(a, Some(a2))]).await;
    let PushOutcome::Conflict { head, seq, pack } = &r.results[0].outcome else {
        panic!("expected a conflict, got {:?}", r.results[0].outcome);
    };
    assert_eq!(*head, hq);
    assert!(*seq > seq_a2);
    assert_eq!(w.stored(&[a, b]).await, before, "a conflict stored nothing");
    // The satellite can take central's commits and read central's version.
    sat.store
        .ingest(&a, hq, pack, Flush::Now)
        .expect("the conflict pack applies at the satellite");
    let theirs = sat.store.read_at(&a, hq).expect("read").expect("has hq");
    assert_eq!(theirs["patient.yaml"], "name: A\nphone: '1'\nweight: 70\n");
    assert!(sat.store.is_ancestor(&a, a2, hq).expect("ancestry"));

    // MustCreate (expected: None) on an id central has: Conflict with
    // central's whole history, nothing stored.
    let other = Scratch::new();
    other.create(b, "name: Not B\n");
    let before = w.settled(&[a, b]).await;
    let r = w.push(&w.north, vec![other.record(b, None)]).await;
    let PushOutcome::Conflict { head, pack, .. } = &r.results[0].outcome else {
        panic!("expected a conflict, got {:?}", r.results[0].outcome);
    };
    assert_eq!(*head, b1);
    assert_eq!(w.stored(&[a, b]).await, before);
    other
        .store
        .ingest(&b, b1, pack, Flush::Now)
        .expect("the whole history applies");
    assert_eq!(
        other.store.read_at(&b, b1).expect("read").expect("has b1")["patient.yaml"],
        "name: B\n"
    );

    // An update of a record central does not have: refused, not created.
    let ghost = PatientId::random();
    let g1 = sat.create(ghost, "name: Ghost\n");
    sat.update(ghost, "name: Ghost\nphone: '3'\n");
    w.refused(&w.north, sat.record(ghost, Some(g1)), "not_found", &[ghost])
        .await;
    w.c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_and_store_nothing() {
    let w = push_world().await;
    let sat = Scratch::new();
    let a = PatientId::random();
    let a1 = sat.create(a, "name: A\n");
    let r = w.push(&w.north, vec![sat.record(a, None)]).await;
    applied(&r, 0);
    assert_eq!(w.head(a).await, Some(a1));
    let fresh = PatientId::random();
    let ids = [a, fresh];

    // Corrupt packs: a flipped byte, a truncated pack, not a pack at all.
    sat.update(a, "name: A\nphone: '1'\n");
    let good = sat.record(a, Some(a1));
    let mut flipped = good.clone();
    let middle = flipped.pack.len() / 2;
    flipped.pack[middle] ^= 0x55;
    w.refused(&w.north, flipped, "corrupt_pack", &ids).await;
    let mut truncated = good.clone();
    truncated.pack.truncate(truncated.pack.len() - 7);
    w.refused(&w.north, truncated, "corrupt_pack", &ids).await;
    let mut garbage = good.clone();
    garbage.pack = b"this is not a git pack".to_vec();
    w.refused(&w.north, garbage, "corrupt_pack", &ids).await;
    // ...and for a new record.
    let sat2 = Scratch::new();
    sat2.create(fresh, "name: Fresh\n");
    let mut new_flipped = sat2.record(fresh, None);
    let middle = new_flipped.pack.len() / 2;
    new_flipped.pack[middle] ^= 0x55;
    w.refused(&w.north, new_flipped, "corrupt_pack", &ids).await;

    // Packs missing objects: a blob left out; the head commit left out.
    let (head, objects) = craft_commit(&[("patient.yaml", "name: A\nx: 1\n")], &[a1]);
    let without_blob: Vec<_> = objects
        .iter()
        .filter(|o| o.kind != Kind::Blob)
        .cloned()
        .collect();
    let record = |head, pack| PushRecord {
        id: a,
        expected: Some(a1),
        head,
        pack,
    };
    w.refused(
        &w.north,
        record(head, pack_of(&without_blob)),
        "incomplete_pack",
        &ids,
    )
    .await;
    let without_commit: Vec<_> = objects
        .iter()
        .filter(|o| o.kind != Kind::Commit)
        .cloned()
        .collect();
    w.refused(
        &w.north,
        record(head, pack_of(&without_commit)),
        "incomplete_pack",
        &ids,
    )
    .await;
    // A parent neither in the pack nor at central.
    let (head, objects) = craft_commit(&[("patient.yaml", "name: A\n")], &[CommitId([0x42; 20])]);
    w.refused(
        &w.north,
        record(head, pack_of(&objects)),
        "incomplete_pack",
        &ids,
    )
    .await;

    // A new head that does not descend from the expected one (a root
    // commit of its own; and central's own head's sibling).
    let (head, objects) = craft_commit(&[("patient.yaml", "name: Elsewhere\n")], &[]);
    w.refused(
        &w.north,
        record(head, pack_of(&objects)),
        "not_descendant",
        &ids,
    )
    .await;

    // Bad paths and invalid YAML inside the pushed tree, which the store
    // itself would never write: built with git plumbing.
    for (files, code) in [
        (
            vec![
                ("patient.yaml", "name: A\n"),
                ("notes/bad name.yaml", "a: 1\n"),
            ],
            "invalid_path",
        ),
        (
            vec![("patient.yaml", "name: A\n"), ("-rf;$(x).yaml", "a: 1\n")],
            "invalid_path",
        ),
        (
            vec![
                ("patient.yaml", "name: A\n"),
                ("notes/.hidden.yaml", "a: 1\n"),
            ],
            "invalid_path",
        ),
        (vec![("patient.yaml", "name: [unclosed\n")], "invalid_yaml"),
        (
            vec![
                ("patient.yaml", "name: A\n"),
                ("encounters/e.yaml", "a: b: c\n"),
            ],
            "invalid_yaml",
        ),
        // Records are plain data: no anchors, aliases or tags, bounded
        // nesting, numbers kept exactly.
        (
            vec![
                ("patient.yaml", "name: A\n"),
                ("encounters/e.yaml", "a: &x [1, 2]\nb: [*x, *x, *x]\n"),
            ],
            "invalid_yaml",
        ),
        (
            vec![
                ("patient.yaml", "name: A\n"),
                ("encounters/e.yaml", "a: !!binary aGk=\n"),
            ],
            "invalid_yaml",
        ),
        (
            vec![(
                "patient.yaml",
                "name: A\nx: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
            )],
            "invalid_yaml",
        ),
        (
            vec![("patient.yaml", "name: A\nnid: 12345678901234567890123\n")],
            "invalid_yaml",
        ),
    ] {
        let (head, objects) = craft_commit(&files, &[a1]);
        w.refused(&w.north, record(head, pack_of(&objects)), code, &ids)
            .await;
        // ...and as a new record.
        let (head, objects) = craft_commit(&files, &[]);
        w.refused(
            &w.north,
            PushRecord {
                id: fresh,
                expected: None,
                head,
                pack: pack_of(&objects),
            },
            code,
            &ids,
        )
        .await;
    }

    // Other trees no local write could make: no files at all, a file that
    // is not text, a symbolic link.
    let (head, objects) = craft_commit(&[], &[a1]);
    w.refused(
        &w.north,
        record(head, pack_of(&objects)),
        "empty_record",
        &ids,
    )
    .await;
    let (head, objects) = craft_commit_bytes(
        &[
            ("patient.yaml", b"name: A\n"),
            ("scan.yaml", b"\xff\xfe\x00binary"),
        ],
        &[a1],
    );
    w.refused(&w.north, record(head, pack_of(&objects)), "not_text", &ids)
        .await;
    let target = Object::new(Kind::Blob, b"/etc/passwd".to_vec());
    let patient = Object::new(Kind::Blob, b"name: A\n".to_vec());
    let tree = Object::new(
        Kind::Tree,
        git::encode_tree(&[
            git::TreeEntry {
                mode: git::MODE_FILE,
                name: "patient.yaml".into(),
                id: patient.id,
            },
            git::TreeEntry {
                mode: git::MODE_SYMLINK,
                name: "link.yaml".into(),
                id: target.id,
            },
        ]),
    );
    let (head, objects) = commit_tree(tree.id, vec![target, patient, tree], &[a1]);
    w.refused(
        &w.north,
        record(head, pack_of(&objects)),
        "unsupported_entry",
        &ids,
    )
    .await;

    // Out of scope: a south record, pushed to by north (as an update, and
    // as a "new" record with the same id, which must not leak south's
    // commits in a conflict answer). The update gets what an update of an
    // unknown record gets (a 403 would say the id exists elsewhere).
    let s = PatientId::random();
    let south_sat = Scratch::named("south");
    let s1 = south_sat.create(s, "name: S\ncatchment: south\n");
    let r = w.push(&w.south, vec![south_sat.record(s, None)]).await;
    applied(&r, 0);
    assert_eq!(w.head(s).await, Some(s1));
    south_sat.update(s, "name: S\ncatchment: south\nphone: '9'\n");
    let scoped = [a, fresh, s];
    w.refused(
        &w.north,
        south_sat.record(s, Some(s1)),
        "not_found",
        &scoped,
    )
    .await;
    let north_sat = Scratch::new();
    north_sat.create(s, "name: S\ncatchment: north\n");
    w.refused(&w.north, north_sat.record(s, None), "exists", &scoped)
        .await;
    let unknown = PatientId::random();
    let ghost = Scratch::new();
    let g1 = ghost.create(unknown, "name: G\n");
    ghost.update(unknown, "name: G\nphone: '1'\n");
    let (out_of_scope, not_there) = (
        w.push(&w.north, vec![south_sat.record(s, Some(s1))]).await,
        w.push(&w.north, vec![ghost.record(unknown, Some(g1))])
            .await,
    );
    let refusal = |r: &PushResponse, id: PatientId| match &r.results[0].outcome {
        PushOutcome::Refused { code, message } => {
            (code.clone(), message.replace(&id.to_string(), "<id>"))
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refusal(&out_of_scope, s),
        refusal(&not_there, unknown),
        "out of scope and unknown look the same"
    );

    // Every refusal above stored nothing; the good push still applies.
    let r = w.push(&w.north, vec![good]).await;
    applied(&r, 0);
    assert_eq!(w.head(a).await, Some(sat.head(a)));
    assert_eq!(w.head(fresh).await, None);
    w.c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_push_requests_are_refused_whole_and_store_nothing() {
    let version = PROTOCOL_VERSION.to_string();
    let other = (PROTOCOL_VERSION + 1).to_string();
    let w = push_world().await;
    let sat = Scratch::new();
    let a = PatientId::random();
    let a1 = sat.create(a, "name: A\n");
    let r = w.push(&w.north, vec![sat.record(a, None)]).await;
    applied(&r, 0);
    assert_eq!(w.head(a).await, Some(a1));
    sat.update(a, "name: A\nphone: '1'\n");
    let good = sat.record(a, Some(a1));
    let ids = [a];
    let junk = |n: usize| -> Vec<PushRecord> {
        (0..n)
            .map(|_| PushRecord {
                id: PatientId::random(),
                expected: None,
                head: CommitId([7; 20]),
                pack: Vec::new(),
            })
            .collect()
    };

    // More than 1000 records: 400, nothing applied (the good one included).
    let mut big = junk(1000);
    big.push(good.clone());
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        encode_push(big),
        StatusCode::BAD_REQUEST,
        "batch_too_large",
        &ids,
    )
    .await;
    // Exactly 1000 is a batch: each record answered (refused), none stored.
    let before = w.settled(&ids).await;
    let r = w.push(&w.north, junk(1000)).await;
    assert_eq!(r.results.len(), 1000);
    assert!(r.results.iter().all(
        |x| matches!(&x.outcome, PushOutcome::Refused { code, .. } if code == "corrupt_pack")
    ));
    assert_eq!(w.stored(&ids).await, before);
    // The same id twice.
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        encode_push(vec![good.clone(), good.clone()]),
        StatusCode::BAD_REQUEST,
        "duplicate_record",
        &ids,
    )
    .await;

    // Tokens: wrong, missing, and HQ's (which is for the record API).
    let body = || encode_push(vec![good.clone()]);
    let wrong = format!("cst_{}", "0".repeat(64));
    for (token, status, code) in [
        (
            Some(wrong.as_str()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (Some(w.c.admin.as_str()), StatusCode::FORBIDDEN, "forbidden"),
    ] {
        w.http_refused(token, Some(version.as_str()), body(), status, code, &ids)
            .await;
    }

    // Bodies: over max_body_bytes, not an envelope, another envelope version.
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        vec![0u8; (1 << 20) + 1],
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &ids,
    )
    .await;
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        b"{\"records\": []}".to_vec(),
        StatusCode::BAD_REQUEST,
        "bad_batch",
        &ids,
    )
    .await;
    let mut other_version = body();
    other_version[3] = PROTOCOL_VERSION + 1;
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        other_version,
        StatusCode::BAD_REQUEST,
        "bad_batch",
        &ids,
    )
    .await;
    let mut cut = body();
    cut.truncate(cut.len() / 2);
    w.http_refused(
        Some(&w.north),
        Some(version.as_str()),
        cut,
        StatusCode::BAD_REQUEST,
        "bad_batch",
        &ids,
    )
    .await;

    // The protocol header: another major version, or none.
    for protocol in [Some(other.as_str()), Some("banana"), None] {
        w.http_refused(
            Some(&w.north),
            protocol,
            body(),
            StatusCode::BAD_REQUEST,
            "protocol_version",
            &ids,
        )
        .await;
    }
    // A minor version of ours is fine.
    let minor = format!("{PROTOCOL_VERSION}.3");
    let response = push_raw(&w.http, &w.c.url, Some(&w.north), Some(&minor), body()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.head(a).await, Some(good.head));
    w.c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_central_is_not_the_records_fault() {
    let w = push_world().await;
    let sat = Scratch::new();
    let a = PatientId::random();
    let a1 = sat.create(a, "name: A\n");
    // Break central's staging area (as a full or failing disk would): its
    // session folder becomes a file.
    let tmp = w.c.central.store.layout().tmp();
    let session = std::fs::read_dir(&tmp)
        .expect("tmp")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "session"))
        .expect("central's session folder");
    let aside = session.with_extension("aside");
    std::fs::rename(&session, &aside).expect("move aside");
    std::fs::write(&session, b"not a folder").expect("break");
    let before = w.settled(&[a]).await;
    let r = w.push(&w.north, vec![sat.record(a, None)]).await;
    match &r.results[0].outcome {
        PushOutcome::Failed { code, message } => {
            assert_eq!(code, "internal", "{message}");
        }
        other => panic!("a fault of central's must not refuse the record: {other:?}"),
    }
    assert_eq!(w.stored(&[a]).await, before, "nothing stored");
    assert_eq!(w.c.central.metrics.store_failures.get(), 1, "HQ can see it");
    // Repaired: the same push is taken.
    std::fs::remove_file(&session).expect("unbreak");
    std::fs::rename(&aside, &session).expect("restore");
    let r = w.push(&w.north, vec![sat.record(a, None)]).await;
    applied(&r, 0);
    assert_eq!(w.head(a).await, Some(a1));
    w.c.stop().await;
}
