//! The pages in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven as a person would: log in at HQ, watch a
//! clinic go from pending to in sync with "Sync now", resolve a conflict by
//! clicking and see the resolution reach central and the other clinic, and
//! see a silent clinic highlighted at HQ.
//!
//! Screenshots of each page go to `docs/screenshots/` when
//! `CHARTSYNC_SCREENSHOTS=1` is set:
//!   CHARTSYNC_SCREENSHOTS=1 cargo test --test it browser::

use chartsync_central::db::{CentralDb, SavedReport};
use chartsync_common::report::{JobReport, Report};
use chartsync_satellite::jobs::Job;
use serde_json::json;

use crate::support::webdriver::Browser;
use crate::support::{TestCentral, TestSatellite, client, patient_doc};

/// Saves a screenshot into docs/screenshots/ when asked to.
async fn shot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    if std::env::var_os("CHARTSYNC_SCREENSHOTS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

const SCHEDULE: &str =
    "[schedule]\npush = \"*/5 * * * *\"\npull = \"*/5 * * * *\"\nfetch_new = \"0 * * * *\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_and_hq_use_the_pages() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let http = client();
    let mut sats = Vec::new();
    for name in ["north-a", "north-b"] {
        let (id, token) = central.add_instance(name, &["north"]).await;
        sats.push(
            TestSatellite::builder(dir.path().join(name))
                .central(&central.url)
                .instance(id, &token)
                .config(&format!("name = \"{name}\"\n{SCHEDULE}"))
                .start()
                .await,
        );
    }
    let (a, b) = (&sats[0], &sats[1]);
    let (c_id, _) = central.add_instance("south-silent", &["south"]).await;
    let browser = Browser::start(1280, 900).await;

    // HQ: the login form, a wrong token, then the admin token.
    browser.goto(&format!("{}/ui", central.url)).await;
    browser
        .find("input[name=token]")
        .await
        .type_text("wrong")
        .await;
    browser.click_and_wait("button[type=submit]").await;
    assert!(browser.text().await.contains("not HQ's admin token"));
    shot(&browser, "hq-login").await;
    browser
        .find("input[name=token]")
        .await
        .type_text(&central.admin)
        .await;
    browser.click_and_wait("button[type=submit]").await;
    browser.find("#clinics").await;

    // Clinic A: a new record is pending; "Sync now" sends it and the page
    // says so, then shows the clinic in sync.
    let (id, _) = a
        .create(&http, "name: Amina\nphone: '1'\ncatchment: north\n")
        .await;
    browser.goto(&format!("{}/ui", a.url)).await;
    let state = browser.find("#sync-state").await.text().await;
    assert!(state.starts_with("Not in sync"), "{state}");
    assert!(state.contains("1 change not yet sent"), "{state}");
    assert_eq!(browser.find("#pending").await.text().await, "1");
    browser.click_and_wait("#sync-now").await;
    let result = browser.find("#result").await.text().await;
    assert!(
        result.starts_with("Sync finished: 1 record sent"),
        "{result}"
    );
    let state = browser.find("#sync-state").await.text().await;
    assert!(state.starts_with("In sync since"), "{state}");
    assert_eq!(browser.find("#pending").await.text().await, "0");
    let jobs = browser.find("#jobs").await.text().await;
    assert!(
        jobs.contains("push: last succeeded just now, 1 record sent"),
        "{jobs}"
    );
    shot(&browser, "satellite").await;

    // A conflict: both clinics change the phone; A's change reaches
    // central first, so B's "Sync now" finds a conflict.
    b.sync(&[Job::FetchNew]).await;
    let (_, _, ea) = a.get(&http, &id).await;
    a.patch(&http, &id, &ea, json!({"patient.yaml": {"phone": "A"}}))
        .await;
    let (_, _, eb) = b.get(&http, &id).await;
    b.patch(&http, &id, &eb, json!({"patient.yaml": {"phone": "B"}}))
        .await;
    a.sync(&[Job::Push]).await;
    browser.goto(&format!("{}/ui", b.url)).await;
    browser.click_and_wait("#sync-now").await;
    let result = browser.find("#result").await.text().await;
    assert!(
        result.contains("1 new conflict for a clinician"),
        "{result}"
    );
    assert_eq!(browser.count(".conflict").await, 1);
    let conflict = browser.find(".conflict").await.text().await;
    for side in [
        "phone",
        "Before both changes\n1",
        "This clinic's value\nB",
        "Central's value (in the record now)\nA",
    ] {
        assert!(conflict.contains(side), "{side:?} in {conflict}");
    }
    shot(&browser, "satellite-conflict").await;
    browser.resize(390, 844).await;
    shot(&browser, "satellite-phone").await;
    browser.resize(1280, 900).await;

    // The clinician types the right value and resolves.
    browser
        .find(".conflict input[value=typed]")
        .await
        .click()
        .await;
    browser
        .find(".conflict input[name=value]")
        .await
        .type_text("B-confirmed")
        .await;
    browser
        .click_and_wait(".conflict button[type=submit]")
        .await;
    let result = browser.find("#result").await.text().await;
    assert!(result.starts_with("Resolved: phone of patient"), "{result}");
    assert!(result.contains("is now B-confirmed"), "{result}");
    assert_eq!(browser.count(".conflict").await, 0);
    browser.click_and_wait("#sync-now").await;
    let result = browser.find("#result").await.text().await;
    assert!(
        result.starts_with("Sync finished: 1 record sent"),
        "{result}"
    );

    // It reached central and clinic A.
    let at_central: serde_json::Value = http
        .get(format!("{}/v1/patients/{id}", central.url))
        .bearer_auth(&central.admin)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(patient_doc(&at_central)["phone"], "B-confirmed");
    a.sync(&[Job::Pull]).await;
    assert_eq!(
        patient_doc(&a.get(&http, &id).await.1)["phone"],
        "B-confirmed"
    );

    // Two registrations of one person at central: HQ's duplicates queue
    // lists the pair until someone says they are two people.
    for given in ["Esther", "Ester"] {
        central
            .create(
                &http,
                &format!("given_name: {given}\nfamily_name: Njeri\nborn: '1961-02-03'\nsex: F\ncatchment: south\n"),
            )
            .await;
    }
    let start = std::time::Instant::now();
    loop {
        browser.goto(&format!("{}/ui", central.url)).await;
        if browser.count("#duplicate-pairs .pair").await == 1 {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "no duplicate pair listed");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let pair = browser.find("#duplicate-pairs .pair").await.text().await;
    assert!(
        pair.contains("given_name: esther / ester") || pair.contains("given_name: ester / esther"),
        "{pair}"
    );
    browser
        .goto(&format!("{}/ui#duplicates", central.url))
        .await;
    shot(&browser, "hq-duplicates").await;
    browser
        .click_and_wait(
            "#duplicate-pairs .pair form[action='/ui/duplicates/dismiss'] button[type=submit]",
        )
        .await;
    assert_eq!(browser.count("#duplicate-pairs .pair").await, 0);
    assert!(
        browser
            .find("#duplicates")
            .await
            .text()
            .await
            .contains("(0)")
    );

    // Two more registrations of one person: "Same person: merge" keeps the
    // first record with both allergies and says which values differed.
    let mut ids = Vec::new();
    for (given, allergy) in [("Wanjiru", "penicillin"), ("Wanjiro", "latex")] {
        let (id, _) = central
            .create(
                &http,
                &format!("given_name: {given}\nfamily_name: Kamau\nborn: '1975-06-07'\nsex: F\ncatchment: south\nallergies: [{allergy}]\n"),
            )
            .await;
        ids.push(id);
    }
    let start = std::time::Instant::now();
    loop {
        browser.goto(&format!("{}/ui", central.url)).await;
        if browser.count("#duplicate-pairs .pair").await == 1 {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "no duplicate pair listed");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    browser
        .click_and_wait(
            "#duplicate-pairs .pair form[action='/ui/duplicates/merge'] button[type=submit]",
        )
        .await;
    let page = browser.text().await;
    assert!(page.contains("Merged"), "{page}");
    assert_eq!(
        browser.count("#merge-conflicts tbody tr").await,
        1,
        "{page}"
    );
    shot(&browser, "hq-merged").await;
    let (kept, other) = (ids[0].min(ids[1]), ids[0].max(ids[1]));
    let r = http
        .get(format!("{}/v1/patients/{other}", central.url))
        .bearer_auth(&central.admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), reqwest::StatusCode::GONE);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["replaced_by"], kept.to_string());

    // HQ: a clinic whose last push was two hours ago on a 5-minute
    // schedule is highlighted as silent; the others are not.
    let now = chrono::Utc::now().timestamp();
    let report = Report {
        version: "0.1.0".into(),
        pending: 4,
        jobs: vec![JobReport {
            job: "push".into(),
            ok_at: Some(now - 7200),
            fail_at: Some(now - 7000),
            ok: Some(false),
            error: Some("central did not answer: check the link".into()),
            every: Some(300),
        }],
        ..Report::default()
    };
    central
        .central
        .db
        .save_report(SavedReport {
            instance: c_id,
            at: now - 7000,
            report: serde_json::to_string(&report).expect("json"),
            lag: 12,
            pending: 4,
            calls: 1,
            conflicts: 0,
        })
        .await
        .expect("save");
    // Reports are stored in the background: a's last one is from its pull.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    browser.goto(&format!("{}/ui", central.url)).await;
    let row = browser.find(&format!("#clinic-{c_id}")).await;
    assert_eq!(row.attribute("class").await.as_deref(), Some("silent"));
    let text = row.text().await;
    assert!(
        text.contains("SILENT for 1 h") || text.contains("SILENT for 2 h"),
        "{text}"
    );
    assert!(
        text.contains("central did not answer: check the link"),
        "{text}"
    );
    let a_id = a.sat.config.central.instance_id;
    let a_row = browser.find(&format!("#clinic-{a_id}")).await;
    assert_eq!(a_row.attribute("class").await, None);
    assert!(a_row.text().await.contains("ok"));
    let summary = browser.find("#summary").await.text().await;
    assert_eq!(summary, "3 clinics, 1 silent");
    assert!(browser.count("svg").await >= 4, "plots");
    shot(&browser, "hq").await;
    drop(browser);
    for s in sats {
        s.stop().await;
    }
}
