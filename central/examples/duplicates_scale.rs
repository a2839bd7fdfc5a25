//! How long central takes to find the duplicate candidates of a batch of
//! 1,000 pushed records when its index already holds N records (by hand;
//! the numbers go to docs/benchmarks.md):
//!
//!     cargo run --release -p chartsync-central --example duplicates_scale -- 1000000
//!
//! Fills a fresh SQLite database's duplicate index with N generated
//! people (fixed seed; names drawn with a skewed frequency, so common names
//! make large blocks as in life), then times the work the indexer does per
//! batch apart from reading `patient.yaml` from git: the candidates of each
//! of 1,000 new records (a third of them misspelled copies of indexed
//! people), their comparison, and the batch's write.

use std::time::Instant;

use chartsync_central::db::sqlite::SqliteDb;
use chartsync_central::db::{CentralDb, DuplicateEntry, DuplicatePair, DuplicateUpdate};
use chartsync_dedup::{BirthDate, MAX_BLOCK, Person, blocking_keys, compare};
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

fn id(n: u64) -> PatientId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    PatientId::from_bytes(bytes).expect("v4 id")
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tmp");
    let db = SqliteDb::open(&dir.path().join("central.sqlite")).expect("db");
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut kept = Vec::new();
    let fill = Instant::now();
    let mut updates = Vec::new();
    for i in 0..n {
        let p = person(&mut rng);
        if i % (n / 400).max(1) == 0 {
            kept.push(p.clone());
        }
        updates.push(DuplicateUpdate {
            id: id(i),
            seq: 0,
            entry: Some(DuplicateEntry {
                person: serde_json::to_string(&p).expect("json"),
                keys: blocking_keys(&p),
            }),
            pairs: Vec::new(),
        });
        if updates.len() == 10_000 {
            db.index_duplicates(std::mem::take(&mut updates))
                .await
                .expect("fill");
        }
    }
    db.index_duplicates(updates).await.expect("fill");
    println!(
        "filled {n} records in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    // 1,000 new records: a third are copies of indexed people with a typo
    // in the family name.
    let batch: Vec<Person> = (0..1000)
        .map(|i| {
            if i % 3 == 0 {
                let mut p = kept[i % kept.len()].clone();
                if let Some(f) = &mut p.family_name {
                    f.push('h');
                }
                p
            } else {
                person(&mut rng)
            }
        })
        .collect();
    let start = Instant::now();
    let (mut candidates, mut found) = (0usize, 0usize);
    let mut updates = Vec::new();
    for (i, p) in batch.iter().enumerate() {
        let keys = blocking_keys(p);
        let stored = db
            .duplicate_candidates(keys.clone(), MAX_BLOCK)
            .await
            .expect("candidates");
        candidates += stored.len();
        let me = id(n + i as u64);
        let mut pairs = Vec::new();
        for (other, json) in stored {
            let other_person: Person = serde_json::from_str(&json).expect("person");
            let c = compare(&other_person, p);
            if c.score >= 0.5 {
                found += usize::from(c.score >= 0.8);
                pairs.push(DuplicatePair {
                    a: other,
                    b: me,
                    score: c.score,
                    fields: serde_json::to_string(&c.fields).expect("json"),
                });
            }
        }
        updates.push(DuplicateUpdate {
            id: me,
            seq: 0,
            entry: Some(DuplicateEntry {
                person: serde_json::to_string(p).expect("json"),
                keys,
            }),
            pairs,
        });
    }
    db.index_duplicates(updates).await.expect("write");
    let took = start.elapsed();
    println!(
        "batch of 1000 at {n} records: {:.3} s ({candidates} candidates compared, {found} pairs at 0.8 or more; 333 planted)",
        took.as_secs_f64()
    );
}
