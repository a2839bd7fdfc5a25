//! Batches fit the link: through a proxy that carries 32 kB/s each way
//! (tests/support/proxy.rs, `Fault::Pace`), with `[sync] batch_secs = 1`, a
//! satellite that has measured its link pushes and fetches 200 new records
//! in several batches, where one on a direct connection (a LAN) sends them
//! in one. Only counts are asserted, never times.

use chartsync_protocol::PatientId;
use chartsync_satellite::jobs::Job;

use crate::support::proxy::{Fault, Proxy};
use crate::support::{TestCentral, TestSatellite, client};

/// Bytes per second of the slow link.
const RATE: u64 = 32_000;

/// Creates `n` records of about 1 kB that compress little (random hex),
/// marked changed, straight in the store.
fn create(sat: &TestSatellite, catchment: &str, n: usize) {
    for i in 0..n {
        let id = PatientId::random();
        let noise: String = (0..28).map(|_| PatientId::random().to_string()).collect();
        let files = chartsync_protocol::Files::from([(
            "patient.yaml".to_string(),
            format!("name: Patient {i}\ncatchment: {catchment}\nnote: {noise}\n"),
        )]);
        sat.sat.db.mark_dirty(&id).expect("dirty");
        sat.sat
            .store
            .write(
                &id,
                chartsync_store::Condition::MustCreate,
                chartsync_store::Change::Replace(files),
                &chartsync_store::CommitMeta::new("Bulk", "bulk@test", "import"),
            )
            .expect("create");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_gets_smaller_batches_than_a_lan() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let proxy = Proxy::start(&central.url).await;
    proxy.set(Fault::Pace(RATE));
    let mut sats = Vec::new();
    for (name, catchment, url) in [
        ("slow-a", "hills", &proxy.url),
        ("slow-b", "hills", &proxy.url),
        ("lan", "plain", &central.url),
    ] {
        let (id, token) = central.add_instance(name, &[catchment]).await;
        sats.push(
            TestSatellite::builder(dir.path().join(name))
                .central(url)
                .instance(id, &token)
                .config("[sync]\nbatch_secs = 1")
                .start()
                .await,
        );
    }
    let (a, b, lan) = (&sats[0], &sats[1], &sats[2]);

    // First runs: the link is measured (from calls of 32 KB or more: 80
    // of these records make about 45 KB on the wire in protocol 4).
    create(a, "hills", 80);
    assert_eq!(a.sync(&[Job::Push]).await.records_sent, 80);
    assert_eq!(b.sync(&[Job::FetchNew]).await.records_received, 80);
    create(lan, "plain", 50);
    assert_eq!(lan.sync(&[Job::Push]).await.records_sent, 50);

    // 200 new records: one batch on the LAN...
    create(lan, "plain", 200);
    let s = lan.sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 200);
    assert_eq!(s.round_trips, 1, "the LAN sends them in one batch");

    // ... several on the slow link, each of at most about one second of it
    // (32 kB of wire, 96 kB of packs), whichever way they go.
    create(a, "hills", 200);
    proxy.take_connections();
    let s = a.sync(&[Job::Push]).await;
    assert_eq!(s.records_sent, 200);
    assert!(s.round_trips >= 3, "push: {}", s.line());
    let biggest = proxy
        .take_connections()
        .iter()
        .flat_map(|c| c.requests.clone())
        .map(|m| m.len)
        .max()
        .expect("requests");
    assert!(
        biggest < 3 * RATE,
        "a push batch of {biggest} bytes on a link of {RATE} B/s"
    );
    proxy.take_connections();
    let s = b.sync(&[Job::FetchNew]).await;
    assert_eq!(s.records_received, 200);
    assert!(
        s.round_trips >= 4,
        "fetch-new: three pages or more, and the acknowledgement: {}",
        s.line()
    );
    // Central compresses replies on a slow link as it sends them (chunked,
    // which the proxy does not follow): pages by their mean size.
    let pages = s.round_trips - 1;
    assert!(
        s.bytes_received / pages < 3 * RATE,
        "fetch-new pages of {} bytes on average on a link of {RATE} B/s",
        s.bytes_received / pages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_link_header_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = TestCentral::builder(dir.path().join("central"))
        .start()
        .await;
    let (_, token) = central.add_instance("a", &["hills"]).await;
    let response = client()
        .post(format!("{}/v1/sync/pull", central.url))
        .bearer_auth(&token)
        .header("chartsync-protocol", "3")
        .header("chartsync-link", "fast")
        .header("content-type", "application/vnd.chartsync.batch")
        .body(Vec::new())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "bad_header", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Chartsync-Link")),
        "{body}"
    );
}
