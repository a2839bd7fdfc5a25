//! Received packs: objects `git fsck --strict` would flag, versions that
//! are not a record's shape, and objects the new history does not use are
//! refused, and nothing is stored. The first tests are the hostile tester's
//! findings, named after what broke.

mod support;

use chartsync_git::{FsckError, Kind, Object};
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::path::PathError;
use chartsync_store::validate::InvalidRecord;
use chartsync_store::{Flush, ReceiveError, Received, StoreError};
use git2::Oid;

use support::{Craft, fsck_clean, store};

/// Sends `objects` as a pack with `head`, on top of `expected`, and
/// returns why the store refused it; checks the head did not move and no
/// object was stored.
fn refused(
    s: &chartsync_store::RecordStore,
    id: &PatientId,
    expected: Option<CommitId>,
    head: Oid,
    objects: &[Object],
) -> ReceiveError {
    let packs_before = s.pack_count(id).ok();
    let head_before = s.head(id).expect("head");
    let pack = chartsync_git::write_pack_only(objects, 0);
    let r = s.prepare_received(id, expected, commit_id(head), &pack, Flush::Now);
    let err = match r {
        Err(StoreError::Received(e)) => e,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(Received::Stale { current }) => panic!("stale: {current:?}"),
        Ok(Received::Ready(_)) => panic!("accepted"),
    };
    assert_eq!(s.head(id).expect("head"), head_before, "head moved");
    assert_eq!(s.pack_count(id).ok(), packs_before, "objects stored");
    err
}

fn commit_id(oid: Oid) -> CommitId {
    CommitId::from_slice(oid.as_bytes()).expect("20 bytes")
}

fn oid(c: CommitId) -> Oid {
    Oid::from_bytes(&c.0).expect("20 bytes")
}

// ---- The tester's findings.

#[test]
fn a_commit_with_a_nul_in_an_extra_header_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let root = c.record(&[("patient.yaml", "name: A\n")]);
    let head = c.commit_with(root, &[], &["x-note hidden\0payload"]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::Object { id, source: FsckError::NulInHeader { .. }, .. } if *id == head
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "invalid_object");
    assert!(!s.exists(&id));
}

#[test]
fn an_empty_subtree_named_git_tilde_1_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let empty = c.tree(&[]);
    let root = c.tree(&[
        ("40000", "git~1", empty),
        ("100644", "patient.yaml", patient),
    ]);
    let head = c.commit(root, &[]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::Object { id, source: FsckError::HasDotgit { name }, .. }
                if *id == root && name == "git~1"
        ),
        "{err:?}"
    );
    // Under a name git does not mind, the empty folder is still refused.
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let empty = c.tree(&[]);
    let root = c.tree(&[
        ("100644", "patient.yaml", patient),
        ("40000", "visits", empty),
    ]);
    let head = c.commit(root, &[]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::Invalid(InvalidRecord::EmptyFolder { folder }) if folder == "visits"),
        "{err:?}"
    );
    assert_eq!(err.code(), "empty_folder");
}

#[test]
fn a_subtree_name_that_skipped_the_path_check_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let h1 = support::create(&s, &id);

    // Only the head's file paths were checked, so a folder holding no
    // file (here only an empty folder) never met the path rules.
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let empty = c.tree(&[]);
    let holder = c.tree(&[("40000", "inner", empty)]);
    let root = c.tree(&[
        ("40000", "a b", holder),
        ("100644", "patient.yaml", patient),
    ]);
    let head = c.commit(root, &[oid(h1)]);
    let err = refused(&s, &id, Some(h1), head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::Invalid(InvalidRecord::Path(PathError::Charset { path, ch: ' ' })) if path == "a b"),
        "{err:?}"
    );

    // A version before the head was not checked at all: a hidden folder
    // there, gone again in the head.
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let note = c.blob("x: 1\n");
    let dotted = c.tree(&[("100644", "n.yaml", note)]);
    let bad_root = c.tree(&[
        ("40000", ".hidden", dotted),
        ("100644", "patient.yaml", patient),
    ]);
    let middle = c.commit(bad_root, &[oid(h1)]);
    let good_root = c.tree(&[("100644", "patient.yaml", patient)]);
    let head = c.commit(good_root, &[middle]);
    let err = refused(&s, &id, Some(h1), head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::InvalidVersion { commit, source: InvalidRecord::Path(PathError::Hidden(p)) }
                if *commit == middle && p == ".hidden"
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "invalid_path");
}

#[test]
fn unreferenced_blobs_in_a_push_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let h1 = support::create(&s, &id);
    let mut c = Craft::default();
    let root = c.record(&[("patient.yaml", "name: B\n")]);
    let head = c.commit(root, &[oid(h1)]);
    // 8 MB that no tree names, in blobs under the size limit for one file.
    let ballast: Vec<Oid> = (0..8)
        .map(|i| c.blob(&format!("{i}{}", "x".repeat(1_000_000))))
        .collect();
    let err = refused(&s, &id, Some(h1), head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::Unreferenced { id, kind: "blob", .. } if *id == ballast[0]),
        "{err:?}"
    );
    assert_eq!(err.code(), "unreferenced_object");
    assert!(err.to_string().contains("not reachable from the new head"));
}

// ---- One test per refusal class of the receiver.

#[test]
fn a_tag_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let root = c.record(&[("patient.yaml", "name: A\n")]);
    let head = c.commit(root, &[]);
    let tag = format!("object {head}\ntype commit\ntag v1\ntagger A <a@b> 1 +0000\n\nv1\n");
    c.objects.push(Object::new(Kind::Tag, tag.into_bytes()));
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::Object {
                kind: "tag",
                source: FsckError::TagObject,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_malformed_tree_is_refused_even_outside_the_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let root = c.tree(&[("0100644", "patient.yaml", patient)]);
    let head = c.commit(root, &[]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::Object {
                source: FsckError::ZeroPaddedFilemode { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_object_of_the_wrong_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    // A folder entry naming a blob.
    let root = c.tree(&[
        ("100644", "patient.yaml", patient),
        ("40000", "visits", patient),
    ]);
    let head = c.commit(root, &[]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::WrongKind { id, expected: "tree", found: "blob", .. } if *id == patient),
        "{err:?}"
    );
    assert_eq!(err.code(), "invalid_object");
}

#[test]
fn a_commit_off_the_new_history_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let root = c.record(&[("patient.yaml", "name: A\n")]);
    let head = c.commit(root, &[]);
    let stray = c.commit_with(root, &[], &["encoding UTF-8"]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::Unreferenced { id, kind: "commit", .. } if *id == stray),
        "{err:?}"
    );
}

#[test]
fn a_symlink_in_a_version_before_the_head_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let h1 = support::create(&s, &id);
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let target = c.blob("/etc/passwd");
    let bad_root = c.tree(&[
        ("120000", "link", target),
        ("100644", "patient.yaml", patient),
    ]);
    let middle = c.commit(bad_root, &[oid(h1)]);
    let good_root = c.tree(&[("100644", "patient.yaml", patient)]);
    let head = c.commit(good_root, &[middle]);
    let err = refused(&s, &id, Some(h1), head, &c.objects);
    assert!(
        matches!(
            &err,
            ReceiveError::InvalidVersion { commit, source: InvalidRecord::UnsupportedEntry { file, .. } }
                if *commit == middle && file == "link"
        ),
        "{err:?}"
    );
}

#[test]
fn a_known_folder_moved_too_deep_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let mut c = Craft::default();
    let patient = c.blob("name: A\n");
    let note = c.blob("x: 1\n");
    let mut deep = c.tree(&[("100644", "n.yaml", note)]);
    for _ in 0..4 {
        deep = c.tree(&[("40000", "d", deep)]);
    }
    // d/d/d/d/n.yaml under "a": depth 6, the most allowed.
    let root = c.tree(&[("40000", "a", deep), ("100644", "patient.yaml", patient)]);
    let first = c.commit(root, &[]);
    // The same folder one level further down in the next version.
    let wrap = c.tree(&[("40000", "a", deep)]);
    let root2 = c.tree(&[("40000", "b", wrap), ("100644", "patient.yaml", patient)]);
    let head = c.commit(root2, &[first]);
    let err = refused(&s, &id, None, head, &c.objects);
    assert!(
        matches!(&err, ReceiveError::Invalid(InvalidRecord::Path(PathError::TooLong(p))) if p == "b/a/d/d/d/d/n.yaml"),
        "{err:?}"
    );
}

#[test]
fn a_valid_history_of_several_versions_is_accepted_and_passes_git_fsck() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path(), "central");
    let id = PatientId::random();
    let h1 = support::create(&s, &id);
    let mut c = Craft::default();
    let root = c.record(&[("patient.yaml", "name: B\n"), ("visits/a.yaml", "x: 1\n")]);
    let middle = c.commit_with(root, &[oid(h1)], &["encoding UTF-8"]);
    let root2 = c.record(&[("patient.yaml", "name: C\n"), ("visits/a.yaml", "x: 1\n")]);
    let head = c.commit(root2, &[middle]);
    let pack = chartsync_git::write_pack_only(&c.objects, 0);
    match s
        .prepare_received(&id, Some(h1), commit_id(head), &pack, Flush::Now)
        .expect("accepted")
    {
        Received::Ready(p) => {
            s.publish(p, Flush::Now).expect("publish");
        }
        Received::Stale { current } => panic!("stale {current:?}"),
    }
    assert_eq!(s.head(&id).expect("head"), Some(commit_id(head)));
    fsck_clean(&s.layout().repo(&id));
}
