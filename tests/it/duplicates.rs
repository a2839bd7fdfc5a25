//! Duplicate patients at central, end to end: records created through the
//! API are indexed within seconds, likely pairs are listed with their
//! per-field similarities (HQ sees every pair, a clinic only pairs of
//! records it may read), a dismissed pair stays dismissed after later
//! edits, an edit that makes two records different removes their pair,
//! and bad requests are refused without changing anything.

use std::time::{Duration, Instant};

use chartsync_central::db::CentralDb;
use chartsync_protocol::PatientId;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{self, TestCentral};

fn person(given: &str, family: &str, born: &str, catchment: &str) -> String {
    format!(
        "given_name: {given}\nfamily_name: {family}\nborn: '{born}'\nsex: F\ncatchment: {catchment}\nallergies: []\n"
    )
}

async fn list(
    http: &reqwest::Client,
    central: &TestCentral,
    token: &str,
    query: &str,
) -> (StatusCode, Value) {
    let r = http
        .get(format!("{}/v1/duplicates{query}", central.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("list");
    let status = r.status();
    (status, r.json().await.expect("json"))
}

fn pairs_of(body: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = body["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            let (a, b) = (p["a"].as_str().expect("a"), p["b"].as_str().expect("b"));
            (a.min(b).to_string(), a.max(b).to_string())
        })
        .collect();
    out.sort();
    out
}

fn pair(a: PatientId, b: PatientId) -> (String, String) {
    let (a, b) = (a.to_string(), b.to_string());
    (a.clone().min(b.clone()), a.max(b))
}

/// Polls HQ's list until `done` holds (the index follows within seconds).
async fn wait_for(
    http: &reqwest::Client,
    central: &TestCentral,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = list(http, central, &central.admin, "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(&pairs_of(&body)) {
            return body;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likely_duplicates_are_found_scoped_and_dismissed() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path()).start().await;
    let http = support::client();
    let (_, north) = central.add_instance("north", &["north"]).await;

    // A name in letters Double Metaphone does not know comes first: the
    // index must go on past it.
    central
        .create(&http, &person("Cường", "Nguyễn", "1988-02-03", "north"))
        .await;
    // Registered twice: at the north clinic, and in the south with a
    // misspelled name and day and month swapped.
    let (amina, _) = central
        .create(&http, &person("Amina", "Odhiambo", "1990-04-12", "north"))
        .await;
    let (aminah, aminah_etag) = central
        .create(&http, &person("Aminah", "Odhiambo", "1990-12-04", "south"))
        .await;
    // Twice at the north clinic, given and family name swapped.
    let (grace, grace_etag) = central
        .create(&http, &person("Grace", "Wanjiru", "1985-09-30", "north"))
        .await;
    let (wanjiru, _) = central
        .create(&http, &person("Wanjiru", "Grace", "1985-09-30", "north"))
        .await;
    // Someone else entirely.
    let (other, _) = central
        .create(&http, &person("Peter", "Kamau", "1972-01-15", "north"))
        .await;

    let both = [pair(amina, aminah), pair(grace, wanjiru)];
    let body = wait_for(&http, &central, "both pairs listed", |p| {
        both.iter().all(|x| p.contains(x))
    })
    .await;
    let listed = pairs_of(&body);
    assert_eq!(listed.len(), 2, "{body}");
    assert!(
        !listed
            .iter()
            .any(|(a, b)| *a == other.to_string() || *b == other.to_string())
    );
    for p in body["pairs"].as_array().expect("pairs") {
        let score = p["score"].as_f64().expect("score");
        assert!((0.8..=1.0).contains(&score), "{p}");
    }
    let amina_pair = body["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .find(|p| {
            pair(
                p["a"].as_str().expect("a").parse().expect("id"),
                p["b"].as_str().expect("b").parse().expect("id"),
            ) == pair(amina, aminah)
        })
        .expect("amina pair");
    let born = amina_pair["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "birth_date")
        .expect("birth date compared");
    assert_eq!(
        born["similarity"],
        json!(0.9),
        "day and month swapped: {amina_pair}"
    );

    // The north clinic may read only the Grace pair (Aminah is in the
    // south).
    let (status, body) = list(&http, &central, &north, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pairs_of(&body), vec![pair(grace, wanjiru)], "{body}");
    // ... and cannot dismiss a pair holding a record it may not read.
    let r = http
        .post(format!("{}/v1/duplicates/dismiss", central.url))
        .bearer_auth(&north)
        .json(&json!({"a": amina.to_string(), "b": aminah.to_string()}))
        .send()
        .await
        .expect("dismiss");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // HQ dismisses the Amina pair: gone, and it stays gone after Aminah's
    // record changes (and is indexed again).
    let r = http
        .post(format!("{}/v1/duplicates/dismiss", central.url))
        .bearer_auth(&central.admin)
        .json(&json!({"a": aminah.to_string(), "b": amina.to_string()}))
        .send()
        .await
        .expect("dismiss");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .patch(format!("{}/v1/patients/{aminah}", central.url))
        .bearer_auth(&central.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", &aminah_etag)
        .json(&json!({"patient.yaml": {"phone": "0712 345 678"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    // Grace's record becomes someone else's details: that pair goes too.
    let r = http
        .patch(format!("{}/v1/patients/{grace}", central.url))
        .bearer_auth(&central.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", &grace_etag)
        .json(&json!({"patient.yaml": {"given_name": "Esther", "family_name": "Njeri", "born": "1961-02-03"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    wait_for(&http, &central, "both pairs gone", |p| p.is_empty()).await;
    // The patch to Aminah was indexed (the cursor passed it) and the
    // dismissed pair did not come back.
    let cursor = central
        .central
        .db
        .duplicates_cursor()
        .await
        .expect("cursor");
    assert_eq!(
        cursor, 8,
        "6 records created, 2 edited: every change indexed"
    );
    let (_, body) = list(&http, &central, &central.admin, "?min_score=0.5").await;
    assert!(!pairs_of(&body).contains(&pair(amina, aminah)), "{body}");

    central.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_duplicate_requests_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path()).start().await;
    let http = support::client();
    let (a, _) = central
        .create(&http, &person("Amina", "Odhiambo", "1990-04-12", "north"))
        .await;

    for query in [
        "?min_score=2",
        "?min_score=x",
        "?limit=0",
        "?limit=100000",
        "?other=1",
    ] {
        let (status, body) = list(&http, &central, &central.admin, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "bad_query", "{query}: {body}");
    }
    let r = http
        .get(format!("{}/v1/duplicates", central.url))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for (body, code) in [
        (json!({"a": a.to_string()}), "bad_json"),
        (json!({"a": a.to_string(), "b": "not-a-uuid"}), "bad_json"),
        (json!({"a": a.to_string(), "b": a.to_string()}), "bad_pair"),
        (
            json!({"a": a.to_string(), "b": a.to_string(), "c": 1}),
            "bad_json",
        ),
    ] {
        let r = http
            .post(format!("{}/v1/duplicates/dismiss", central.url))
            .bearer_auth(&central.admin)
            .json(&body)
            .send()
            .await
            .expect("dismiss");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = r.json().await.expect("json");
        assert_eq!(answer["error"], code, "{body}: {answer}");
    }
    let r = http
        .post(format!("{}/v1/duplicates/dismiss", central.url))
        .bearer_auth(&central.admin)
        .body("{not json")
        .send()
        .await
        .expect("dismiss");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    central.stop().await;
}
