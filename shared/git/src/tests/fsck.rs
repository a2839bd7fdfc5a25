//! One test per fsck check, with the exact error; every object refused
//! for one of fsck's own reasons is also written into a repository and
//! `git fsck --strict` must report the same message id for it, and every
//! object accepted must draw no complaint from git.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use super::git;
use crate::fsck::{NameRule, check_commit, check_name, check_object, check_tree};
use crate::*;

const TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const PARENT: &str = "8b137891791fe96927ad78e64b0aad7bded08bdc";
const AUTHOR: &str = "author Ada Obi <ada@clinic.example> 1700000000 +0100";
const COMMITTER: &str = "committer chartsync <chartsync@central> 1700000000 -0130";

/// A commit made of header lines and a message.
fn commit(headers: &[&str], message: &str) -> Vec<u8> {
    let mut out = String::new();
    for h in headers {
        out.push_str(h);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(message);
    out.into_bytes()
}

fn tree_line() -> String {
    format!("tree {TREE}")
}

fn parent_line() -> String {
    format!("parent {PARENT}")
}

/// A valid commit with `line` in the place of the author line.
fn with_author(line: &str) -> Vec<u8> {
    commit(&[&tree_line(), line, COMMITTER], "m\n")
}

/// A valid commit with extra header lines after the committer.
fn with_extra(lines: &[&str]) -> Vec<u8> {
    let mut headers = vec![tree_line(), AUTHOR.to_owned(), COMMITTER.to_owned()];
    headers.extend(lines.iter().map(|l| l.to_string()));
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    commit(&refs, "m\n")
}

fn blob_id() -> [u8; 20] {
    *hash_object(Kind::Blob, b"x: 1\n")
        .as_bytes()
        .first_chunk::<20>()
        .expect("20 bytes")
}

/// Raw tree data from (mode, name, id) entries, in the given order.
fn raw_tree(entries: &[(&str, &[u8], [u8; 20])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, id) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(id);
    }
    out
}

fn file(name: &[u8]) -> Vec<u8> {
    raw_tree(&[("100644", name, blob_id())])
}

fn commit_err(data: &[u8]) -> FsckError {
    match check_commit(data) {
        Ok(c) => panic!("accepted {c:?} from {:?}", String::from_utf8_lossy(data)),
        Err(e) => e,
    }
}

fn tree_err(data: &[u8]) -> FsckError {
    match check_tree(data) {
        Ok(e) => panic!("accepted {e:?}"),
        Err(e) => e,
    }
}

const WHO: &str = "author";

#[test]
fn a_well_formed_commit_passes() {
    let data = commit(
        &[
            &tree_line(),
            &parent_line(),
            &parent_line(),
            AUTHOR,
            COMMITTER,
        ],
        "Visit\n\nChartsync-Instance: central\n",
    );
    let c = check_commit(&data).expect("valid");
    assert_eq!(c.parents.len(), 2);
    // And one without a body (fsck allows it).
    let bare = format!("{}\n{AUTHOR}\n{COMMITTER}\n", tree_line());
    check_commit(bare.as_bytes()).expect("no body is no crime");
    // The time 0 is not zero-padded.
    check_commit(&with_author("author A <a@b> 0 +0000")).expect("time 0");
}

#[test]
fn nul_in_header() {
    let data = with_extra(&["x-extra a\0b"]);
    let at = data.iter().position(|&c| c == 0).expect("has NUL");
    assert_eq!(commit_err(&data), FsckError::NulInHeader { offset: at });
    assert_eq!(
        commit_err(&data).to_string(),
        format!("commit header has a NUL byte at offset {at}")
    );
}

#[test]
fn unterminated_header() {
    let data = format!("{}\n{AUTHOR}\n{COMMITTER}", tree_line());
    assert_eq!(commit_err(data.as_bytes()), FsckError::UnterminatedHeader);
}

#[test]
fn missing_tree() {
    let data = commit(&[&parent_line(), AUTHOR, COMMITTER], "m\n");
    assert_eq!(commit_err(&data), FsckError::MissingTree);
}

#[test]
fn bad_tree_sha1() {
    for line in [
        "tree 4b825dc6",
        "tree 4B825DC642CB6EB9A060E54BF8D69288FBEE4904",
        "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904 ",
    ] {
        let data = commit(&[line, AUTHOR, COMMITTER], "m\n");
        assert_eq!(commit_err(&data), FsckError::BadTreeSha1, "{line}");
    }
}

#[test]
fn bad_parent_sha1() {
    let data = commit(
        &[
            &tree_line(),
            &parent_line(),
            "parent xyz",
            AUTHOR,
            COMMITTER,
        ],
        "m\n",
    );
    assert_eq!(commit_err(&data), FsckError::BadParentSha1 { line: 3 });
}

#[test]
fn missing_author() {
    let data = commit(&[&tree_line(), COMMITTER], "m\n");
    assert_eq!(commit_err(&data), FsckError::MissingAuthor);
}

#[test]
fn multiple_authors() {
    let data = commit(&[&tree_line(), AUTHOR, AUTHOR, COMMITTER], "m\n");
    assert_eq!(commit_err(&data), FsckError::MultipleAuthors);
}

#[test]
fn missing_committer() {
    let data = commit(&[&tree_line(), AUTHOR], "m\n");
    assert_eq!(commit_err(&data), FsckError::MissingCommitter);
    // Not right after the author either.
    let data = commit(&[&tree_line(), AUTHOR, "encoding UTF-8", COMMITTER], "m\n");
    assert_eq!(commit_err(&data), FsckError::MissingCommitter);
}

#[test]
fn missing_name_before_email() {
    assert_eq!(
        commit_err(&with_author("author <a@b> 1 +0000")),
        FsckError::MissingNameBeforeEmail { who: WHO }
    );
}

#[test]
fn missing_email() {
    assert_eq!(
        commit_err(&with_author("author Ada Obi 1 +0000")),
        FsckError::MissingEmail { who: WHO }
    );
}

#[test]
fn bad_name() {
    assert_eq!(
        commit_err(&with_author("author Ada> <a@b> 1 +0000")),
        FsckError::BadName { who: WHO }
    );
}

#[test]
fn missing_space_before_email() {
    assert_eq!(
        commit_err(&with_author("author Ada<a@b> 1 +0000")),
        FsckError::MissingSpaceBeforeEmail { who: WHO }
    );
}

#[test]
fn bad_email() {
    assert_eq!(
        commit_err(&with_author("author Ada <a<b> 1 +0000")),
        FsckError::BadEmail { who: WHO }
    );
    assert_eq!(
        commit_err(&with_author("author Ada <a@b 1 +0000")),
        FsckError::BadEmail { who: WHO }
    );
}

#[test]
fn missing_space_before_date() {
    assert_eq!(
        commit_err(&with_author("author Ada <a@b>1 +0000")),
        FsckError::MissingSpaceBeforeDate { who: WHO }
    );
}

#[test]
fn bad_date() {
    for line in [
        "author Ada <a@b> x +0000",
        "author Ada <a@b> ",
        "author Ada <a@b> 12x +0000",
        "author Ada <a@b> 12",
    ] {
        assert_eq!(
            commit_err(&with_author(line)),
            FsckError::BadDate { who: WHO },
            "{line}"
        );
    }
}

#[test]
fn zero_padded_date() {
    assert_eq!(
        commit_err(&with_author("author Ada <a@b> 0123 +0000")),
        FsckError::ZeroPaddedDate { who: WHO }
    );
}

#[test]
fn bad_date_overflow() {
    assert_eq!(
        commit_err(&with_author("author Ada <a@b> 9223372036854775808 +0000")),
        FsckError::BadDateOverflow { who: WHO }
    );
    check_commit(&with_author("author Ada <a@b> 9223372036854775807 +0000"))
        .expect("the largest time fits");
}

#[test]
fn bad_timezone() {
    for line in [
        "author Ada <a@b> 1 +000",
        "author Ada <a@b> 1 0000",
        "author Ada <a@b> 1 +00000",
        "author Ada <a@b> 1 +00a0",
        "author Ada <a@b> 1 +0000 ",
    ] {
        assert_eq!(
            commit_err(&with_author(line)),
            FsckError::BadTimezone { who: WHO },
            "{line}"
        );
    }
}

#[test]
fn committer_ident_errors_name_the_committer() {
    let data = commit(&[&tree_line(), AUTHOR, "committer C <c@d> 01 +0000"], "m\n");
    assert_eq!(
        commit_err(&data),
        FsckError::ZeroPaddedDate { who: "committer" }
    );
}

#[test]
fn nul_in_commit() {
    let data = commit(&[&tree_line(), AUTHOR, COMMITTER], "a\0b\n");
    let at = data.iter().position(|&c| c == 0).expect("has NUL");
    assert_eq!(commit_err(&data), FsckError::NulInCommit { offset: at });
}

#[test]
fn bad_header_continuation() {
    let data = with_extra(&[" stray continuation"]);
    assert_eq!(
        commit_err(&data),
        FsckError::BadHeaderContinuation { line: 4 }
    );
}

#[test]
fn extra_headers_are_refused() {
    for key in ["mergetag object 1", "x-extra a", "author-2 x", "tree"] {
        let data = with_extra(&[key]);
        let expected = key.split(' ').next().expect("a key").to_owned();
        assert_eq!(
            commit_err(&data),
            FsckError::ExtraHeader {
                line: 4,
                key: expected
            },
            "{key}"
        );
    }
    assert_eq!(
        commit_err(&with_extra(&["mergetag x"])).to_string(),
        "commit header line 4 is an unexpected \"mergetag\" header (only \"encoding\" and \"gpgsig\" may follow the committer)"
    );
}

const SIG: [&str; 4] = [
    "gpgsig -----BEGIN PGP SIGNATURE-----",
    " ",
    " iQEzBAABCAAdFiEE",
    " -----END PGP SIGNATURE-----",
];

#[test]
fn encoding_and_signatures_in_their_forms_pass() {
    check_commit(&with_extra(&["encoding ISO-8859-1"])).expect("encoding");
    check_commit(&with_extra(&SIG)).expect("gpgsig");
    let mut both = vec!["encoding UTF-8"];
    both.extend(SIG);
    both.extend([
        "gpgsig-sha256 -----BEGIN SSH SIGNATURE-----",
        " U1NIU0lH",
        " -----END SSH SIGNATURE-----",
    ]);
    check_commit(&with_extra(&both)).expect("encoding and two signatures");
}

#[test]
fn duplicate_headers() {
    let data = with_extra(&["encoding UTF-8", "encoding UTF-8"]);
    assert_eq!(
        commit_err(&data),
        FsckError::DuplicateHeader {
            line: 5,
            key: "encoding".into()
        }
    );
}

#[test]
fn bad_encoding() {
    let cases: [(&[&str], &str); 4] = [
        (&["encoding"], "is not one word of printable ASCII"),
        (&["encoding UTF 8"], "is not one word of printable ASCII"),
        (&["encoding UTF-8", " more"], "has continuation lines"),
        (
            &[SIG[0], SIG[1], SIG[2], SIG[3], "encoding UTF-8"],
            "must come right after the committer line",
        ),
    ];
    for (lines, reason) in cases {
        let err = commit_err(&with_extra(lines));
        assert!(
            matches!(err, FsckError::BadEncoding { reason: r, .. } if r == reason),
            "{lines:?}: {err:?}"
        );
    }
}

#[test]
fn bad_gpgsig() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["gpgsig garbage", " -----END PGP SIGNATURE-----"],
            "does not start with \"-----BEGIN <type>-----\"",
        ),
        (
            &["gpgsig -----BEGIN PGP SIGNATURE-----"],
            "has no signature lines",
        ),
        (
            &["gpgsig -----BEGIN PGP SIGNATURE-----", " abc"],
            "does not end with \"-----END <type>-----\"",
        ),
        (
            &["gpgsig -----BEGIN FOO-----", " abc", " -----END FOO-----"],
            "is not a PGP, SSH or X.509 signature",
        ),
    ];
    for (lines, reason) in cases {
        assert_eq!(
            commit_err(&with_extra(lines)),
            FsckError::BadGpgsig { line: 4, reason },
            "{lines:?}"
        );
    }
}

#[test]
fn chartsync_strict_commit_form() {
    // fsck allows extra whitespace before the date; chartsync does not.
    let err = commit_err(&with_author("author Ada <a@b>  \t1 +0000"));
    assert!(matches!(err, FsckError::Format { .. }), "{err:?}");
    let err = commit_err(&commit(&[&tree_line(), AUTHOR, COMMITTER], "\u{0}"));
    assert!(matches!(err, FsckError::NulInCommit { .. }), "{err:?}");
    let mut data = commit(&[&tree_line(), AUTHOR, COMMITTER], "");
    data.push(0xff);
    assert_eq!(
        commit_err(&data),
        FsckError::Format {
            source: FormatError::NotUtf8 {
                what: "commit message"
            }
        }
    );
}

#[test]
fn a_well_formed_tree_passes() {
    let id = blob_id();
    let data = raw_tree(&[
        ("100644", b".github", id),
        ("100644", b"a", id),
        ("100755", b"a.b", id),
        ("40000", b"a0", id),
        ("120000", b"b", id),
        ("160000", b"c", id),
        ("100644", b"gitmodules", id),
        ("100644", b"git~2", id),
    ]);
    let entries = check_tree(&data).expect("valid");
    assert_eq!(entries.len(), 8);
    assert_eq!(encode_tree(&entries), data);
    check_tree(b"").expect("the empty tree is a valid object");
}

#[test]
fn bad_tree() {
    let id = blob_id();
    let good = file(b"a");
    assert_eq!(
        tree_err(&good[..good.len() - 1]),
        FsckError::BadTree {
            offset: 0,
            reason: "entry is truncated"
        }
    );
    assert_eq!(
        tree_err(&raw_tree(&[("100644", b"a", id), ("10064x", b"b", id)])),
        FsckError::BadTree {
            offset: 29,
            reason: "mode is not an octal number"
        }
    );
    assert_eq!(
        tree_err(&raw_tree(&[("100644", b"", id)])),
        FsckError::BadTree {
            offset: 0,
            reason: "entry has an empty name"
        }
    );
}

#[test]
fn null_sha1() {
    assert_eq!(
        tree_err(&raw_tree(&[("100644", b"a", [0; 20])])),
        FsckError::NullSha1 { name: "a".into() }
    );
}

#[test]
fn full_pathname() {
    assert_eq!(
        tree_err(&file(b"a/b")),
        FsckError::FullPathname { name: "a/b".into() }
    );
}

#[test]
fn has_dot_and_dotdot() {
    assert_eq!(tree_err(&file(b".")), FsckError::HasDot);
    assert_eq!(tree_err(&file(b"..")), FsckError::HasDotdot);
}

/// Names NTFS or HFS+ read as `.git`.
const DOTGIT_LOOKALIKES: [&str; 16] = [
    ".git",
    ".GIT",
    ".Git",
    "git~1",
    "GIT~1",
    ".git.",
    ".git ",
    ".git. . .",
    "git~1 .",
    ".git::$INDEX_ALLOCATION",
    ".git:stream",
    "\u{200c}.git",
    ".g\u{200d}it",
    ".gi\u{feff}t\u{202e}",
    "a\\.git",
    "x\\git~1\\y",
];

#[test]
fn has_dotgit() {
    for name in DOTGIT_LOOKALIKES {
        assert_eq!(
            tree_err(&file(name.as_bytes())),
            FsckError::HasDotgit { name: name.into() },
            "{name:?}"
        );
        assert_eq!(
            check_name(name.as_bytes()),
            Err(NameRule::DotGit),
            "{name:?}"
        );
    }
    for fine in [
        "git~2",
        ".gitx",
        "git",
        ".gi",
        "a.git",
        "git~10",
        ".g\u{e9}it",
    ] {
        check_name(fine.as_bytes()).unwrap_or_else(|e| panic!("{fine:?}: {e:?}"));
    }
    // Malformed UTF-8 ends a name for HFS+, as in git.
    assert_eq!(check_name(b".git\xff"), Err(NameRule::DotGit));
    assert_eq!(
        tree_err(&file(b"git~1")).to_string(),
        "tree entry \"git~1\" is \".git\" or a name NTFS or HFS+ reads as \".git\" (short name \"git~1\", trailing dots or spaces, an \":\" stream, ignorable Unicode)"
    );
}

#[test]
fn git_control_files() {
    for (name, which) in [
        (".gitmodules", ".gitmodules"),
        (".GitModules ..", ".gitmodules"),
        ("gitmod~1", ".gitmodules"),
        ("GITMOD~4", ".gitmodules"),
        ("gi7eba~1", ".gitmodules"),
        ("gi7eba~9", ".gitmodules"),
        (".gitmodules:$DATA", ".gitmodules"),
        (".gitmodules\u{200c}", ".gitmodules"),
        ("a\\.gitmodules", ".gitmodules"),
        (".gitattributes", ".gitattributes"),
        ("gi7d29~1", ".gitattributes"),
        (".gitignore", ".gitignore"),
        ("gitign~2", ".gitignore"),
        (".mailmap", ".mailmap"),
        ("maba30~3", ".mailmap"),
    ] {
        assert_eq!(
            tree_err(&file(name.as_bytes())),
            FsckError::GitControlFile {
                name: name.into(),
                file: which
            },
            "{name:?}"
        );
    }
    for fine in ["gitmod~5", "gitmodules", "gi7eba", "a.gitmodules"] {
        check_name(fine.as_bytes()).unwrap_or_else(|e| panic!("{fine:?}: {e:?}"));
    }
}

#[test]
fn zero_padded_filemode() {
    for mode in ["0100644", "040000"] {
        assert_eq!(
            tree_err(&raw_tree(&[(mode, b"a", blob_id())])),
            FsckError::ZeroPaddedFilemode {
                name: "a".into(),
                mode: mode.into()
            }
        );
    }
}

#[test]
fn bad_filemode() {
    for mode in ["100664", "100600", "1", "77777777777777777777"] {
        assert_eq!(
            tree_err(&raw_tree(&[(mode, b"a", blob_id())])),
            FsckError::BadFilemode {
                name: "a".into(),
                mode: mode.into()
            },
            "{mode}"
        );
    }
}

#[test]
fn large_pathname() {
    let name = vec![b'a'; 4097];
    assert_eq!(
        tree_err(&file(&name)),
        FsckError::LargePathname { len: 4097 }
    );
    check_tree(&file(&name[..4096])).expect("4096 bytes are allowed");
}

#[test]
fn tree_not_sorted() {
    let id = blob_id();
    assert_eq!(
        tree_err(&raw_tree(&[("100644", b"b", id), ("100644", b"a", id)])),
        FsckError::TreeNotSorted { name: "a".into() }
    );
    // A folder sorts as if its name ended in '/': "a/" after "a.b".
    assert_eq!(
        tree_err(&raw_tree(&[("40000", b"a", id), ("100644", b"a.b", id)])),
        FsckError::TreeNotSorted { name: "a.b".into() }
    );
}

#[test]
fn duplicate_entries() {
    let id = blob_id();
    assert_eq!(
        tree_err(&raw_tree(&[("100644", b"a", id), ("100644", b"a", id)])),
        FsckError::DuplicateEntries { name: "a".into() }
    );
    // A file and a folder of one name, not adjacent.
    assert_eq!(
        tree_err(&raw_tree(&[
            ("100644", b"a", id),
            ("100644", b"a.b", id),
            ("40000", b"a", id)
        ])),
        FsckError::DuplicateEntries { name: "a".into() }
    );
}

#[test]
fn name_not_utf8() {
    assert_eq!(
        tree_err(&file(b"a\xffb")),
        FsckError::NameNotUtf8 {
            name: "a\u{fffd}b".into()
        }
    );
}

#[test]
fn tags_are_refused() {
    let tag = format!("object {PARENT}\ntype commit\ntag v1\ntagger A <a@b> 1 +0000\n\nx\n");
    assert_eq!(
        check_object(Kind::Tag, tag.as_bytes()),
        Err(FsckError::TagObject)
    );
    assert!(check_object(Kind::Blob, b"\0anything").is_ok());
}

#[test]
fn tree_writer_and_parser_share_the_name_rules() {
    let id = hash_object(Kind::Blob, b"");
    for name in DOTGIT_LOOKALIKES.iter().chain(&[".gitmodules", "gitmod~1"]) {
        let entry = TreeEntry {
            mode: MODE_FILE,
            name: name.to_string(),
            id,
        };
        assert!(encode_tree_checked(&[entry]).is_err(), "{name:?} written");
        assert!(
            parse_tree(&file(name.as_bytes())).is_err(),
            "{name:?} parsed"
        );
        let mut files = BTreeMap::new();
        files.insert(format!("dir/{name}"), Vec::new());
        assert!(build_tree(&files).is_err(), "{name:?} built");
    }
}

/// `git fsck --strict` on a repository holding `objects`: the message ids
/// reported per object id.
fn git_fsck(objects: &[(Kind, Vec<u8>)]) -> BTreeMap<String, BTreeSet<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, &["init", "-q", "--bare"]);
    for (kind, data) in objects {
        write_literally(repo, *kind, data);
    }
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["fsck", "--strict", "--no-dangling", "--no-progress"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git fsck");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if std::env::var_os("FSCK_DEBUG").is_some() {
        eprintln!("git fsck: {:?}, {} bytes\n{text}", out.status, text.len());
    }
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        // "error: <id>: object could not be parsed: <path>": git's own
        // parser refuses it before fsck's checks run.
        if let Some(rest) = line.strip_prefix("error: ")
            && let Some((id, tail)) = rest.split_once(": ")
            && tail.starts_with("object could not be parsed")
        {
            found
                .entry(id.to_owned())
                .or_default()
                .insert("unparseable".to_owned());
            continue;
        }
        // "error in tree <id>: hasDotgit: contains '.git'" (also "warning in").
        let Some((_, rest)) = line.split_once(" in ") else {
            continue;
        };
        let mut words = rest.split(' ');
        let (Some(_kind), Some(id)) = (words.next(), words.next()) else {
            continue;
        };
        let id = id.trim_end_matches(':').to_owned();
        // "error in tree <id>: broken links" is about objects the test
        // does not provide, not about the object's form.
        if let Some(msg) = words.next().filter(|m| *m != "broken") {
            found
                .entry(id)
                .or_default()
                .insert(msg.trim_end_matches(':').to_owned());
        }
    }
    found
}

/// Writes an object as a loose object, without git's own checks.
fn write_literally(repo: &Path, kind: Kind, data: &[u8]) {
    let object = Object::new(kind, data.to_vec());
    let hex = object.id.to_string();
    let dir = repo.join("objects").join(&hex[..2]);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut raw = format!("{} {}\0", kind.name(), data.len()).into_bytes();
    raw.extend_from_slice(data);
    std::fs::write(dir.join(&hex[2..]), super::zlib(&raw, 6)).expect("write object");
}

/// Every refused object whose error has an fsck id draws that id from
/// `git fsck --strict`; every accepted one draws no complaint about its
/// own form (a missing tree or parent aside).
#[test]
fn git_fsck_agrees() {
    let id = blob_id();
    let mut cases: Vec<(Kind, Vec<u8>)> = vec![
        (Kind::Commit, with_extra(&["x-extra a\0b"])),
        (
            Kind::Commit,
            format!("{}\n{AUTHOR}\n{COMMITTER}", tree_line()).into_bytes(),
        ),
        (
            Kind::Commit,
            commit(&[&parent_line(), AUTHOR, COMMITTER], "m\n"),
        ),
        (
            Kind::Commit,
            commit(&["tree 4b825dc6", AUTHOR, COMMITTER], "m\n"),
        ),
        (
            Kind::Commit,
            commit(&[&tree_line(), "parent xyz", AUTHOR, COMMITTER], "m\n"),
        ),
        (Kind::Commit, commit(&[&tree_line(), COMMITTER], "m\n")),
        (
            Kind::Commit,
            commit(&[&tree_line(), AUTHOR, AUTHOR, COMMITTER], "m\n"),
        ),
        (Kind::Commit, commit(&[&tree_line(), AUTHOR], "m\n")),
        (
            Kind::Commit,
            commit(&[&tree_line(), AUTHOR, COMMITTER], "a\0b\n"),
        ),
    ];
    for line in [
        "author <a@b> 1 +0000",
        "author Ada Obi 1 +0000",
        "author Ada> <a@b> 1 +0000",
        "author Ada<a@b> 1 +0000",
        "author Ada <a<b> 1 +0000",
        "author Ada <a@b>1 +0000",
        "author Ada <a@b> x +0000",
        "author Ada <a@b> 0123 +0000",
        "author Ada <a@b> 99999999999999999999999 +0000",
        "author Ada <a@b> 1 +000",
    ] {
        cases.push((Kind::Commit, with_author(line)));
    }
    for (mode, name) in [
        ("100644", &b"a/b"[..]),
        ("100644", b"."),
        ("100644", b".."),
        ("0100644", b"a"),
        ("100664", b"a"),
    ] {
        cases.push((Kind::Tree, raw_tree(&[(mode, name, id)])));
    }
    cases.push((Kind::Tree, raw_tree(&[("100644", b"a", [0; 20])])));
    for name in DOTGIT_LOOKALIKES {
        cases.push((Kind::Tree, file(name.as_bytes())));
    }
    cases.push((
        Kind::Tree,
        raw_tree(&[("100644", b"b", id), ("100644", b"a", id)]),
    ));
    cases.push((
        Kind::Tree,
        raw_tree(&[
            ("100644", b"a", id),
            ("100644", b"a.b", id),
            ("40000", b"a", id),
        ]),
    ));
    // Accepted ones.
    let accepted = [
        (
            Kind::Commit,
            commit(&[&tree_line(), &parent_line(), AUTHOR, COMMITTER], "m\n"),
        ),
        (Kind::Commit, with_extra(&SIG)),
        (Kind::Commit, with_extra(&["encoding ISO-8859-1"])),
        (
            Kind::Tree,
            raw_tree(&[
                ("100644", b"a", id),
                ("100755", b"a.b", id),
                ("40000", b"a0", id),
            ]),
        ),
        (Kind::Tree, file(b"git~2")),
        (Kind::Tree, file(b".github")),
    ];
    cases.extend(accepted.iter().cloned());
    let reported = git_fsck(&cases);
    for (kind, data) in &cases {
        let hex = hash_object(*kind, data).to_string();
        let ids = reported.get(&hex).cloned().unwrap_or_default();
        match check_object(*kind, data) {
            Ok(_) => {
                // Missing links ("broken link", "missing tree") are not
                // collected: only complaints about the object's form.
                assert!(
                    ids.is_empty(),
                    "accepted {:?} but git fsck says {ids:?}",
                    String::from_utf8_lossy(data)
                );
            }
            Err(e) => {
                let Some(msg_id) = e.msg_id() else { continue };
                assert!(
                    ids.contains(msg_id) || ids.contains("unparseable"),
                    "{:?}: we say {msg_id}, git fsck says {ids:?}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
}

/// The `.git` look-alike rule says the same as `git fsck --strict` on
/// hundreds of names made from the characters that matter (both ways:
/// nothing git flags is missed, nothing else is flagged as `.git`).
#[test]
fn dotgit_rule_matches_git_on_random_names() {
    const PARTS: [&str; 22] = [
        ".", ".", "g", "i", "t", "G", "I", "T", "~", "1", "2", " ", ":", "\\", "a", "m", "o", "d",
        "\u{200c}", "\u{feff}", "\u{202e}", "\u{e9}",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut names: Vec<String> = Vec::new();
    while names.len() < 400 {
        // Mostly near misses: start from a look-alike and change a part.
        let mut name: Vec<&str> = match next(4) {
            0 | 1 => vec![".", "g", "i", "t"],
            2 => vec!["g", "i", "t", "~", "1"],
            _ => (0..1 + next(6)).map(|_| PARTS[next(PARTS.len())]).collect(),
        };
        if next(3) == 0 {
            let at = next(name.len() + 1);
            name.insert(at, PARTS[next(PARTS.len())]);
        }
        if next(4) == 0 {
            let at = next(name.len());
            name.remove(at);
        }
        // Often a tail NTFS ignores, or a stream.
        if next(2) == 0 {
            name.push([" ", ".", ". .", ":", "::$INDEX_ALLOCATION", "\\x"][next(6)]);
        }
        let name = name.concat();
        let bad = name.is_empty() || name == "." || name == "..";
        if !bad && !names.contains(&name) {
            names.push(name);
        }
    }
    let trees: Vec<(Kind, Vec<u8>)> = names
        .iter()
        .map(|n| (Kind::Tree, file(n.as_bytes())))
        .collect();
    let reported = git_fsck(&trees);
    let mut flagged = 0;
    for (name, (kind, data)) in names.iter().zip(&trees) {
        let hex = hash_object(*kind, data).to_string();
        let git_says = reported
            .get(&hex)
            .is_some_and(|ids| ids.contains("hasDotgit"));
        let we_say = check_name(name.as_bytes()) == Err(NameRule::DotGit);
        assert_eq!(
            we_say, git_says,
            "{name:?}: we say {we_say}, git says {git_says}"
        );
        flagged += usize::from(we_say);
    }
    // The sample holds both kinds.
    assert!(
        flagged >= 20 && flagged <= names.len() - 20,
        "{flagged} flagged"
    );
}

/// Generated author lines: whatever `git fsck --strict` flags is refused,
/// whatever is accepted draws nothing from git, and a refusal for one of
/// fsck's own reasons carries the id git reports.
#[test]
fn ident_checks_match_git_on_generated_lines() {
    const PARTS: [&str; 14] = [
        " ", " ", "<", ">", "a", "b", "0", "1", "9", "+", "-", "\t", "@", "0000",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let good = [
        "Ada",
        " ",
        "<",
        "a@b",
        ">",
        " ",
        "1700000000",
        " ",
        "+",
        "0100",
    ];
    let mut lines: Vec<String> = Vec::new();
    while lines.len() < 300 {
        let mut parts: Vec<&str> = good.to_vec();
        for _ in 0..1 + next(2) {
            match next(3) {
                0 => {
                    let at = next(parts.len());
                    parts.remove(at);
                }
                1 => {
                    let at = next(parts.len() + 1);
                    parts.insert(at, PARTS[next(PARTS.len())]);
                }
                _ => {
                    let at = next(parts.len());
                    parts[at] = PARTS[next(PARTS.len())];
                }
            }
        }
        let line = format!("author {}", parts.concat());
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let commits: Vec<(Kind, Vec<u8>)> = lines
        .iter()
        .map(|l| (Kind::Commit, with_author(l)))
        .collect();
    let reported = git_fsck(&commits);
    let mut accepted = 0;
    for (line, (kind, data)) in lines.iter().zip(&commits) {
        let hex = hash_object(*kind, data).to_string();
        // Only "error in <kind> <id>: <msgId>" lines are collected, so
        // the missing tree (a link, not a form problem) does not show.
        let ids: BTreeSet<String> = reported.get(&hex).cloned().unwrap_or_default();
        match check_commit(data) {
            Ok(_) => {
                accepted += 1;
                assert!(ids.is_empty(), "{line:?}: accepted, git says {ids:?}");
            }
            Err(e) => {
                if let Some(id) = e.msg_id() {
                    assert!(
                        ids.contains(id) || ids.contains("unparseable"),
                        "{line:?}: we say {id}, git says {ids:?}"
                    );
                }
            }
        }
    }
    assert!(accepted > 10 && accepted < 290, "{accepted} accepted");
}
