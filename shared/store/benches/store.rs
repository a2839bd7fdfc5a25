//! Record store micro-benchmark: durable creates and conditional writes per
//! second, single and group-committed.
//!
//! Run: cargo bench -p chartsync-shared --bench store
//! (divan prints time per operation; operations per second = 1 / time.)

use std::cell::RefCell;

use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, Flush, RecordStore, StoreOptions};

fn main() {
    divan::main();
}

/// A patient document of about 2 KB.
fn record(n: usize) -> Files {
    let mut yaml =
        format!("name: Patient {n}\nborn: 1980-01-01\ncatchment: north\nphone: '0700 {n:06}'\n");
    yaml.push_str("allergies:\n  - penicillin\nencounters:\n");
    let mut i = 0;
    while yaml.len() < 2000 {
        yaml.push_str(&format!(
            "  - date: 2026-10-{:02}\n    note: routine visit number {i} with vitals recorded\n",
            i % 28 + 1
        ));
        i += 1;
    }
    Files::from([("patient.yaml".to_string(), yaml)])
}

fn meta() -> CommitMeta {
    CommitMeta::new("Bench", "bench@example", "bench")
}

fn open() -> (tempfile::TempDir, RecordStore) {
    let dir =
        tempfile::tempdir_in(std::env::var("CHARTSYNC_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tmp");
    let store = RecordStore::open(StoreOptions::new(dir.path(), "bench")).expect("open");
    (dir, store)
}

/// One durable creation (fsync of every file, rename into place).
#[divan::bench(sample_count = 20, sample_size = 50)]
fn create(bencher: divan::Bencher) {
    let (_dir, store) = open();
    let files = record(1);
    bencher.bench_local(|| {
        store
            .write(
                &PatientId::random(),
                Condition::MustCreate,
                Change::Replace(files.clone()),
                &meta(),
            )
            .expect("create")
    });
}

/// One durable conditional write (MatchHead) to an existing record.
#[divan::bench(sample_count = 20, sample_size = 50)]
fn conditional_write(bencher: divan::Bencher) {
    let (_dir, store) = open();
    let records: Vec<(PatientId, CommitId)> = (0..500)
        .map(|n| {
            let id = PatientId::random();
            let head = store
                .write(
                    &id,
                    Condition::MustCreate,
                    Change::Replace(record(n)),
                    &meta(),
                )
                .expect("create");
            (id, head)
        })
        .collect();
    let state = RefCell::new((records, 0usize));
    bencher.bench_local(|| {
        let mut s = state.borrow_mut();
        let (records, n) = &mut *s;
        *n += 1;
        let i = *n % records.len();
        let (id, head) = records[i];
        let new = store
            .write(
                &id,
                Condition::MatchHead(head),
                Change::Replace(record(*n)),
                &meta(),
            )
            .expect("write");
        records[i].1 = new;
    });
}

/// A group commit of 100 conditional writes: objects and head locks for all,
/// one flush, all heads moved, one flush. Time is per batch of 100.
#[divan::bench(sample_count = 10, sample_size = 3)]
fn conditional_write_batch_of_100(bencher: divan::Bencher) {
    let (_dir, store) = open();
    let records: Vec<(PatientId, CommitId)> = (0..100)
        .map(|n| {
            let id = PatientId::random();
            let head = store
                .write(
                    &id,
                    Condition::MustCreate,
                    Change::Replace(record(n)),
                    &meta(),
                )
                .expect("create");
            (id, head)
        })
        .collect();
    let state = RefCell::new((records, 0usize));
    bencher.bench_local(|| {
        let mut s = state.borrow_mut();
        let (records, n) = &mut *s;
        *n += 1;
        let prepared: Vec<_> = records
            .iter()
            .map(|(id, head)| {
                store
                    .prepare(
                        id,
                        Condition::MatchHead(*head),
                        Change::Replace(record(*n)),
                        &meta(),
                        Flush::Deferred,
                    )
                    .expect("prepare")
            })
            .collect();
        store.flush().expect("flush");
        for (slot, p) in records.iter_mut().zip(prepared) {
            slot.1 = store.publish(p, Flush::Deferred).expect("publish");
        }
        store.flush().expect("flush");
    });
}
