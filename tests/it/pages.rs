//! The pages over plain HTTP: login and sessions (cookie flags, the token
//! never in the cookie), CSRF refusals that change nothing, security
//! headers, and the HQ page with 1,000 clinics and 14 days of activity
//! (timed and printed, not asserted).

use std::time::Instant;

use chartsync_central::db::{CentralDb, NewInstance, SavedReport};
use chartsync_common::report::{JobReport, Report};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

use crate::support::{TestCentral, TestSatellite};

fn no_redirects() -> reqwest::Client {
    crate::support::crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn cookie_of(headers: &HeaderMap) -> String {
    let set = headers[SET_COOKIE].to_str().expect("ascii");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/ui"), "{set}");
    set.split(';').next().expect("pair").to_string()
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

fn secure_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_clinic_page_needs_the_api_token_and_a_csrf_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = "clinic-page-token-0123456789";
    let sat = TestSatellite::builder(dir.path())
        .config(&format!("api_token = \"{token}\""))
        .start()
        .await;
    let http = no_redirects();
    let r = http
        .get(format!("{}/ui", sat.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    secure_headers(r.headers());
    assert!(r.headers().get(SET_COOKIE).is_none());
    let html = r.text().await.expect("text");
    assert!(
        html.contains("name=\"token\"") && !html.contains("Sync now"),
        "{html}"
    );

    let r = http
        .post(format!("{}/ui/login", sat.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());

    let r = http
        .post(format!("{}/ui/login", sat.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui");
    let cookie = cookie_of(r.headers());
    assert!(
        !cookie.contains(token),
        "the cookie holds a session id, not the token"
    );

    let r = http
        .get(format!("{}/ui", sat.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("text");
    assert!(html.contains("Sync now"), "{html}");
    let csrf = csrf_in(&html);

    // Forms without the page's CSRF token are refused and run nothing.
    let runs = sat.sat.db.run_count().expect("runs");
    for (body, content_type, status) in [
        (
            String::new(),
            "application/x-www-form-urlencoded",
            StatusCode::BAD_REQUEST,
        ),
        (
            "csrf=forged".to_string(),
            "application/x-www-form-urlencoded",
            StatusCode::FORBIDDEN,
        ),
        (
            format!("csrf={}", "0".repeat(64)),
            "application/x-www-form-urlencoded",
            StatusCode::FORBIDDEN,
        ),
        (
            format!("csrf={csrf}"),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let r = http
            .post(format!("{}/ui/sync", sat.url))
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .expect("sync");
        assert_eq!(r.status(), status, "{body} as {content_type}");
    }
    // Without a session: back to the login form.
    let r = http
        .post(format!("{}/ui/sync", sat.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .expect("sync");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(sat.sat.db.run_count().expect("runs"), runs, "nothing ran");

    // With both, the jobs run (central is not there: the page says so).
    let r = http
        .post(format!("{}/ui/sync", sat.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .expect("sync");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("text");
    assert!(
        html.contains("Sync failed: central did not answer: check the link."),
        "{html}"
    );
    assert!(sat.sat.db.run_count().expect("runs") > runs);

    // Logging out ends the session.
    let r = http
        .post(format!("{}/ui/logout", sat.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = http
        .get(format!("{}/ui", sat.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(html.contains("name=\"token\""), "logged out");
    sat.stop().await;
}

#[tokio::test]
async fn a_clinic_without_api_token_needs_no_login() {
    let dir = tempfile::tempdir().expect("tmp");
    let sat = TestSatellite::builder(dir.path()).start().await;
    let http = no_redirects();
    let r = http
        .get(format!("{}/ui", sat.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    cookie_of(r.headers());
    let html = r.text().await.expect("text");
    assert!(
        html.contains("Sync now") && html.contains("never synced"),
        "{html}"
    );
    let css = http
        .get(format!("{}/ui/style.css", sat.url))
        .send()
        .await
        .expect("css");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    sat.stop().await;
}

#[tokio::test]
async fn hq_page_takes_the_admin_token_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path()).start().await;
    let (_, instance_token) = central.add_instance("north-a", &["north"]).await;
    let http = no_redirects();
    let r = http
        .get(format!("{}/ui", central.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    secure_headers(r.headers());
    assert!(r.text().await.expect("text").contains("name=\"token\""));
    for wrong in [instance_token.as_str(), "nope", ""] {
        let r = http
            .post(format!("{}/ui/login", central.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={wrong}"))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let r = http
        .post(format!("{}/ui/login", central.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", central.admin))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = cookie_of(r.headers());
    let html = http
        .get(format!("{}/ui", central.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        html.contains("north-a") && html.contains("no report yet"),
        "{html}"
    );
}

/// Benchmark-style: the HQ page with 1,000 clinics, each with a report and
/// 14 days of hourly activity (336,000 rows). Prints the time; the target
/// is under one second (in a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_page_with_1000_clinics() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("c")).start().await;
    let db = &central.central.db;
    let now = chrono::Utc::now().timestamp();
    let start = Instant::now();
    for i in 0..1000u32 {
        db.add_instance(NewInstance {
            id: None,
            name: format!("clinic-{i:04}"),
            catchments: vec![format!("c{}", i % 50)],
            token_hash: {
                let mut h = [0u8; 32];
                h[..4].copy_from_slice(&i.to_le_bytes());
                h
            },
        })
        .await
        .expect("add");
    }
    let instances = db.instances().await.expect("instances");
    for inst in &instances {
        let report = Report {
            version: "0.1.0".into(),
            pending: u64::from(inst.id % 7),
            conflicts: u64::from(inst.id % 3),
            jobs: ["push", "pull", "fetch-new"]
                .iter()
                .map(|j| JobReport {
                    job: (*j).into(),
                    ok_at: Some(now - i64::from(inst.id % 40) * 60),
                    ok: Some(inst.id % 10 != 0),
                    error: (inst.id % 10 == 0)
                        .then(|| "central did not answer: check the link".into()),
                    every: Some(300),
                    ..JobReport::default()
                })
                .collect(),
            ..Report::default()
        };
        db.save_report(SavedReport {
            instance: inst.id,
            at: now - 60,
            report: serde_json::to_string(&report).expect("json"),
            lag: u64::from(inst.id % 100),
            pending: report.pending,
            calls: 1,
            conflicts: report.conflicts,
        })
        .await
        .expect("save");
    }
    // 14 days of hourly activity, written straight into the file in one
    // transaction (the servers add one row per clinic and hour).
    let mut conn = rusqlite::Connection::open(dir.path().join("c/central.sqlite")).expect("open");
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare(
                "INSERT OR REPLACE INTO instance_activity (instance, hour, calls, lag, pending, conflicts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .expect("prepare");
        let hour = now / 3600;
        for inst in &instances {
            for h in 0..14 * 24 {
                let id = i64::from(inst.id);
                insert
                    .execute(rusqlite::params![
                        id,
                        hour - h,
                        12 + (id + h) % 5,
                        (id * h) % 50,
                        id % 7,
                        id % 3
                    ])
                    .expect("insert");
            }
        }
    }
    tx.commit().expect("commit");
    println!(
        "bench hq_page: set up 1000 clinics and 336000 activity rows in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let http = no_redirects();
    let r = http
        .post(format!("{}/ui/login", central.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", central.admin))
        .send()
        .await
        .expect("login");
    let cookie = cookie_of(r.headers());
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let r = http
            .get(format!("{}/ui", central.url))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.expect("text");
        times.push(t.elapsed().as_secs_f64());
        size = html.len();
        assert_eq!(html.matches("<tr id=\"clinic-").count(), 1000);
        assert!(html.contains("1000 clinics"), "summary");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "bench hq_page: 1000 clinics, 14 days of activity: {:.3} s median (min {:.3} s) per page, {} KB of HTML ({} build; target < 1 s)",
        times[1],
        times[0],
        size / 1024,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// HQ's duplicates queue: "same person: merge" (with the page's CSRF
/// token) merges the second record into the first; a forged token changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_merges_a_duplicate_pair_from_the_page() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path()).start().await;
    let http = no_redirects();
    let mut ids = Vec::new();
    for (given, allergy) in [("Esther", "penicillin"), ("Ester", "latex")] {
        let (id, _) = central
            .create(
                &http,
                &format!("given_name: {given}\nfamily_name: Njeri\nborn: '1961-02-03'\nsex: F\ncatchment: south\nallergies: [{allergy}]\n"),
            )
            .await;
        ids.push(id);
    }
    let r = http
        .post(format!("{}/ui/login", central.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", central.admin))
        .send()
        .await
        .expect("login");
    let cookie = cookie_of(r.headers());
    let page = || async {
        http.get(format!("{}/ui", central.url))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("text")
    };
    let start = Instant::now();
    let html = loop {
        let html = page().await;
        if html.contains("action=\"/ui/duplicates/merge\"") {
            break html;
        }
        assert!(start.elapsed().as_secs() < 20, "no pair listed: {html}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(html.contains("Same person: merge"), "{html}");
    let csrf = csrf_in(&html);
    let form = |token: &str| format!("csrf={token}&a={}&b={}", ids[0], ids[1]);
    let post = |body: String| {
        http.post(format!("{}/ui/duplicates/merge", central.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let forged = post(form(&"0".repeat(64))).await.expect("post");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let read = |id: chartsync_protocol::PatientId| {
        http.get(format!("{}/v1/patients/{id}", central.url))
            .bearer_auth(&central.admin)
            .send()
    };
    assert_eq!(read(ids[1]).await.expect("get").status(), StatusCode::OK);

    let merged = post(form(&csrf)).await.expect("post");
    assert_eq!(merged.status(), StatusCode::OK);
    let html = merged.text().await.expect("text");
    assert!(html.contains("Merged"), "{html}");
    assert!(
        html.contains("id=\"merge-conflicts\"") && html.contains("Ester"),
        "{html}"
    );
    let gone = read(ids[1]).await.expect("get");
    assert_eq!(gone.status(), StatusCode::GONE);
    let body: serde_json::Value = gone.json().await.expect("json");
    assert_eq!(body["replaced_by"], ids[0].to_string());
    let kept: serde_json::Value = read(ids[0]).await.expect("get").json().await.expect("json");
    let doc = crate::support::patient_doc(&kept);
    assert_eq!(doc["allergies"], serde_json::json!(["penicillin", "latex"]));
    // The pair leaves the queue (a retired record is nobody's duplicate);
    // merging again is refused, changing nothing.
    let start = Instant::now();
    while page().await.contains("action=\"/ui/duplicates/merge\"") {
        assert!(start.elapsed().as_secs() < 20, "the pair stays listed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let again = post(form(&csrf)).await.expect("post");
    assert_eq!(again.status(), StatusCode::CONFLICT);
}
