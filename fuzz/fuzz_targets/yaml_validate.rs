//! Store validation of a file set (`validate_files`): never panics, stays
//! within the time and memory limits of the run, and whatever it accepts
//! reads back unchanged after being written out again.
#![no_main]

use chartsync_fuzz::{depth, files};
use chartsync_merge::{MAX_DEPTH, is_yaml_path, parse_yaml, to_yaml};
use chartsync_store::validate::{Limits, validate_files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = files(data);
    if validate_files(&files, &Limits::default()).is_err() {
        return;
    }
    for (path, content) in &files {
        if !is_yaml_path(path) {
            continue;
        }
        let value = match parse_yaml(content) {
            Ok(value) => value,
            Err(e) => panic!("{path} validated but does not parse: {e}"),
        };
        assert!(depth(&value) <= MAX_DEPTH, "{path} validated too deep");
        let written = to_yaml(&value);
        assert_eq!(
            parse_yaml(&written).as_ref(),
            Ok(&value),
            "{path} does not read back after to_yaml:\n{written}"
        );
    }
});
