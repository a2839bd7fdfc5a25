//! Three-way merge of a record (`merge_files`) of three inputs split from
//! the fuzz bytes: the first byte says which sides lack the YAML file and
//! whether a text file joins; the rest is base, ours and theirs separated
//! by NUL bytes. Never panics; is deterministic; a merge of YAML files that
//! pass validation gives a YAML file that passes validation (what the
//! store's merge relies on).
#![no_main]

use chartsync_fuzz::{split, text};
use chartsync_merge::merge_files;
use chartsync_protocol::Files;
use chartsync_store::validate::check_content;
use libfuzzer_sys::fuzz_target;

const FILE: &str = "r.yaml";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 3);
    let side = |i: usize| {
        let mut files = Files::new();
        if flags & (1 << i) == 0 {
            files.insert(FILE.to_owned(), text(parts[i]));
        }
        if flags & (1 << (i + 3)) != 0 {
            files.insert("n.txt".to_owned(), text(&parts[i][..parts[i].len() / 2]));
        }
        files
    };
    let (base, ours, theirs) = (side(0), side(1), side(2));
    let merged = merge_files(&base, &ours, &theirs);
    assert_eq!(
        merge_files(&base, &ours, &theirs),
        merged,
        "not deterministic"
    );
    let valid = |files: &Files| {
        files
            .get(FILE)
            .is_none_or(|content| check_content(FILE, content).is_ok())
    };
    if valid(&base) && valid(&ours) && valid(&theirs) {
        if let Some(content) = merged.files.get(FILE)
            && let Err(e) = check_content(FILE, content)
        {
            panic!("merging valid files gave an invalid one: {e}\n{content}");
        }
    }
});
