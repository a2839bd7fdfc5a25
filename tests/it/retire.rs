//! Retiring, restoring and merging records, end to end on both servers
//! (central with HQ's token, a satellite's local API offline), and through
//! sync: tombstones and restores travel like any change, a merge at central
//! reaches the clinics, an edit made offline to a record central merged
//! meanwhile lands on the survivor, and every acknowledged write stays in
//! some history.

use chartsync_satellite::jobs::Job;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestCentral, TestSatellite, client, patient_doc};

/// One server's record API: its URL and the token to send, if any.
#[derive(Clone)]
struct Api {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An answer: status, ETag (empty if none), body (`null` if not JSON).
struct Answer {
    status: StatusCode,
    etag: String,
    body: Value,
}

impl Api {
    fn central(c: &TestCentral) -> Api {
        Api {
            url: c.url.clone(),
            token: Some(c.admin.clone()),
            http: client(),
        }
    }

    fn satellite(s: &TestSatellite) -> Api {
        Api {
            url: s.url.clone(),
            token: None,
            http: client(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().expect("etag").to_string())
            .unwrap_or_default();
        Answer {
            status,
            etag,
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    async fn create(&self, yaml: &str) -> (String, String) {
        let a = self
            .send(
                reqwest::Method::POST,
                "/v1/patients",
                None,
                Some(json!({"files": {"patient.yaml": yaml}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        (a.body["id"].as_str().expect("id").to_string(), a.etag)
    }

    async fn get(&self, id: &str) -> Answer {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/patients/{id}"),
            None,
            None,
        )
        .await
    }

    async fn put(&self, id: &str, etag: &str, yaml: &str) -> Answer {
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/patients/{id}"),
            Some(etag),
            Some(json!({"files": {"patient.yaml": yaml}})),
        )
        .await
    }

    async fn patch(&self, id: &str, etag: &str, patch: Value) -> Answer {
        let mut r = self
            .http
            .patch(format!("{}/v1/patients/{id}", self.url))
            .header("content-type", "application/merge-patch+json")
            .header("if-match", etag)
            .json(&patch);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("patch");
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().expect("etag").to_string())
            .unwrap_or_default();
        Answer {
            status,
            etag,
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    async fn retire(&self, id: &str, etag: Option<&str>) -> Answer {
        self.send(
            reqwest::Method::DELETE,
            &format!("/v1/patients/{id}"),
            etag,
            None,
        )
        .await
    }

    async fn restore(&self, id: &str, etag: Option<&str>) -> Answer {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/patients/{id}/restore"),
            etag,
            None,
        )
        .await
    }

    async fn merge(
        &self,
        survivor: &str,
        etag: Option<&str>,
        other: &str,
        other_etag: &str,
    ) -> Answer {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/patients/{survivor}/merge"),
            etag,
            Some(json!({"retire": other, "retire_if_match": other_etag})),
        )
        .await
    }

    async fn history(&self, id: &str) -> Vec<Value> {
        let a = self
            .send(
                reqwest::Method::GET,
                &format!("/v1/patients/{id}/history"),
                None,
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body.as_array().expect("history").clone()
    }
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

const AMINA: &str = "given_name: Amina\nfamily_name: Odhiambo\nborn: '1990-04-02'\nallergies: [penicillin]\ncatchment: north\n";
const AMINA_TYPO: &str = "given_name: Amina\nfamily_name: Odiambo\nborn: '1990-04-02'\nallergies: [latex]\nphone: '0712 345678'\ncatchment: north\n";

/// Every retire and restore answer of the contract, on one server.
async fn retire_and_restore_paths(api: &Api) {
    let (id, v1) = api.create(AMINA).await;
    let v2 = api
        .patch(&id, &v1, json!({"patient.yaml": {"phone": "0700 000001"}}))
        .await;
    assert_eq!(v2.status, StatusCode::OK);
    let v2 = v2.etag;
    let before = api.get(&id).await.body["files"].clone();

    // Refusals change nothing.
    assert_eq!(
        api.retire(&id, None).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );
    let stale = api.retire(&id, Some(&v1)).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(stale.body["current_head"], unquote(&v2));
    let unknown = chartsync_protocol::PatientId::random().to_string();
    assert_eq!(
        api.retire(&unknown, Some(&v2)).await.status,
        StatusCode::NOT_FOUND
    );
    let reserved = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/patients/{id}"),
            Some(&v2),
            Some(json!({"files": {"patient.yaml": AMINA, "retired.yaml": "by: me\n"}})),
        )
        .await;
    assert_eq!(
        reserved.status,
        StatusCode::BAD_REQUEST,
        "{}",
        reserved.body
    );
    assert_eq!(reserved.body["error"], "reserved_file");
    let got = api.get(&id).await;
    assert_eq!(
        (got.status, got.etag.as_str()),
        (StatusCode::OK, v2.as_str())
    );

    // Retire.
    let tomb = api.retire(&id, Some(&v2)).await;
    assert_eq!(tomb.status, StatusCode::OK, "{}", tomb.body);
    assert_ne!(tomb.etag, v2);
    let gone = api.get(&id).await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
    assert_eq!(gone.etag, tomb.etag);
    assert_eq!(gone.body["error"], "retired");
    assert_eq!(gone.body["replaced_by"], Value::Null);
    assert_eq!(gone.body["head"], unquote(&tomb.etag));
    assert!(
        gone.body["retired_at"]
            .as_str()
            .expect("retired_at")
            .starts_with("20")
    );

    // Every write to it is refused with 409 retired, even a second retire.
    for answer in [
        api.put(&id, &tomb.etag, AMINA).await,
        api.patch(&id, &tomb.etag, json!({"patient.yaml": {"phone": "1"}}))
            .await,
        api.retire(&id, Some(&tomb.etag)).await,
    ] {
        assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
        assert_eq!(answer.body["error"], "retired");
        assert_eq!(answer.body["replaced_by"], Value::Null);
    }
    assert_eq!(api.get(&id).await.etag, tomb.etag);

    // History still answers, the tombstone first.
    let history = api.history(&id).await;
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["commit"], unquote(&tomb.etag));
    assert!(
        history[0]["message"]
            .as_str()
            .expect("message")
            .starts_with("Retire record")
    );

    // Restore: 428 without If-Match, 412 stale, then 200 with the last files.
    assert_eq!(
        api.restore(&id, None).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );
    let stale = api.restore(&id, Some(&v2)).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    let restored = api.restore(&id, Some(&tomb.etag)).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    let back = api.get(&id).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.etag, restored.etag);
    assert_eq!(back.body["files"], before);
    let again = api.restore(&id, Some(&restored.etag)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["error"], "not_retired");
    // Writable again.
    assert_eq!(
        api.put(&id, &restored.etag, AMINA).await.status,
        StatusCode::OK
    );
    assert_eq!(api.history(&id).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_and_restore_on_central_and_on_an_offline_satellite() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    retire_and_restore_paths(&Api::central(&central)).await;
    // No central is reachable from this satellite.
    let sat = TestSatellite::builder(dir.path().join("sat")).start().await;
    retire_and_restore_paths(&Api::satellite(&sat)).await;
}

/// Every merge answer of the contract, on one server.
async fn merge_paths(api: &Api) {
    let (a, a1) = api.create(AMINA).await;
    let (b, b1) = api.create(AMINA_TYPO).await;
    let b2 = api
        .patch(
            &b,
            &b1,
            json!({"patient.yaml": {"allergies": ["latex", "sulfa"]}}),
        )
        .await
        .etag;

    // Refusals change nothing.
    let none = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/patients/{a}/merge"),
            None,
            Some(json!({"retire": b, "retire_if_match": b2})),
        )
        .await;
    assert_eq!(none.status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(
        api.merge(&a, Some(&a1), &a, &a1).await.status,
        StatusCode::BAD_REQUEST
    );
    let stale = api.merge(&a, Some(&a1), &b, &b1).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(stale.body["current_head"], unquote(&b2));
    let bad = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/patients/{a}/merge"),
            Some(&a1),
            Some(json!({"retire": "not-an-id"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.get(&a).await.etag, a1);
    assert_eq!(api.get(&b).await.etag, b2);

    // The merge: lists united, equal values agree, the survivor's value
    // stays where they differ and the other's is listed.
    let merged = api.merge(&a, Some(&a1), &b, &b2).await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    let doc = patient_doc(&merged.body);
    assert_eq!(doc["family_name"], "Odhiambo");
    assert_eq!(doc["phone"], "0712 345678");
    let allergies: Vec<&str> = doc["allergies"]
        .as_array()
        .expect("allergies")
        .iter()
        .map(|v| v.as_str().expect("text"))
        .collect();
    for allergy in ["penicillin", "latex", "sulfa"] {
        assert!(allergies.contains(&allergy), "{allergies:?}");
    }
    let conflicts = merged.body["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["path"], "/family_name");
    assert_eq!(conflicts[0]["kept"], "Odhiambo");
    assert_eq!(conflicts[0]["other"], "Odiambo");
    let survivor = api.get(&a).await;
    assert_eq!(survivor.etag, merged.etag);
    assert_eq!(api.history(&a).await.len(), 2, "one commit on the survivor");
    let gone = api.get(&b).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["replaced_by"], a.as_str());
    let write = api
        .patch(&b, &gone.etag, json!({"patient.yaml": {"phone": "1"}}))
        .await;
    assert_eq!(write.status, StatusCode::CONFLICT);
    assert_eq!(write.body["replaced_by"], a.as_str());

    // Either side retired: 409.
    let again = api.merge(&a, Some(&merged.etag), &b, &gone.etag).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["error"], "retired");
    let reverse = api.merge(&b, Some(&gone.etag), &a, &merged.etag).await;
    assert_eq!(reverse.status, StatusCode::CONFLICT, "{}", reverse.body);

    // Restoring the retired record gives it back with its own last files.
    let restored = api.restore(&b, Some(&gone.etag)).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    assert_eq!(patient_doc(&restored.body)["family_name"], "Odiambo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_on_central_and_on_an_offline_satellite() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    merge_paths(&Api::central(&central)).await;
    let sat = TestSatellite::builder(dir.path().join("sat")).start().await;
    merge_paths(&Api::satellite(&sat)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_and_restores_sync_both_ways() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (sid, token) = central.add_instance("north-a", &["north"]).await;
    let sat = TestSatellite::builder(dir.path().join("sat"))
        .central(&central.url)
        .instance(sid, &token)
        .start()
        .await;
    let (hq, local) = (Api::central(&central), Api::satellite(&sat));

    // Retired at central, pulled by the clinic.
    let (id, _) = local.create(AMINA).await;
    sat.sync(&[Job::Push]).await;
    let v = hq.get(&id).await.etag;
    let tomb = hq.retire(&id, Some(&v)).await;
    assert_eq!(tomb.status, StatusCode::OK);
    sat.sync(&[Job::Pull]).await;
    let gone = local.get(&id).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.etag, tomb.etag);

    // Restored at the clinic, pushed to central.
    let restored = local.restore(&id, Some(&tomb.etag)).await;
    assert_eq!(restored.status, StatusCode::OK);
    sat.sync(&[Job::Push]).await;
    let back = hq.get(&id).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.etag, restored.etag);

    // Retired at the clinic (offline), pushed to central.
    let tomb = local.retire(&id, Some(&restored.etag)).await;
    assert_eq!(tomb.status, StatusCode::OK);
    sat.sync(&[Job::Push]).await;
    let gone = hq.get(&id).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.etag, tomb.etag);
    assert_eq!(hq.history(&id).await.len(), 4);
}

/// A central with two clinics in different catchments.
struct World {
    _dir: tempfile::TempDir,
    central: TestCentral,
    north: TestSatellite,
    south: TestSatellite,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let mut sats = Vec::new();
    for (name, catchment) in [("north", "north"), ("south", "south")] {
        let (id, token) = central.add_instance(name, &[catchment]).await;
        sats.push(
            TestSatellite::builder(dir.path().join(name))
                .central(&central.url)
                .instance(id, &token)
                .start()
                .await,
        );
    }
    let south = sats.pop().expect("south");
    let north = sats.pop().expect("north");
    World {
        _dir: dir,
        central,
        north,
        south,
    }
}

fn allergies(body: &Value) -> Vec<String> {
    patient_doc(body)["allergies"]
        .as_array()
        .expect("allergies")
        .iter()
        .map(|v| v.as_str().expect("text").to_string())
        .collect()
}

const NORTH_AMINA: &str = "given_name: Amina\nfamily_name: Odhiambo\nborn: '1990-04-02'\nallergies: [penicillin]\ncatchment: north\n";
const SOUTH_AMINA: &str = "given_name: Aminah\nfamily_name: Odhiambo\nborn: '1990-04-02'\nallergies: [latex]\ncatchment: south\n";

/// North registers Amina (A), south Aminah (B); both sync; HQ merges B
/// into A, which south has not heard of yet. Returns A, B and B's head.
async fn merged_while_south_is_offline(w: &World) -> (String, String, String) {
    let (hq, north, south) = (
        Api::central(&w.central),
        Api::satellite(&w.north),
        Api::satellite(&w.south),
    );
    let (a, _) = north.create(NORTH_AMINA).await;
    let (b, b1) = south.create(SOUTH_AMINA).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    let (ah, bh) = (hq.get(&a).await.etag, hq.get(&b).await.etag);
    assert_eq!(bh, b1);
    let merged = hq.merge(&a, Some(&ah), &b, &bh).await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    (a, b, b1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_offline_to_a_merged_record_lands_on_the_survivor() {
    let w = world().await;
    let (hq, south) = (Api::central(&w.central), Api::satellite(&w.south));
    // HQ merges the south record into the north one while the south
    // clinic, offline, records another allergy on its record.
    let (a, b, b1) = merged_while_south_is_offline(&w).await;
    let edit = south
        .patch(
            &b,
            &b1,
            json!({"patient.yaml": {"allergies": ["latex", "sulfa"]}}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);

    // The clinic syncs: its edit reaches the survivor, it now holds the
    // survivor, and its own record is retired into it.
    w.south.sync(&Job::ALL).await;
    let survivor = hq.get(&a).await;
    assert_eq!(survivor.status, StatusCode::OK);
    let at_hq = allergies(&survivor.body);
    for allergy in ["penicillin", "latex", "sulfa"] {
        assert!(at_hq.contains(&allergy.to_string()), "{at_hq:?}");
    }
    assert_eq!(at_hq.len(), 3, "{at_hq:?}");
    let gone = hq.get(&b).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["replaced_by"], a.as_str());
    // The acknowledged offline edit is in the retired record's history.
    let history = hq.history(&b).await;
    assert!(
        history.iter().any(|h| h["commit"] == unquote(&edit.etag)),
        "{history:?}"
    );
    let local = south.get(&a).await;
    assert_eq!(
        local.status,
        StatusCode::OK,
        "the clinic holds the survivor"
    );
    assert_eq!(local.etag, survivor.etag);
    assert_eq!(south.get(&b).await.status, StatusCode::GONE);

    // The north clinic gets the survivor with everything.
    w.north.sync(&Job::ALL).await;
    let there = Api::satellite(&w.north).get(&a).await;
    assert_eq!(there.etag, survivor.etag);
    assert_eq!(allergies(&there.body).len(), 3);
}

/// An offline edit to a record merged away meanwhile is carried onto the
/// survivor field by field: a field the survivor still held as the clinic
/// had it takes the clinic's value; a field where the survivor holds a
/// third value keeps the survivor's, and the clinic's is queued as a
/// conflict at that clinic, on the survivor; resolving it reaches central.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_edit_to_a_merged_record_is_carried_field_by_field_and_the_rest_queued() {
    let w = world().await;
    let (hq, south) = (Api::central(&w.central), Api::satellite(&w.south));
    let (a, b, b1) = merged_while_south_is_offline(&w).await;
    // Offline at the south clinic: a corrected birth date (both records
    // had the same), a new spelling of the given name (the survivor kept
    // its own at the merge), one more allergy.
    let edit = south
        .patch(
            &b,
            &b1,
            json!({"patient.yaml": {
                "given_name": "Aminah Wanjiru",
                "born": "1990-02-04",
                "allergies": ["latex", "sulfa"]
            }}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    w.south.sync(&Job::ALL).await;

    let survivor = hq.get(&a).await;
    let doc = patient_doc(&survivor.body);
    assert_eq!(doc["born"], "1990-02-04", "the correction is carried");
    assert_eq!(doc["given_name"], "Amina", "the survivor's own stays");
    assert_eq!(allergies(&survivor.body), ["penicillin", "latex", "sulfa"]);
    let history = hq.history(&a).await;
    assert!(
        history[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Aminah Wanjiru")),
        "the carrying commit names the value kept out: {history:?}"
    );

    // The south clinic holds the survivor, with the name in its queue.
    let queue = south
        .send(reqwest::Method::GET, "/v1/conflicts", None, None)
        .await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    let open: Vec<&Value> = queue.body["conflicts"]
        .as_array()
        .or_else(|| queue.body.as_array())
        .expect("conflicts")
        .iter()
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    let c = open[0];
    assert_eq!(c["patient"], a.as_str());
    assert_eq!(c["path"], "/given_name");
    assert_eq!(c["ours"], "Aminah Wanjiru");
    assert_eq!(c["theirs"], "Amina");
    assert_eq!(c["base"], "Aminah");
    // A second sync queues it once.
    w.south.sync(&Job::ALL).await;
    let again = south
        .send(reqwest::Method::GET, "/v1/conflicts", None, None)
        .await;
    assert_eq!(again.body, queue.body);

    // The clinician takes the clinic's spelling; it reaches central.
    let mut resolved = doc.clone();
    resolved["given_name"] = json!("Aminah Wanjiru");
    let yaml = chartsync_merge::to_yaml(&resolved);
    let r = south
        .send(
            reqwest::Method::POST,
            &format!("/v1/conflicts/{}/resolve", c["id"]),
            None,
            Some(json!({"files": {"patient.yaml": yaml}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    w.south.sync(&Job::ALL).await;
    let after = hq.get(&a).await;
    assert_eq!(patient_doc(&after.body)["given_name"], "Aminah Wanjiru");
    assert_eq!(patient_doc(&after.body)["born"], "1990-02-04");
}

/// The north clinic's Amina and the south clinic's, both synced (the south
/// clinic does not hold the north record); then HQ merges the south record
/// into the north one. Returns their ids and the merge's answer.
async fn merged_after_sync(w: &World) -> (String, String, Answer) {
    let (hq, north, south) = (
        Api::central(&w.central),
        Api::satellite(&w.north),
        Api::satellite(&w.south),
    );
    let (a, _) = north.create(NORTH_AMINA).await;
    let (b, _) = south.create(SOUTH_AMINA).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    assert_eq!(south.get(&a).await.status, StatusCode::NOT_FOUND);
    let (ah, bh) = (hq.get(&a).await.etag, hq.get(&b).await.etag);
    let merged = hq.merge(&a, Some(&ah), &b, &bh).await;
    assert_eq!(merged.status, StatusCode::OK);
    (a, b, merged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_holding_only_the_retired_record_gets_the_survivor_on_its_next_pull() {
    let w = world().await;
    let (hq, south) = (Api::central(&w.central), Api::satellite(&w.south));
    let (a, b, merged) = merged_after_sync(&w).await;
    w.south.sync(&[Job::Pull]).await;
    let gone = south.get(&b).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["replaced_by"], a.as_str());
    let survivor = south.get(&a).await;
    assert_eq!(survivor.status, StatusCode::OK);
    assert_eq!(survivor.etag, merged.etag);
    assert_eq!(allergies(&survivor.body), ["penicillin", "latex"]);

    // Merge, then restore: the retired record comes back with its own
    // data at both clinics, and the survivor keeps what it took in.
    let restored = hq.restore(&b, Some(&gone.etag)).await;
    assert_eq!(restored.status, StatusCode::OK);
    w.south.sync(&[Job::Pull]).await;
    let back = south.get(&b).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(allergies(&back.body), ["latex"]);
    assert_eq!(
        allergies(&south.get(&a).await.body),
        ["penicillin", "latex"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_that_fetches_a_retired_record_gets_its_survivor_from_fetch_new_alone() {
    let w = world().await;
    let hq = Api::central(&w.central);
    let (a, b, merged) = merged_after_sync(&w).await;

    // A new clinic of the south catchment: its first fetch-new brings the
    // south record, a tombstone by now, and with it the north record that
    // replaced it, which is not in its catchment.
    let (id, token) = w.central.add_instance("south-new", &["south"]).await;
    let late = TestSatellite::builder(w._dir.path().join("south-new"))
        .central(&w.central.url)
        .instance(id, &token)
        .start()
        .await;
    let api = Api::satellite(&late);
    let fetched = late.sync(&[Job::FetchNew]).await;
    assert_eq!(fetched.records_received, 2, "{fetched:?}");
    let gone = api.get(&b).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["replaced_by"], a.as_str());
    let survivor = api.get(&a).await;
    assert_eq!(survivor.status, StatusCode::OK);
    assert_eq!(survivor.etag, merged.etag);
    assert_eq!(allergies(&survivor.body), ["penicillin", "latex"]);

    // The survivor is held: HQ's next edit of it reaches the clinic by
    // pull, which finds nothing else to fetch.
    let edit = hq
        .patch(
            &a,
            &merged.etag,
            json!({"patient.yaml": {"allergies": ["penicillin", "latex", "sulfa"]}}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    let pulled = late.sync(&[Job::Pull]).await;
    assert_eq!(pulled.records_received, 1, "{pulled:?}");
    assert_eq!(api.get(&a).await.etag, edit.etag);
    assert_eq!(late.sync(&[Job::FetchNew]).await.records_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_merges_of_one_pair_at_two_offline_clinics_converge_on_one_survivor() {
    concurrent_merges(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_merge_at_two_offline_clinics_converges_without_a_conflict() {
    concurrent_merges(false).await;
}

/// Both clinics hold both records; offline, the north clinic merges B into
/// A, and the south clinic records an allergy on B and merges the pair too
/// (A into B when `opposite`, else B into A). North syncs first.
async fn concurrent_merges(opposite: bool) {
    let w = world().await;
    let (hq, north, south) = (
        Api::central(&w.central),
        Api::satellite(&w.north),
        Api::satellite(&w.south),
    );
    let (a, _) = north.create(NORTH_AMINA).await;
    let (b, _) = south.create(SOUTH_AMINA).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    // Each clinic also holds the other's record (fetched by id).
    for (api, id) in [(&north, &b), (&south, &a)] {
        let r = api
            .send(
                reqwest::Method::POST,
                &format!("/v1/patients/{id}/fetch"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    // Offline: the south clinic records an allergy, then each clinic
    // merges the pair, in opposite directions.
    let bh = south.get(&b).await.etag;
    let edit = south
        .patch(
            &b,
            &bh,
            json!({"patient.yaml": {"allergies": ["latex", "sulfa"]}}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    let (na, nb) = (north.get(&a).await.etag, north.get(&b).await.etag);
    let at_north = north.merge(&a, Some(&na), &b, &nb).await;
    assert_eq!(at_north.status, StatusCode::OK, "{}", at_north.body);
    let (sa, sb) = (south.get(&a).await.etag, south.get(&b).await.etag);
    let at_south = if opposite {
        south.merge(&b, Some(&sb), &a, &sa).await
    } else {
        south.merge(&a, Some(&sa), &b, &sb).await
    };
    assert_eq!(at_south.status, StatusCode::OK, "{}", at_south.body);

    // North syncs first: its merge is the one central accepts first.
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;

    // One survivor, A, with every allergy; B retired into it; the same at
    // both clinics.
    let survivor = hq.get(&a).await;
    assert_eq!(survivor.status, StatusCode::OK, "{}", survivor.body);
    let list = allergies(&survivor.body);
    for allergy in ["penicillin", "latex", "sulfa"] {
        assert!(list.contains(&allergy.to_string()), "{list:?}");
    }
    assert_eq!(list.len(), 3, "{list:?}");
    let gone = hq.get(&b).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.body["replaced_by"], a.as_str());
    for api in [&north, &south] {
        let here = api.get(&a).await;
        assert_eq!(here.status, StatusCode::OK);
        assert_eq!(here.etag, survivor.etag);
        let gone_here = api.get(&b).await;
        assert_eq!(gone_here.status, StatusCode::GONE);
        assert_eq!(gone_here.etag, gone.etag);
    }
    // Every acknowledged write is in some history at central.
    let (ha, hb) = (hq.history(&a).await, hq.history(&b).await);
    let all: Vec<&Value> = ha.iter().chain(hb.iter()).collect();
    for etag in [&edit.etag, &at_north.etag, &at_south.etag] {
        assert!(
            all.iter().any(|h| h["commit"] == unquote(etag)),
            "{etag} missing"
        );
    }
    // No clinic was handed a conflict over the two tombstones.
    assert_eq!(w.north.status().open_conflicts, 0);
    assert_eq!(w.south.status().open_conflicts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_cannot_retire_or_merge_records_outside_its_scope_at_central() {
    let w = world().await;
    let (hq, north, south) = (
        Api::central(&w.central),
        Api::satellite(&w.north),
        Api::satellite(&w.south),
    );
    let (a, _) = north.create(NORTH_AMINA).await;
    let (b, _) = south.create(SOUTH_AMINA).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    let token = w.north.sat.config.token().expect("token").expect("set").0;
    let as_north = Api {
        url: w.central.url.clone(),
        token: Some(token),
        http: client(),
    };
    let (ah, bh) = (hq.get(&a).await.etag, hq.get(&b).await.etag);
    // Out of scope answers as unknown (404), and changes nothing.
    assert_eq!(
        as_north.retire(&b, Some(&bh)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_north.restore(&b, Some(&bh)).await.status,
        StatusCode::NOT_FOUND
    );
    let merge = as_north.merge(&a, Some(&ah), &b, &bh).await;
    assert_eq!(merge.status, StatusCode::NOT_FOUND, "{}", merge.body);
    assert_eq!(hq.get(&a).await.etag, ah);
    assert_eq!(hq.get(&b).await.etag, bh);
    // Its own record it may retire.
    assert_eq!(as_north.retire(&a, Some(&ah)).await.status, StatusCode::OK);
    assert_eq!(hq.get(&a).await.status, StatusCode::GONE);
}

/// How a hostile request authenticates.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// The server's token (none for a satellite without `api_token`).
    Given,
    /// No `Authorization` header.
    Missing,
    /// A token the server does not know.
    Wrong,
}

/// One hostile request and the answer the contract gives it.
struct Attack {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    auth: Auth,
    status: StatusCode,
    code: &'static str,
}

impl Api {
    async fn attack(&self, a: &Attack) -> Answer {
        let mut r = self
            .http
            .request(a.method.clone(), format!("{}{}", self.url, a.path));
        match (a.auth, &self.token) {
            (Auth::Given, Some(t)) => r = r.bearer_auth(t),
            (Auth::Wrong, _) => r = r.bearer_auth("not-the-token-0123456789abcdef"),
            _ => {}
        }
        for (name, value) in &a.headers {
            r = r.header(*name, value);
        }
        if let Some(b) = &a.body {
            r = r.header("content-type", "application/json").body(b.clone());
        }
        let r = r.send().await.expect("send");
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().expect("etag").to_string())
            .unwrap_or_default();
        Answer {
            status,
            etag,
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    /// What a refusal must not change: per record its read status, ETag
    /// and history length.
    async fn state(&self, ids: &[&str]) -> Vec<(StatusCode, String, usize)> {
        let mut out = Vec::new();
        for id in ids {
            let got = self.get(id).await;
            out.push((got.status, got.etag, self.history(id).await.len()));
        }
        out
    }
}

/// Every way a hostile client can get retire, restore and merge wrong, on
/// one server: each answers the contract's status with a JSON error naming
/// its code and a message, and changes no record.
async fn hostile_retire_restore_merge(api: &Api) {
    let (a, a1) = api.create(AMINA).await;
    let (b, b1) = api.create(AMINA_TYPO).await;
    let (r, r1) = api.create(AMINA).await;
    let rt = api.retire(&r, Some(&r1)).await;
    assert_eq!(rt.status, StatusCode::OK, "{}", rt.body);
    let rt = rt.etag;
    let unknown = chartsync_protocol::PatientId::random().to_string();
    let ids = [a.as_str(), b.as_str(), r.as_str()];

    let merge_of = |survivor: &str| format!("/v1/patients/{survivor}/merge");
    let json = |v: Value| Some(v.to_string().into_bytes());
    let good_merge = || json(json!({"retire": b, "retire_if_match": b1}));
    let if_match = |tag: &str| vec![("if-match", tag.to_string())];
    let weak = |tag: &str| format!("W/{tag}");
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;
    let row = |what,
               method: &reqwest::Method,
               path: &str,
               headers: Vec<(&'static str, String)>,
               body: Option<Vec<u8>>,
               status,
               code| Attack {
        what,
        method: method.clone(),
        path: path.to_string(),
        headers,
        body,
        auth: Auth::Given,
        status,
        code,
    };
    let huge_hash = "a".repeat(60_000);
    let mut attacks = vec![
        // Merge: the body.
        row(
            "merge with itself",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": a, "retire_if_match": a1})),
            StatusCode::BAD_REQUEST,
            "same_record",
        ),
        row(
            "merge an unknown record",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": unknown, "retire_if_match": b1})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        row(
            "merge into an unknown record",
            &post,
            &merge_of(&unknown),
            if_match(&a1),
            good_merge(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        row(
            "merge into a bad id",
            &post,
            "/v1/patients/not-an-id/merge",
            if_match(&a1),
            good_merge(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        row(
            "retire is not an id",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": "not-an-id", "retire_if_match": b1})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "a field given twice",
            &post,
            &merge_of(&a),
            if_match(&a1),
            Some(
                format!(
                    r#"{{"retire": "{b}", "retire_if_match": "{b1q}", "retire": "{a}"}}"#,
                    b1q = unquote(&b1)
                )
                .into_bytes(),
            ),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "no retire_if_match",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "no retire",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire_if_match": b1})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "an extra field",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b, "retire_if_match": b1, "replaced_by": a})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "wrong types",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": 7, "retire_if_match": true})),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "an array",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!([b, b1])),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "null",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(Value::Null),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "not JSON",
            &post,
            &merge_of(&a),
            if_match(&a1),
            Some(format!("retire={b}").into_bytes()),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "no body",
            &post,
            &merge_of(&a),
            if_match(&a1),
            None,
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        row(
            "over the body limit",
            &post,
            &merge_of(&a),
            if_match(&a1),
            Some(vec![b' '; 70_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        row(
            "a huge retire_if_match",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b, "retire_if_match": huge_hash})),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "retire_if_match not a hash",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b, "retire_if_match": "xyz"})),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "retire_if_match weak",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b, "retire_if_match": weak(&b1)})),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "retire_if_match stale",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": b, "retire_if_match": a1})),
            StatusCode::PRECONDITION_FAILED,
            "conflict",
        ),
        // Merge: the survivor's precondition.
        row(
            "merge without If-Match",
            &post,
            &merge_of(&a),
            vec![],
            good_merge(),
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
        ),
        row(
            "merge with a bare hash",
            &post,
            &merge_of(&a),
            if_match(unquote(&a1)),
            good_merge(),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "merge with a weak ETag",
            &post,
            &merge_of(&a),
            if_match(&weak(&a1)),
            good_merge(),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "merge with If-Match: *",
            &post,
            &merge_of(&a),
            if_match("*"),
            good_merge(),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "merge with If-None-Match: *",
            &post,
            &merge_of(&a),
            vec![("if-none-match", "*".to_string())],
            good_merge(),
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "merge with a stale If-Match",
            &post,
            &merge_of(&a),
            if_match(&b1),
            good_merge(),
            StatusCode::PRECONDITION_FAILED,
            "conflict",
        ),
        row(
            "merge into a retired record",
            &post,
            &merge_of(&r),
            if_match(&rt),
            good_merge(),
            StatusCode::CONFLICT,
            "retired",
        ),
        row(
            "merge a retired record",
            &post,
            &merge_of(&a),
            if_match(&a1),
            json(json!({"retire": r, "retire_if_match": rt})),
            StatusCode::CONFLICT,
            "retired",
        ),
        // DELETE.
        row(
            "DELETE without If-Match",
            &delete,
            &format!("/v1/patients/{a}"),
            vec![],
            None,
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
        ),
        row(
            "DELETE with a bare hash",
            &delete,
            &format!("/v1/patients/{a}"),
            if_match(unquote(&a1)),
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "DELETE with a weak ETag",
            &delete,
            &format!("/v1/patients/{a}"),
            if_match(&weak(&a1)),
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "DELETE with two ETags",
            &delete,
            &format!("/v1/patients/{a}"),
            if_match(&format!("{a1}, {b1}")),
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "DELETE with If-None-Match: *",
            &delete,
            &format!("/v1/patients/{a}"),
            vec![("if-none-match", "*".to_string())],
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "DELETE with both preconditions",
            &delete,
            &format!("/v1/patients/{a}"),
            vec![("if-match", a1.clone()), ("if-none-match", "*".to_string())],
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "DELETE stale",
            &delete,
            &format!("/v1/patients/{a}"),
            if_match(&b1),
            None,
            StatusCode::PRECONDITION_FAILED,
            "conflict",
        ),
        row(
            "DELETE with a body",
            &delete,
            &format!("/v1/patients/{a}"),
            if_match(&a1),
            json(json!({"replaced_by": b})),
            StatusCode::BAD_REQUEST,
            "unexpected_body",
        ),
        row(
            "DELETE a retired record",
            &delete,
            &format!("/v1/patients/{r}"),
            if_match(&rt),
            None,
            StatusCode::CONFLICT,
            "retired",
        ),
        row(
            "DELETE an unknown record",
            &delete,
            &format!("/v1/patients/{unknown}"),
            if_match(&a1),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        row(
            "DELETE * an unknown record",
            &delete,
            &format!("/v1/patients/{unknown}"),
            if_match("*"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // Restore.
        row(
            "PATCH away a tombstone's marker",
            &reqwest::Method::PATCH,
            &format!("/v1/patients/{r}"),
            if_match(&rt),
            json(json!({"retired.yaml": null})),
            StatusCode::BAD_REQUEST,
            "reserved_file",
        ),
        row(
            "PATCH a marker onto an active record",
            &reqwest::Method::PATCH,
            &format!("/v1/patients/{a}"),
            if_match(&a1),
            json(json!({"retired.yaml": format!("replaced_by: \"{b}\"\n")})),
            StatusCode::BAD_REQUEST,
            "reserved_file",
        ),
        row(
            "create a record born retired",
            &post,
            "/v1/patients",
            vec![],
            json(
                json!({"files": {"patient.yaml": AMINA, "retired.yaml": format!("replaced_by: \"{b}\"\n")}}),
            ),
            StatusCode::BAD_REQUEST,
            "reserved_file",
        ),
        row(
            "restore a record never retired",
            &post,
            &format!("/v1/patients/{a}/restore"),
            if_match(&a1),
            None,
            StatusCode::CONFLICT,
            "not_retired",
        ),
        row(
            "restore without If-Match",
            &post,
            &format!("/v1/patients/{r}/restore"),
            vec![],
            None,
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
        ),
        row(
            "restore with a bare hash",
            &post,
            &format!("/v1/patients/{r}/restore"),
            if_match(unquote(&rt)),
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "restore with a weak ETag",
            &post,
            &format!("/v1/patients/{r}/restore"),
            if_match(&weak(&rt)),
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "restore with If-None-Match: *",
            &post,
            &format!("/v1/patients/{r}/restore"),
            vec![("if-none-match", "*".to_string())],
            None,
            StatusCode::BAD_REQUEST,
            "bad_precondition",
        ),
        row(
            "restore stale",
            &post,
            &format!("/v1/patients/{r}/restore"),
            if_match(&r1),
            None,
            StatusCode::PRECONDITION_FAILED,
            "conflict",
        ),
        row(
            "restore with a body",
            &post,
            &format!("/v1/patients/{r}/restore"),
            if_match(&rt),
            json(json!({"files": {}})),
            StatusCode::BAD_REQUEST,
            "unexpected_body",
        ),
        row(
            "restore an unknown record",
            &post,
            &format!("/v1/patients/{unknown}/restore"),
            if_match(&rt),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    // Without the token, or with a wrong one (where the server has one).
    if api.token.is_some() {
        for auth in [Auth::Missing, Auth::Wrong] {
            for mut attack in [
                row(
                    "DELETE",
                    &delete,
                    &format!("/v1/patients/{a}"),
                    if_match(&a1),
                    None,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                ),
                row(
                    "restore",
                    &post,
                    &format!("/v1/patients/{r}/restore"),
                    if_match(&rt),
                    None,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                ),
                row(
                    "merge",
                    &post,
                    &merge_of(&a),
                    if_match(&a1),
                    good_merge(),
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                ),
            ] {
                attack.auth = auth;
                attacks.push(attack);
            }
        }
    }
    for attack in &attacks {
        let before = api.state(&ids).await;
        let got = api.attack(attack).await;
        let what = format!("{} ({:?}): {}", attack.what, attack.auth, got.body);
        assert_eq!(got.status, attack.status, "{what}");
        assert_eq!(got.body["error"], attack.code, "{what}");
        assert!(
            got.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(api.state(&ids).await, before, "{what} changed a record");
    }
    // The good requests still work after all that.
    let merged = api.merge(&a, Some(&a1), &b, &b1).await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    let restored = api.restore(&r, Some(&rt)).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_retire_restore_and_merge_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .config("max_body_bytes = 65536")
        .start()
        .await;
    hostile_retire_restore_merge(&Api::central(&central)).await;
    let token = "clinic-api-token-0123456789abcdef";
    let sat = TestSatellite::builder(dir.path().join("sat"))
        .config(&format!("max_body_bytes = 65536\napi_token = \"{token}\""))
        .start()
        .await;
    let mut api = Api::satellite(&sat);
    api.token = Some(token.to_string());
    hostile_retire_restore_merge(&api).await;
}

/// A merged into B, then B into C: each read names the record it was
/// merged into (A names B, B names C), writes to either are refused with
/// that name, and following `replaced_by` reaches C, which holds all three.
async fn merge_chain(api: &Api) {
    let (a, a1) = api.create(AMINA).await;
    let (b, b1) = api.create(AMINA_TYPO).await;
    let (c, c1) = api
        .create("given_name: Amina\nfamily_name: Odhiambo\nallergies: [sulfa]\ncatchment: north\n")
        .await;
    let ab = api.merge(&b, Some(&b1), &a, &a1).await;
    assert_eq!(ab.status, StatusCode::OK, "{}", ab.body);
    let bc = api.merge(&c, Some(&c1), &b, &ab.etag).await;
    assert_eq!(bc.status, StatusCode::OK, "{}", bc.body);

    let ga = api.get(&a).await;
    assert_eq!(ga.status, StatusCode::GONE, "{}", ga.body);
    assert_eq!(ga.body["replaced_by"], b.as_str());
    let gb = api.get(&b).await;
    assert_eq!(gb.status, StatusCode::GONE, "{}", gb.body);
    assert_eq!(gb.body["replaced_by"], c.as_str());
    // Following replaced_by ends at C, holding all three records' data.
    let mut at = a.clone();
    let mut hops = 0;
    let last = loop {
        let got = api.get(&at).await;
        if got.status == StatusCode::OK {
            break got;
        }
        assert_eq!(got.status, StatusCode::GONE);
        at = got.body["replaced_by"]
            .as_str()
            .expect("replaced_by")
            .to_string();
        hops += 1;
        assert!(hops <= 2, "the chain is two long");
    };
    assert_eq!(at, c);
    let mut held = allergies(&last.body);
    held.sort();
    assert_eq!(held, ["latex", "penicillin", "sulfa"]);

    // Writes to A or B, and merges naming them, change nothing.
    let before = api.state(&[a.as_str(), b.as_str(), c.as_str()]).await;
    for (got, into) in [
        (api.put(&a, &ga.etag, AMINA).await, &b),
        (api.retire(&b, Some(&gb.etag)).await, &c),
        (api.merge(&a, Some(&ga.etag), &c, &bc.etag).await, &b),
        (api.merge(&c, Some(&bc.etag), &a, &ga.etag).await, &b),
    ] {
        assert_eq!(got.status, StatusCode::CONFLICT, "{}", got.body);
        assert_eq!(got.body["error"], "retired");
        assert_eq!(got.body["replaced_by"], into.as_str(), "{}", got.body);
    }
    assert_eq!(
        api.state(&[a.as_str(), b.as_str(), c.as_str()]).await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_merges_reads_one_hop_at_a_time_and_ends_at_the_last_survivor() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    merge_chain(&Api::central(&central)).await;
    let sat = TestSatellite::builder(dir.path().join("sat")).start().await;
    merge_chain(&Api::satellite(&sat)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_central_a_record_outside_the_clinics_scope_answers_a_merge_as_an_unknown_one() {
    let w = world().await;
    let (hq, north, south) = (
        Api::central(&w.central),
        Api::satellite(&w.north),
        Api::satellite(&w.south),
    );
    let (a, _) = north.create(NORTH_AMINA).await;
    let (b, _) = south.create(SOUTH_AMINA).await;
    w.north.sync(&Job::ALL).await;
    w.south.sync(&Job::ALL).await;
    let token = w.north.sat.config.token().expect("token").expect("set").0;
    let as_north = Api {
        url: w.central.url.clone(),
        token: Some(token),
        http: client(),
    };
    let (ah, bh) = (hq.get(&a).await.etag, hq.get(&b).await.etag);
    let unknown = chartsync_protocol::PatientId::random().to_string();
    let before = hq.state(&[a.as_str(), b.as_str()]).await;
    // The same answer, but for the id it names, whichever side is out of
    // scope: nothing tells the clinic that the record exists.
    let same = |got: &Answer, id: &str, unknown_answer: &Answer| {
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
        assert_eq!(
            got.body.to_string().replace(id, "X"),
            unknown_answer.body.to_string().replace(&unknown, "X")
        );
    };
    let out_other = as_north.merge(&a, Some(&ah), &b, &bh).await;
    let unknown_other = as_north.merge(&a, Some(&ah), &unknown, &bh).await;
    same(&out_other, &b, &unknown_other);
    let out_survivor = as_north.merge(&b, Some(&bh), &a, &ah).await;
    let unknown_survivor = as_north.merge(&unknown, Some(&bh), &a, &ah).await;
    same(&out_survivor, &b, &unknown_survivor);
    for (got, unknown_answer) in [
        (
            as_north.retire(&b, Some(&bh)).await,
            as_north.retire(&unknown, Some(&bh)).await,
        ),
        (
            as_north.restore(&b, Some(&bh)).await,
            as_north.restore(&unknown, Some(&bh)).await,
        ),
        (as_north.get(&b).await, as_north.get(&unknown).await),
    ] {
        same(&got, &b, &unknown_answer);
    }
    assert_eq!(hq.state(&[a.as_str(), b.as_str()]).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_where_an_object_is_expected_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let sat = TestSatellite::builder(dir.path().join("sat")).start().await;
    let hq = Api::central(&central);
    let clinic = Api::satellite(&sat);
    for api in [&hq, &clinic] {
        let (a, a1) = api.create(AMINA).await;
        let (b, b1) = api.create(AMINA_TYPO).await;
        let ids = [a.as_str(), b.as_str()];
        let before = api.state(&ids).await;
        // serde would take a struct's fields as an array, in order.
        let mut attacks = vec![
            (
                reqwest::Method::POST,
                format!("/v1/patients/{a}/merge"),
                Some(a1.as_str()),
                json!([b, b1]),
            ),
            (
                reqwest::Method::PUT,
                format!("/v1/patients/{a}"),
                Some(a1.as_str()),
                json!([{"patient.yaml": AMINA_TYPO}]),
            ),
            (
                reqwest::Method::POST,
                "/v1/patients".to_string(),
                None,
                json!([{"patient.yaml": AMINA}]),
            ),
        ];
        if api.token.is_some() {
            attacks.push((
                reqwest::Method::POST,
                "/v1/duplicates/dismiss".to_string(),
                None,
                json!([a, b]),
            ));
        } else {
            attacks.push((
                reqwest::Method::POST,
                "/v1/conflicts/1/resolve".to_string(),
                None,
                json!([{"patient.yaml": AMINA}]),
            ));
        }
        for (method, path, if_match, body) in attacks {
            let got = api.send(method.clone(), &path, if_match, Some(body)).await;
            assert_eq!(
                (got.status, got.body["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_json")),
                "{method} {path}: {}",
                got.body
            );
            assert_eq!(api.state(&ids).await, before, "{method} {path}");
        }
    }
    assert_eq!(
        central.central.store.list().expect("list").len(),
        2,
        "no record was created"
    );
}
