//! `chartsync demo`: a central and two clinics on 127.0.0.1 in a temporary
//! folder, with the embedded defaults. Clinics register patients while
//! central is down, sync, merge a concurrent edit, and keep a true conflict
//! for review until a clinician resolves it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chartsync_satellite::jobs::{Job, Summary, no_progress, run_once};
use chartsync_satellite::{Satellite, SatelliteConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Clinic {
    name: &'static str,
    url: String,
    sat: Arc<Satellite>,
    _stop: oneshot::Sender<()>,
}

fn say(text: &str) {
    println!("{text}");
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn report(s: &Summary) {
    println!(
        "   {:<9} sent {:>4}  received {:>4}  merged {}  conflicts {}  | {:>7} bytes up {:>7} bytes down, {} round trip(s), {:.2} s",
        s.job,
        s.records_sent,
        s.records_received,
        s.merged,
        s.conflicts,
        s.bytes_sent,
        s.bytes_received,
        s.round_trips,
        s.seconds
    );
}

async fn free_port() -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

async fn start_clinic(
    dir: &Path,
    name: &'static str,
    central_url: &str,
    id: u32,
    token: &str,
) -> anyhow::Result<Clinic> {
    let text = format!(
        "data_dir = \"{name}\"\nname = \"{name}\"\n[central]\nurl = \"{central_url}\"\ninstance_id = {id}\ntoken = \"{token}\"\ntimeout_secs = 10\n"
    );
    let config = SatelliteConfig::parse(&text, &dir.join(format!("{name}.toml")))?;
    let sat = Satellite::open(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(chartsync_satellite::serve(
        Arc::clone(&sat),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Clinic {
        name,
        url,
        sat,
        _stop: stop,
    })
}

async fn sync(clinic: &Clinic, jobs: &[Job]) -> anyhow::Result<Summary> {
    let s = run_once(&clinic.sat, jobs, Duration::from_secs(60), no_progress())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{} sync failed: {}",
                clinic.name,
                chartsync_satellite::error_chain(&e)
            )
        })?;
    let mut shown = s.clone();
    shown.job = format!("{} {}", clinic.name, s.job);
    report(&shown);
    Ok(s)
}

fn patient_yaml(n: usize, clinic: &str) -> String {
    // Each clinic's patients have phone numbers of their own (the same
    // number and birth date at two clinics would be one person).
    let exchange = if clinic.starts_with("north") { 1 } else { 2 };
    format!(
        "name: Patient {n} of {clinic}\nborn: 19{:02}-0{}-1{}\ncatchment: valley\nphone: '07{exchange}{n:07}'\nallergies: []\nencounters:\n  - date: 2026-11-0{}\n    reason: registration\n",
        n % 100,
        n % 9 + 1,
        n % 10,
        n % 9 + 1
    )
}

/// The demo's admin token (central listens on 127.0.0.1 only).
const DEMO_ADMIN_TOKEN: &str = "demo-admin-token-only-for-127.0.0.1";

/// Polls central's duplicate list until it holds the pair `a`, `b`.
async fn wait_for_pair(
    http: &reqwest::Client,
    central: &str,
    a: &str,
    b: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{central}/v1/duplicates"))
            .bearer_auth(DEMO_ADMIN_TOKEN)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET /v1/duplicates answered {}", r.status());
        }
        let body: Value = r.json().await?;
        let found = body["pairs"].as_array().into_iter().flatten().find(|p| {
            let ids = [p["a"].as_str(), p["b"].as_str()];
            ids.contains(&Some(a)) && ids.contains(&Some(b))
        });
        if let Some(pair) = found {
            return Ok(pair.clone());
        }
        if Instant::now() > deadline {
            bail!("central did not list the duplicate pair within 30 s: {body}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn create(
    http: &reqwest::Client,
    clinic: &Clinic,
    yaml: &str,
) -> anyhow::Result<(String, String)> {
    let r = http
        .post(format!("{}/v1/patients", clinic.url))
        .header(
            "chartsync-author",
            format!("Registration desk <desk@{}>", clinic.name),
        )
        .json(&json!({"files": {"patient.yaml": yaml}}))
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!(
            "creating a patient at {} answered {}",
            clinic.name,
            r.status()
        );
    }
    let etag = r.headers()["etag"].to_str()?.to_string();
    let body: Value = r.json().await?;
    Ok((body["id"].as_str().context("id")?.to_string(), etag))
}

async fn read(
    http: &reqwest::Client,
    clinic: &Clinic,
    id: &str,
) -> anyhow::Result<(Value, String)> {
    let r = http
        .get(format!("{}/v1/patients/{id}", clinic.url))
        .send()
        .await?;
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let body: Value = r.json().await?;
    let doc = chartsync_merge::parse_yaml(
        body["files"]["patient.yaml"]
            .as_str()
            .context("patient.yaml")?,
    )?;
    Ok((doc, etag))
}

async fn patch(
    http: &reqwest::Client,
    clinic: &Clinic,
    id: &str,
    author: &str,
    body: Value,
) -> anyhow::Result<()> {
    let (_, etag) = read(http, clinic, id).await?;
    let r = http
        .patch(format!("{}/v1/patients/{id}", clinic.url))
        .header("content-type", "application/merge-patch+json")
        .header("if-match", etag)
        .header("chartsync-author", author)
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "patching at {} answered {}: {}",
            clinic.name,
            r.status(),
            r.text().await?
        );
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(patients: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let http = reqwest::Client::builder().build()?;
    say("chartsync demo: one central (HQ) and two clinics on 127.0.0.1");
    say(&format!("data in {}", dir.path().display()));

    step(
        1,
        "HQ registers two clinics in catchment \"valley\" (central is not running yet)",
    );
    let central_config = chartsync_central::CentralConfig::parse(
        &format!("data_dir = \"central\"\nadmin_token = \"{DEMO_ADMIN_TOKEN}\"\n"),
        &dir.path().join("central.toml"),
    )?;
    std::fs::create_dir_all(&central_config.data_dir)?;
    let db = chartsync_central::db::sqlite::SqliteDb::open(
        &central_config.data_dir.join("central.sqlite"),
    )?;
    let mut tokens = Vec::new();
    for name in ["north-clinic", "river-clinic"] {
        let (instance, token) = chartsync_central::auth::register_instance(
            &db,
            None,
            name.into(),
            vec!["valley".into()],
        )
        .await?;
        say(&format!(
            "   {name}: instance {} (token shown once, kept in its config)",
            instance.id
        ));
        tokens.push((instance.id, token));
    }
    let port = free_port().await?;
    let central_url = format!("http://127.0.0.1:{port}");
    let a = start_clinic(
        dir.path(),
        "north-clinic",
        &central_url,
        tokens[0].0,
        &tokens[0].1,
    )
    .await?;
    let b = start_clinic(
        dir.path(),
        "river-clinic",
        &central_url,
        tokens[1].0,
        &tokens[1].1,
    )
    .await?;

    step(
        2,
        &format!(
            "While central is down, the clinics register {patients} patients each and keep editing"
        ),
    );
    let t = Instant::now();
    let mut ids_a = Vec::new();
    for n in 0..patients {
        ids_a.push(create(&http, &a, &patient_yaml(n, a.name)).await?.0);
    }
    let mut ids_b = Vec::new();
    for n in 0..patients {
        ids_b.push(create(&http, &b, &patient_yaml(n, b.name)).await?.0);
    }
    for id in ids_a.iter().take(patients / 4) {
        patch(
            &http,
            &a,
            id,
            "Nurse Achieng <achieng@north>",
            json!({"patient.yaml": {"weight_kg": 58}}),
        )
        .await?;
    }
    say(&format!(
        "   {} records created and {} edited over HTTP in {:.2} s, all offline",
        2 * patients,
        patients / 4,
        t.elapsed().as_secs_f64()
    ));
    match run_once(&a.sat, &[Job::Push], Duration::from_secs(10), no_progress()).await {
        Ok(_) => bail!("a push with central down should fail"),
        Err(e) => say(&format!(
            "   push attempt: {} (nothing lost: {} changes wait)",
            chartsync_satellite::error_chain(&e),
            chartsync_satellite::status(&a.sat)?.pending_push
        )),
    }

    step(
        3,
        "Central starts; each clinic pushes, pulls and fetches the other's patients",
    );
    let central = chartsync_central::Central::open(central_config, db).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let (central_stop, central_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(chartsync_central::serve(
        Arc::clone(&central),
        listener,
        None,
        async move {
            let _ = central_stopped.await;
        },
    ));
    sync(&a, &Job::ALL).await?;
    sync(&b, &Job::ALL).await?;
    sync(&a, &Job::ALL).await?;
    let status_a = chartsync_satellite::status(&a.sat)?;
    say(&format!(
        "   north-clinic now has {} pending pushes; both clinics hold all {} patients",
        status_a.pending_push,
        2 * patients
    ));

    step(
        4,
        "A concurrent edit: north records an allergy, river a new phone number, same patient, both offline",
    );
    let shared = ids_a[0].clone();
    patch(
        &http,
        &a,
        &shared,
        "Dr. Obi <obi@north>",
        json!({"patient.yaml": {"allergies": ["penicillin"]}}),
    )
    .await?;
    patch(
        &http,
        &b,
        &shared,
        "Desk <desk@river>",
        json!({"patient.yaml": {"phone": "0799 000 111"}}),
    )
    .await?;
    sync(&a, &[Job::Push]).await?;
    let s = sync(&b, &[Job::Push]).await?;
    sync(&a, &[Job::Pull]).await?;
    let (doc_a, etag_a) = read(&http, &a, &shared).await?;
    let (_, etag_b) = read(&http, &b, &shared).await?;
    say(&format!(
        "   merged field by field ({} merge): allergies {} and phone {} at both clinics, same version {} = {}",
        s.merged, doc_a["allergies"], doc_a["phone"], etag_a, etag_b
    ));
    if etag_a != etag_b
        || doc_a["phone"] != "0799 000 111"
        || doc_a["allergies"] != json!(["penicillin"])
    {
        bail!("the clinics did not converge");
    }

    step(
        5,
        "A true conflict: both clinics change the same patient's date of birth",
    );
    let disputed = ids_a[1].clone();
    patch(
        &http,
        &a,
        &disputed,
        "Dr. Obi <obi@north>",
        json!({"patient.yaml": {"born": "1951-03-04"}}),
    )
    .await?;
    patch(
        &http,
        &b,
        &disputed,
        "Dr. Lule <lule@river>",
        json!({"patient.yaml": {"born": "1915-03-04"}}),
    )
    .await?;
    sync(&a, &[Job::Push]).await?;
    sync(&b, &[Job::Push]).await?;
    let conflicts: Vec<Value> = http
        .get(format!("{}/v1/conflicts", b.url))
        .send()
        .await?
        .json()
        .await?;
    let c = conflicts.first().context("the conflict should be queued")?;
    let (doc_b, _) = read(&http, &b, &disputed).await?;
    say(&format!(
        "   river-clinic's record keeps central's value ({}); its own value {} waits in its conflict queue: {} {} base {} ours {} theirs {}",
        doc_b["born"], c["ours"], c["file"], c["path"], c["base"], c["ours"], c["theirs"]
    ));
    say(&format!(
        "   and its commit stays in git under refs/chartsync/conflicts/{}",
        c["ours_commit"].as_str().unwrap_or_default()
    ));

    step(
        6,
        "A clinician at river-clinic checks the paper chart: river's date was right",
    );
    let mut resolved = doc_b.clone();
    resolved["born"] = json!("1915-03-04");
    let r = http
        .post(format!("{}/v1/conflicts/{}/resolve", b.url, c["id"]))
        .header("chartsync-author", "Dr. Lule <lule@river>")
        .header(
            "chartsync-message",
            "Date of birth checked against the paper chart",
        )
        .json(&json!({"files": {"patient.yaml": chartsync_merge::to_yaml(&resolved)}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("resolving answered {}", r.status());
    }
    sync(&b, &[Job::Push]).await?;
    sync(&a, &[Job::Pull]).await?;
    let (doc_a, _) = read(&http, &a, &disputed).await?;
    if doc_a["born"] != "1915-03-04" {
        bail!("the resolution did not reach north-clinic");
    }
    say(&format!(
        "   resolved: born {} at both clinics; open conflicts now {} and {}",
        doc_a["born"],
        chartsync_satellite::status(&a.sat)?.open_conflicts,
        chartsync_satellite::status(&b.sat)?.open_conflicts
    ));

    step(
        7,
        "The same woman registers at both clinics before either syncs, her name spelled two ways",
    );
    let (amina_a, _) = create(
        &http,
        &a,
        "given_name: Amina\nfamily_name: Odhiambo\nborn: '1990-04-12'\nsex: F\ncatchment: valley\nallergies: [penicillin]\n",
    )
    .await?;
    let (amina_b, _) = create(
        &http,
        &b,
        "given_name: Aminah\nfamily_name: Odiambo\nborn: '1990-04-12'\nsex: F\ncatchment: valley\nallergies: [sulfonamides]\n",
    )
    .await?;
    sync(&a, &[Job::Push]).await?;
    sync(&b, &[Job::Push]).await?;
    let pair = wait_for_pair(&http, &central_url, &amina_a, &amina_b).await?;
    say(&format!(
        "   HQ's GET /v1/duplicates lists the pair within seconds, score {}:",
        pair["score"]
    ));
    for f in pair["fields"].as_array().into_iter().flatten() {
        say(&format!(
            "     {:<12} {:<12} {:<12} similarity {}",
            f["field"].as_str().unwrap_or_default(),
            f["a"].as_str().unwrap_or_default(),
            f["b"].as_str().unwrap_or_default(),
            f["similarity"]
        ));
    }
    say("   (a clinician checks both charts: each holds an allergy the other lacks)");

    step(
        8,
        "HQ decides they are the same person and merges the two records",
    );
    let head_at_central = |id: String| {
        let http = http.clone();
        let url = format!("{central_url}/v1/patients/{id}");
        async move {
            let r = http.get(url).bearer_auth(DEMO_ADMIN_TOKEN).send().await?;
            if !r.status().is_success() {
                bail!("reading {id} at central answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(r.headers()["etag"].to_str()?.to_string())
        }
    };
    let survivor_head = head_at_central(amina_a.clone()).await?;
    let other_head = head_at_central(amina_b.clone()).await?;
    let r = http
        .post(format!("{central_url}/v1/patients/{amina_a}/merge"))
        .bearer_auth(DEMO_ADMIN_TOKEN)
        .header("if-match", survivor_head)
        .header("chartsync-author", "Records officer <records@hq>")
        .json(&json!({"retire": amina_b, "retire_if_match": other_head}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("the merge answered {}: {}", r.status(), r.text().await?);
    }
    let merged: Value = r.json().await?;
    for c in merged["conflicts"].as_array().into_iter().flatten() {
        say(&format!(
            "   {} differs: kept {}, the other record said {} (listed for a clinician)",
            c["path"].as_str().unwrap_or_default(),
            c["kept"],
            c["other"]
        ));
    }
    sync(&a, &Job::ALL).await?;
    sync(&b, &Job::ALL).await?;
    for clinic in [&a, &b] {
        let (doc, _) = read(&http, clinic, &amina_a).await?;
        let allergies: Vec<&str> = doc["allergies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !allergies.contains(&"penicillin") || !allergies.contains(&"sulfonamides") {
            bail!(
                "{} lost an allergy in the merge: {allergies:?}",
                clinic.name
            );
        }
        let gone = http
            .get(format!("{}/v1/patients/{amina_b}", clinic.url))
            .send()
            .await?;
        let status = gone.status();
        let body: Value = gone.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::GONE || body["replaced_by"] != amina_a.as_str() {
            bail!(
                "{}: the retired record answered {status} {body}",
                clinic.name
            );
        }
        say(&format!(
            "   {}: one record for her, allergies {}; the other answers 410, replaced_by {}",
            clinic.name,
            allergies.join(", "),
            &amina_a[..8]
        ));
    }

    step(9, "The audit trail is plain git");
    let id: chartsync_protocol::PatientId = disputed.parse()?;
    for entry in a.sat.store.history(&id)?.iter().take(5) {
        say(&format!(
            "   {} {} {:<32} {}",
            &entry.commit.to_string()[..10],
            entry.time,
            entry.author,
            entry.message.lines().next().unwrap_or_default()
        ));
    }
    say(&format!(
        "   git --git-dir {} log -p",
        a.sat.store.layout().repo(&id).display()
    ));

    let _ = central_stop.send(());
    let _ = server.await;
    say(&format!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
