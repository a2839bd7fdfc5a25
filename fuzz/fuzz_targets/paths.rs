//! The path checks of a record (`validate_path`, `validate_paths`) against
//! a plain restatement of the rules, on one path and on a set of paths
//! separated by newlines.
#![no_main]

use chartsync_store::path::{MAX_DEPTH, MAX_PATH_BYTES, validate_path, validate_paths};
use libfuzzer_sys::fuzz_target;

/// The rules of `shared/store/src/path.rs`, restated.
fn allowed(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && path.split('/').count() <= MAX_DEPTH
        && path
            .split('/')
            .all(|component| !component.is_empty() && !component.starts_with('.'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(validate_path(input).is_ok(), allowed(input), "{input:?}");
    // At most 64 paths, so the restated check (quadratic) stays quick.
    let paths: Vec<&str> = input.split('\n').take(64).collect();
    let clash = paths.iter().any(|p| {
        paths.iter().any(|folder| {
            p.len() > folder.len() && p.starts_with(folder) && p.as_bytes()[folder.len()] == b'/'
        })
    });
    let expected = paths.iter().all(|p| allowed(p)) && !clash;
    assert_eq!(
        validate_paths(paths.iter().copied()).is_ok(),
        expected,
        "{paths:?}"
    );
});
