//! Helpers shared by the fuzz targets: turning fuzz bytes into inputs, and
//! small oracles.

use chartsync_protocol::Files;
use serde_json::Value;

/// The parts of `data` between NUL bytes: exactly `n` of them (missing
/// ones are empty; the last takes the rest, NULs included).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    parts.resize(n, &[]);
    parts
}

/// `bytes` as text; invalid UTF-8 is replaced, so the fuzzer's bytes still
/// reach the parsers (the store refuses non-UTF-8 files before them).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Paths given to file contents that do not name their own.
const PATHS: [&str; 6] = [
    "patient.yaml",
    "encounters/2026-11-02.yaml",
    "notes.txt",
    "labs/a.yml",
    "visits/1.YAML",
    "x.json",
];

/// A file set from `data`: files separated by NUL bytes (at most 8); a file
/// that starts with `@` names its path on its first line, the others get
/// ordinary paths in turn.
pub fn files(data: &[u8]) -> Files {
    let mut out = Files::new();
    for (i, chunk) in data.split(|&b| b == 0).take(8).enumerate() {
        let chunk = text(chunk);
        let (path, content) = match chunk.strip_prefix('@').and_then(|c| c.split_once('\n')) {
            Some((path, content)) => (path.to_owned(), content.to_owned()),
            None => (PATHS[i % PATHS.len()].to_owned(), chunk),
        };
        out.insert(path, content);
    }
    out
}

/// Nesting depth as the YAML checks count it: a scalar is 0, a mapping or
/// sequence (empty ones included) is one more than its deepest child.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
