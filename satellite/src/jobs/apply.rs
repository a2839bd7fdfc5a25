//! Storing central's versions of records: new records whole, held records
//! fast-forwarded or merged with local unpushed changes. Every page is one
//! group commit: all objects, one flush, all heads, one flush.

use chartsync_common::spread::spread;
use chartsync_protocol::Files;
use chartsync_protocol::sync::RecordUpdate;
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::{
    CommitMeta, Flush, MergeOutcome, Prepared, RETIRED_FILE, Received, Retirement, StoreError,
};

use crate::Satellite;
use crate::client::SyncError;
use crate::db::{Carried, CentralState, DbError, Known, NewConflict, SetAside};

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Talking to central failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The record store failed.
    #[error("record store error")]
    Store(#[from] StoreError),
    /// The state database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The job lock.
    #[error(transparent)]
    Lock(#[from] super::LockError),
    /// Central's reply does not match the request.
    #[error("central's reply does not match the request: {0}")]
    Protocol(String),
    /// A worker task died.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// What storing a page did.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// What central has, for the database.
    pub states: Vec<CentralState>,
    /// Records whose pack could not be applied (fetch them whole).
    pub refetch: Vec<PatientId>,
    /// Records created here.
    pub created: Vec<(PatientId, CommitId)>,
    /// Records stored (created, fast-forwarded or merged).
    pub received: u64,
    /// Records merged with local changes.
    pub merged: u64,
    /// Conflicts queued.
    pub conflicts: u64,
    /// Records that could not be stored here, set aside (see `db/set_aside.rs`).
    pub set_aside: Vec<SetAside>,
    /// The survivors named by the tombstones stored (records whose head
    /// moved here to a tombstone of a merge at central), to be fetched
    /// when not held here. Only records whose head moved are looked at,
    /// and those whose state a stopped sync did not record: one already
    /// at central's head was looked at when it got there.
    pub survivors: Vec<PatientId>,
}

impl Stored {
    /// Adds what was stored to a run's summary.
    pub(crate) fn count(&self, summary: &mut super::Summary) {
        summary.records_received += self.received;
        summary.merged += self.merged;
        summary.conflicts += self.conflicts;
        summary.set_aside += self.set_aside.len() as u64;
    }

    /// Adds what a second pass stored.
    pub(crate) fn extend(&mut self, other: Stored) {
        self.states.extend(other.states);
        self.refetch.extend(other.refetch);
        self.created.extend(other.created);
        self.received += other.received;
        self.merged += other.merged;
        self.conflicts += other.conflicts;
        self.set_aside.extend(other.set_aside);
        self.survivors.extend(other.survivors);
    }
}

/// Why a store error is this record's trouble rather than the store's, or
/// `None` when it is the store's: an I/O error (a full disk, a failing
/// disk) stops the job, which is retried; anything else about one record
/// (central's version invalid here, too large once merged, damaged, busy)
/// sets that record aside and the job goes on with the others.
pub(crate) fn record_trouble(error: &StoreError) -> Option<String> {
    match error {
        StoreError::Io { .. } => None,
        StoreError::Git { source, .. } if source.class() == git2::ErrorClass::Os => None,
        StoreError::Invalid(e) => Some(format!(
            "central's changes cannot be stored with this clinic's: {}; correct the record (here or at central) and it syncs again",
            crate::error_chain(e)
        )),
        StoreError::Busy { .. } => {
            Some("the record was being written here for too long; it is tried again".to_string())
        }
        other => Some(crate::error_chain(other)),
    }
}

/// A record set aside for `reason`, with central's head and the local head.
pub(crate) fn aside(
    sat: &Satellite,
    id: PatientId,
    central: Option<CommitId>,
    reason: String,
) -> SetAside {
    tracing::warn!(patient = %id, reason, "record set aside; the others go on");
    SetAside {
        id,
        reason,
        central_head: central,
        local_head: sat.store.head(&id).ok().flatten(),
    }
}

fn state(u: &RecordUpdate) -> CentralState {
    CentralState {
        id: u.id,
        head: u.head,
        seq: u.seq,
        time: u.time,
    }
}

/// The metadata of merge commits made here.
pub(crate) fn merge_meta(sat: &Satellite) -> CommitMeta {
    CommitMeta::new(
        "chartsync",
        &format!("chartsync@{}", sat.config.instance_name()),
        "Merge central's changes",
    )
}

/// What phase 1 made of one update.
enum Staged {
    /// A new record, staged whole.
    Create(Prepared, CentralState),
    /// A fast-forward of a record without local changes, staged.
    Forward(Prepared, CentralState),
    /// Objects stored; the head needs a merge (or a fast-forward check).
    Held(RecordUpdate),
    /// Already at central's head here.
    Current(CentralState),
    /// Fetch it whole.
    Refetch(PatientId),
    /// Cannot be stored here: set aside.
    Aside(SetAside),
}

/// Phase 1 for one update: verify and store objects, stage what can be.
fn stage(sat: &Satellite, u: RecordUpdate) -> Result<Staged, JobError> {
    let store = &sat.store;
    if !store.exists(&u.id) {
        if u.base.is_some() {
            return Ok(Staged::Refetch(u.id));
        }
        return match store.prepare_received(&u.id, None, u.head, &u.pack, Flush::Deferred) {
            Ok(Received::Ready(p)) => Ok(Staged::Create(p, state(&u))),
            Ok(Received::Stale { .. }) => Ok(Staged::Refetch(u.id)),
            Err(e) => Err(e.into()),
        };
    }
    let local = store.head(&u.id)?;
    if local == Some(u.head) {
        return Ok(Staged::Current(state(&u)));
    }
    // No local changes since the pack's base: a verified fast-forward.
    if u.base.is_some() && u.base == local {
        match store.prepare_received(&u.id, u.base, u.head, &u.pack, Flush::Deferred) {
            Ok(Received::Ready(p)) => return Ok(Staged::Forward(p, state(&u))),
            // A local write moved the head meanwhile: merge below.
            Ok(Received::Stale { .. }) => {}
            Err(StoreError::Received(e)) => {
                tracing::info!(patient = %u.id, error = %e, "cannot apply central's changes as sent; fetching the record whole");
                return Ok(Staged::Refetch(u.id));
            }
            Err(e) => return Err(e.into()),
        }
    }
    match store.ingest(&u.id, u.head, &u.pack, Flush::Deferred) {
        Ok(()) => Ok(Staged::Held(u)),
        Err(StoreError::Received(e)) => {
            tracing::info!(patient = %u.id, error = %e, "cannot apply central's changes as sent; fetching the record whole");
            Ok(Staged::Refetch(u.id))
        }
        Err(e) => Err(e.into()),
    }
}

/// Phase 1 for one update; a record's own trouble sets it aside.
fn stage_or_aside(sat: &Satellite, u: RecordUpdate) -> Result<Staged, JobError> {
    let (id, head) = (u.id, u.head);
    match stage(sat, u) {
        Err(JobError::Store(e)) => match record_trouble(&e) {
            Some(reason) => Ok(Staged::Aside(aside(sat, id, Some(head), reason))),
            None => Err(e.into()),
        },
        other => other,
    }
}

/// Phase 1 over a page, on all cores.
fn stage_all(sat: &Satellite, updates: Vec<RecordUpdate>) -> Result<Vec<Staged>, JobError> {
    spread(updates, |u| stage_or_aside(sat, u))
        .ok_or_else(|| JobError::Task("a staging thread panicked".into()))?
        .into_iter()
        .collect()
}

/// Merges central's head into the local one (again if a local write moves
/// the head meanwhile); `None` when the record is gone here.
fn merge_one(
    sat: &Satellite,
    u: &RecordUpdate,
    meta: &CommitMeta,
) -> Result<Option<(MergeOutcome, CommitId)>, StoreError> {
    for _ in 0..5 {
        let Some(ours) = sat.store.head(&u.id)? else {
            return Ok(None);
        };
        match sat
            .store
            .prepare_merge(&u.id, ours, u.head, meta, Flush::Deferred)?
        {
            Ok(outcome) => return Ok(Some((outcome, ours))),
            // A local write moved the head meanwhile: merge again.
            Err(_) => continue,
        }
    }
    Err(StoreError::Busy { id: u.id })
}

/// Stores a page of central's versions (see the module documentation). The
/// caller records `states` (with its cursor) in the database afterwards.
pub(crate) fn store_updates(
    sat: &Satellite,
    updates: Vec<RecordUpdate>,
) -> Result<Stored, JobError> {
    let store = &sat.store;
    let mut out = Stored::default();
    let mut creates: Vec<(Prepared, CentralState)> = Vec::new();
    let mut held: Vec<RecordUpdate> = Vec::new();
    let timer = std::time::Instant::now();
    // A record whose state says it is at central's head here, unchanged
    // since, needs nothing: not even its repository opened (a clinic's
    // first pull after its first fetch-new lists every record it holds).
    let pairs: Vec<(PatientId, CommitId)> = updates.iter().map(|u| (u.id, u.head)).collect();
    let mut recorded = std::collections::HashSet::new();
    let mut rest = Vec::with_capacity(updates.len());
    for (u, known) in updates.into_iter().zip(sat.db.central_heads_known(&pairs)?) {
        match known {
            Known::Settled => out.states.push(state(&u)),
            Known::Changed => {
                recorded.insert(u.id);
                rest.push(u);
            }
            Known::No => rest.push(u),
        }
    }
    let settled_at = timer.elapsed();
    // Phase 1: objects.
    for staged in stage_all(sat, rest)? {
        match staged {
            Staged::Create(p, s) | Staged::Forward(p, s) => creates.push((p, s)),
            Staged::Held(u) => held.push(u),
            Staged::Current(s) => {
                // Already at central's head here: looked at for a survivor
                // when it got there, unless the sync that stored it
                // stopped before recording its state.
                if !recorded.contains(&s.id) {
                    out.survivors.extend(survivor_of(sat, &s.id, s.head));
                }
                out.states.push(s);
            }
            Staged::Refetch(id) => out.refetch.push(id),
            Staged::Aside(a) => out.set_aside.push(a),
        }
    }
    let staged_at = timer.elapsed();
    if !creates.is_empty() || !held.is_empty() {
        store.flush()?;
    }
    let flushed_at = timer.elapsed();
    // Phase 2: heads (fast-forward or merge), staged.
    let meta = merge_meta(sat);
    let mut merges: Vec<(MergeOutcome, CommitId, RecordUpdate)> = Vec::new();
    for u in held {
        match merge_one(sat, &u, &meta) {
            Ok(Some((outcome, ours))) => merges.push((outcome, ours, u)),
            Ok(None) => out.refetch.push(u.id),
            Err(e) => match record_trouble(&e) {
                Some(reason) => out.set_aside.push(aside(sat, u.id, Some(u.head), reason)),
                None => return Err(e.into()),
            },
        }
    }
    let mut dirty = Vec::new();
    let mut conflicts = Vec::new();
    let mut carried = Vec::new();
    // The survivor each merged record's new head names, if a tombstone.
    let mut named = Vec::with_capacity(merges.len());
    for (outcome, ours, u) in &merges {
        let survivor = match merged_into(sat, &u.id, u.head) {
            Ok(survivor) => survivor,
            // The merge itself goes on: central still carries the edit.
            Err(e) => {
                tracing::warn!(patient = %u.id, error = %crate::error_chain(&e), "could not read central's tombstone: its survivor is not fetched, and its differing values are not queued here");
                None
            }
        };
        named.push(survivor);
        if outcome.fast_forward {
            continue;
        }
        // Local edits merged onto central's tombstone of a record merged
        // into another: central carries them onto the survivor; the
        // survivor's differing values are queued once it is held here.
        if let Some(survivor) = survivor {
            carried.push(Carried {
                retired: u.id,
                edit: outcome.prepared.new,
                tombstone: u.head,
                survivor,
            });
        }
        // Local changes remain on top of central's head: to be pushed.
        dirty.push(u.id);
        if outcome.merged {
            out.merged += 1;
        }
        for c in &outcome.conflicts {
            conflicts.push(NewConflict {
                patient: u.id,
                file: c.file.clone(),
                path: c.path.clone(),
                base: c.base.clone().unwrap_or(serde_json::Value::Null),
                ours: c.ours.clone().unwrap_or(serde_json::Value::Null),
                theirs: c.theirs.clone().unwrap_or(serde_json::Value::Null),
                ours_commit: *ours,
                theirs_commit: u.head,
                merge_commit: outcome.prepared.new,
            });
        }
    }
    if !merges.is_empty() {
        store.flush()?;
    }
    // Before any head moves: the changed marks and the conflict queue.
    if !dirty.is_empty() {
        sat.db.mark_dirty_many(&dirty)?;
    }
    sat.db.add_carried(&carried)?;
    if !conflicts.is_empty() {
        for c in &conflicts {
            store.keep_commit(&c.patient, c.ours_commit)?;
        }
        sat.db.record_conflicts(&conflicts)?;
        out.conflicts += conflicts.len() as u64;
    }
    // Phase 3: move the heads, then one flush.
    let any = !creates.is_empty() || !merges.is_empty();
    // Each record's ref moves on its own: spread over the cores.
    let published = spread(creates, |(prepared, state)| {
        let id = prepared.id;
        // Whether the new head is a tombstone was read while verifying
        // the pack, and its marker with it when the pack brought the
        // marker (always, for a new record); otherwise (rare: the marker
        // was stored here before) it is read once the head moved.
        let named = match (
            prepared.retired,
            prepared.changed.contains_key(RETIRED_FILE),
        ) {
            (Some(false), _) => Some(None),
            (Some(true), true) => {
                Some(Retirement::of(&prepared.changed).and_then(|r| r.replaced_by))
            }
            _ => None,
        };
        (id, state, named, store.publish(prepared, Flush::Deferred))
    })
    .ok_or_else(|| JobError::Task("a thread moving heads panicked".into()))?;
    for (id, state, named, result) in published {
        match result {
            Ok(head) => {
                match named {
                    Some(named) => out.survivors.extend(named),
                    None => out.survivors.extend(survivor_of(sat, &id, head)),
                }
                out.created.push((id, head));
                out.states.push(state);
                out.received += 1;
            }
            Err(StoreError::Exists { .. }) => out.refetch.push(id),
            Err(e) => match record_trouble(&e) {
                Some(reason) => out.set_aside.push(aside(sat, id, Some(state.head), reason)),
                None => return Err(e.into()),
            },
        }
    }
    for ((outcome, _, u), survivor) in merges.into_iter().zip(named) {
        match store.publish(outcome.prepared, Flush::Deferred) {
            Ok(_) => {
                out.survivors.extend(survivor);
                out.states.push(state(&u));
                out.received += 1;
            }
            Err(e) => match record_trouble(&e) {
                Some(reason) => out.set_aside.push(aside(sat, u.id, Some(u.head), reason)),
                None => return Err(e.into()),
            },
        }
    }
    let published_at = timer.elapsed();
    if any {
        store.flush()?;
    }
    sat.db.note_moved(&dirty)?;
    tracing::debug!(
        settled_ms = settled_at.as_millis() as u64,
        stage_ms = (staged_at - settled_at).as_millis() as u64,
        flush_ms = (flushed_at - staged_at).as_millis() as u64,
        merge_publish_ms = (published_at - flushed_at).as_millis() as u64,
        flush2_ms = (timer.elapsed() - published_at).as_millis() as u64,
        "page stored"
    );
    Ok(out)
}

/// The record `id` was merged into, when `head` is its tombstone naming one.
fn merged_into(
    sat: &Satellite,
    id: &PatientId,
    head: CommitId,
) -> Result<Option<PatientId>, StoreError> {
    if !sat.store.is_retired_at(id, head)? {
        return Ok(None);
    }
    Ok(sat
        .store
        .read_at(id, head)?
        .as_ref()
        .and_then(Retirement::of)
        .and_then(|r| r.replaced_by))
}

/// [`merged_into`] for a record whose head moved to `head`; a tombstone
/// that cannot be read is logged and names no survivor (the page goes on).
fn survivor_of(sat: &Satellite, id: &PatientId, head: CommitId) -> Option<PatientId> {
    merged_into(sat, id, head).unwrap_or_else(|e| {
        tracing::warn!(patient = %id, error = %crate::error_chain(&e), "could not read whether central's head is a tombstone: a survivor it names is not fetched");
        None
    })
}

/// Longest chain of survivors followed (a survivor merged in turn).
pub(crate) const MAX_HOPS: usize = 8;

fn without_marker(mut files: Files) -> Files {
    files.remove(RETIRED_FILE);
    files
}

/// Where a survivor stands here.
enum Survivor {
    /// Held and active: its id (at the end of the chain), head and files.
    Held(PatientId, CommitId, Files),
    /// Not held (yet).
    Missing,
    /// Retired without a successor, or a chain too long: nothing to queue.
    Gone,
}

fn follow(sat: &Satellite, mut id: PatientId) -> Result<Survivor, StoreError> {
    for _ in 0..MAX_HOPS {
        let Some(head) = sat.store.head(&id)? else {
            return Ok(Survivor::Missing);
        };
        let Some(files) = sat.store.read_at(&id, head)? else {
            return Ok(Survivor::Missing);
        };
        match Retirement::of(&files) {
            None => return Ok(Survivor::Held(id, head, files)),
            Some(Retirement {
                replaced_by: Some(next),
                ..
            }) if next != id => id = next,
            Some(_) => return Ok(Survivor::Gone),
        }
    }
    Ok(Survivor::Gone)
}

/// For each edit made here to a record central had merged into another
/// ([`Carried`]) whose survivor is now held: the fields the edit changed
/// where the survivor holds a third value (central kept the survivor's
/// there, `chartsync_merge::carry_files`) are queued as conflicts on the
/// survivor, this clinic's value as "ours". Returns how many were queued.
pub(crate) fn queue_carried_conflicts(sat: &Satellite) -> Result<u64, JobError> {
    let mut queued = 0;
    for c in sat.db.carried()? {
        // One record's trouble leaves the others' queued; it is tried
        // again after the next pull.
        match queue_carried(sat, &c) {
            Ok(n) => queued += n,
            Err(e) => {
                tracing::warn!(patient = %c.survivor, retired = %c.retired, error = %crate::error_chain(&e), "could not queue the conflicts of an edit carried onto a survivor");
            }
        }
    }
    Ok(queued)
}

/// [`queue_carried_conflicts`] for one edit.
fn queue_carried(sat: &Satellite, c: &Carried) -> Result<u64, JobError> {
    let (survivor, head, files) = match follow(sat, c.survivor)? {
        Survivor::Held(id, head, files) => (id, head, files),
        Survivor::Missing => return Ok(0),
        Survivor::Gone => {
            sat.db.drop_carried(&c.retired, c.edit)?;
            return Ok(0);
        }
    };
    let (Some(base), Some(ours)) = (
        sat.store.read_at(&c.retired, c.tombstone)?,
        sat.store.read_at(&c.retired, c.edit)?,
    ) else {
        sat.db.drop_carried(&c.retired, c.edit)?;
        return Ok(0);
    };
    let carried =
        chartsync_merge::carry_files(&files, &without_marker(base), &without_marker(ours));
    let conflicts: Vec<NewConflict> = carried
        .conflicts
        .into_iter()
        .map(|k| NewConflict {
            patient: survivor,
            file: k.file,
            path: k.path,
            base: k.base.unwrap_or(serde_json::Value::Null),
            ours: k.ours.unwrap_or(serde_json::Value::Null),
            theirs: k.theirs.unwrap_or(serde_json::Value::Null),
            ours_commit: c.edit,
            theirs_commit: c.tombstone,
            merge_commit: head,
        })
        .collect();
    if !conflicts.is_empty() {
        tracing::info!(patient = %survivor, retired = %c.retired, conflicts = conflicts.len(), "an edit carried onto the survivor of a merge kept the survivor's values: queued as conflicts");
        sat.db.record_conflicts(&conflicts)?;
    }
    sat.db.drop_carried(&c.retired, c.edit)?;
    Ok(conflicts.len() as u64)
}
