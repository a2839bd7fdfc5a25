//! Packs we write must satisfy git and libgit2.

use std::collections::BTreeMap;
use std::path::Path;

use super::{git, git_with, oid};
use crate::*;
use git2::Oid;

/// Two commits of a small patient record: all objects, and the head commit.
pub(super) fn record_history() -> (Vec<Object>, Oid) {
    let author = Signature::new("Dr. Ann", "ann@clinic.example", 1_700_000_000, 60).expect("valid");
    let mut files = BTreeMap::new();
    files.insert(
        "patient.yaml".to_owned(),
        b"name: Jane Doe\nborn: 1970-01-01\n".to_vec(),
    );
    files.insert(
        "encounters/2026-11-02.yaml".to_owned(),
        b"bp: 120/80\n".to_vec(),
    );
    let mut objects = Vec::new();
    let mut parents = Vec::new();
    for round in 0..2 {
        if round == 1 {
            files.insert("encounters/2026-11-03.yaml".to_owned(), vec![b'x'; 70_000]);
        }
        let (tree, tree_objects) = build_tree(&files).expect("valid files");
        objects.extend(tree_objects);
        let commit = Commit {
            tree,
            parents: parents.clone(),
            author: author.clone(),
            committer: author.clone(),
            message: format!("Update {round}\n\nChart-Id: 42\n"),
        };
        let object = Object::new(Kind::Commit, encode_commit(&commit));
        parents = vec![object.id];
        objects.push(object);
    }
    (objects, parents[0])
}

fn install(repo: &Path, files: &PackFiles) -> std::path::PathBuf {
    let dir = repo.join("objects/pack");
    let base = dir.join(format!("pack-{}", files.checksum));
    std::fs::write(base.with_extension("pack"), &files.pack).expect("write pack");
    std::fs::write(base.with_extension("idx"), &files.idx).expect("write idx");
    base
}

#[test]
fn written_packs_satisfy_git_and_libgit2() {
    let (objects, head) = record_history();
    for level in [0, 6] {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        git(repo, &["init", "-q", "--bare"]);
        let files = write_pack(&objects, level);
        assert_eq!(write_pack_only(&objects, level), files.pack);
        let base = install(repo, &files);
        git(repo, &["update-ref", "refs/heads/main", &head.to_string()]);

        let fsck = git_with(
            repo,
            &["fsck", "--strict", "--full", "--no-dangling"],
            b"",
            &[],
        );
        assert!(
            fsck.is_empty(),
            "fsck output: {}",
            String::from_utf8_lossy(&fsck)
        );
        let verify = git(
            repo,
            &[
                "verify-pack",
                "-v",
                &base.with_extension("idx").display().to_string(),
            ],
        );
        assert!(verify.contains("ok"), "{verify}");
        let shown = git(repo, &["cat-file", "-p", &head.to_string()]);
        assert!(shown.contains("Chart-Id: 42"), "{shown}");
        let blob = git(repo, &["cat-file", "-p", "main:patient.yaml"]);
        assert_eq!(blob, "name: Jane Doe\nborn: 1970-01-01");

        // git index-pack rebuilds a byte-identical idx.
        let copy = dir.path().join("copy.pack");
        std::fs::write(&copy, &files.pack).expect("write copy");
        let printed = git(repo, &["index-pack", &copy.display().to_string()]);
        assert_eq!(oid(&printed), files.checksum);
        let rebuilt = std::fs::read(copy.with_extension("idx")).expect("read idx");
        assert_eq!(rebuilt, files.idx, "level {level}");

        let lib = git2::Repository::open_bare(repo).expect("open with libgit2");
        let commit = lib.find_commit(head).expect("commit readable");
        assert_eq!(commit.message().ok(), Some("Update 1\n\nChart-Id: 42\n"));
        for object in objects.iter().filter(|o| o.kind == Kind::Blob) {
            let blob = lib.find_blob(object.id).expect("blob readable");
            assert_eq!(blob.content(), &object.data[..]);
        }
    }
}

#[test]
fn duplicates_are_written_once_and_empty_pack_is_valid() {
    let (objects, _) = record_history();
    let mut doubled = objects.clone();
    doubled.extend(objects.iter().cloned());
    let files = write_pack(&doubled, 1);
    let unique: std::collections::HashSet<_> = objects.iter().map(|o| o.id).collect();
    assert_eq!(
        u32::from_be_bytes([files.pack[8], files.pack[9], files.pack[10], files.pack[11]]) as usize,
        unique.len()
    );
    let parsed = parse_pack(&files.pack, &PackLimits::default(), &mut |_| None).expect("parses");
    assert_eq!(parsed.len(), unique.len());

    let empty = write_pack(&[], 6);
    assert_eq!(empty.idx.len(), 8 + 1024 + 40);
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "--bare"]);
    let base = install(dir.path(), &empty);
    git(
        dir.path(),
        &[
            "verify-pack",
            &base.with_extension("idx").display().to_string(),
        ],
    );
    assert_eq!(
        parse_pack(&empty.pack, &PackLimits::default(), &mut |_| None)
            .map(|o| o.len())
            .ok(),
        Some(0)
    );
}

#[test]
fn idx_large_offsets_read_back_by_git_show_index() {
    let offsets = [
        12u64,
        0x7fff_ffff,
        0x8000_0000,
        0x1_0000_0005,
        4242,
        0xffff_ffff_0000,
    ];
    let mut entries: Vec<IdxEntry> = offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| IdxEntry {
            id: hash_object(Kind::Blob, format!("object {i}").as_bytes()),
            crc32: 0xdead_0000 + i as u32,
            offset,
        })
        .collect();
    let expected: Vec<(u64, Oid, u32)> =
        entries.iter().map(|e| (e.offset, e.id, e.crc32)).collect();
    let checksum = hash_object(Kind::Blob, b"pretend pack");
    let idx = write_idx(&mut entries, checksum);
    assert_eq!(idx.len(), 8 + 1024 + 6 * 28 + 3 * 8 + 40);
    // (git 2.47's show-index crashes outside a repository.)
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "--bare"]);
    let out = git_with(dir.path(), &["show-index"], &idx, &[]);
    let mut got: Vec<(u64, Oid, u32)> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let offset = parts.next().and_then(|p| p.parse().ok()).expect("offset");
            let id = oid(parts.next().expect("id"));
            let crc = parts
                .next()
                .and_then(|p| u32::from_str_radix(p.trim_matches(['(', ')']), 16).ok())
                .expect("crc");
            (offset, id, crc)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    let mut want = expected;
    want.sort_by_key(|w| w.0);
    assert_eq!(got, want);
    assert_eq!(&idx[idx.len() - 40..idx.len() - 20], checksum.as_bytes());
}

/// A file that grows by one visit per commit, newest first, each older
/// version a delta on the next newer one (as a repack orders them).
#[test]
fn deltified_packs_satisfy_git_libgit2_and_the_reader() {
    let author = Signature::new("Dr. Ann", "ann@clinic.example", 1_700_000_000, 60).expect("valid");
    let mut versions = Vec::new();
    let mut text = String::from("name: Jane Doe\nvisits:\n");
    for i in 0..60 {
        text.push_str(&format!(
            "- date: 2026-01-{:02}\n  note: visit {i} with a few words of text\n",
            i % 28 + 1
        ));
        versions.push(text.clone());
    }
    // Commits oldest first, then laid out newest first.
    let mut per_version = Vec::new();
    let mut parents = Vec::new();
    for (round, text) in versions.iter().enumerate() {
        let mut files = BTreeMap::new();
        files.insert("patient.yaml".to_owned(), text.as_bytes().to_vec());
        let (tree, tree_objects) = build_tree(&files).expect("valid files");
        let commit = Object::new(
            Kind::Commit,
            encode_commit(&Commit {
                tree,
                parents: parents.clone(),
                author: author.clone(),
                committer: author.clone(),
                message: format!("Visit {round}\n"),
            }),
        );
        parents = vec![commit.id];
        per_version.push((commit, tree_objects));
    }
    let head = parents[0];
    let mut objects = Vec::new();
    let mut bases = Vec::new();
    let mut last_blob: Option<usize> = None;
    let mut last_tree: Option<usize> = None;
    for (commit, tree_objects) in per_version.into_iter().rev() {
        objects.push(commit);
        bases.push(None);
        for object in tree_objects {
            let slot = if object.kind == Kind::Blob {
                &mut last_blob
            } else {
                &mut last_tree
            };
            bases.push(*slot);
            *slot = Some(objects.len());
            objects.push(object);
        }
    }
    let whole = write_pack(&objects, 6);
    for level in [0, 6] {
        let files = write_pack_deltified(&objects, &bases, level);
        assert!(files.pack.len() < whole.pack.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        git(repo, &["init", "-q", "--bare"]);
        let base = install(repo, &files);
        git(repo, &["update-ref", "refs/heads/main", &head.to_string()]);
        let fsck = git_with(
            repo,
            &["fsck", "--strict", "--full", "--no-dangling"],
            b"",
            &[],
        );
        assert!(fsck.is_empty(), "{}", String::from_utf8_lossy(&fsck));
        let verify = git(
            repo,
            &[
                "verify-pack",
                "-v",
                &base.with_extension("idx").display().to_string(),
            ],
        );
        assert!(verify.contains("chain length = 1"), "{verify}");
        // git index-pack rebuilds a byte-identical idx.
        let copy = dir.path().join("copy.pack");
        std::fs::write(&copy, &files.pack).expect("write copy");
        let printed = git(repo, &["index-pack", &copy.display().to_string()]);
        assert_eq!(oid(&printed), files.checksum);
        assert_eq!(
            std::fs::read(copy.with_extension("idx")).expect("idx"),
            files.idx
        );
        let lib = git2::Repository::open_bare(repo).expect("open with libgit2");
        let reader = PackReader::open(&repo.join("objects/pack")).expect("open");
        for object in &objects {
            let found = lib.find_object(object.id, None).expect("readable");
            assert_eq!(found.id(), object.id);
            match reader.read(object.id) {
                Lookup::Found(read) => assert_eq!(read, *object),
                other => panic!("{}: {other:?}", object.id),
            }
        }
        // This test's chains are 60 deep (a repack bounds them at 50).
        let limits = PackLimits {
            max_delta_depth: 64,
            ..PackLimits::default()
        };
        let parsed = parse_pack(&files.pack, &limits, &mut |_| None).expect("parses");
        assert_eq!(parsed.len(), objects.len());
        if level == 6 {
            // Within 1.2x of what git itself makes of the same history.
            git(repo, &["repack", "-adfq"]);
            let packs = std::fs::read_dir(repo.join("objects/pack")).expect("pack dir");
            let git_size: u64 = packs
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .map(|e| e.metadata().expect("metadata").len())
                .sum();
            assert!(
                files.pack.len() as u64 * 5 <= git_size * 6,
                "{} bytes against git's {git_size} (whole: {})",
                files.pack.len(),
                whole.pack.len()
            );
        }
    }
}
