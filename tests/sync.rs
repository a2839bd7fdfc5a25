//! End to end: a real central and three satellites on 127.0.0.1:0 (two in
//! catchment "north", one in "south"), syncing through the real jobs.

mod support;

use std::time::Duration;

use chartsync_satellite::jobs::{Job, Summary, no_progress, run_once};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestCentral, TestSatellite, client};

struct World {
    _dir: tempfile::TempDir,
    central: TestCentral,
    sats: Vec<TestSatellite>,
    http: reqwest::Client,
}

async fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::start(&dir.path().join("central"), "").await;
    let mut sats = Vec::new();
    for (name, catchment) in [
        ("north-a", "north"),
        ("north-b", "north"),
        ("south-c", "south"),
    ] {
        let (id, token) = central.add_instance(name, &[catchment]).await;
        sats.push(
            TestSatellite::start_with_token(
                &dir.path().join(name),
                &central.url,
                id,
                &token,
                extra,
            )
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

async fn sync(sat: &TestSatellite, jobs: &[Job]) -> Summary {
    run_once(&sat.sat, jobs, Duration::from_secs(30), no_progress())
        .await
        .unwrap_or_else(|e| panic!("sync failed: {}", chartsync_satellite::error_chain(&e)))
}

async fn create(w: &World, sat: usize, yaml: &str) -> (String, String) {
    let r = w
        .http
        .post(format!("{}/v1/patients", w.sats[sat].url))
        .json(&json!({"files": {"patient.yaml": yaml}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let body: Value = r.json().await.expect("json");
    (body["id"].as_str().expect("id").to_string(), etag)
}

async fn get(w: &World, sat: usize, id: &str) -> (StatusCode, Value, String) {
    let r = w
        .http
        .get(format!("{}/v1/patients/{id}", w.sats[sat].url))
        .send()
        .await
        .expect("get");
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().expect("etag").to_string())
        .unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), etag)
}

async fn patch(w: &World, sat: usize, id: &str, etag: &str, body: Value) -> String {
    let r = w
        .http
        .patch(format!("{}/v1/patients/{id}", w.sats[sat].url))
        .header("content-type", "application/merge-patch+json")
        .header("if-match", etag)
        .json(&body)
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    r.headers()["etag"].to_str().expect("etag").to_string()
}

fn doc(body: &Value) -> Value {
    chartsync_merge::parse_yaml(
        body["files"]["patient.yaml"]
            .as_str()
            .expect("patient.yaml"),
    )
    .expect("yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_within_their_catchment_only() {
    let w = world("").await;
    let (id, _) = create(&w, 0, "name: Amina\ncatchment: north\n").await;
    let s = sync(&w.sats[0], &[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    assert_eq!(s.round_trips, 1);
    // The neighbour in the same catchment fetches it; the other does not.
    let s = sync(&w.sats[1], &[Job::FetchNew]).await;
    assert_eq!(s.records_received, 1);
    let (status, body, _) = get(&w, 1, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc(&body)["name"], "Amina");
    let s = sync(&w.sats[2], &[Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
    assert_eq!(get(&w, 2, &id).await.0, StatusCode::NOT_FOUND);
    // Central refuses the south clinic a direct read, as if the record did
    // not exist (tests/security.rs compares the two answers in detail).
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
    let s = sync(&w.sats[1], &[Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
    // A visiting patient: the south clinic fetches the record by id.
    let r = w
        .http
        .post(format!("{}/v1/patients/{id}/fetch", w.sats[2].url))
        .send()
        .await
        .expect("fetch");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(get(&w, 2, &id).await.0, StatusCode::OK);
    // From then on it is held and synced: an edit at A reaches C's pull.
    let (_, _, etag) = get(&w, 0, &id).await;
    patch(
        &w,
        0,
        &id,
        &etag,
        json!({"patient.yaml": {"phone": "0700 1"}}),
    )
    .await;
    sync(&w.sats[0], &[Job::Push]).await;
    let s = sync(&w.sats[2], &[Job::Pull]).await;
    assert_eq!(s.records_received, 1);
    assert_eq!(doc(&get(&w, 2, &id).await.1)["phone"], "0700 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_of_different_fields_converge_everywhere() {
    let w = world("").await;
    let (id, _) = create(
        &w,
        0,
        "name: Amina\nphone: '1'\nweight: 60\nallergies: [penicillin]\n",
    )
    .await;
    sync(&w.sats[0], &[Job::Push]).await;
    sync(&w.sats[1], &[Job::FetchNew]).await;
    // Offline edits at both clinics, different fields and list appends.
    let (_, _, ea) = get(&w, 0, &id).await;
    patch(
        &w,
        0,
        &id,
        &ea,
        json!({"patient.yaml": {"phone": "2", "allergies": ["penicillin", "latex"]}}),
    )
    .await;
    let (_, _, eb) = get(&w, 1, &id).await;
    patch(
        &w,
        1,
        &id,
        &eb,
        json!({"patient.yaml": {"weight": 62, "allergies": ["penicillin", "sulfa"]}}),
    )
    .await;
    let s = sync(&w.sats[0], &[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    // B's push meets a conflict, merges in the same run and pushes again.
    let s = sync(&w.sats[1], &[Job::Push]).await;
    assert_eq!(s.merged, 1, "{s:?}");
    assert_eq!(s.conflicts, 0);
    assert_eq!(s.records_sent, 1);
    assert_eq!(
        s.round_trips, 2,
        "one conflict answer, one push of the merge"
    );
    sync(&w.sats[0], &[Job::Pull]).await;
    let (_, a, ea) = get(&w, 0, &id).await;
    let (_, b, eb) = get(&w, 1, &id).await;
    assert_eq!(ea, eb, "one head everywhere");
    let d = doc(&a);
    assert_eq!(d, doc(&b));
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
        let status = chartsync_satellite::status(&sat.sat).expect("status");
        assert_eq!(status.pending_push, 0);
        assert_eq!(status.open_conflicts, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_true_conflict_is_kept_for_review_and_its_resolution_reaches_every_holder() {
    let w = world("").await;
    let (id, _) = create(&w, 0, "name: Amina\nphone: '1'\n").await;
    sync(&w.sats[0], &[Job::Push]).await;
    sync(&w.sats[1], &[Job::FetchNew]).await;
    let (_, _, ea) = get(&w, 0, &id).await;
    patch(&w, 0, &id, &ea, json!({"patient.yaml": {"phone": "A"}})).await;
    let (_, _, eb) = get(&w, 1, &id).await;
    patch(&w, 1, &id, &eb, json!({"patient.yaml": {"phone": "B"}})).await;
    sync(&w.sats[0], &[Job::Push]).await;
    let s = sync(&w.sats[1], &[Job::Push]).await;
    assert_eq!(s.conflicts, 1);
    // Central's value is in the record; B's value waits in B's queue.
    let (_, b, _) = get(&w, 1, &id).await;
    assert_eq!(doc(&b)["phone"], "A");
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
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args([
            "show",
            &format!("refs/chartsync/conflicts/{ours}:patient.yaml"),
        ])
        .output()
        .expect("git");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("phone: B"),
        "{out:?}"
    );
    // A pushing again changes nothing: exactly one conflict.
    sync(&w.sats[1], &[Job::Push]).await;
    assert_eq!(
        chartsync_satellite::status(&w.sats[1].sat)
            .expect("status")
            .open_conflicts,
        1
    );
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
    assert_eq!(
        chartsync_satellite::status(&w.sats[1].sat)
            .expect("status")
            .open_conflicts,
        0
    );
    let s = sync(&w.sats[1], &[Job::Push]).await;
    assert_eq!(s.records_sent, 1);
    sync(&w.sats[0], &[Job::Pull]).await;
    assert_eq!(doc(&get(&w, 0, &id).await.1)["phone"], "B-confirmed");
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
    let central = TestCentral::start(&central_dir, "").await;
    let addr = central.url.trim_start_matches("http://").to_string();
    let (a_id, a_token) = central.add_instance("a", &["north"]).await;
    let (b_id, b_token) = central.add_instance("b", &["north"]).await;
    let a =
        TestSatellite::start_with_token(&dir.path().join("a"), &central.url, a_id, &a_token, "")
            .await;
    let b =
        TestSatellite::start_with_token(&dir.path().join("b"), &central.url, b_id, &b_token, "")
            .await;
    let w = World {
        _dir: tempfile::tempdir().expect("tmp"),
        central,
        sats: vec![a, b],
        http: client(),
    };
    let (id, _) = create(&w, 0, "name: Amina\n").await;
    sync(&w.sats[0], &[Job::Push]).await;
    sync(&w.sats[1], &[Job::FetchNew]).await;
    let World {
        central,
        sats,
        http,
        _dir,
    } = w;
    central.stop().await;
    let w = World {
        _dir,
        central: TestCentral::start_on(&central_dir, &addr, "").await,
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
        central: TestCentral::start(&dir.path().join("unused"), "").await,
        sats,
        http,
    };
    let (_, _, e) = get(&w, 0, &id).await;
    patch(
        &w,
        0,
        &id,
        &e,
        json!({"patient.yaml": {"note": "seen offline"}}),
    )
    .await;
    let (new_id, _) = create(&w, 0, "name: Offline Newborn\n").await;
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
    assert_eq!(
        chartsync_satellite::status(&w.sats[0].sat)
            .expect("status")
            .pending_push,
        2
    );
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
        central: TestCentral::start_on(&central_dir, &addr, "").await,
        sats,
        http,
    };
    let s = sync(&w.sats[0], &[Job::Push]).await;
    assert_eq!(s.records_sent, 2);
    let s = sync(&w.sats[1], &[Job::Pull, Job::FetchNew]).await;
    assert_eq!(s.records_received, 2);
    assert_eq!(doc(&get(&w, 1, &id).await.1)["note"], "seen offline");
    assert_eq!(get(&w, 1, &new_id).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_hundred_new_records_go_in_three_batches() {
    let w = world("").await;
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
    let s = sync(&w.sats[0], &[Job::Push]).await;
    assert_eq!(s.records_sent, 2500);
    assert_eq!(s.round_trips, 3);
    let s = sync(&w.sats[1], &[Job::FetchNew]).await;
    assert_eq!(s.records_received, 2500);
    assert_eq!(
        s.round_trips, 4,
        "three pages and the final acknowledgement"
    );
    let s = sync(&w.sats[1], &[Job::Pull, Job::FetchNew]).await;
    assert_eq!(s.records_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_central_is_restored_from_a_backup_resync_brings_it_up_to_date() {
    let dir = tempfile::tempdir().expect("tmp");
    let central_dir = dir.path().join("central");
    let backup = dir.path().join("backup");
    let central = TestCentral::start(&central_dir, "").await;
    let addr = central.url.trim_start_matches("http://").to_string();
    let (a_id, a_token) = central.add_instance("a", &["north"]).await;
    let (b_id, b_token) = central.add_instance("b", &["north"]).await;
    let a =
        TestSatellite::start_with_token(&dir.path().join("a"), &central.url, a_id, &a_token, "")
            .await;
    let b =
        TestSatellite::start_with_token(&dir.path().join("b"), &central.url, b_id, &b_token, "")
            .await;
    let mut w = World {
        _dir: tempfile::tempdir().expect("tmp"),
        central,
        sats: vec![a, b],
        http: client(),
    };
    let (r1, _) = create(&w, 0, "name: Before the backup\n").await;
    sync(&w.sats[0], &[Job::Push]).await;
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
        central: TestCentral::start_on(&central_dir, &addr, "").await,
        sats,
        http,
    };
    // Work after the backup, acknowledged by central.
    let (_, _, e) = get(&w, 0, &r1).await;
    patch(
        &w,
        0,
        &r1,
        &e,
        json!({"patient.yaml": {"note": "after the backup"}}),
    )
    .await;
    let (r2, _) = create(&w, 0, "name: After the backup\n").await;
    sync(&w.sats[0], &[Job::Push]).await;
    sync(&w.sats[1], &[Job::FetchNew]).await;
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
        central: TestCentral::start_on(&central_dir, &addr, "").await,
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
    sync(&w.sats[0], &Job::ALL).await;
    sync(&w.sats[1], &Job::ALL).await;
    let r = admin_get(r2.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = admin_get(r1.clone()).await.json().await.expect("json");
    assert_eq!(doc(&body)["note"], "after the backup");
    for sat in &w.sats {
        let s = chartsync_satellite::status(&sat.sat).expect("status");
        assert_eq!(s.pending_push, 0);
        assert_eq!(s.open_conflicts, 0);
    }
    let (_, a1, ea) = get(&w, 0, &r1).await;
    let (_, b1, eb) = get(&w, 1, &r1).await;
    assert_eq!((ea, doc(&a1)), (eb, doc(&b1)));
}
