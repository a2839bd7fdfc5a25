//! Satellites report to central with every sync call (the
//! `chartsync-report` header): central keeps the latest report and an
//! hourly series per clinic, with its lag, and exports them as metrics. A
//! bad report is ignored; the sync call goes on.

use std::time::Duration;

use chartsync_central::db::CentralDb;
use chartsync_satellite::jobs::Job;
use reqwest::StatusCode;

use crate::support::{TestCentral, TestSatellite, client};

/// Waits for central to have stored a report of `instance` matching `ok`
/// (reports are stored in the background).
async fn report_of(
    central: &TestCentral,
    instance: u32,
    ok: impl Fn(&chartsync_common::report::Report, u64) -> bool,
) -> (chartsync_common::report::Report, u64) {
    for _ in 0..100 {
        let reports = central.central.db.reports().await.expect("reports");
        if let Some(saved) = reports.iter().find(|r| r.instance == instance)
            && let Some(report) = chartsync_central::reports::parse(saved)
            && ok(&report, saved.lag)
        {
            return (report, saved.lag);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("central has no matching report of instance {instance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_calls_carry_the_clinics_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let http = client();
    let (a_id, a_token) = central.add_instance("north-a", &["north"]).await;
    let (b_id, b_token) = central.add_instance("north-b", &["north"]).await;
    let a = TestSatellite::builder(dir.path().join("a"))
        .central(&central.url)
        .instance(a_id, &a_token)
        .config("[schedule]\npush = \"*/5 * * * *\"")
        .start()
        .await;
    let b = TestSatellite::builder(dir.path().join("b"))
        .central(&central.url)
        .instance(b_id, &b_token)
        .start()
        .await;

    // Two records at a, pushed in one run: the report sent with the push
    // was made before it, with 2 pending.
    a.create(&http, "name: One\ncatchment: north\n").await;
    a.create(&http, "name: Two\ncatchment: north\n").await;
    a.sync(&[Job::Push]).await;
    let (report, _) = report_of(&central, a_id, |r, _| r.pending == 2).await;
    assert_eq!(report.version, env!("CARGO_PKG_VERSION"));
    assert!(report.free_bytes.is_some_and(|b| b > 0));
    // Then a pull: its report says push succeeded, nothing pending, and
    // the push job's schedule.
    a.sync(&[Job::Pull]).await;
    let (report, _) = report_of(&central, a_id, |r, _| r.pending == 0).await;
    let push = report.job("push").expect("push reported");
    assert!(push.ok_at.is_some() && push.ok == Some(true), "{push:?}");
    assert_eq!(push.every, Some(300));

    // b has not fetched the two new records yet: its lag counts them.
    b.sync(&[Job::Pull]).await;
    let (_, lag) = report_of(&central, b_id, |_, _| true).await;
    assert_eq!(lag, 2, "b's lag");

    // Metrics carry the reports.
    let text = http
        .get(format!("{}/metrics", central.url))
        .bearer_auth(&central.admin)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!(
            "chartsync_instance_lag{{instance_id=\"{b_id}\",name=\"north-b\"}} 2"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "chartsync_instance_schedule_seconds{{instance_id=\"{a_id}\",name=\"north-a\",job=\"push\"}} 300"
        )),
        "{text}"
    );
    assert!(text.contains("chartsync_disk_free_bytes "), "{text}");

    // The series has this hour, with the calls counted.
    let hour = chrono::Utc::now().timestamp() / 3600;
    let rows = central
        .central
        .db
        .activity(hour - 1)
        .await
        .expect("activity");
    let a_row = rows.iter().find(|r| r.instance == a_id).expect("a's hour");
    assert!(a_row.calls >= 2, "{a_row:?}");

    // A bad report is ignored: the sync call is answered as without one,
    // and the stored report is unchanged.
    let before = central.central.db.reports().await.expect("reports");
    for bad in ["{", "{\"v\":\"x\",\"pending\":-1}", &"x".repeat(5000)] {
        let r = http
            .post(format!("{}/v1/sync/pull", central.url))
            .bearer_auth(&a_token)
            .header("chartsync-report", bad)
            .header(
                chartsync_protocol::sync::PROTOCOL_HEADER,
                chartsync_protocol::sync::PROTOCOL_VERSION.to_string(),
            )
            .body("not a batch")
            .send()
            .await
            .expect("send");
        // The batch is bad (400 bad_batch), not the report.
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "bad_batch", "{body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(central.central.db.reports().await.expect("reports"), before);
    // And a good sync with it still works.
    a.sync(&[Job::Push, Job::Pull]).await;
}
