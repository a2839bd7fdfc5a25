//! Receiving records from another instance: `prepare_received` of new
//! records (whole history) and of edits (one commit on top of a stored
//! head), the work central does per pushed record and a satellite per
//! pulled one. Prints the best and the median of several rounds, in
//! microseconds per record (CPU-bound; flushes deferred).
//!
//! Run: cargo bench -p chartsync-store --bench receive

use std::time::{Duration, Instant};

use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, Flush, Received, RecordStore, StoreOptions};

const RECORDS: usize = 300;
const ROUNDS: usize = 7;

fn files(n: usize, edit: bool) -> Files {
    let mut f = Files::new();
    f.insert(
        "patient.yaml".into(),
        format!(
            "name: Patient {n}\nborn: 1980-01-01\ncatchment: north\nphone: '0700 {}'\n",
            if edit { 1 } else { 0 }
        ),
    );
    f.insert(
        "visits/2026-10-01.yaml".into(),
        "date: 2026-10-01\nnote: routine visit\n".into(),
    );
    f.insert(
        "visits/2026-11-02.yaml".into(),
        "date: 2026-11-02\nbp: 120/80\n".into(),
    );
    f
}

fn open(dir: &std::path::Path, name: &str) -> RecordStore {
    RecordStore::open(StoreOptions::new(dir.join(name), name)).expect("open")
}

fn take(store: &RecordStore, r: Received) {
    match r {
        Received::Ready(p) => {
            store.publish(p, Flush::Deferred).expect("publish");
        }
        Received::Stale { current } => panic!("stale {current:?}"),
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = open(dir.path(), "a");
    let meta = CommitMeta::new("Bench", "bench@example", "bench");
    #[allow(clippy::type_complexity)]
    let mut records: Vec<(PatientId, CommitId, Vec<u8>, CommitId, Vec<u8>)> = Vec::new();
    for n in 0..RECORDS {
        let id = PatientId::random();
        let h1 = a
            .write(
                &id,
                Condition::MustCreate,
                Change::Replace(files(n, false)),
                &meta,
            )
            .expect("create");
        let h2 = a
            .write(
                &id,
                Condition::MatchHead(h1),
                Change::Replace(files(n, true)),
                &meta,
            )
            .expect("edit");
        let full = a.pack_since(&id, h1, &[]).expect("pack");
        let edit = a.pack_since(&id, h2, &[h1]).expect("pack");
        records.push((id, h1, full, h2, edit));
    }
    let mut new_times = Vec::new();
    let mut edit_times = Vec::new();
    for round in 0..ROUNDS {
        let b = open(dir.path(), &format!("b{round}"));
        let mut spent = Duration::ZERO;
        for (id, h1, full, _, _) in &records {
            let start = Instant::now();
            let r = b.prepare_received(id, None, *h1, full, Flush::Deferred);
            spent += start.elapsed();
            take(&b, r.expect("new record"));
        }
        new_times.push(spent);
        let mut spent = Duration::ZERO;
        for (id, h1, _, h2, edit) in &records {
            let start = Instant::now();
            let r = b.prepare_received(id, Some(*h1), *h2, edit, Flush::Deferred);
            spent += start.elapsed();
            take(&b, r.expect("edit"));
        }
        edit_times.push(spent);
        b.flush().expect("flush");
    }
    for (what, mut times) in [("new record", new_times), ("edit", edit_times)] {
        times.sort();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / RECORDS as f64;
        println!(
            "receive {what:<10}  best {:7.1} us/record  median {:7.1} us/record",
            per(times[0]),
            per(times[times.len() / 2])
        );
    }
}
