//! End to end: a real central and three satellites on 127.0.0.1:0 (two in
//! catchment "north", one in "south"), syncing through the real jobs.

use std::time::Duration;

use chartsync_satellite::jobs::{Job, no_progress, run_once};
use reqwest::StatusCode;
use serde_json::{Value, json};

use chartsync_protocol::{Files, PatientId};

use crate::support::{TestCentral, TestSatellite, client, git, patient_doc};

struct World {
    _dir: tempfile::TempDir,
    central: TestCentral,
    sats: Vec<TestSatellite>,
    http: reqwest::Client,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let mut sats = Vec::new();
    for (name, catchment) in [
        ("north-a", "north"),
        ("north-b", "north"),
        ("south-c", "south"),
    ] {
        let (id, token) = central.add_instance(name, &[catchment]).await;
        sats.push(
            TestSatellite::builder(dir.path().join(name))
                .central(&central.url)
                .instance(id, &token)
                .start()
                .await,
        );
    }
    World {
        _dir: dir,
        central,
        sats,
        http: client(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_within_their_catchment_only() {
    let w = world().await;
    let (id, _) = w.sats[0]
        .create(&w.http, "name: Amina\ncatchment: north\n")
        .await;
    let s = w.sats[0].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    assert_eq!(s.round_trips, 1);
    // The neighbour in the same catchment fetches it; the other does not.
    let s = w.sats[1].sync(&[Job::FetchNew]).await;
    assert_eq!(s.records_received, 1);
    let (status, body, _) = w.sats[1].get(&w.http, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patient_doc(&body)["name"], "Amina");
    let s = w.sats[2].sync(&[Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
    assert_eq!(w.sats[2].get(&w.http, &id).await.0, StatusCode::NOT_FOUND);
    // Central refuses the south clinic a direct read, as if the record did
    // not exist (tests/it/security.rs compares the two answers in detail).
    let token = w.sats[2].sat.config.token().expect("token").expect("set").0;
    let r = w
        .http
        .get(format!("{}/v1/patients/{id}", w.central.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // ...and anyone without a token.
    let r = w
        .http
        .get(format!("{}/v1/patients/{id}", w.central.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // HQ reads everything.
    let r = w
        .http
        .get(format!("{}/v1/patients/{id}", w.central.url))
        .bearer_auth(&w.central.admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    // A second fetch-new brings nothing new (it acknowledged the record).
    let s = w.sats[1].sync(&[Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
    // A visiting patient: the south clinic fetches the record by id.
    let r = w
        .http
        .post(format!("{}/v1/patients/{id}/fetch", w.sats[2].url))
        .send()
        .await
        .expect("fetch");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(w.sats[2].get(&w.http, &id).await.0, StatusCode::OK);
    // From then on it is held and synced: an edit at A reaches C's pull.
    let (_, _, etag) = w.sats[0].get(&w.http, &id).await;
    w.sats[0]
        .patch(
            &w.http,
            &id,
            &etag,
            json!({"patient.yaml": {"phone": "0700 1"}}),
        )
        .await;
    w.sats[0].sync(&[Job::Push]).await;
    let s = w.sats[2].sync(&[Job::Pull]).await;
    assert_eq!(s.records_received, 1);
    assert_eq!(
        patient_doc(&w.sats[2].get(&w.http, &id).await.1)["phone"],
        "0700 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_of_different_fields_converge_everywhere() {
    let w = world().await;
    let (id, _) = w.sats[0]
        .create(
            &w.http,
            "name: Amina\nphone: '1'\nweight: 60\nallergies: [penicillin]\n",
        )
        .await;
    w.sats[0].sync(&[Job::Push]).await;
    w.sats[1].sync(&[Job::FetchNew]).await;
    // Offline edits at both clinics, different fields and list appends.
    let (_, _, ea) = w.sats[0].get(&w.http, &id).await;
    w.sats[0]
        .patch(
            &w.http,
            &id,
            &ea,
            json!({"patient.yaml": {"phone": "2", "allergies": ["penicillin", "latex"]}}),
        )
        .await;
    let (_, _, eb) = w.sats[1].get(&w.http, &id).await;
    w.sats[1]
        .patch(
            &w.http,
            &id,
            &eb,
            json!({"patient.yaml": {"weight": 62, "allergies": ["penicillin", "sulfa"]}}),
        )
        .await;
    let s = w.sats[0].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    // B's push meets a conflict, merges in the same run and pushes again.
    let s = w.sats[1].sync(&[Job::Push]).await;
    assert_eq!(s.merged, 1, "{s:?}");
    assert_eq!(s.conflicts, 0);
    assert_eq!(s.records_sent, 1);
    assert_eq!(
        s.round_trips, 2,
        "one conflict answer, one push of the merge"
    );
    w.sats[0].sync(&[Job::Pull]).await;
    let (_, a, ea) = w.sats[0].get(&w.http, &id).await;
    let (_, b, eb) = w.sats[1].get(&w.http, &id).await;
    assert_eq!(ea, eb, "one head everywhere");
    let d = patient_doc(&a);
    assert_eq!(d, patient_doc(&b));
    assert_eq!(d["phone"], "2");
    assert_eq!(d["weight"], 62);
    assert_eq!(d["allergies"], json!(["penicillin", "latex", "sulfa"]));
    // Central has the same head.
    let r = w
        .http
        .get(format!("{}/v1/patients/{id}", w.central.url))
        .bearer_auth(&w.central.admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["etag"].to_str().expect("etag"), ea);
    // Nothing is pending anywhere.
    for sat in &w.sats[..2] {
        let status = sat.status();
        assert_eq!(status.pending_push, 0);
        assert_eq!(status.open_conflicts, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_true_conflict_is_kept_for_review_and_its_resolution_reaches_every_holder() {
    let w = world().await;
    let (id, _) = w.sats[0].create(&w.http, "name: Amina\nphone: '1'\n").await;
    w.sats[0].sync(&[Job::Push]).await;
    w.sats[1].sync(&[Job::FetchNew]).await;
    let (_, _, ea) = w.sats[0].get(&w.http, &id).await;
    w.sats[0]
        .patch(&w.http, &id, &ea, json!({"patient.yaml": {"phone": "A"}}))
        .await;
    let (_, _, eb) = w.sats[1].get(&w.http, &id).await;
    w.sats[1]
        .patch(&w.http, &id, &eb, json!({"patient.yaml": {"phone": "B"}}))
        .await;
    w.sats[0].sync(&[Job::Push]).await;
    let s = w.sats[1].sync(&[Job::Push]).await;
    assert_eq!(s.conflicts, 1);
    // Central's value is in the record; B's value waits in B's queue.
    let (_, b, _) = w.sats[1].get(&w.http, &id).await;
    assert_eq!(patient_doc(&b)["phone"], "A");
    let conflicts: Vec<Value> = w
        .http
        .get(format!("{}/v1/conflicts", w.sats[1].url))
        .send()
        .await
        .expect("conflicts")
        .json()
        .await
        .expect("json");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c["patient"], id);
    assert_eq!(c["file"], "patient.yaml");
    assert_eq!(c["path"], "/phone");
    assert_eq!(
        (c["base"].clone(), c["ours"].clone(), c["theirs"].clone()),
        (json!("1"), json!("B"), json!("A"))
    );
    // B's losing commit is kept under a ref, readable with git.
    let pid: chartsync_protocol::PatientId = id.parse().expect("id");
    let repo = w.sats[1].sat.store.layout().repo(&pid);
    let ours = c["ours_commit"].as_str().expect("commit");
    let out = git(
        &repo,
        &[
            "show",
            &format!("refs/chartsync/conflicts/{ours}:patient.yaml"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("phone: B"),
        "{out:?}"
    );
    // A pushing again changes nothing: exactly one conflict.
    w.sats[1].sync(&[Job::Push]).await;
    assert_eq!(w.sats[1].status().open_conflicts, 1);
    // A clinician at B resolves it (B's value after all); the resolution
    // reaches central and A.
    let r = w
        .http
        .post(format!(
            "{}/v1/conflicts/{}/resolve",
            w.sats[1].url, c["id"]
        ))
        .json(&json!({"files": {"patient.yaml": "name: Amina\nphone: B-confirmed\n"}}))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(w.sats[1].status().open_conflicts, 0);
    let s = w.sats[1].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    w.sats[0].sync(&[Job::Pull]).await;
    assert_eq!(
        patient_doc(&w.sats[0].get(&w.http, &id).await.1)["phone"],
        "B-confirmed"
    );
    let r = w
        .http
        .post(format!(
            "{}/v1/conflicts/{}/resolve",
            w.sats[1].url, c["id"]
        ))
        .json(&json!({"files": {"patient.yaml": "x: 1\n"}}))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status(), StatusCode::CONFLICT, "resolving twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_central_is_down_arrives_after_it_comes_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let central_dir = dir.path().join("central");
    let central = TestCentral::builder(&central_dir).start().await;
    let addr = central.addr();
    let (a_id, a_token) = central.add_instance("a", &["north"]).await;
    let (b_id, b_token) = central.add_instance("b", &["north"]).await;
    let a = TestSatellite::builder(dir.path().join("a"))
        .central(&central.url)
        .instance(a_id, &a_token)
        .start()
        .await;
    let b = TestSatellite::builder(dir.path().join("b"))
        .central(&central.url)
        .instance(b_id, &b_token)
        .start()
        .await;
    let w = World {
        _dir: tempfile::tempdir().expect("tmp"),
        central,
        sats: vec![a, b],
        http: client(),
    };
    let (id, _) = w.sats[0].create(&w.http, "name: Amina\n").await;
    w.sats[0].sync(&[Job::Push]).await;
    w.sats[1].sync(&[Job::FetchNew]).await;
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    let w = World {
        _dir,
        central: TestCentral::builder(&central_dir).addr(&addr).start().await,
        sats,
        http,
    };
    // Stop again: the clinic keeps working offline.
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    let w = World {
        _dir,
        central: TestCentral::builder(dir.path().join("unused"))
            .start()
            .await,
        sats,
        http,
    };
    let (_, _, e) = w.sats[0].get(&w.http, &id).await;
    w.sats[0]
        .patch(
            &w.http,
            &id,
            &e,
            json!({"patient.yaml": {"note": "seen offline"}}),
        )
        .await;
    let (new_id, _) = w.sats[0].create(&w.http, "name: Offline Newborn\n").await;
    let err = run_once(
        &w.sats[0].sat,
        &[Job::Push],
        Duration::from_secs(5),
        no_progress(),
    )
    .await
    .expect_err("central is down");
    assert!(
        chartsync_satellite::error_chain(&err).contains("cannot reach central"),
        "{err}"
    );
    assert_eq!(w.sats[0].status().pending_push, 2);
    // Central comes back where the satellites expect it.
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    let w = World {
        _dir,
        central: TestCentral::builder(&central_dir).addr(&addr).start().await,
        sats,
        http,
    };
    let s = w.sats[0].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 2);
    let s = w.sats[1].sync(&[Job::Pull, Job::FetchNew]).await;
    assert_eq!(s.records_received, 2);
    assert_eq!(
        patient_doc(&w.sats[1].get(&w.http, &id).await.1)["note"],
        "seen offline"
    );
    assert_eq!(w.sats[1].get(&w.http, &new_id).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_hundred_new_records_go_in_three_batches() {
    let w = world().await;
    // Created straight in the store (the HTTP path is tested elsewhere).
    let store = &w.sats[0].sat.store;
    let db = &w.sats[0].sat.db;
    for n in 0..2500 {
        let id = chartsync_protocol::PatientId::random();
        let files = chartsync_protocol::Files::from([(
            "patient.yaml".to_string(),
            format!("name: Patient {n}\ncatchment: north\n"),
        )]);
        db.mark_dirty(&id).expect("dirty");
        store
            .write(
                &id,
                chartsync_store::Condition::MustCreate,
                chartsync_store::Change::Replace(files),
                &chartsync_store::CommitMeta::new("Bulk", "bulk@test", "import"),
            )
            .expect("create");
    }
    let s = w.sats[0].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 2500);
    assert_eq!(s.round_trips, 3);
    let s = w.sats[1].sync(&[Job::FetchNew]).await;
    assert_eq!(s.records_received, 2500);
    assert_eq!(
        s.round_trips, 4,
        "three pages and the final acknowledgement"
    );
    let s = w.sats[1].sync(&[Job::Pull, Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
}

/// Writes `patient.yaml` of `id` at a satellite's store directly (the
/// HTTP path is tested elsewhere) and marks it changed.
fn write_patient(sat: &TestSatellite, id: &PatientId, text: String, create: bool) {
    let files = Files::from([("patient.yaml".to_string(), text)]);
    sat.sat.db.mark_dirty(id).expect("dirty");
    let condition = if create {
        chartsync_store::Condition::MustCreate
    } else {
        chartsync_store::Condition::Unconditional
    };
    sat.sat
        .store
        .write(
            id,
            condition,
            chartsync_store::Change::Replace(files),
            &chartsync_store::CommitMeta::new("Bulk", "bulk@test", "import"),
        )
        .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_two_batches_in_flight_loses_nothing_and_merges_what_central_changed() {
    let w = world().await;
    let mut ids: Vec<PatientId> = (0..2500).map(|_| PatientId::random()).collect();
    ids.sort();
    let doc = |n: usize, name: &str, phone: &str| {
        format!("name: {name} {n}\ncatchment: north\nphone: '{phone}'\n")
    };
    for (n, id) in ids.iter().enumerate() {
        write_patient(&w.sats[0], id, doc(n, "Patient", "000"), true);
    }
    assert_eq!(w.sats[0].sync(&[Job::Push]).await.records_sent, 2500);
    assert_eq!(
        w.sats[1].sync(&[Job::FetchNew]).await.records_received,
        2500
    );
    // North-a has measured a short round trip (a pull with nothing to
    // pull): its pushes now keep two batches in flight.
    w.sats[0].sync(&[Job::Pull]).await;
    let rtt = w.sats[0].sat.db.state("link_rtt_us_plus_1").expect("state");
    assert!(
        rtt > 0 && rtt < 50_000,
        "a short round trip measured: {rtt}"
    );
    // North-b changes the phone of records in every batch, first.
    let theirs: Vec<usize> = (0..2500).step_by(97).collect();
    for &n in &theirs {
        write_patient(&w.sats[1], &ids[n], doc(n, "Patient", "555"), false);
    }
    let s = w.sats[1].sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, theirs.len() as u64);
    // North-a renames every patient: three batches of 1,000, 1,000 and
    // 500, two in flight; the records north-b changed come back as
    // conflicts, are merged and pushed again.
    for (n, id) in ids.iter().enumerate() {
        write_patient(&w.sats[0], id, doc(n, "Renamed", "000"), false);
    }
    let s = w.sats[0].sync(&[Job::Push]).await;
    assert_eq!(s.merged, theirs.len() as u64, "{s:?}");
    assert_eq!(
        (s.conflicts, s.refused, s.deferred, s.set_aside),
        (0, 0, 0, 0)
    );
    assert_eq!(
        s.round_trips, 4,
        "three batches and the merged records again"
    );
    assert_eq!(w.sats[0].sync(&[Job::Push]).await.records_sent, 0);
    // Every rename reached north-b, with its own phone changes kept.
    let s = w.sats[1].sync(&[Job::Pull]).await;
    assert_eq!(s.records_received, 2500);
    for n in (0..2500).step_by(13).chain(theirs.iter().copied()) {
        let (status, body, _) = w.sats[1].get(&w.http, &ids[n].to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let patient = patient_doc(&body);
        assert_eq!(patient["name"], format!("Renamed {n}"));
        let phone = if theirs.contains(&n) { "555" } else { "000" };
        assert_eq!(patient["phone"], phone, "record {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_central_is_restored_from_a_backup_resync_brings_it_up_to_date() {
    let dir = tempfile::tempdir().expect("tmp");
    let central_dir = dir.path().join("central");
    let backup = dir.path().join("backup");
    let central = TestCentral::builder(&central_dir).start().await;
    let addr = central.addr();
    let (a_id, a_token) = central.add_instance("a", &["north"]).await;
    let (b_id, b_token) = central.add_instance("b", &["north"]).await;
    let a = TestSatellite::builder(dir.path().join("a"))
        .central(&central.url)
        .instance(a_id, &a_token)
        .start()
        .await;
    let b = TestSatellite::builder(dir.path().join("b"))
        .central(&central.url)
        .instance(b_id, &b_token)
        .start()
        .await;
    let mut w = World {
        _dir: tempfile::tempdir().expect("tmp"),
        central,
        sats: vec![a, b],
        http: client(),
    };
    let (r1, _) = w.sats[0].create(&w.http, "name: Before the backup\n").await;
    w.sats[0].sync(&[Job::Push]).await;
    // The backup (central stopped for the copy).
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&central_dir)
        .arg(&backup)
        .status()
        .expect("cp");
    assert!(st.success());
    w = World {
        _dir,
        central: TestCentral::builder(&central_dir).addr(&addr).start().await,
        sats,
        http,
    };
    // Work after the backup, acknowledged by central.
    let (_, _, e) = w.sats[0].get(&w.http, &r1).await;
    w.sats[0]
        .patch(
            &w.http,
            &r1,
            &e,
            json!({"patient.yaml": {"note": "after the backup"}}),
        )
        .await;
    let (r2, _) = w.sats[0].create(&w.http, "name: After the backup\n").await;
    w.sats[0].sync(&[Job::Push]).await;
    w.sats[1].sync(&[Job::FetchNew]).await;
    // Central's disk fails; it is restored from the backup.
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    std::fs::remove_dir_all(&central_dir).expect("rm");
    std::fs::rename(&backup, &central_dir).expect("restore");
    w = World {
        _dir,
        central: TestCentral::builder(&central_dir).addr(&addr).start().await,
        sats,
        http,
    };
    let admin_get = |id: String| {
        let http = w.http.clone();
        let url = w.central.url.clone();
        let admin = w.central.admin.clone();
        async move {
            http.get(format!("{url}/v1/patients/{id}"))
                .bearer_auth(admin)
                .send()
                .await
                .expect("get")
        }
    };
    assert_eq!(
        admin_get(r2.clone()).await.status(),
        StatusCode::NOT_FOUND,
        "lost with the disk"
    );
    // Every satellite resyncs.
    for sat in &w.sats {
        sat.sat.db.forget_central().expect("resync");
    }
    w.sats[0].sync(&Job::ALL).await;
    w.sats[1].sync(&Job::ALL).await;
    let r = admin_get(r2.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = admin_get(r1.clone()).await.json().await.expect("json");
    assert_eq!(patient_doc(&body)["note"], "after the backup");
    for sat in &w.sats {
        let s = sat.status();
        assert_eq!(s.pending_push, 0);
        assert_eq!(s.open_conflicts, 0);
    }
    let (_, a1, ea) = w.sats[0].get(&w.http, &r1).await;
    let (_, b1, eb) = w.sats[1].get(&w.http, &r1).await;
    assert_eq!((ea, patient_doc(&a1)), (eb, patient_doc(&b1)));
}

/// A visit of about 300 bytes, the `n`th.
fn visit(n: usize) -> String {
    format!(
        "  - date: 2026-{:02}-{:02}\n    reason: follow-up\n    bp: 1{:02}/8{}\n    note: visit {n}, reports mild cough since three days, chest clear on auscultation, advised fluids and rest, review in one week if no better\n",
        n % 12 + 1,
        n % 28 + 1,
        n % 60,
        n % 10
    )
}

/// Writes `files` as record `id`'s new version at a satellite (as its API
/// would: marked changed first), on top of its head if it has one.
/// Writes `patient.yaml` alone into each record of `ids`, the yaml of the
/// n-th from `yaml(n)`.
fn write_patients(sat: &TestSatellite, ids: &[PatientId], yaml: impl Fn(usize) -> String) {
    for (n, id) in ids.iter().enumerate() {
        write_at(
            sat,
            *id,
            Files::from([("patient.yaml".to_string(), yaml(n))]),
        );
    }
}

fn write_at(sat: &TestSatellite, id: PatientId, files: chartsync_protocol::Files) {
    let meta = chartsync_store::CommitMeta::new("Dr. Test", "test@clinic", "visit");
    sat.sat.db.mark_dirty(&id).expect("mark");
    let condition = match sat.sat.store.head(&id).expect("head") {
        Some(head) => chartsync_store::Condition::MatchHead(head),
        None => chartsync_store::Condition::MustCreate,
    };
    sat.sat
        .store
        .write(
            &id,
            condition,
            chartsync_store::Change::Replace(files),
            &meta,
        )
        .expect("write");
}

/// Bytes of a repository's packs, and how many there are.
fn packs_of(repo: &std::path::Path) -> (u64, usize) {
    std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .fold((0, 0), |(bytes, n), e| {
            (bytes + e.metadata().expect("metadata").len(), n + 1)
        })
}

/// What `git repack -adf` makes of a repository's history.
fn git_repacked_bytes(repo: &std::path::Path) -> u64 {
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("copy.git");
    let out = std::process::Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(repo)
        .arg(&copy)
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = git(&copy, &["repack", "-adfq"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    packs_of(&copy).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_costs_what_changed_on_the_wire_and_records_stay_small_on_disk() {
    let w = world().await;
    let (a, b) = (&w.sats[0], &w.sats[1]);
    // A record of about 100 KB of visits, and one of 300 encounter files.
    let visits_id = PatientId::random();
    let mut yaml = String::from("name: Amina\ncatchment: north\nvisits:\n");
    let mut n = 0;
    while yaml.len() < 97_000 {
        yaml.push_str(&visit(n));
        n += 1;
    }
    write_at(
        a,
        visits_id,
        Files::from([("patient.yaml".to_string(), yaml.clone())]),
    );
    let folder_id = PatientId::random();
    let mut folder = Files::from([(
        "patient.yaml".to_string(),
        "name: Kofi\ncatchment: north\n".to_string(),
    )]);
    for e in 0..300 {
        folder.insert(format!("encounters/{e:04}.yaml"), visit(e));
    }
    write_at(a, folder_id, folder.clone());
    assert_eq!(a.sync(&[Job::Push]).await.records_sent, 2);
    assert_eq!(b.sync(&[Job::FetchNew]).await.records_received, 2);

    for round in 0..3 {
        // One appended visit.
        yaml.push_str(&visit(n + round));
        write_at(
            a,
            visits_id,
            Files::from([("patient.yaml".to_string(), yaml.clone())]),
        );
        let up = a.sync(&[Job::Push]).await;
        assert_eq!(up.records_sent, 1);
        assert!(
            up.bytes_sent <= 1024,
            "appended visit: {} bytes up",
            up.bytes_sent
        );
        let down = b.sync(&[Job::Pull]).await;
        assert_eq!(down.records_received, 1);
        assert!(
            down.bytes_received <= 1024,
            "appended visit: {} bytes down",
            down.bytes_received
        );
        // One new encounter file.
        folder.insert(
            format!("encounters/{:04}.yaml", 300 + round),
            visit(300 + round),
        );
        write_at(a, folder_id, folder.clone());
        let up = a.sync(&[Job::Push]).await;
        assert_eq!(up.records_sent, 1);
        assert!(
            up.bytes_sent <= 1024,
            "new encounter: {} bytes up",
            up.bytes_sent
        );
        let down = b.sync(&[Job::Pull]).await;
        assert_eq!(down.records_received, 1);
        assert!(
            down.bytes_received <= 1024,
            "new encounter: {} bytes down",
            down.bytes_received
        );
    }
    for id in [visits_id, folder_id] {
        assert_eq!(
            b.sat.store.read(&id).expect("read").files,
            a.sat.store.read(&id).expect("read").files
        );
    }

    // Thirty more visits, each synced: then upkeep at every instance.
    for round in 3..33 {
        yaml.push_str(&visit(n + round));
        write_at(
            a,
            visits_id,
            Files::from([("patient.yaml".to_string(), yaml.clone())]),
        );
        a.sync(&[Job::Push]).await;
        b.sync(&[Job::Pull]).await;
    }
    for sat in [a, b] {
        let s = std::sync::Arc::clone(&sat.sat);
        let lock = chartsync_satellite::jobs::JobLock::acquire(
            &sat.sat.config.data_dir,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("job lock");
        let stats = tokio::task::spawn_blocking(move || {
            chartsync_satellite::jobs::upkeep::sweep(&s, &lock, 100)
        })
        .await
        .expect("task")
        .expect("sweep");
        assert!(stats.repacked >= 1, "{stats:?}");
    }
    chartsync_central::upkeep::repack_one(&w.central.central, visits_id).await;
    let central_repo = w.central.central.store.layout().repo(&visits_id);
    let repos = [
        ("satellite A", a.sat.store.layout().repo(&visits_id)),
        ("satellite B", b.sat.store.layout().repo(&visits_id)),
        ("central", central_repo),
    ];
    for (name, repo) in &repos {
        let (bytes, packs) = packs_of(repo);
        let theirs = git_repacked_bytes(repo);
        assert!(packs <= 2, "{name}: {packs} packs");
        assert!(
            bytes <= 2 * theirs,
            "{name}: {bytes} bytes, git repack -adf {theirs}"
        );
        let fsck = git(repo, &["fsck", "--strict", "--full", "--no-dangling"]);
        assert!(
            fsck.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
    // Reads and syncs go on from the repacked records.
    yaml.push_str(&visit(n + 99));
    write_at(
        a,
        visits_id,
        Files::from([("patient.yaml".to_string(), yaml.clone())]),
    );
    let up = a.sync(&[Job::Push]).await;
    assert!(
        up.bytes_sent <= 1024,
        "{} bytes up after repacking",
        up.bytes_sent
    );
    let down = b.sync(&[Job::Pull]).await;
    assert!(
        down.bytes_received <= 1024,
        "{} bytes down after repacking",
        down.bytes_received
    );
    assert_eq!(
        b.sat.store.read(&visits_id).expect("read").files["patient.yaml"],
        yaml
    );
}

/// A satellite of a given protocol (an older one, 2 to 4, or the current
/// one), by hand: its requests and central's answers.
async fn call_old<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    version: u8,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    request: &Req,
) -> Resp {
    use chartsync_protocol::envelope;
    use chartsync_protocol::sync::{CONTENT_TYPE, MAX_REPLY_BYTES, PROTOCOL_HEADER};
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .header(PROTOCOL_HEADER, version.to_string())
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(envelope::encode_as(request, version).expect("encode"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    assert_eq!(
        r.headers()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(version.to_string().as_str()),
        "{path}: the answer speaks version {version}"
    );
    let bytes = r.bytes().await.expect("body");
    assert_eq!(
        bytes.get(3),
        Some(&version),
        "{path}: the batch is marked version {version}"
    );
    // Decoded as that version (which refuses protocol 4's linked packs and
    // needs every head said).
    let (message, marked) = envelope::decode_versioned(&bytes, MAX_REPLY_BYTES).expect("decode");
    assert_eq!(marked, version);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_2_satellite_still_syncs_with_central() {
    old_satellite_syncs(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_3_satellite_still_syncs_with_central() {
    old_satellite_syncs(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_4_satellite_still_syncs_with_central() {
    old_satellite_syncs(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_5_satellite_still_syncs_with_central() {
    old_satellite_syncs(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_6_satellite_still_syncs_with_central() {
    old_satellite_syncs(6).await;
}

/// A sync request of protocol `version` by hand: central's status and
/// error code.
async fn refused(
    w: &World,
    token: &str,
    path: &str,
    version: u8,
    body: Vec<u8>,
) -> (StatusCode, String) {
    use chartsync_protocol::sync::{CONTENT_TYPE, PROTOCOL_HEADER};
    let r = w
        .http
        .post(format!("{}{path}", w.central.url))
        .bearer_auth(token)
        .header(PROTOCOL_HEADER, version.to_string())
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .expect("send");
    crate::support::wire::error_code(r).await
}

/// Protocol 5 acknowledges a fetch-new page by its cursor and the ids:
/// central finds the heads the page sent, sends what moved since, and
/// makes the instance a holder. Acknowledgements it cannot take (a cursor
/// no page had, too many pages or ids, an id twice, pages in a protocol 4
/// batch) are refused whole and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_new_pages_are_acknowledged_by_cursor_and_bad_acknowledgements_change_nothing() {
    use chartsync_protocol::envelope;
    use chartsync_protocol::sync::{
        Ack, AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, MAX_ACK_PAGES, PageAck,
    };
    let w = world().await;
    let a = &w.sats[0];
    let token = w.sats[1].sat.config.token().expect("token").expect("set").0;
    let ids = [PatientId::random(), PatientId::random()];
    for (n, id) in ids.iter().enumerate() {
        write_at(
            a,
            *id,
            Files::from([(
                "patient.yaml".to_string(),
                format!("name: P{n}\ncatchment: north\nvisits:\n{}", visit(n)),
            )]),
        );
    }
    a.sync(&[Job::Push]).await;
    let fetch = FetchNewRequest {
        cursor: 0,
        epoch: 0,
        limit: 100,
        acks: Vec::new(),
        pages: Vec::new(),
    };
    let path = "/v1/sync/fetch-new";
    let page: FetchNewResponse = call_old(5, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(page.records.len(), 2);
    let sent = |id: PatientId| {
        page.records
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.head)
            .expect("in the page")
    };
    // The first record moves at central after the page was sent.
    write_at(
        a,
        ids[0],
        Files::from([(
            "patient.yaml".to_string(),
            format!(
                "name: P0\ncatchment: north\nvisits:\n{}{}",
                visit(0),
                visit(1)
            ),
        )]),
    );
    a.sync(&[Job::Push]).await;
    let moved_head = a.sat.store.head(&ids[0]).expect("head").expect("exists");

    let by_page = |cursor: u64, ids: Vec<PatientId>| PageAck {
        cursor,
        ids,
        heads: Vec::new(),
        page: 0,
    };
    let ack = |pages: Vec<PageAck>, acks: Vec<Ack>| {
        envelope::encode_as(&AckRequest { acks, pages }, 5).expect("encode")
    };
    let many: Vec<PatientId> = (0..1001).map(|_| PatientId::random()).collect();
    let cases = [
        (
            ack(vec![by_page(page.cursor + 1_000_000, ids.to_vec())], vec![]),
            "bad_batch",
        ),
        (
            ack(
                (0..=MAX_ACK_PAGES as u64)
                    .map(|c| by_page(c, vec![PatientId::random()]))
                    .collect(),
                vec![],
            ),
            "batch_too_large",
        ),
        (
            ack(vec![by_page(page.cursor, many)], vec![]),
            "batch_too_large",
        ),
        (
            ack(
                vec![by_page(page.cursor, ids.to_vec())],
                vec![Ack {
                    id: ids[1],
                    head: sent(ids[1]),
                }],
            ),
            "duplicate_record",
        ),
    ];
    for (body, code) in cases {
        for path in ["/v1/sync/ack", "/v1/sync/fetch-new"] {
            let body = if path == "/v1/sync/ack" {
                body.clone()
            } else {
                // The same acknowledgements in a fetch-new request.
                let request: AckRequest = envelope::decode(&body, 64 << 20).expect("decode");
                envelope::encode_as(
                    &FetchNewRequest {
                        acks: request.acks,
                        pages: request.pages,
                        ..fetch.clone()
                    },
                    5,
                )
                .expect("encode")
            };
            assert_eq!(
                refused(&w, &token, path, 5, body).await,
                (StatusCode::BAD_REQUEST, code.to_string()),
                "{path}"
            );
        }
    }
    // Pages in a batch of protocol 4 (which has no such field).
    let mut v4 = ack(vec![by_page(page.cursor, ids.to_vec())], vec![]);
    v4[3] = 4;
    assert_eq!(
        refused(&w, &token, "/v1/sync/ack", 4, v4).await,
        (StatusCode::BAD_REQUEST, "bad_batch".to_string())
    );
    // Nothing changed: both records are still offered.
    let again: FetchNewResponse = call_old(5, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(again.records.len(), 2);

    // The page acknowledged by its cursor: the record that moved comes
    // back from the head the page sent; the other is held as it is.
    let reply: AckResponse = call_old(
        5,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &AckRequest {
            acks: Vec::new(),
            pages: vec![by_page(page.cursor, ids.to_vec())],
        },
    )
    .await;
    assert_eq!(reply.moved.len(), 1);
    assert_eq!(reply.moved[0].id, ids[0]);
    assert_eq!(reply.moved[0].base, Some(sent(ids[0])));
    assert_eq!(reply.moved[0].head, moved_head);
    // Both are held now: nothing is offered.
    let after: FetchNewResponse = call_old(5, &w.http, &w.central.url, &token, path, &fetch).await;
    assert!(after.records.is_empty(), "{:?}", after.records);

    // A record created after a page's cursor did not exist then: it is
    // left out, as an unknown id is, and still offered.
    let late = PatientId::random();
    write_at(
        a,
        late,
        Files::from([(
            "patient.yaml".to_string(),
            "name: Late\ncatchment: north\n".to_string(),
        )]),
    );
    a.sync(&[Job::Push]).await;
    let reply: AckResponse = call_old(
        5,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &AckRequest {
            acks: Vec::new(),
            pages: vec![by_page(page.cursor, vec![late])],
        },
    )
    .await;
    assert!(reply.moved.is_empty());
    let offered: FetchNewResponse =
        call_old(5, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(
        offered.records.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![late]
    );
}

/// Protocol 6: a fetch-new page whose records were all stored is
/// acknowledged by the token central gave it, without the ids; central
/// takes the ids it recorded for the page. A token central does not know
/// (never given, or taken already) is said to be forgotten and changes
/// nothing; a token at another cursor than its page's is refused. A real
/// satellite's fetch-new then sends almost nothing up, and every record
/// it stored is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_new_pages_stored_whole_are_acknowledged_by_their_token() {
    use chartsync_protocol::envelope;
    use chartsync_protocol::sync::{
        AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, PageAck,
    };
    let w = world().await;
    let a = &w.sats[0];
    let token = w.sats[1].sat.config.token().expect("token").expect("set").0;
    let ids: Vec<PatientId> = (0..3).map(|_| PatientId::random()).collect();
    write_patients(a, &ids, |n| format!("name: P{n}\ncatchment: north\n"));
    a.sync(&[Job::Push]).await;
    let fetch = FetchNewRequest {
        cursor: 0,
        epoch: 0,
        limit: 100,
        acks: Vec::new(),
        pages: Vec::new(),
    };
    let path = "/v1/sync/fetch-new";
    let old: FetchNewResponse = call_old(5, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(
        (old.records.len(), old.page),
        (3, 0),
        "no token in protocol 5"
    );
    let page: FetchNewResponse = call_old(6, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(page.records.len(), 3);
    assert_ne!(page.page, 0, "a page of records has a token");
    let by_token = |cursor: u64, page: u64| AckRequest {
        acks: Vec::new(),
        pages: vec![PageAck {
            cursor,
            ids: Vec::new(),
            heads: Vec::new(),
            page,
        }],
    };
    // At another cursor than the page's: refused.
    assert_eq!(
        refused(
            &w,
            &token,
            "/v1/sync/ack",
            6,
            envelope::encode_as(&by_token(page.cursor - 1, page.page), 6).expect("encode"),
        )
        .await,
        (StatusCode::BAD_REQUEST, "bad_batch".to_string())
    );
    // A token never given out: forgotten, nothing taken.
    let reply: AckResponse = call_old(
        6,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &by_token(page.cursor, page.page ^ 1),
    )
    .await;
    assert_eq!(reply.forgotten, vec![page.page ^ 1]);
    let again: FetchNewResponse = call_old(6, &w.http, &w.central.url, &token, path, &fetch).await;
    assert_eq!(again.records.len(), 3, "still offered");
    // Another instance cannot use the page's token.
    let other = w.sats[2].sat.config.token().expect("token").expect("set").0;
    let reply: AckResponse = call_old(
        6,
        &w.http,
        &w.central.url,
        &other,
        "/v1/sync/ack",
        &by_token(again.cursor, again.page),
    )
    .await;
    assert_eq!(reply.forgotten, vec![again.page]);
    // By its token: the page's three records are held, in a request of a
    // few bytes.
    let body = envelope::encode_as(&by_token(again.cursor, again.page), 6).expect("encode");
    assert!(body.len() < 100, "{} bytes", body.len());
    let reply: AckResponse = call_old(
        6,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &by_token(again.cursor, again.page),
    )
    .await;
    assert!(reply.forgotten.is_empty() && reply.moved.is_empty());
    let after: FetchNewResponse = call_old(6, &w.http, &w.central.url, &token, path, &fetch).await;
    assert!(after.records.is_empty(), "{:?}", after.records);
    assert_eq!(after.page, 0, "no token for an empty page");
    // Taken once: the same acknowledgement again finds no page.
    let reply: AckResponse = call_old(
        6,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &by_token(again.cursor, again.page),
    )
    .await;
    assert_eq!(reply.forgotten, vec![again.page]);

    // A real satellite: 300 records for the south, fetched by south-c in
    // pages acknowledged by token (300 ids would be 4,800 bytes up).
    let south: Vec<PatientId> = (0..300).map(|_| PatientId::random()).collect();
    write_patients(a, &south, |n| format!("name: S{n}\ncatchment: south\n"));
    a.sync(&[Job::Push]).await;
    let c = &w.sats[2];
    let summary = c.sync(&[Job::FetchNew]).await;
    assert_eq!(summary.records_received, 300);
    assert!(
        summary.bytes_sent < 1_000,
        "{} bytes up for 300 records fetched",
        summary.bytes_sent
    );
    for id in &south {
        assert!(c.sat.store.head(id).expect("head").is_some());
    }
    // All held: nothing is offered to south-c any more.
    let left: FetchNewResponse = call_old(6, &w.http, &w.central.url, &other, path, &fetch).await;
    assert!(
        left.records.is_empty(),
        "{} offered again",
        left.records.len()
    );
}

/// A satellite of protocol `version` (2, 3 or 4) fetches, pulls and pushes
/// through a central of the current protocol, and a current satellite
/// pulls what it pushed.
async fn old_satellite_syncs(version: u8) {
    use chartsync_protocol::sync::{
        Ack, AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, PullRequest, PullResponse,
        PushOutcome, PushRequest, PushResponse,
    };
    use chartsync_store::{Flush, Received};
    let w = world().await;
    let a = &w.sats[0];
    // The old satellite is instance north-b, with its own store.
    let old = crate::support::wire::Scratch::named("north-b");
    let token = w.sats[1].sat.config.token().expect("token").expect("set").0;
    let id = PatientId::random();
    let mut yaml = String::from("name: Amina\ncatchment: north\nvisits:\n");
    for n in 0..100 {
        yaml.push_str(&visit(n));
    }
    write_at(
        a,
        id,
        Files::from([("patient.yaml".to_string(), yaml.clone())]),
    );
    a.sync(&[Job::Push]).await;

    // fetch-new in the old version: whole records, packs of whole objects.
    let page: FetchNewResponse = call_old(
        version,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/fetch-new",
        &FetchNewRequest {
            cursor: 0,
            epoch: 0,
            limit: 100,
            acks: Vec::new(),
            pages: Vec::new(),
        },
    )
    .await;
    assert_eq!(page.records.len(), 1);
    let record = &page.records[0];
    assert!(chartsync_git::split_pack(&record.pack).is_some());
    let Received::Ready(p) = old
        .store
        .prepare_received(&id, None, record.head, &record.pack, Flush::Now)
        .expect("stored")
    else {
        panic!("new here")
    };
    old.store.publish(p, Flush::Now).expect("publish");
    let _: AckResponse = call_old(
        version,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/ack",
        &AckRequest {
            acks: vec![Ack {
                id,
                head: record.head,
            }],
            pages: Vec::new(),
        },
    )
    .await;

    // An edit at a new satellite reaches it: in version 2 without deltas,
    // in 3 as a delta on the version it has.
    yaml.push_str(&visit(100));
    write_at(
        a,
        id,
        Files::from([("patient.yaml".to_string(), yaml.clone())]),
    );
    a.sync(&[Job::Push]).await;
    let pulled: PullResponse = call_old(
        version,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/pull",
        &PullRequest {
            cursor: page.cursor,
            limit: 100,
        },
    )
    .await;
    let update = pulled
        .updates
        .iter()
        .find(|u| u.id == id)
        .expect("the edit");
    if version == 2 {
        assert!(
            chartsync_git::split_pack(&update.pack).is_some(),
            "a version 2 pull carries whole objects only"
        );
    } else {
        let entries = chartsync_git::split_pack_entries(&update.pack).expect("entries");
        assert!(
            entries.iter().any(|(code, _)| *code == 7),
            "a version 3 pull is thin"
        );
    }
    let Received::Ready(p) = old
        .store
        .prepare_received(&id, update.base, update.head, &update.pack, Flush::Now)
        .expect("stored")
    else {
        panic!("not stale")
    };
    old.store.publish(p, Flush::Now).expect("publish");
    assert_eq!(
        old.store.read(&id).expect("read").files["patient.yaml"],
        yaml
    );

    // Its own edit, pushed in the old version with a whole pack.
    yaml.push_str(&visit(101));
    let expected = old.head(id);
    let head = old.update_files(
        id,
        Files::from([("patient.yaml".to_string(), yaml.clone())]),
    );
    let record = old.record(id, Some(expected));
    assert_eq!(record.head, head);
    let pushed: PushResponse = call_old(
        version,
        &w.http,
        &w.central.url,
        &token,
        "/v1/sync/push",
        &PushRequest {
            records: vec![record],
        },
    )
    .await;
    assert!(
        matches!(pushed.results[0].outcome, PushOutcome::Applied { .. }),
        "{:?}",
        pushed.results[0].outcome
    );
    // Ids in the results up to protocol 4; from 5 the results are in
    // request order without them.
    let said = if version <= 4 { Some(id) } else { None };
    assert_eq!(pushed.results[0].id, said);
    // The new satellite pulls it in the current version.
    assert_eq!(a.sync(&[Job::Pull]).await.records_received, 1);
    assert_eq!(
        a.sat.store.read(&id).expect("read").files["patient.yaml"],
        yaml
    );

    // A batch marked with another version than its header is refused.
    let r = w
        .http
        .post(format!("{}/v1/sync/pull", w.central.url))
        .bearer_auth(&token)
        .header(
            chartsync_protocol::sync::PROTOCOL_HEADER,
            version.to_string(),
        )
        .header(
            reqwest::header::CONTENT_TYPE,
            chartsync_protocol::sync::CONTENT_TYPE,
        )
        .body(
            chartsync_protocol::envelope::encode_as(
                &PullRequest {
                    cursor: 0,
                    limit: 1,
                },
                version + 1,
            )
            .expect("encode"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
