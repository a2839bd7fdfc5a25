//! Detection quality on the FEBRL data sets, printed as a table:
//!
//!     cargo run --release -p chartsync-dedup --example febrl [-- --min-score 0.8] [--show N]
//!
//! `--show N` prints N missed and N wrongly found pairs of each set, with
//! their comparisons.

#[path = "../tests/febrl/mod.rs"]
mod febrl;

use chartsync_dedup::{DEFAULT_MIN_SCORE, compare};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let min_score: f64 = arg("--min-score")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MIN_SCORE);
    let show: usize = arg("--show").and_then(|s| s.parse().ok()).unwrap_or(0);
    println!("min_score {min_score}");
    println!(
        "| data set | records | true pairs | kept by blocking | pairs compared (of all) | found | precision | recall | F1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, files) in febrl::SETS {
        let rows = febrl::load(files);
        let (q, people) = febrl::measure(&rows, min_score);
        let all = (q.records as u64) * (q.records as u64 - 1) / 2;
        let (p, r) = (q.precision(), q.recall());
        println!(
            "| {name} | {} | {} | {:.4} | {} ({:.3}%) | {} | {p:.4} | {r:.4} | {:.4} |",
            q.records,
            q.true_pairs,
            q.blocking_recall(),
            q.compared,
            100.0 * q.compared as f64 / all as f64,
            q.found,
            2.0 * p * r / (p + r),
        );
        for (label, list) in [("missed", &q.misses), ("wrongly found", &q.false_pairs)] {
            for (a, b) in list.iter().take(show) {
                println!("  {label}: {} / {}", rows[*a].patient, rows[*b].patient);
                println!("    {:?}", compare(&people[*a], &people[*b]));
            }
        }
    }
}
