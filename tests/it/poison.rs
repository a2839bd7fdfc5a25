//! One record's trouble never blocks another: a record whose merge cannot
//! be stored (both sides appended about 550 KB to the same list, so the
//! merged file passes the 1 MiB file limit) is set aside with its reason,
//! while every other record, and every job, goes on; once a clinician
//! shortens it, it syncs again.

use chartsync_satellite::jobs::Job;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestCentral, TestSatellite, client, patient_doc};

/// About 550 KB of visits, tagged so both sides' lists differ.
fn visits(tag: &str) -> Value {
    let note = "x".repeat(480);
    Value::Array(
        (0..1100)
            .map(|i| json!(format!("{tag} visit {i}: {note}")))
            .collect(),
    )
}

/// A merge patch as HQ; returns the new ETag.
async fn patch_at_central(
    central: &TestCentral,
    http: &reqwest::Client,
    id: &str,
    body: Value,
) -> String {
    let r = http
        .get(format!("{}/v1/patients/{id}", central.url))
        .bearer_auth(&central.admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let r = http
        .patch(format!("{}/v1/patients/{id}", central.url))
        .bearer_auth(&central.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", &etag)
        .json(&body)
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    r.headers()["etag"].to_str().expect("etag").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_merge_is_set_aside_and_everything_else_syncs() {
    let dir = tempfile::tempdir().expect("tmp");
    let http = client();
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (instance, token) = central.add_instance("north", &["north"]).await;
    let sat = TestSatellite::builder(dir.path().join("north"))
        .central(&central.url)
        .instance(instance, &token)
        .start()
        .await;

    let (stuck, stuck_etag) = sat
        .create(&http, "name: Amina\ncatchment: north\nvisits: []\n")
        .await;
    let (other, _) = sat
        .create(&http, "name: Bo\ncatchment: north\nallergies: []\n")
        .await;
    sat.sync(&[Job::Push]).await;

    // Both sides append about 550 KB to the same list, and HQ records an
    // allergy on an unrelated record.
    patch_at_central(
        &central,
        &http,
        &stuck,
        json!({"patient.yaml": {"visits": visits("hq")}}),
    )
    .await;
    patch_at_central(
        &central,
        &http,
        &other,
        json!({"patient.yaml": {"allergies": ["do not give penicillin"]}}),
    )
    .await;
    let clinic_etag = sat
        .patch(
            &http,
            &stuck,
            &stuck_etag,
            json!({"patient.yaml": {"visits": visits("clinic")}}),
        )
        .await;

    // Every job completes; the stuck record is set aside, not fatal.
    let summary = sat
        .run(&Job::ALL)
        .await
        .unwrap_or_else(|e| panic!("sync failed: {}", chartsync_satellite::error_chain(&e)));
    assert!(summary.set_aside >= 1, "{summary:?}");

    // The unrelated HQ edit reached the clinic.
    let (status, body, _) = sat.get(&http, &other).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        patient_doc(&body)["allergies"],
        json!(["do not give penicillin"])
    );

    // The reason is visible, in words.
    let status = sat.status();
    let aside: Vec<_> = status
        .set_aside
        .iter()
        .filter(|r| r.patient.to_string() == stuck)
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", status.set_aside);
    assert!(
        aside[0].reason.contains("cannot be stored"),
        "{}",
        aside[0].reason
    );
    // The pull cursor moved past it (central's change to the other record
    // came after).
    assert!(status.cursor >= 4, "cursor {}", status.cursor);

    // Nothing was lost: the clinic still has its own edit.
    let (_, body, etag) = sat.get(&http, &stuck).await;
    assert_eq!(etag, clinic_etag);
    assert_eq!(
        patient_doc(&body)["visits"][0],
        json!(format!("clinic visit 0: {}", "x".repeat(480)))
    );

    // A second run does not fail either, and does not push it again.
    let again = sat.sync(&Job::ALL).await;
    assert_eq!(again.records_sent, 0, "{again:?}");

    // A clinician shortens the record: it syncs again and leaves the list.
    sat.patch(
        &http,
        &stuck,
        &etag,
        json!({"patient.yaml": {"visits": ["clinic visit, summarised"]}}),
    )
    .await;
    sat.sync(&Job::ALL).await;
    assert!(
        sat.status().set_aside.is_empty(),
        "{:?}",
        sat.status().set_aside
    );
    let r = http
        .get(format!("{}/v1/patients/{stuck}", central.url))
        .bearer_auth(&central.admin)
        .send()
        .await
        .expect("get");
    let body: Value = r.json().await.expect("json");
    let merged = patient_doc(&body)["visits"]
        .as_array()
        .expect("visits")
        .clone();
    assert!(merged.contains(&json!("clinic visit, summarised")));
    assert!(merged.len() > 1000, "HQ's visits are kept too");
    sat.stop().await;
    central.stop().await;
}
