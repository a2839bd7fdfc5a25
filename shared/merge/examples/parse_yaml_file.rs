//! Parses YAML files the way record validation does and reports how long
//! each took: `cargo run --release -p chartsync-merge --example
//! parse_yaml_file -- FILE...` (with `/usr/bin/time -v` for peak memory).

use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(2);
            }
        };
        let start = Instant::now();
        let result = chartsync_merge::parse_yaml(&text);
        let elapsed = start.elapsed();
        let outcome = match result {
            Ok(_) => "accepted".to_owned(),
            Err(e) => {
                let mut message = e.to_string();
                message.truncate(200);
                format!("refused: {message}")
            }
        };
        println!("{path}: {} bytes, {elapsed:.3?}: {outcome}", text.len());
    }
}
