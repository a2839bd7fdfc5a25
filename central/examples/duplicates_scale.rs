//! How long central takes to find the duplicate candidates of a batch of
//! 1,000 pushed records when its index already holds N records (by hand;
//! the numbers go to docs/benchmarks.md):
//!
//!     cargo run --release -p chartsync-central --example duplicates_scale -- 1000000 [LIMITS [WARM]]
//!
//! Fills a fresh SQLite database's duplicate index with N generated
//! people (fixed seed; names drawn with a skewed frequency, so common names
//! make large blocks as in life), then times the work the indexer does per
//! batch apart from reading `patient.yaml` from git, through the indexer's
//! own functions: the candidates of 1,000 new records (a third of them
//! misspelled copies of indexed people; `stored_candidates`, a reader per
//! core), their comparison (`compare_batch`, a thread per core), and the
//! batch's write (`index_duplicates`), each as elapsed and as CPU time (all
//! threads). It prints how many of the planted copies were found (recall of
//! blocking and scoring at this size).
//!
//! The fill writes the rows `index_duplicates` would write (each record's
//! stored keys, and one member row per key with its fields) straight into
//! the tables in key order, in one transaction, since a million records
//! one batch at a time take tens of minutes on a small machine; it then
//! checks the member rows against the keys, so the index is the real one.

use std::time::{Duration, Instant};

use chartsync_central::db::CentralDb;
use chartsync_central::db::sqlite::SqliteDb;
use chartsync_central::duplicates::{Pending, compare_batch, stored_candidates};
use chartsync_dedup::{BirthDate, MAX_BLOCK, Person, stored_keys};
use chartsync_protocol::PatientId;

const GIVEN: &[&str] = &[
    "amina", "grace", "john", "mary", "peter", "esther", "joseph", "faith", "david", "ruth",
    "samuel", "mercy", "daniel", "agnes", "james", "lucy", "paul", "jane", "moses", "rose",
    "isaac", "alice", "brian", "joy", "kevin", "ann", "dennis", "sarah", "felix", "irene",
    "hassan", "fatuma", "ali", "zainabu", "omar", "halima", "musa", "rehema", "juma", "neema",
];
const FAMILY: &[&str] = &[
    "odhiambo",
    "wanjiru",
    "kamau",
    "otieno",
    "mwangi",
    "njeri",
    "ochieng",
    "wambui",
    "kiprop",
    "chebet",
    "mutua",
    "akinyi",
    "kariuki",
    "achieng",
    "omondi",
    "wafula",
    "nyambura",
    "kibet",
    "muthoni",
    "onyango",
    "barasa",
    "wekesa",
    "cheruiyot",
    "jeptoo",
    "ngugi",
    "karanja",
    "mohamed",
    "abdi",
    "hussein",
    "juma",
    "bakari",
    "hamisi",
    "salim",
    "said",
    "rashid",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed: low indexes far more often (names are not uniform).
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(n as u64) as usize;
        let b = self.below(n as u64) as usize;
        a.min(b)
    }
}

fn person(rng: &mut Rng) -> Person {
    // Names vary beyond the lists: a suffix letter pair makes ~26x more.
    let suffix = |rng: &mut Rng| {
        let c = (b'a' + rng.below(26) as u8) as char;
        if rng.below(3) == 0 {
            String::new()
        } else {
            c.to_string()
        }
    };
    let given = format!("{}{}", GIVEN[rng.skewed(GIVEN.len())], suffix(rng));
    let family = format!("{}{}", FAMILY[rng.skewed(FAMILY.len())], suffix(rng));
    let born = format!(
        "{:04}{:02}{:02}",
        1930 + rng.below(90),
        1 + rng.below(12),
        1 + rng.below(28)
    );
    Person {
        given_name: Some(given),
        family_name: Some(family),
        birth_date: Some(BirthDate(born)),
        sex: Some(if rng.below(2) == 0 { "f" } else { "m" }.into()),
        address: Some(format!(
            "{} {} road {} village",
            1 + rng.below(400),
            FAMILY[rng.below(FAMILY.len() as u64) as usize],
            GIVEN[rng.below(GIVEN.len() as u64) as usize]
        )),
        phone: Some(format!("07{:08}", rng.below(100_000_000))),
        national_id: None,
    }
}

/// CPU time used by this process so far, all threads: on a shared
/// machine, what the work cost apart from waiting for a core.
fn cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn id(n: u64) -> PatientId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    PatientId::from_bytes(bytes).expect("v4 id")
}

/// Writes `people` (with ids) into the database's duplicate index as
/// `index_duplicates` would, in key order; returns the member rows written.
fn bulk_fill(path: &std::path::Path, people: &mut [([u8; 16], Person)]) -> u64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;")
        .expect("pragmas");
    let tx = conn.transaction().expect("tx");
    people.sort_by_key(|a| a.0);
    let mut rows: Vec<(String, u32)> = Vec::new();
    let mut fields = Vec::with_capacity(people.len());
    {
        let mut add = tx
            .prepare("INSERT INTO duplicate_people (patient, keys) VALUES (?1, ?2)")
            .expect("prepare");
        for (i, (id, p)) in people.iter().enumerate() {
            let k = stored_keys(p);
            add.execute(rusqlite::params![
                &id[..],
                serde_json::to_string(&k).expect("json")
            ])
            .expect("person");
            fields.push(p.to_row());
            rows.extend(k.into_iter().map(|k| (k, i as u32)));
        }
    }
    // Key order, then id order within a key (people are sorted by id).
    rows.sort_unstable();
    {
        let mut add = tx
            .prepare("INSERT INTO duplicate_members (key, patient, fields) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for (key, i) in &rows {
            let i = *i as usize;
            add.execute(rusqlite::params![key, &people[i].0[..], fields[i]])
                .expect("member");
        }
    }
    tx.commit().expect("commit");
    rows.len() as u64
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // The largest block searched: the indexer's unless given, or several
    // (comma-separated) to see what the limit costs and keeps; each but the
    // last is timed without writing, the last writes the batch.
    let limits: Vec<usize> = std::env::args()
        .nth(2)
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![MAX_BLOCK]);
    // Before each timed batch, the candidates of this many other new
    // records are read (not timed, not written) on the same handle, as the
    // indexer reads those of the batches before: the blocks they found too
    // large to search are then known (each run starts on a new handle,
    // knowing none).
    let warm: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("central.sqlite");
    drop(SqliteDb::open(&path).expect("db"));
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut kept = Vec::new();
    let fill = Instant::now();
    let mut people = Vec::with_capacity(n as usize);
    for i in 0..n {
        let p = person(&mut rng);
        if i % (n / 400).max(1) == 0 {
            kept.push((id(i), p.clone()));
        }
        people.push((*id(i).as_bytes(), p));
    }
    let rows = bulk_fill(&path, &mut people);
    drop(people);
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        let count = |q: &str| -> i64 { conn.query_row(q, [], |r| r.get(0)).expect(q) };
        assert_eq!(count("SELECT count(*) FROM duplicate_people"), n as i64);
        assert_eq!(count("SELECT count(*) FROM duplicate_members"), rows as i64);
        assert_eq!(
            count("SELECT sum(json_array_length(keys)) FROM duplicate_people"),
            rows as i64
        );
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "filled {n} records ({rows} member rows, database {:.2} GB) in {:.1} s",
        bytes as f64 / 1e9,
        fill.elapsed().as_secs_f64()
    );

    // 1,000 new records: a third are copies of indexed people with a typo
    // in the family name.
    let batch: Vec<(Person, Option<PatientId>)> = (0..1000)
        .map(|i| {
            if i % 3 == 0 {
                let (original, mut p) = kept[i % kept.len()].clone();
                if let Some(f) = &mut p.family_name {
                    f.push('h');
                }
                (p, Some(original))
            } else {
                (person(&mut rng), None)
            }
        })
        .collect();
    let pending: Vec<Pending> = batch
        .iter()
        .enumerate()
        .map(|(i, (p, _))| Pending {
            seq: 0,
            id: id(n + i as u64),
            person: Some(p.clone()),
        })
        .collect();
    // Other new records, for the warm-up (drawn after the batch, which
    // stays the same whatever `warm`).
    let others: Vec<Pending> = (0..warm)
        .map(|i| Pending {
            seq: 0,
            id: id(n + 1000 + i as u64),
            person: Some(person(&mut rng)),
        })
        .collect();
    for (run, &max_block) in limits.iter().enumerate() {
        let write = run + 1 == limits.len();
        let db = SqliteDb::open(&path).expect("db");
        let warming = Instant::now();
        for chunk in others.chunks(1000) {
            stored_candidates(&db, chunk, max_block)
                .await
                .expect("warm-up");
        }
        if warm > 0 {
            println!(
                "read the candidates of {warm} other records first in {:.1} s",
                warming.elapsed().as_secs_f64()
            );
        }
        let start = Instant::now();
        let cpu_start = cpu();
        // What the indexer does with a batch, once its records are read
        // from git: the candidates (read on a reader per core), their
        // comparison (a thread per core), the write.
        let stored = stored_candidates(&db, &pending, max_block)
            .await
            .expect("candidates");
        let reading = start.elapsed();
        let reading_cpu = cpu() - cpu_start;
        let candidates: usize = stored.iter().map(|s| s.len()).sum();
        let t = Instant::now();
        let c = cpu();
        let updates = compare_batch(pending.clone(), stored)
            .await
            .expect("compare");
        let comparing = t.elapsed();
        let comparing_cpu = cpu() - c;
        let (mut found, mut in_batch, mut planted_found) = (0usize, 0usize, 0usize);
        for (update, (_, original)) in updates.iter().zip(&batch) {
            for pair in &update.pairs {
                let other = if pair.a == update.id { pair.b } else { pair.a };
                if pending.iter().any(|p| p.id == other) {
                    in_batch += usize::from(pair.score >= 0.8);
                    continue;
                }
                found += usize::from(pair.score >= 0.8);
                planted_found += usize::from(pair.score >= 0.8 && Some(other) == *original);
            }
        }
        let t = Instant::now();
        let c = cpu();
        if write {
            db.index_duplicates(updates).await.expect("write");
        }
        let writing = t.elapsed();
        let writing_cpu = cpu() - c;
        let took = start.elapsed();
        let took_cpu = cpu() - cpu_start;
        let planted = batch.iter().filter(|(_, o)| o.is_some()).count();
        println!(
            "batch of 1000 at {n} records, blocks of at most {max_block}: {:.0} ms (candidates read {:.0} ms, compared {:.0} ms, written {:.0} ms); CPU {:.0} ms (read {:.0}, compare {:.0}, write {:.0}); {} candidates per record; {found} pairs at 0.8 or more with indexed records ({in_batch} within the batch); {planted_found} of {planted} planted copies found",
            took.as_secs_f64() * 1000.0,
            reading.as_secs_f64() * 1000.0,
            comparing.as_secs_f64() * 1000.0,
            writing.as_secs_f64() * 1000.0,
            took_cpu.as_secs_f64() * 1000.0,
            reading_cpu.as_secs_f64() * 1000.0,
            comparing_cpu.as_secs_f64() * 1000.0,
            writing_cpu.as_secs_f64() * 1000.0,
            candidates / batch.len(),
        );
    }
}
