//! Object hashing, trees and commits, checked against git.

use std::collections::BTreeMap;

use super::{git, git_with, oid};
use crate::*;
use git2::Oid;

fn sig(name: &str, email: &str, time: i64, offset: i32) -> Signature {
    Signature::new(name, email, time, offset).expect("valid signature")
}

#[test]
fn hash_object_matches_git() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for data in [&b""[..], b"hello\n", b"\0binary\xff\x00data", &big] {
        let expected = git_with(dir.path(), &["hash-object", "--stdin"], data, &[]);
        let expected = oid(&String::from_utf8_lossy(&expected));
        assert_eq!(hash_object(Kind::Blob, data), expected);
        assert_eq!(Object::new(Kind::Blob, data.to_vec()).id, expected);
    }
}

fn sample_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (path, content) in [
        ("patient.yaml", "name: Jane Doe\n"),
        ("foo-bar", "1"),
        ("foo.txt", "2"),
        ("foo/x.yaml", "3"),
        ("foo/deeper/y.yaml", "4"),
        ("foo0", "5"),
        ("encounters/2026-11-02.yaml", "bp: 120/80\n"),
        ("encounters/2026-11-03.yaml", "bp: 120/80\n"),
        ("notes/ärzte/ünïcode.yaml", "x: 1\n"),
        ("empty", ""),
    ] {
        files.insert(path.to_owned(), content.as_bytes().to_vec());
    }
    files
}

#[test]
fn build_tree_matches_git_write_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q"]);
    let files = sample_files();
    for (path, content) in &files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("has parent")).expect("mkdir");
        std::fs::write(full, content).expect("write file");
    }
    git(dir.path(), &["add", "-A"]);
    let expected = oid(&git(dir.path(), &["write-tree"]));
    let (root, objects) = build_tree(&files).expect("valid files");
    assert_eq!(root, expected);
    // Every object we produced is known to git, identical, and listed once.
    let mut ids: Vec<_> = objects.iter().map(|o| o.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), objects.len());
    // 9 distinct blobs (two encounters share content) + 6 trees.
    assert_eq!(objects.len(), 15);
    for object in &objects {
        let data = git_with(
            dir.path(),
            &["cat-file", object.kind.name(), &object.id.to_string()],
            b"",
            &[],
        );
        assert_eq!(data, object.data, "object {}", object.id);
        if object.kind == Kind::Tree {
            let entries = parse_tree(&object.data).expect("our trees parse");
            assert_eq!(encode_tree(&entries), object.data);
        }
    }
    assert_eq!(objects.last().map(|o| o.id), Some(root));
}

#[test]
fn build_tree_empty_and_errors() {
    let (root, objects) = build_tree(&BTreeMap::new()).expect("empty is fine");
    assert_eq!(root.to_string(), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    assert_eq!(objects.len(), 1);
    for bad in [
        &["a", "a/b"][..],
        &["a/b", "a/b/c"],
        &[""],
        &["/a"],
        &["a/"],
        &["a//b"],
        &["../x"],
        &["a/./b"],
        &[".git/config"],
        &["x/.GIT"],
        &["nul\0byte"],
    ] {
        let files: BTreeMap<String, Vec<u8>> =
            bad.iter().map(|p| (p.to_string(), b"x".to_vec())).collect();
        let err = super::fails(build_tree(&files), format!("{bad:?} must be refused"));
        assert!(matches!(err, FormatError::BadPath { .. }), "{bad:?}: {err}");
    }
}

#[test]
fn encode_tree_matches_git_mktree_with_all_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "--bare"]);
    let blob = hash_object(Kind::Blob, b"content");
    let tree = hash_object(Kind::Tree, b"");
    let commit = oid("0123456789abcdef0123456789abcdef01234567");
    let entries = vec![
        TreeEntry {
            mode: MODE_FILE,
            name: "b.yaml".into(),
            id: blob,
        },
        TreeEntry {
            mode: MODE_DIR,
            name: "b".into(),
            id: tree,
        },
        TreeEntry {
            mode: MODE_EXEC,
            name: "run.sh".into(),
            id: blob,
        },
        TreeEntry {
            mode: MODE_SYMLINK,
            name: "link".into(),
            id: blob,
        },
        TreeEntry {
            mode: MODE_GITLINK,
            name: "sub".into(),
            id: commit,
        },
        TreeEntry {
            mode: MODE_FILE,
            name: "b-c".into(),
            id: blob,
        },
        TreeEntry {
            mode: MODE_DIR,
            name: "a".into(),
            id: tree,
        },
    ];
    let input: String = entries
        .iter()
        .map(|e| {
            let kind = match e.mode {
                MODE_DIR => "tree",
                MODE_GITLINK => "commit",
                _ => "blob",
            };
            format!("{:06o} {kind} {}\t{}\n", e.mode, e.id, e.name)
        })
        .collect();
    let out = git_with(dir.path(), &["mktree", "--missing"], input.as_bytes(), &[]);
    let expected = oid(&String::from_utf8_lossy(&out));
    let data = encode_tree(&entries);
    assert_eq!(hash_object(Kind::Tree, &data), expected);
    let git_data = git_with(
        dir.path(),
        &["cat-file", "tree", &expected.to_string()],
        b"",
        &[],
    );
    assert_eq!(data, git_data);
    let parsed = parse_tree(&git_data).expect("git's tree parses");
    let names: Vec<&str> = parsed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b-c", "b.yaml", "b", "link", "run.sh", "sub"]);
    assert_eq!(encode_tree_checked(&entries), Ok(data));
}

fn tree_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(&[0x11; 20]);
    }
    out
}

#[test]
fn parse_tree_is_strict() {
    let ok = tree_bytes(&[("100644", b"a"), ("100644", b"a.b"), ("40000", b"a0")]);
    assert_eq!(parse_tree(&ok).map(|e| e.len()), Ok(3));
    assert_eq!(parse_tree(b""), Ok(vec![]));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tree_bytes(&[("040000", b"a")]), "zero-padded mode"),
        (tree_bytes(&[("100664", b"a")]), "legacy mode"),
        (tree_bytes(&[("100644", b"")]), "empty name"),
        (tree_bytes(&[("100644", b".")]), "dot"),
        (tree_bytes(&[("40000", b"..")]), "dotdot"),
        (tree_bytes(&[("40000", b".Git")]), "dotgit"),
        (tree_bytes(&[("100644", b"a/b")]), "slash"),
        (tree_bytes(&[("100644", b"\xff")]), "not utf-8"),
        (
            tree_bytes(&[("100644", b"b"), ("100644", b"a")]),
            "unsorted",
        ),
        (
            tree_bytes(&[("100644", b"a"), ("100644", b"a")]),
            "duplicate",
        ),
        (
            tree_bytes(&[("40000", b"a"), ("100644", b"a")]),
            "dir before same-name file",
        ),
        (
            tree_bytes(&[("100644", b"a"), ("100644", b"a.b"), ("40000", b"a")]),
            "file+dir apart",
        ),
        (
            tree_bytes(&[("100644", b"a")])[..20].to_vec(),
            "truncated id",
        ),
        (b"100644 a".to_vec(), "no NUL"),
        (b"100644".to_vec(), "no space"),
    ];
    for (data, what) in cases {
        assert!(parse_tree(&data).is_err(), "{what} must be refused");
    }
}

#[test]
fn commit_matches_git_commit_tree_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q"]);
    std::fs::write(dir.path().join("patient.yaml"), "name: Jane\n").expect("write");
    git(dir.path(), &["add", "-A"]);
    let tree = oid(&git(dir.path(), &["write-tree"]));
    let author = sig("Dr. Ann Smith", "ann@clinic.example", 1_700_000_000, 90);
    let committer = sig("Sync Bot", "bot@central.example", 1_700_000_123, -300);
    let env = [
        ("GIT_AUTHOR_NAME", "Dr. Ann Smith"),
        ("GIT_AUTHOR_EMAIL", "ann@clinic.example"),
        ("GIT_AUTHOR_DATE", "@1700000000 +0130"),
        ("GIT_COMMITTER_NAME", "Sync Bot"),
        ("GIT_COMMITTER_EMAIL", "bot@central.example"),
        ("GIT_COMMITTER_DATE", "@1700000123 -0500"),
    ];
    let mut parents: Vec<Oid> = Vec::new();
    for (round, message) in [
        "Create chart\n",
        "Add encounter\n\nChart-Id: 42\n",
        "Merge\n",
    ]
    .iter()
    .enumerate()
    {
        let commit = Commit {
            tree,
            parents: parents.clone(),
            author: author.clone(),
            committer: committer.clone(),
            message: (*message).to_owned(),
        };
        let mut args = vec!["commit-tree".to_owned(), tree.to_string()];
        for p in &parents {
            args.extend(["-p".to_owned(), p.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = git_with(dir.path(), &args, message.as_bytes(), &env);
        let expected = oid(&String::from_utf8_lossy(&out));
        let data = encode_commit(&commit);
        assert_eq!(hash_object(Kind::Commit, &data), expected, "round {round}");
        let git_data = git_with(
            dir.path(),
            &["cat-file", "commit", &expected.to_string()],
            b"",
            &[],
        );
        assert_eq!(parse_commit(&git_data), Ok(commit));
        parents.push(expected);
    }
}

const HEAD: &str = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
const AUTHOR: &str = "author A <a@x> 1700000000 +0000\ncommitter C <c@x> 1700000000 -0130\n";

#[test]
fn parse_commit_skips_extra_headers() {
    let text = format!(
        "{HEAD}{AUTHOR}gpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\nencoding UTF-8\n\nmsg\n\nChart-Id: 7\n"
    );
    let commit = parse_commit(text.as_bytes()).expect("extra headers are skipped");
    assert_eq!(commit.message, "msg\n\nChart-Id: 7\n");
    assert_eq!(commit.committer.offset_minutes, -90);
    assert_eq!(commit.author.name, "A");
    assert_eq!(commit_trailer(&commit.message, "chart-id"), Some("7"));
    // No blank line and no message is tolerated.
    assert_eq!(
        parse_commit(format!("{HEAD}{AUTHOR}").as_bytes()).map(|c| c.message),
        Ok(String::new())
    );
}

#[test]
fn parse_commit_is_strict() {
    let p = "parent 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
    let cases = [
        format!("{AUTHOR}\nmsg"),
        format!(
            "{}{AUTHOR}\nmsg",
            HEAD.to_uppercase().replace("TREE", "tree")
        ),
        format!("tree 4b825dc6\n{AUTHOR}\nmsg"),
        format!("{HEAD}author A <a@x> 1700000000 +0000\n{p}committer C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A <a@x> 1700000000 +0000\n\nmsg"),
        format!("{HEAD}author A <a@x> 1700000000 +000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A <a@x> 01700000000 +0000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A <a@x> -1 +0000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A<a@x> 1 +0000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A <a@x 1 +0000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}author A <a@x> 99999999999999999999 +0000\ncommitter C <c@x> 1 +0000\n\n"),
        format!("{HEAD}{AUTHOR} continuation\n\nmsg"),
        format!("{HEAD}{AUTHOR}author B <b@x> 1 +0000\n\nmsg"),
        format!("{HEAD}{AUTHOR}gpgsig unterminated"),
    ];
    for case in &cases {
        assert!(
            parse_commit(case.as_bytes()).is_err(),
            "must be refused: {case:?}"
        );
    }
    let mut bad_utf8 = format!("{HEAD}{AUTHOR}\n").into_bytes();
    bad_utf8.push(0xff);
    assert_eq!(
        parse_commit(&bad_utf8),
        Err(FormatError::NotUtf8 {
            what: "commit message"
        })
    );
}

#[test]
fn signature_validation() {
    assert!(Signature::new("A <B>", "a@x", 0, 0).is_err());
    assert!(Signature::new("A", "a@x>", 0, 0).is_err());
    assert!(Signature::new("A\nB", "a@x", 0, 0).is_err());
    assert!(Signature::new("A", "a@x", -1, 0).is_err());
    assert!(Signature::new("A", "a@x", 0, 6000).is_err());
    assert!(Signature::new("A", "a@x", 0, -(99 * 60 + 59)).is_ok());
}

#[test]
fn trailers() {
    let msg = "Subject\n\nBody text.\n\nChart-Id: 42\nSigned-off-by: A <a@x>\nchart-id:  43 \n";
    assert_eq!(commit_trailer(msg, "Chart-Id"), Some("43"));
    assert_eq!(commit_trailer(msg, "Signed-off-by"), Some("A <a@x>"));
    assert_eq!(commit_trailer(msg, "Missing"), None);
    assert_eq!(
        commit_trailer("Chart-Id: 1\n", "Chart-Id"),
        None,
        "subject is not a trailer"
    );
    assert_eq!(
        commit_trailer("S\n\nChart-Id: 1\n\nlast para\n", "Chart-Id"),
        None
    );
    assert_eq!(
        commit_trailer("S\r\n\r\nChart-Id: 5\r\n", "Chart-Id"),
        Some("5")
    );
}
