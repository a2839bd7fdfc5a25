//! Taking records from another instance: verify every object of a received
//! pack, check that the new head descends from the expected one, validate
//! the final tree exactly like a local write, then store.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use git2::Repository;

use super::objects::{INSTANCE_TRAILER, write_objects};
use super::refs::{RefError, RefLock};
use super::{Flush, Prepared, RecordStore, Stage, StoreError, commit_id, oid};
use crate::path::validate_paths;
use crate::shape::{ShapeError, Shapes};
use crate::validate::{InvalidRecord, check_content, check_sizes};
use chartsync_git::fsck::{self, Checked};
use chartsync_git::{
    self as git, Kind, Lookup, MODE_DIR, MODE_EXEC, MODE_FILE, MODE_GITLINK, Object, PackLimits,
    PackReader, TreeEntry,
};
use chartsync_protocol::id::PatientId;
use chartsync_protocol::{CommitId, Files};
use git2::Oid;

/// Why received data was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The pack does not parse or verify.
    #[error("corrupt pack data: {0}")]
    Pack(#[from] git::PackError),
    /// An object in the pack is one `git fsck --strict` would flag (or a
    /// tag, or not in chartsync's strict form).
    #[error("{kind} {id} in the pack is malformed: {source}")]
    Object {
        /// The object.
        id: Oid,
        /// Its kind ("commit", "tree", ...).
        kind: &'static str,
        /// What is wrong.
        #[source]
        source: git::FsckError,
    },
    /// An object already stored here does not parse (the store is damaged).
    #[error("stored {kind} {id} does not parse: {source}")]
    Stored {
        /// The object.
        id: Oid,
        /// What it was read as.
        kind: &'static str,
        /// What is wrong.
        #[source]
        source: git::FormatError,
    },
    /// Objects refer to objects that are neither in the pack nor stored.
    #[error("the pack is incomplete: object {missing} (referred to by {by}) is missing")]
    Missing {
        /// The missing object.
        missing: Oid,
        /// Who refers to it.
        by: Oid,
    },
    /// An object is referred to as another kind than it is (a folder entry
    /// naming a blob, a parent naming a tree, ...).
    #[error("object {by} refers to {id} as a {expected}, but {id} is a {found}")]
    WrongKind {
        /// The object referred to.
        id: Oid,
        /// Who refers to it.
        by: Oid,
        /// The kind the reference calls for.
        expected: &'static str,
        /// The kind it has.
        found: &'static str,
    },
    /// An object of the pack that the new history does not use.
    #[error(
        "{kind} {id} in the pack is not reachable from the new head {head} through the pack's commits; a pack carries the new history and nothing else"
    )]
    Unreferenced {
        /// The object.
        id: Oid,
        /// Its kind.
        kind: &'static str,
        /// The new head.
        head: Oid,
    },
    /// The claimed head is not a commit in the pack or the repository.
    #[error("the new head {head} is not a commit the pack provides")]
    NoHead {
        /// The claimed head.
        head: Oid,
    },
    /// The new head does not descend from the expected one.
    #[error("the new head {head} does not descend from the expected head {expected}")]
    NotDescendant {
        /// The new head.
        head: Oid,
        /// The expected head.
        expected: Oid,
    },
    /// The final tree is not a valid record.
    #[error("the new version is not a valid record: {0}")]
    Invalid(#[from] InvalidRecord),
    /// A commit of the pack before the new head is not a valid record.
    #[error("commit {commit} in the pack is not a valid record version: {source}")]
    InvalidVersion {
        /// The commit.
        commit: Oid,
        /// What is wrong with its tree.
        #[source]
        source: InvalidRecord,
    },
    /// A new commit does not name its sender as the instance it was made
    /// on (see [`Attribution`]).
    #[error(
        "commit {commit} says it was made on {claimed}, but {sender} pushed it; a satellite may push only commits made on it (set its `name` to the name its instance was registered with, or leave `name` out)"
    )]
    ForgedInstance {
        /// The commit.
        commit: Oid,
        /// The instance it names (quoted), or "no instance".
        claimed: String,
        /// Who sent it.
        sender: String,
    },
}

/// Who sent a pack, and so which instance names its new commits may carry
/// in their `Chartsync-Instance` trailer (and `chartsync@<name>` as their
/// committer's email). Central checks every commit of a push it does not
/// have yet, so that history cannot be attributed to another instance.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The names the sender's commits may carry.
    pub names: Vec<String>,
    /// The sender, for the error message (say `instance 3 (clinic-north)`).
    pub sender: String,
}

impl Attribution {
    /// Checks one new commit.
    fn check(&self, id: Oid, commit: &git::Commit) -> Result<(), ReceiveError> {
        let shown = git::commit_trailer(&commit.message, INSTANCE_TRAILER);
        let allowed = |name: &str| self.names.iter().any(|n| n == name);
        // Every line that could read as the trailer (to any tool), not only
        // the one chartsync shows.
        let every_claim_is_ours = commit.message.lines().all(|line| {
            line.split_once(':').is_none_or(|(key, value)| {
                !key.trim().eq_ignore_ascii_case(INSTANCE_TRAILER) || allowed(value.trim())
            })
        });
        let ok = every_claim_is_ours
            && shown.is_some_and(|name| {
                allowed(name) && commit.committer.email == format!("chartsync@{name}")
            });
        if ok {
            return Ok(());
        }
        Err(ReceiveError::ForgedInstance {
            commit: id,
            claimed: shown.map_or_else(|| "no instance".to_string(), |n| format!("{n:?}")),
            sender: self.sender.clone(),
        })
    }
}

impl ReceiveError {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ReceiveError::Pack(_) | ReceiveError::Stored { .. } => "corrupt_pack",
            ReceiveError::Object { .. } | ReceiveError::WrongKind { .. } => "invalid_object",
            ReceiveError::Unreferenced { .. } => "unreferenced_object",
            ReceiveError::Missing { .. } | ReceiveError::NoHead { .. } => "incomplete_pack",
            ReceiveError::NotDescendant { .. } => "not_descendant",
            ReceiveError::Invalid(e) | ReceiveError::InvalidVersion { source: e, .. } => e.code(),
            ReceiveError::ForgedInstance { .. } => "forged_instance",
        }
    }
}

/// What the receiver's repository knows (nothing for a new record): read
/// from its packs directly ([`PackReader`]), and from libgit2, opened only
/// when the packs do not answer (see `git::pack_index`).
struct Known<'a> {
    packs: Option<PackReader>,
    repo: LazyRepo<'a>,
}

/// A repository opened on first use and returned to the store's cache.
struct LazyRepo<'a> {
    store: Option<(&'a RecordStore, PatientId)>,
    cell: OnceCell<Option<Repository>>,
}

impl LazyRepo<'_> {
    fn get(&self) -> Option<&Repository> {
        self.cell
            .get_or_init(|| {
                let (store, id) = self.store?;
                store.cache.take(&id, &store.layout.repo(&id)).ok()
            })
            .as_ref()
    }
}

impl Drop for LazyRepo<'_> {
    fn drop(&mut self) {
        if let (Some((store, id)), Some(Some(repo))) = (self.store, self.cell.take()) {
            store.cache.put(id, repo);
        }
    }
}

impl<'a> Known<'a> {
    /// Nothing known: a record new here.
    fn nothing() -> Known<'a> {
        Known {
            packs: None,
            repo: LazyRepo {
                store: None,
                cell: OnceCell::new(),
            },
        }
    }

    /// The record's repository.
    fn of(store: &'a RecordStore, id: PatientId) -> Result<Known<'a>, StoreError> {
        let dir = store.layout.repo(&id).join("objects/pack");
        let packs = PackReader::open(&dir).map_err(StoreError::io(&dir))?;
        Ok(Known {
            packs: Some(packs),
            repo: LazyRepo {
                store: Some((store, id)),
                cell: OnceCell::new(),
            },
        })
    }

    /// Whether the packs hold `id` (libgit2 not asked). For questions where
    /// a false "no" is harmless.
    fn has_cheap(&self, id: Oid) -> bool {
        self.packs.as_ref().is_some_and(|p| p.contains(id))
    }

    /// An object's kind, if it is here.
    fn kind(&self, id: Oid) -> Option<Kind> {
        if let Some(Lookup::Found((kind, _))) = self.packs.as_ref().map(|p| p.header(id)) {
            return Some(kind);
        }
        let (_, kind) = self.repo.get()?.odb().ok()?.read_header(id).ok()?;
        match kind {
            git2::ObjectType::Commit => Some(Kind::Commit),
            git2::ObjectType::Tree => Some(Kind::Tree),
            git2::ObjectType::Blob => Some(Kind::Blob),
            git2::ObjectType::Tag => Some(Kind::Tag),
            _ => None,
        }
    }

    fn read(&self, id: Oid) -> Option<Object> {
        if let Some(Lookup::Found(object)) = self.packs.as_ref().map(|p| p.read(id)) {
            return Some(object);
        }
        self.repo
            .get()
            .and_then(|r| super::objects::read_object(r, id))
    }

    fn size(&self, id: Oid) -> Option<usize> {
        if let Some(Lookup::Found((_, size))) = self.packs.as_ref().map(|p| p.header(id)) {
            return Some(size);
        }
        self.repo
            .get()
            .and_then(|r| r.odb().ok())
            .and_then(|odb| odb.read_header(id).ok())
            .map(|(size, _)| size)
    }

    /// The tree of a stored commit.
    fn commit_tree(&self, id: Oid) -> Option<Oid> {
        let object = self.read(id)?;
        if object.kind != Kind::Commit {
            return None;
        }
        git::parse_commit(&object.data).ok().map(|c| c.tree)
    }
}

impl RecordStore {
    pub(crate) fn pack_limits(&self) -> PackLimits {
        PackLimits {
            max_objects: 100_000,
            max_object_bytes: self.limits.max_file_bytes.max(1 << 20),
            max_total_bytes: self.limits.max_record_bytes.saturating_mul(4).max(64 << 20),
            max_delta_depth: 50,
        }
    }

    /// Prepares taking a received head: `expected` is the head the sender
    /// believes the record has here (`None`: the record is new here). When
    /// the head here is already `head`, the result is an unchanged
    /// [`Prepared`] (a repeated push); when it is neither `head` nor
    /// `expected`, [`Received::Stale`] with the head here.
    pub fn prepare_received(
        &self,
        id: &PatientId,
        expected: Option<CommitId>,
        head: CommitId,
        pack: &[u8],
        flush: Flush,
    ) -> Result<Received, StoreError> {
        self.receive(id, expected, head, pack, flush, None)
    }

    /// Like [`RecordStore::prepare_received`], refusing the pack
    /// ([`ReceiveError::ForgedInstance`], nothing stored) unless every
    /// commit in it that this repository does not have yet names the
    /// sender as the instance it was made on.
    pub fn prepare_received_from(
        &self,
        id: &PatientId,
        expected: Option<CommitId>,
        head: CommitId,
        pack: &[u8],
        flush: Flush,
        attribution: &Attribution,
    ) -> Result<Received, StoreError> {
        self.receive(id, expected, head, pack, flush, Some(attribution))
    }

    fn receive(
        &self,
        id: &PatientId,
        expected: Option<CommitId>,
        head: CommitId,
        pack: &[u8],
        flush: Flush,
        attribution: Option<&Attribution>,
    ) -> Result<Received, StoreError> {
        let guard = self.local_lock(*id)?;
        let head_oid = oid(head);
        let Some(expected) = expected else {
            if self.exists(id) {
                return Ok(Received::Stale {
                    current: self.head(id)?,
                });
            }
            let known = Known::nothing();
            let Verified {
                objects,
                changed,
                catchment,
                retired,
            } = verify(
                pack,
                &self.pack_limits(),
                &known,
                head_oid,
                None,
                &self.limits,
                attribution,
            )?;
            let tmp = self.stage_new_repo(id, &objects, head_oid, flush)?;
            return Ok(Received::Ready(Prepared {
                id: *id,
                old: None,
                new: head,
                changed,
                catchment,
                retired: Some(retired),
                stage: Stage::Create(tmp),
                _guard: guard,
            }));
        };
        let path = self.layout.repo(id);
        if !path.join("HEAD").is_file() {
            return Err(StoreError::NotFound { id: *id });
        }
        let mut lock = RefLock::acquire(&path, self.lock_wait).map_err(|e| match e {
            RefError::Locked { .. } => StoreError::Busy { id: *id },
            other => other.into(),
        })?;
        let current = lock.current().map(commit_id);
        if current == Some(head) {
            return Ok(Received::Ready(Prepared {
                id: *id,
                old: current,
                new: head,
                changed: Files::new(),
                catchment: None,
                retired: None,
                stage: Stage::Unchanged,
                _guard: guard,
            }));
        }
        if current != Some(expected) {
            return Ok(Received::Stale { current });
        }
        let known = Known::of(self, *id)?;
        let Verified {
            objects,
            changed,
            catchment,
            retired,
        } = verify(
            pack,
            &self.pack_limits(),
            &known,
            head_oid,
            Some(oid(expected)),
            &self.limits,
            attribution,
        )?;
        drop(known);
        write_objects(&path, &objects, self.pack_level, flush)?;
        lock.stage(head_oid, flush)?;
        Ok(Received::Ready(Prepared {
            id: *id,
            old: Some(expected),
            new: head,
            changed,
            catchment,
            retired: Some(retired),
            stage: Stage::Move(lock),
            _guard: guard,
        }))
    }

    /// Stores the objects of a received pack without moving the head (to
    /// merge with them next). Verifies the pack like
    /// [`RecordStore::prepare_received`], with `head` as the commit it must
    /// provide.
    pub fn ingest(
        &self,
        id: &PatientId,
        head: CommitId,
        pack: &[u8],
        flush: Flush,
    ) -> Result<(), StoreError> {
        let path = self.layout.repo(id);
        if !path.join("HEAD").is_file() {
            return Err(StoreError::NotFound { id: *id });
        }
        let known = Known::of(self, *id)?;
        // Already stored (a repeated page).
        if known.has_cheap(oid(head)) {
            return Ok(());
        }
        let objects = verify(
            pack,
            &self.pack_limits(),
            &known,
            oid(head),
            None,
            &self.limits,
            None,
        )?
        .objects;
        drop(known);
        write_objects(&path, &objects, self.pack_level, flush).map(|_| ())
    }
}

/// The result of [`RecordStore::prepare_received`].
#[derive(Debug)]
pub enum Received {
    /// Verified and staged (or already applied: `is_change()` is false).
    Ready(Prepared),
    /// The record's head here is not the expected one.
    Stale {
        /// The head here (`None`: the record has no head).
        current: Option<CommitId>,
    },
}

/// Parses and verifies a pack; returns the objects to store and the files
/// whose content is new in it.
///
/// In order: every object passes `git fsck --strict`'s checks (tags are
/// refused); the head is a commit of the pack or of the repository; every
/// object of the pack is reachable from the head through the pack's own
/// objects, and everything they refer to is here or in the pack with the
/// kind the reference calls for; every version the pack brings (the head's
/// and each new commit's tree) has a record's shape; the head descends from
/// `expected`; the head's files pass the record's checks.
///
/// With an attribution, every commit the repository does not have yet
/// must name the sender.
fn verify(
    pack: &[u8],
    limits: &PackLimits,
    known: &Known<'_>,
    head: Oid,
    expected: Option<Oid>,
    record_limits: &crate::validate::Limits,
    attribution: Option<&Attribution>,
) -> Result<Verified, ReceiveError> {
    let objects = git::parse_pack(pack, limits, &mut |base| known.read(base))?;
    let by_id: HashMap<Oid, &Object> = objects.iter().map(|o| (o.id, o)).collect();
    let mut commits: HashMap<Oid, git::Commit> = HashMap::new();
    let mut trees: HashMap<Oid, Vec<TreeEntry>> = HashMap::new();
    for object in &objects {
        let checked = fsck::check_object(object.kind, &object.data).map_err(|source| {
            ReceiveError::Object {
                id: object.id,
                kind: object.kind.name(),
                source,
            }
        })?;
        match checked {
            Checked::Commit(commit) => {
                commits.insert(object.id, commit);
            }
            Checked::Tree(entries) => {
                trees.insert(object.id, entries);
            }
            Checked::Blob => {}
        }
    }
    // The head is a commit we can read.
    let head_tree = match commits.get(&head) {
        Some(c) => c.tree,
        None if by_id.contains_key(&head) => return Err(ReceiveError::NoHead { head }),
        None => match known.commit_tree(head) {
            Some(tree) => tree,
            None => return Err(ReceiveError::NoHead { head }),
        },
    };
    let new_commits = check_links(head, &objects, &by_id, &commits, &trees, known)?;
    let stored_trees = check_shapes(
        head,
        head_tree,
        &new_commits,
        &commits,
        &trees,
        known,
        record_limits,
    )?;
    if let Some(expected) = expected {
        check_descends(&commits, known, head, expected)?;
    }
    let (changed, catchment, retired) = validate_tree(
        head_tree,
        &by_id,
        [&trees, &stored_trees],
        known,
        record_limits,
    )?;
    if let Some(attribution) = attribution {
        // In a stable order, so the same pack is always refused for the
        // same commit. Commits already stored here were checked when they
        // came (or written here).
        let mut new: Vec<(&Oid, &git::Commit)> = commits
            .iter()
            .filter(|(id, _)| !known.has_cheap(**id))
            .collect();
        new.sort_by_key(|(id, _)| **id);
        for (id, commit) in new {
            attribution.check(*id, commit)?;
        }
    }
    drop(by_id);
    // Objects the repository already has need not be stored twice (one
    // missed here is stored in the new pack too: harmless).
    Ok(Verified {
        objects: objects
            .into_iter()
            .filter(|o| !known.has_cheap(o.id))
            .collect(),
        changed,
        catchment,
        retired,
    })
}

/// What a verified pack holds for the repository.
struct Verified {
    /// The objects the repository does not have yet.
    objects: Vec<Object>,
    /// The head's files new in the pack, with their content.
    changed: Files,
    /// The catchment the head's `patient.yaml` declares, if read.
    catchment: Option<String>,
    /// Whether the head's tree holds the retirement marker.
    retired: bool,
}

/// Walks the pack's objects from `head`: everything an object refers to is
/// in the pack or here, with the kind the reference calls for (a commit's
/// tree, its parents, a folder entry, a file entry); every object of the
/// pack is reached. Returns the pack's commits, head first.
fn check_links(
    head: Oid,
    objects: &[Object],
    by_id: &HashMap<Oid, &Object>,
    commits: &HashMap<Oid, git::Commit>,
    trees: &HashMap<Oid, Vec<TreeEntry>>,
    known: &Known<'_>,
) -> Result<Vec<Oid>, ReceiveError> {
    let need = |id: Oid, expected: Kind, by: Oid| -> Result<bool, ReceiveError> {
        let (found, in_pack) = match by_id.get(&id) {
            Some(object) => (object.kind, true),
            None => match known.kind(id) {
                Some(kind) => (kind, false),
                None => return Err(ReceiveError::Missing { missing: id, by }),
            },
        };
        if found != expected {
            return Err(ReceiveError::WrongKind {
                id,
                by,
                expected: expected.name(),
                found: found.name(),
            });
        }
        Ok(in_pack)
    };
    let mut reached: HashSet<Oid> = HashSet::with_capacity(objects.len());
    let mut new_commits = Vec::new();
    let mut stack = vec![head];
    while let Some(id) = stack.pop() {
        if !by_id.contains_key(&id) || !reached.insert(id) {
            continue;
        }
        if let Some(commit) = commits.get(&id) {
            new_commits.push(id);
            if need(commit.tree, Kind::Tree, id)? {
                stack.push(commit.tree);
            }
            for parent in &commit.parents {
                if need(*parent, Kind::Commit, id)? {
                    stack.push(*parent);
                }
            }
        } else if let Some(entries) = trees.get(&id) {
            for entry in entries {
                let expected = match entry.mode {
                    MODE_DIR => Kind::Tree,
                    // A submodule's commit lives in another repository
                    // (the record's shape refuses gitlinks).
                    MODE_GITLINK => continue,
                    _ => Kind::Blob,
                };
                if need(entry.id, expected, id)? {
                    stack.push(entry.id);
                }
            }
        }
    }
    if let Some(stray) = objects.iter().find(|o| !reached.contains(&o.id)) {
        return Err(ReceiveError::Unreferenced {
            id: stray.id,
            kind: stray.kind.name(),
            head,
        });
    }
    Ok(new_commits)
}

/// Checks that every version the pack brings has a record's shape
/// ([`Shapes`]): the head's tree (as [`ReceiveError::Invalid`]), then each
/// other new commit's (as [`ReceiveError::InvalidVersion`]). Returns the
/// stored trees it read (the head's walk reads them next).
fn check_shapes(
    head: Oid,
    head_tree: Oid,
    new_commits: &[Oid],
    commits: &HashMap<Oid, git::Commit>,
    trees: &HashMap<Oid, Vec<TreeEntry>>,
    known: &Known<'_>,
    limits: &crate::validate::Limits,
) -> Result<HashMap<Oid, Vec<TreeEntry>>, ReceiveError> {
    let mut stored: HashMap<Oid, Vec<TreeEntry>> = HashMap::new();
    let read = |id: Oid| -> Result<Vec<TreeEntry>, ReceiveError> {
        if let Some(entries) = trees.get(&id) {
            return Ok(entries.clone());
        }
        let entries = read_stored_tree(known, id)?;
        stored.insert(id, entries.clone());
        Ok(entries)
    };
    let mut shapes = Shapes::new(read, limits.max_files);
    let roots = std::iter::once((head, head_tree)).chain(
        new_commits
            .iter()
            .filter(|&&c| c != head)
            .filter_map(|c| commits.get(c).map(|commit| (*c, commit.tree))),
    );
    for (commit, root) in roots {
        shapes.check_root(root).map_err(|e| match e {
            ShapeError::Read(e) => e,
            ShapeError::Invalid(source) if commit == head => ReceiveError::Invalid(source),
            ShapeError::Invalid(source) => ReceiveError::InvalidVersion { commit, source },
        })?;
    }
    drop(shapes);
    Ok(stored)
}

/// A tree the repository holds.
fn read_stored_tree(known: &Known<'_>, id: Oid) -> Result<Vec<TreeEntry>, ReceiveError> {
    let object = known.read(id).ok_or(ReceiveError::Missing {
        missing: id,
        by: id,
    })?;
    git::parse_tree(&object.data).map_err(|source| ReceiveError::Stored {
        id,
        kind: "tree",
        source,
    })
}

/// Walks back from `head` through the pack's commits; a parent outside the
/// pack is asked of the repository.
fn check_descends(
    commits: &HashMap<Oid, git::Commit>,
    known: &Known<'_>,
    head: Oid,
    expected: Oid,
) -> Result<(), ReceiveError> {
    let mut stack = vec![head];
    let mut seen = HashSet::new();
    while let Some(next) = stack.pop() {
        if next == expected {
            return Ok(());
        }
        if !seen.insert(next) {
            continue;
        }
        match commits.get(&next) {
            Some(commit) => stack.extend(commit.parents.iter().copied()),
            None => {
                if let Some(repo) = known.repo.get()
                    && repo.graph_descendant_of(next, expected).unwrap_or(false)
                {
                    return Ok(());
                }
            }
        }
    }
    Err(ReceiveError::NotDescendant { head, expected })
}

/// Validates the record at `tree` like a local write: paths, kinds, sizes,
/// and the content of every file that is new in this pack. (Its shape was
/// checked by [`check_shapes`], so the walk is bounded.)
fn validate_tree(
    tree: Oid,
    in_pack: &HashMap<Oid, &Object>,
    read_trees: [&HashMap<Oid, Vec<TreeEntry>>; 2],
    known: &Known<'_>,
    limits: &crate::validate::Limits,
) -> Result<(Files, Option<String>, bool), ReceiveError> {
    let mut changed = Files::new();
    let mut catchment = None;
    let mut files: Vec<(String, Oid)> = Vec::new();
    let mut stack = vec![(String::new(), tree)];
    while let Some((prefix, tree)) = stack.pop() {
        let entries = match read_trees.iter().find_map(|t| t.get(&tree)) {
            Some(entries) => entries.clone(),
            None => read_stored_tree(known, tree)?,
        };
        for entry in entries {
            let path = format!("{prefix}{}", entry.name);
            match entry.mode {
                MODE_DIR => stack.push((format!("{path}/"), entry.id)),
                MODE_FILE | MODE_EXEC => files.push((path, entry.id)),
                mode => return Err(InvalidRecord::UnsupportedEntry { file: path, mode }.into()),
            }
            if files.len() > limits.max_files {
                return Err(InvalidRecord::TooManyFiles {
                    count: files.len(),
                    max: limits.max_files,
                }
                .into());
            }
        }
    }
    files.sort();
    validate_paths(files.iter().map(|(p, _)| p.as_str())).map_err(InvalidRecord::from)?;
    let mut sizes = Vec::with_capacity(files.len());
    for (path, blob) in &files {
        match in_pack.get(blob) {
            Some(object) => {
                let text = std::str::from_utf8(&object.data)
                    .map_err(|_| InvalidRecord::NotText { file: path.clone() })?;
                sizes.push((path.as_str(), text.len()));
                if text.len() <= limits.max_file_bytes
                    && let Some(c) = check_content(path, text)?
                {
                    catchment = Some(c);
                }
                changed.insert(path.clone(), text.to_string());
            }
            None => sizes.push((
                path.as_str(),
                known.size(*blob).ok_or(ReceiveError::Missing {
                    missing: *blob,
                    by: tree,
                })?,
            )),
        }
    }
    check_sizes(sizes, limits)?;
    let retired = files.iter().any(|(path, _)| path == crate::RETIRED_FILE);
    Ok((changed, catchment, retired))
}
