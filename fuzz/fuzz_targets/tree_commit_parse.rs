//! Tree and commit parsing on arbitrary bytes, and the fsck checks on top
//! (`chartsync_git::fsck`): never a panic; what fsck accepts the plain
//! parsers accept too, with the same result; a tree that parses is in
//! git's canonical form (encoding its entries gives back the same bytes).

#![no_main]

use chartsync_git::fsck::{self, Checked};
use chartsync_git::{Kind, encode_tree, parse_commit, parse_tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed_tree = parse_tree(data);
    if let Ok(entries) = &parsed_tree {
        assert_eq!(
            encode_tree(entries),
            data,
            "a parsed tree re-encodes unchanged"
        );
    }
    if let Ok(Checked::Tree(entries)) = fsck::check_object(Kind::Tree, data) {
        assert_eq!(
            parsed_tree.as_ref().ok(),
            Some(&entries),
            "fsck accepted a tree the parser refuses"
        );
        for entry in &entries {
            assert!(fsck::check_name(entry.name.as_bytes()).is_ok());
        }
    }
    let parsed_commit = parse_commit(data);
    if let Ok(Checked::Commit(commit)) = fsck::check_object(Kind::Commit, data) {
        assert_eq!(
            parsed_commit.ok(),
            Some(commit),
            "fsck accepted a commit the parser refuses"
        );
    }
    // The name rules on their own, on the whole input.
    let _ = fsck::check_name(data);
    let _ = fsck::is_hfs_dotgit(data);
    let _ = fsck::is_ntfs_dotgit(data);
});
