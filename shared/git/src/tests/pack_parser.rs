//! Parsing packs made by git, thin packs, and our own packs.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::Path;

use super::{git, git_with, oid};
use crate::*;
use git2::Oid;

/// A repository with three commits over 40 similar ~3 KB files, so that
/// git stores most blobs as deltas.
fn similar_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    for round in 0..3 {
        for file in 0..40 {
            let text: String = (0..100)
                .map(|line| match line {
                    l if l == file => format!("line {l:03}: belongs to file {file}\n"),
                    l if l == 50 + round => format!("line {l:03}: changed in round {round}\n"),
                    l => format!("line {l:03}: the same text in every file and round\n"),
                })
                .collect();
            std::fs::create_dir_all(repo.join("enc")).expect("mkdir");
            std::fs::write(repo.join(format!("enc/{file:02}.yaml")), text).expect("write");
        }
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", &format!("round {round}")]);
    }
    dir
}

fn rev_list_objects(repo: &Path, range: &[&str]) -> Vec<Oid> {
    let mut args = vec!["rev-list", "--objects"];
    args.extend_from_slice(range);
    git(repo, &args)
        .lines()
        .map(|line| oid(line.split(' ').next().expect("id column")))
        .collect()
}

fn check_against_odb(repo: &Path, objects: &[Object]) {
    let lib = git2::Repository::open(repo).expect("open repo");
    let odb = lib.odb().expect("odb");
    for object in objects {
        let stored = odb.read(object.id).expect("object exists in repo");
        assert_eq!(stored.data(), &object.data[..], "{}", object.id);
        assert_eq!(stored.kind().str(), object.kind.name());
        assert!(object.is_consistent());
    }
}

fn sorted(ids: impl IntoIterator<Item = Oid>) -> Vec<Oid> {
    let mut v: Vec<Oid> = ids.into_iter().collect();
    v.sort();
    v
}

#[test]
fn parses_git_packs_with_ofs_and_ref_deltas() {
    let dir = similar_history();
    let repo = dir.path();
    let expected = rev_list_objects(repo, &["HEAD"]);
    for extra in [&["--delta-base-offset"][..], &[]] {
        let mut args = vec!["pack-objects", "--stdout", "--revs", "-q"];
        args.extend_from_slice(extra);
        let pack = git_with(repo, &args, b"HEAD\n", &[]);
        let objects =
            parse_pack(&pack, &PackLimits::default(), &mut |_| None).expect("git pack parses");
        assert_eq!(
            sorted(objects.iter().map(|o| o.id)),
            sorted(expected.iter().copied())
        );
        check_against_odb(repo, &objects);
        // The pack really uses deltas: with no delta depth allowed it fails.
        let no_deltas = PackLimits {
            max_delta_depth: 0,
            ..PackLimits::default()
        };
        let err = super::fails(
            parse_pack(&pack, &no_deltas, &mut |_| None),
            "pack has deltas",
        );
        assert!(matches!(err, PackError::DeltaTooDeep { .. }), "{err}");
    }
}

#[test]
fn parses_thin_pack_with_bases_from_receiver() {
    let dir = similar_history();
    let repo = dir.path();
    let pack = git_with(
        repo,
        &["pack-objects", "--stdout", "--revs", "--thin", "-q"],
        b"HEAD\n^HEAD~1\n",
        &[],
    );
    let lib = git2::Repository::open(repo).expect("open repo");
    let odb = lib.odb().expect("odb");
    let asked = Cell::new(0);
    let mut supplied = HashSet::new();
    let mut lookup = |id: Oid| {
        asked.set(asked.get() + 1);
        let stored = odb.read(id).ok()?;
        let kind = match stored.kind() {
            git2::ObjectType::Blob => Kind::Blob,
            git2::ObjectType::Tree => Kind::Tree,
            git2::ObjectType::Commit => Kind::Commit,
            _ => Kind::Tag,
        };
        supplied.insert(id);
        Some(Object::new(kind, stored.data().to_vec()))
    };
    let objects = parse_pack(&pack, &PackLimits::default(), &mut lookup).expect("thin pack parses");
    assert!(asked.get() > 0, "pack should be thin");
    let expected = rev_list_objects(repo, &["HEAD~1..HEAD"]);
    assert_eq!(sorted(objects.iter().map(|o| o.id)), sorted(expected));
    assert!(
        objects.iter().all(|o| !supplied.contains(&o.id)),
        "bases are not returned"
    );
    check_against_odb(repo, &objects);

    let err = super::fails(
        parse_pack(&pack, &PackLimits::default(), &mut |_| None),
        "bases missing",
    );
    assert!(matches!(err, PackError::MissingBase { .. }), "{err}");
    let liar = |_id: Oid| Some(Object::new(Kind::Blob, b"not it".to_vec()));
    let err = super::fails(
        parse_pack(&pack, &PackLimits::default(), &mut { liar }),
        "wrong base",
    );
    assert!(matches!(err, PackError::BaseMismatch { .. }), "{err}");
}

#[test]
fn our_packs_round_trip() {
    let (objects, _) = super::pack_writer::record_history();
    for level in [0, 1, 9] {
        let files = write_pack(&objects, level);
        let parsed =
            parse_pack(&files.pack, &PackLimits::default(), &mut |_| None).expect("parses");
        let mut seen = HashSet::new();
        let unique: Vec<Object> = objects
            .iter()
            .filter(|o| seen.insert(o.id))
            .cloned()
            .collect();
        assert_eq!(parsed, unique);
    }
    // Version 3 is accepted too (same format).
    let mut v3 = write_pack(&objects, 6).pack;
    v3[7] = 3;
    super::fix_checksum(&mut v3);
    let v3 = parse_pack(&v3, &PackLimits::default(), &mut |_| None)
        .map(|o| o.len())
        .ok();
    assert_eq!(
        v3,
        Some(HashSet::<Oid>::from_iter(objects.iter().map(|o| o.id)).len())
    );
}

#[test]
fn objects_from_a_git_pack_rewritten_by_us_pass_fsck() {
    // Objects resolved from a git pack, written back by us, pass fsck.
    let dir = similar_history();
    let pack = git_with(
        dir.path(),
        &[
            "pack-objects",
            "--stdout",
            "--revs",
            "-q",
            "--delta-base-offset",
        ],
        b"HEAD\n",
        &[],
    );
    let objects = parse_pack(&pack, &PackLimits::default(), &mut |_| None).expect("parses");
    let head = oid(&git(dir.path(), &["rev-parse", "HEAD"]));
    let bare = tempfile::tempdir().expect("tempdir");
    git(bare.path(), &["init", "-q", "--bare"]);
    let files = write_pack(&objects, 6);
    let base = bare
        .path()
        .join(format!("objects/pack/pack-{}", files.checksum));
    std::fs::write(base.with_extension("pack"), &files.pack).expect("write");
    std::fs::write(base.with_extension("idx"), &files.idx).expect("write");
    git(
        bare.path(),
        &["update-ref", "refs/heads/main", &head.to_string()],
    );
    let fsck = git_with(
        bare.path(),
        &["fsck", "--strict", "--full", "--no-dangling"],
        b"",
        &[],
    );
    assert!(fsck.is_empty(), "{}", String::from_utf8_lossy(&fsck));
}
