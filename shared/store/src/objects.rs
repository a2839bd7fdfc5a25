//! Reading a record's files through libgit2, and writing new objects as one
//! pack file plus index per write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

use super::durable::{Flush, sync_dir, write_new};
use super::{StoreError, commit_id};
use chartsync_git::{self as git, Kind, Object};
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};
use git2::Oid;

/// A commit's files, plus the ids of every tree and blob it reaches.
pub(crate) struct TreeContents {
    pub files: Files,
    pub objects: HashSet<Oid>,
}

/// Reads the files of `commit`.
pub(crate) fn read_files(
    repo: &Repository,
    id: &PatientId,
    commit: Oid,
) -> Result<TreeContents, StoreError> {
    let commit = repo
        .find_commit(commit)
        .map_err(|e| corrupt(id, format!("commit {commit} unreadable: {e}")))?;
    let tree = commit
        .tree()
        .map_err(|e| corrupt(id, format!("tree of {} unreadable: {e}", commit.id())))?;
    let mut objects = HashSet::new();
    objects.insert(tree.id());
    let mut blobs: Vec<(String, Oid)> = Vec::new();
    let mut bad: Option<String> = None;
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        objects.insert(entry.id());
        match (entry.kind(), entry.name()) {
            (Some(ObjectType::Blob), Ok(name)) => {
                blobs.push((format!("{root}{name}"), entry.id()));
            }
            (Some(ObjectType::Tree), Ok(_)) => {}
            _ => {
                bad = Some(format!("unexpected tree entry {root}{:?}", entry.name()));
                return TreeWalkResult::Abort;
            }
        }
        TreeWalkResult::Ok
    })
    .map_err(|e| corrupt(id, format!("walking tree: {e}")))?;
    if let Some(detail) = bad {
        return Err(corrupt(id, detail));
    }
    let mut files = BTreeMap::new();
    for (path, blob) in blobs {
        let blob = repo
            .find_blob(blob)
            .map_err(|e| corrupt(id, format!("{path}: blob unreadable: {e}")))?;
        let text = std::str::from_utf8(blob.content())
            .map_err(|_| corrupt(id, format!("{path} is not UTF-8")))?;
        files.insert(path, text.to_string());
    }
    Ok(TreeContents { files, objects })
}

pub(crate) fn corrupt(id: &PatientId, detail: String) -> StoreError {
    StoreError::Corrupt { id: *id, detail }
}

/// Commit authorship and message, as written.
pub(crate) struct NewCommit<'a> {
    pub parents: Vec<Oid>,
    pub author_name: &'a str,
    pub author_email: &'a str,
    pub instance: &'a str,
    pub message: &'a str,
    pub time: i64,
}

/// The trailer naming the instance a commit was made on.
pub const INSTANCE_TRAILER: &str = "Chartsync-Instance";

/// Builds the objects of a new commit holding `files`. Returns the commit id
/// and the objects not in `known` (objects the repository already has).
pub(crate) fn build_commit(
    files: &Files,
    commit: &NewCommit<'_>,
    known: &HashSet<Oid>,
) -> Result<(Oid, Vec<Object>), StoreError> {
    let bytes: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let (tree, objects) = git::build_tree(&bytes).map_err(|e| StoreError::Corrupt {
        id: PatientId::random(),
        detail: format!("could not build a tree: {e}"),
    })?;
    let signature = |name: &str, email: &str| {
        git::Signature::new(name, email, commit.time, 0).map_err(|e| {
            StoreError::Invalid(crate::validate::InvalidRecord::NotText {
                file: format!("author {name:?} <{email}>: {e}"),
            })
        })
    };
    let author = signature(commit.author_name, commit.author_email)?;
    let committer = signature("chartsync", &format!("chartsync@{}", commit.instance))?;
    let message = format!(
        "{}\n\n{INSTANCE_TRAILER}: {}\n",
        commit.message.trim_end(),
        commit.instance
    );
    let data = git::encode_commit(&git::Commit {
        tree,
        parents: commit.parents.clone(),
        author,
        committer,
        message,
    });
    let commit_object = Object::new(Kind::Commit, data);
    let id = commit_object.id;
    let mut out: Vec<Object> = objects
        .into_iter()
        .filter(|o| !known.contains(&o.id))
        .collect();
    out.push(commit_object);
    Ok((id, out))
}

/// Writes `objects` as one pack and index into the repository at `repo_dir`.
/// Git and libgit2 find packs through their index files, so the pack is
/// written straight to its final name, and the index last, renamed into
/// place: a reader never sees a pack without its complete index. A pack
/// left without an index by a crash is invisible, replaced by the same
/// write's retry, and removed by the next repack.
pub(crate) fn write_objects(
    repo_dir: &Path,
    objects: &[Object],
    level: u32,
    flush: Flush,
) -> Result<Option<Oid>, StoreError> {
    if objects.is_empty() {
        return Ok(None);
    }
    write_pack_files(repo_dir, &git::write_pack(objects, level), flush).map(Some)
}

/// Stores a written pack and its index as [`write_objects`] does.
pub(crate) fn write_pack_files(
    repo_dir: &Path,
    files: &git::PackFiles,
    flush: Flush,
) -> Result<Oid, StoreError> {
    let dir = repo_dir.join("objects/pack");
    let base = format!("pack-{}", files.checksum);
    let pack = dir.join(format!("{base}.pack"));
    let idx = dir.join(format!("{base}.idx"));
    if idx.is_file() {
        // The same objects were written before (a repeated write).
        return Ok(files.checksum);
    }
    // A name no other writer uses (leftovers of a crash are removed by the
    // next repack).
    let unique = tmp_suffix();
    match write_new(&pack, &files.pack, flush) {
        Ok(()) => {}
        // A crash's leftover (or another writer of the same objects): never
        // truncate a file someone may be reading; replace it whole.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let tmp_pack = dir.join(format!("tmp_{base}_{unique}.pack"));
            write_new(&tmp_pack, &files.pack, flush).map_err(StoreError::io(&tmp_pack))?;
            std::fs::rename(&tmp_pack, &pack).map_err(StoreError::io(&pack))?;
        }
        Err(e) => return Err(StoreError::io(&pack)(e)),
    }
    let tmp_idx = dir.join(format!("tmp_{base}_{unique}.idx"));
    write_new(&tmp_idx, &files.idx, flush).map_err(StoreError::io(&tmp_idx))?;
    std::fs::rename(&tmp_idx, &idx).map_err(StoreError::io(&idx))?;
    if flush == Flush::Now {
        sync_dir(&dir).map_err(StoreError::io(&dir))?;
    }
    Ok(files.checksum)
}

/// A suffix unique to this process and call.
fn tmp_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `objects` as the first pack of a repository nobody else sees yet
/// (being built in `tmp/`): straight to the final names.
pub(crate) fn write_objects_fresh(
    repo_dir: &Path,
    objects: &[Object],
    level: u32,
    flush: Flush,
) -> Result<(), StoreError> {
    if objects.is_empty() {
        return Ok(());
    }
    let files = git::write_pack(objects, level);
    let dir = repo_dir.join("objects/pack");
    let pack = dir.join(format!("pack-{}.pack", files.checksum));
    let idx = dir.join(format!("pack-{}.idx", files.checksum));
    write_new(&pack, &files.pack, flush).map_err(StoreError::io(&pack))?;
    write_new(&idx, &files.idx, flush).map_err(StoreError::io(&idx))?;
    if flush == Flush::Now {
        sync_dir(&dir).map_err(StoreError::io(&dir))?;
    }
    Ok(())
}

/// The bytes of the one pack in `pack_dir` (`None` when it holds more or
/// fewer, or other files than a pack and its index).
pub(crate) fn only_pack(pack_dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut packs = Vec::new();
    for entry in std::fs::read_dir(pack_dir).map_err(StoreError::io(pack_dir))? {
        let path = entry.map_err(StoreError::io(pack_dir))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pack") => packs.push(path),
            Some("idx") => {}
            _ => return Ok(None),
        }
    }
    match packs.as_slice() {
        [pack] => std::fs::read(pack).map(Some).map_err(StoreError::io(pack)),
        _ => Ok(None),
    }
}

/// Reads one object from the repository.
pub(crate) fn read_object(repo: &Repository, id: Oid) -> Option<Object> {
    let odb = repo.odb().ok()?;
    let object = odb.read(id).ok()?;
    let kind = match object.kind() {
        ObjectType::Commit => Kind::Commit,
        ObjectType::Tree => Kind::Tree,
        ObjectType::Blob => Kind::Blob,
        ObjectType::Tag => Kind::Tag,
        _ => return None,
    };
    Some(Object {
        id,
        kind,
        data: object.data().to_vec(),
    })
}

/// The most commits [`objects_since`] walks before leaving the work to
/// libgit2.
const FAST_WALK_COMMITS: usize = 64;

/// The objects of [`pack_since`], read from the packs directly, for the
/// common case: a linear history from `head` back to one of `haves` (or to
/// the root when there are no `haves`), at most [`FAST_WALK_COMMITS`]
/// long. `None` when the case is not that simple or an object is not
/// readable here; the caller then asks libgit2.
pub(crate) fn objects_since(
    packs: &git::PackReader,
    head: Oid,
    haves: &[Oid],
) -> Option<Vec<Object>> {
    let read = |id: Oid| match packs.read(id) {
        git::Lookup::Found(object) => Some(object),
        _ => None,
    };
    let commit_of = |object: &Object| {
        (object.kind == Kind::Commit)
            .then(|| git::parse_commit(&object.data).ok())
            .flatten()
    };
    let mut commits = Vec::new();
    let mut next = head;
    loop {
        if haves.contains(&next) {
            break;
        }
        if commits.len() >= FAST_WALK_COMMITS {
            return None;
        }
        let object = read(next)?;
        let commit = commit_of(&object)?;
        commits.push((object, commit.tree));
        match commit.parents.as_slice() {
            [] if haves.is_empty() => break,
            [parent] => next = *parent,
            // A merge, or a root while the receiver has some other commit.
            _ => return None,
        }
    }
    // The receiver has every tree and blob of the commits it has.
    let mut seen: HashSet<Oid> = HashSet::new();
    for have in haves {
        if let Some(commit) = read(*have).as_ref().and_then(commit_of) {
            let mut stack = vec![commit.tree];
            while let Some(tree) = stack.pop() {
                if !seen.insert(tree) {
                    continue;
                }
                let object = read(tree)?;
                for entry in git::parse_tree(&object.data).ok()? {
                    if entry.mode == git::MODE_DIR {
                        stack.push(entry.id);
                    } else {
                        seen.insert(entry.id);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (commit, tree) in commits.into_iter().rev() {
        out.push(commit);
        let mut stack = vec![tree];
        while let Some(next) = stack.pop() {
            if !seen.insert(next) {
                continue;
            }
            let object = read(next)?;
            if object.kind == Kind::Tree {
                for entry in git::parse_tree(&object.data).ok()?.iter().rev() {
                    if !seen.contains(&entry.id) {
                        stack.push(entry.id);
                    }
                }
            }
            out.push(object);
        }
    }
    Some(out)
}

/// The objects reachable from `head` but not from any of `haves` (those the
/// receiver has), as a wire pack (zlib level 0: the batch is zstd-compressed
/// as a whole). Unknown `haves` are ignored.
pub(crate) fn pack_since(
    repo: &Repository,
    id: &PatientId,
    head: Oid,
    haves: &[Oid],
) -> Result<Vec<u8>, StoreError> {
    Ok(git::write_pack(&objects_since_repo(repo, id, head, haves)?, 0).pack)
}

/// The objects of [`pack_since`], through libgit2.
pub(crate) fn objects_since_repo(
    repo: &Repository,
    id: &PatientId,
    head: Oid,
    haves: &[Oid],
) -> Result<Vec<Object>, StoreError> {
    let mut walk = repo
        .revwalk()
        .map_err(StoreError::git("starting a history walk"))?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)
        .map_err(StoreError::git("sorting a history walk"))?;
    walk.push(head)
        .map_err(|e| corrupt(id, format!("head {head} unreadable: {e}")))?;
    let mut seen: HashSet<Oid> = HashSet::new();
    for have in haves {
        if repo.find_commit(*have).is_ok() {
            walk.hide(*have)
                .map_err(StoreError::git("hiding a known commit"))?;
            // The receiver has everything in the known commit's tree.
            if let Ok(contents) = read_tree_ids(repo, *have) {
                seen.extend(contents);
            }
        }
    }
    let mut objects = Vec::new();
    for commit in walk {
        let commit = commit.map_err(StoreError::git("walking history"))?;
        let object = read_object(repo, commit)
            .ok_or_else(|| corrupt(id, format!("commit {commit} missing")))?;
        let tree = repo
            .find_commit(commit)
            .map(|c| c.tree_id())
            .map_err(|e| corrupt(id, format!("commit {commit}: {e}")))?;
        objects.push(object);
        add_tree(repo, id, tree, &mut seen, &mut objects)?;
    }
    Ok(objects)
}

/// A thin wire pack of `objects` (new commits with their new trees and
/// blobs) for a receiver that has the commit `base`: each tree or blob at a
/// path where `base` holds another version of the same kind travels as a
/// REF_DELTA on that version, when the delta is less than half its size;
/// everything else whole. `read` finds the base's objects (a base it cannot
/// read only means sending whole).
pub(crate) fn thin_pack(
    objects: &[Object],
    base: Oid,
    read: &dyn Fn(Oid) -> Option<Object>,
) -> Vec<u8> {
    let by_id: HashMap<Oid, &Object> = objects.iter().map(|o| (o.id, o)).collect();
    // The path of every new tree and blob (the first one met).
    let mut paths: HashMap<Oid, String> = HashMap::new();
    for object in objects.iter().filter(|o| o.kind == Kind::Commit) {
        let Ok(commit) = git::parse_commit(&object.data) else {
            continue;
        };
        let mut stack = vec![(commit.tree, String::new())];
        while let Some((tree, path)) = stack.pop() {
            if paths.contains_key(&tree) {
                continue;
            }
            let Some(object) = by_id.get(&tree) else {
                continue;
            };
            paths.insert(tree, path.clone());
            let Ok(entries) = git::parse_tree(&object.data) else {
                continue;
            };
            for entry in entries {
                if !by_id.contains_key(&entry.id) {
                    continue;
                }
                let child = if path.is_empty() {
                    entry.name.clone()
                } else {
                    format!("{path}/{}", entry.name)
                };
                if entry.mode == git::MODE_DIR {
                    stack.push((entry.id, child));
                } else {
                    paths.entry(entry.id).or_insert(child);
                }
            }
        }
    }
    // The base's trees, parsed once each, by folder path.
    let base_root = read(base)
        .filter(|o| o.kind == Kind::Commit)
        .and_then(|o| git::parse_commit(&o.data).ok())
        .map(|c| c.tree);
    let mut folders: HashMap<String, Option<Vec<git::TreeEntry>>> = HashMap::new();
    let mut base_of = |path: &str, kind: Kind| -> Option<Object> {
        let root = base_root?;
        if path.is_empty() {
            return (kind == Kind::Tree).then(|| read(root)).flatten();
        }
        let mut tree = root;
        let mut folder = String::new();
        let mut parts = path.split('/').peekable();
        while let Some(name) = parts.next() {
            let entries = folders
                .entry(folder.clone())
                .or_insert_with(|| read(tree).and_then(|o| git::parse_tree(&o.data).ok()))
                .as_ref()?;
            let entry = entries.iter().find(|e| e.name == name)?;
            if parts.peek().is_none() {
                let is_dir = entry.mode == git::MODE_DIR;
                return (is_dir == (kind == Kind::Tree))
                    .then(|| read(entry.id))
                    .flatten();
            }
            if entry.mode != git::MODE_DIR {
                return None;
            }
            tree = entry.id;
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(name);
        }
        None
    };
    let mut entries: Vec<(u8, Vec<u8>)> = Vec::with_capacity(objects.len());
    for object in objects {
        let delta = paths
            .get(&object.id)
            .and_then(|path| base_of(path, object.kind))
            .filter(|b| b.kind == object.kind && b.id != object.id)
            .and_then(|b| {
                let delta = git::encode_delta_within(&b.data, &object.data, object.data.len() / 2)?;
                let mut entry = Vec::with_capacity(20 + delta.len());
                entry.extend_from_slice(b.id.as_bytes());
                entry.extend_from_slice(&delta);
                Some(entry)
            });
        match delta {
            Some(entry) => entries.push((REF_DELTA, entry)),
            None => entries.push((object.kind.type_code(), object.data.clone())),
        }
    }
    git::join_pack_entries(entries.iter().map(|(c, d)| (*c, d.as_slice())))
        .unwrap_or_else(|| git::write_pack(objects, 0).pack)
}

/// Type code of a pack entry that is a delta on an object named by id.
const REF_DELTA: u8 = 7;

fn add_tree(
    repo: &Repository,
    id: &PatientId,
    tree: Oid,
    seen: &mut HashSet<Oid>,
    out: &mut Vec<Object>,
) -> Result<(), StoreError> {
    let mut stack = vec![tree];
    while let Some(next) = stack.pop() {
        if !seen.insert(next) {
            continue;
        }
        let object =
            read_object(repo, next).ok_or_else(|| corrupt(id, format!("object {next} missing")))?;
        if object.kind == Kind::Tree {
            let entries = git::parse_tree(&object.data)
                .map_err(|e| corrupt(id, format!("tree {next}: {e}")))?;
            for entry in entries.iter().rev() {
                if !seen.contains(&entry.id) {
                    stack.push(entry.id);
                }
            }
        }
        out.push(object);
    }
    Ok(())
}

/// Every tree and blob id reachable from a commit's tree.
fn read_tree_ids(repo: &Repository, commit: Oid) -> Result<HashSet<Oid>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut out = HashSet::new();
    out.insert(tree.id());
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        out.insert(entry.id());
        TreeWalkResult::Ok
    })?;
    Ok(out)
}

/// `Name <email>` of a signature.
pub(crate) fn signature_text(sig: &git2::Signature<'_>) -> String {
    format!(
        "{} <{}>",
        String::from_utf8_lossy(sig.name_bytes()),
        String::from_utf8_lossy(sig.email_bytes())
    )
}

/// The commit ids of a list of oids.
pub(crate) fn commit_ids(oids: impl IntoIterator<Item = Oid>) -> Vec<CommitId> {
    oids.into_iter().map(commit_id).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{Change, CommitMeta, Condition, RecordStore, StoreOptions, oid};

    fn ids(objects: &[Object]) -> BTreeSet<Oid> {
        objects.iter().map(|o| o.id).collect()
    }

    fn via_libgit2(store: &RecordStore, id: &PatientId, head: Oid, haves: &[Oid]) -> Vec<Object> {
        let pack = store
            .with_repo(id, |repo| pack_since(repo, id, head, haves))
            .expect("pack_since");
        git::parse_pack(&pack, &store.pack_limits(), &mut |_| None).expect("parse")
    }

    #[test]
    fn the_fast_walk_sends_what_libgit2_sends_or_declines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(StoreOptions::new(dir.path(), "test")).expect("open");
        let id = PatientId::random();
        let meta = CommitMeta::new("Dr. A", "a@example.org", "edit");
        let mut heads = Vec::new();
        for i in 0..5 {
            let mut files = chartsync_protocol::Files::new();
            files.insert("patient.yaml".into(), format!("name: A\nvisits: {i}\n"));
            files.insert("notes/first.yaml".into(), "note: unchanged\n".into());
            files.insert(format!("notes/n{i}.yaml"), format!("n: {i}\n"));
            let condition = if i == 0 {
                Condition::MustCreate
            } else {
                Condition::Unconditional
            };
            let head = store
                .write(&id, condition, Change::Replace(files), &meta)
                .expect("write");
            heads.push(oid(head));
        }
        let packs =
            git::PackReader::open(&store.layout.repo(&id).join("objects/pack")).expect("packs");
        let head = heads[4];
        let unknown = Oid::from_str("1234567890123456789012345678901234567890").expect("oid");
        for haves in [
            vec![],
            vec![heads[3]],
            vec![heads[1]],
            vec![heads[0], heads[2]],
        ] {
            let fast = objects_since(&packs, head, &haves).expect("a linear history");
            assert_eq!(
                ids(&fast),
                ids(&via_libgit2(&store, &id, head, &haves)),
                "{haves:?}"
            );
        }
        // Nothing new: nothing sent.
        assert!(
            objects_since(&packs, head, &[head])
                .expect("linear")
                .is_empty()
        );
        // A have the history never reaches: left to libgit2.
        assert!(objects_since(&packs, head, &[unknown]).is_none());

        // A merge commit (two parents): left to libgit2.
        let tip = packs.read(head);
        let git::Lookup::Found(tip) = tip else {
            panic!("head unreadable")
        };
        let mut merge = git::parse_commit(&tip.data).expect("commit");
        merge.parents = vec![heads[4], heads[3]];
        let merge = Object::new(Kind::Commit, git::encode_commit(&merge));
        let repo_dir = store.layout.repo(&id);
        write_objects(&repo_dir, std::slice::from_ref(&merge), 0, Flush::Now).expect("write");
        let packs = git::PackReader::open(&repo_dir.join("objects/pack")).expect("packs");
        assert!(objects_since(&packs, merge.id, &[heads[4]]).is_none());
        // An object only libgit2 can find (absent from the packs): declined.
        let loose = store
            .with_repo(&id, |repo| {
                repo.blob(b"loose\n")
                    .map_err(|e| StoreError::git("blob")(e))
            })
            .expect("blob");
        assert!(objects_since(&packs, loose, &[]).is_none());
    }

    #[test]
    fn a_pack_left_without_its_index_is_replaced_and_later_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(StoreOptions::new(dir.path(), "test")).expect("open");
        let id = PatientId::random();
        let meta = CommitMeta::new("Dr. A", "a@example.org", "edit");
        let mut files = chartsync_protocol::Files::new();
        files.insert("patient.yaml".into(), "name: A\n".into());
        store
            .write(&id, Condition::MustCreate, Change::Replace(files), &meta)
            .expect("create");
        let repo_dir = store.layout.repo(&id);
        let pack_dir = repo_dir.join("objects/pack");
        let objects = vec![Object::new(Kind::Blob, b"hello\n".to_vec())];
        let name = git::write_pack(&objects, 0).checksum;
        // A crash left half of this very pack, and no index.
        let leftover = pack_dir.join(format!("pack-{name}.pack"));
        std::fs::write(&leftover, b"PACK half").expect("leftover");
        write_objects(&repo_dir, &objects, 0, Flush::Now).expect("write");
        let packs = git::PackReader::open(&pack_dir).expect("packs");
        assert!(matches!(packs.read(objects[0].id), git::Lookup::Found(_)));

        // Orphans: one old enough to be a crash's, one that may be a live
        // writer's.
        let old = pack_dir.join(format!("pack-{}.pack", "1".repeat(40)));
        let young = pack_dir.join(format!("pack-{}.pack", "2".repeat(40)));
        for path in [&old, &young] {
            std::fs::write(path, b"PACK").expect("orphan");
        }
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age");
        store.repack(&id, 2).expect("repack");
        assert!(!old.exists());
        assert!(young.exists());
        assert_eq!(store.pack_count(&id).expect("count"), 1);
        assert_eq!(store.read(&id).expect("read").files.len(), 1);
    }
}
