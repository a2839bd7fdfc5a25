//! Central's write pipeline. Every write to a patient, from the record API
//! or a sync push, goes through [`apply_writes`]:
//!
//! 1. take the patients' locks (database leases);
//! 2. read their rows; check the caller's scope;
//! 3. verify and stage each write in the record store (objects and the
//!    head's lock file, or a complete new repository), without moving any
//!    head; one `syncfs` makes all of it durable;
//! 4. accept the new heads in ONE database transaction (compare-and-swap on
//!    the expected head, next sequence numbers, a `ref_pending` row each);
//! 5. move the git refs; one more `syncfs`; forget the `ref_pending` rows;
//! 6. release the locks and answer.
//!
//! **The database is the source of truth** for a record's head. A head is
//! acknowledged only after step 4 committed, and step 4 only happens after
//! every object it refers to is durable (step 3). A crash before step 4
//! leaves the database at the old head and, at worst, unreferenced objects
//! and a stale head lock file in the repository (taken over after a few
//! seconds, see `RecordStore`'s ref locks) or a half-built repository in
//! this process's `tmp/` session (removed at the next start). A crash
//! between 4 and 5 leaves refs behind the database: start-up repair
//! ([`crate::repair`]) moves every ref listed in `ref_pending` to the
//! database's head (or renames the staged repository into place) before
//! serving. Reads always use the database's head, so they never see a
//! state that was not acknowledged. Hence after a crash at any instant the
//! database and the refs agree once central is up, and every acknowledged
//! write is there.

use std::collections::HashSet;
use std::sync::Arc;

use chartsync_common::spread::spread;
use chartsync_http::ApiError;
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::validate::PATIENT_FILE;
use chartsync_store::{
    Attribution, Change, CommitMeta, Condition, Flush, Prepared, Received, StoreError,
};

use crate::Central;
use crate::auth::Caller;
use crate::db::{Applied, CentralDb, DbError, HeadChange, RecordRow, Seq};

/// What a write asks for.
#[derive(Debug)]
pub enum WriteKind {
    /// A record API write.
    Api {
        /// When it applies.
        condition: Condition,
        /// What it does.
        change: Change,
        /// Who and why.
        meta: CommitMeta,
    },
    /// A sync push: take the satellite's head.
    Push {
        /// The head the satellite last saw here (`None`: new record).
        expected: Option<CommitId>,
        /// The satellite's head.
        head: CommitId,
        /// Git pack data from `expected` to `head`.
        pack: Vec<u8>,
    },
}

/// One write.
#[derive(Debug)]
pub struct Write {
    /// The record.
    pub id: PatientId,
    /// What.
    pub kind: WriteKind,
}

/// What happened to one write.
#[derive(Debug)]
pub enum Outcome {
    /// Central's head is `head` (new, or already it).
    Applied {
        /// The head.
        head: CommitId,
        /// Its sequence number.
        seq: Seq,
        /// When it was accepted (Unix seconds).
        time: i64,
        /// Whether `head`'s tree holds the retirement marker, where the
        /// write read it (a received head is verified tree and all);
        /// `None` where it was not read.
        retired: Option<bool>,
    },
    /// Push: central's head moved since `expected`.
    Conflict {
        /// Central's head.
        head: CommitId,
        /// Its sequence number.
        seq: Seq,
        /// What the satellite lacks.
        pack: Vec<u8>,
    },
    /// Refused (the error to answer).
    Failed(ApiError),
    /// The patient's lock could not be taken in time.
    Busy,
}

enum Staged {
    Done(Outcome),
    Ready {
        prepared: Prepared,
        catchment: Option<String>,
    },
}

/// Runs writes through the pipeline (see the module documentation).
/// Outcomes are in the order of `writes`. Ids must be distinct.
///
/// The pipeline runs as a task of its own, so once started it finishes even
/// if the caller is dropped: a client that hangs up makes the HTTP server
/// drop its handler, and a pipeline dropped between steps 4 and 5 would
/// leave heads accepted in the database with their refs never moved, or a
/// new record's staged repository deleted.
pub async fn apply_writes<D: CentralDb>(
    central: &Arc<Central<D>>,
    caller: &Caller,
    writes: Vec<Write>,
) -> Result<Vec<Outcome>, DbError> {
    let central = Arc::clone(central);
    let caller = caller.clone();
    tokio::spawn(async move { run_pipeline(&central, &caller, writes).await })
        .await
        .map_err(|e| DbError::Backend {
            context: "applying writes",
            source: Box::new(e),
        })?
}

async fn run_pipeline<D: CentralDb>(
    central: &Arc<Central<D>>,
    caller: &Caller,
    writes: Vec<Write>,
) -> Result<Vec<Outcome>, DbError> {
    let ids: Vec<PatientId> = writes.iter().map(|w| w.id).collect();
    let timer = std::time::Instant::now();
    let held = central.locks.acquire(&central.db, &ids).await?;
    central
        .metrics
        .lock_wait(held.waited, ids.len() - held.ids.len());
    let locked_at = timer.elapsed();
    let result = apply_locked(central, caller, writes, &held.ids).await;
    let applied_at = timer.elapsed();
    if let Err(e) = central.locks.release(&central.db, held).await {
        tracing::error!(error = %e, "could not release patient locks (they expire with their lease)");
    }
    tracing::debug!(
        records = ids.len(),
        lock_ms = locked_at.as_millis() as u64,
        unlock_ms = (timer.elapsed() - applied_at).as_millis() as u64,
        "write batch locks"
    );
    result
}

async fn apply_locked<D: CentralDb>(
    central: &Arc<Central<D>>,
    caller: &Caller,
    writes: Vec<Write>,
    held: &[PatientId],
) -> Result<Vec<Outcome>, DbError> {
    let held: HashSet<PatientId> = held.iter().copied().collect();
    let ids: Vec<PatientId> = writes.iter().map(|w| w.id).collect();
    // New records get a copy too (see `copies`).
    central.copies.used(ids.iter().copied());
    let read_timer = std::time::Instant::now();
    let rows = central.db.records(&ids).await?;
    // Where the database keeps history, this process's copy of each held
    // record is brought level with the database first.
    let current: Vec<(PatientId, CommitId)> = rows
        .iter()
        .flatten()
        .filter(|row| held.contains(&row.id))
        .map(|row| (row.id, row.head))
        .collect();
    let behind: HashSet<PatientId> = Central::catch_up(central, &current, true)
        .await
        .into_iter()
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = (0..writes.len()).map(|_| None).collect();
    let mut work = Vec::new();
    for (index, (write, row)) in writes.into_iter().zip(rows).enumerate() {
        if !held.contains(&write.id) || behind.contains(&write.id) {
            outcomes[index] = Some(Outcome::Busy);
            continue;
        }
        if let Some(row) = &row
            && !central.in_scope(caller, row).await?
        {
            outcomes[index] = Some(Outcome::Failed(out_of_scope(&write)));
            continue;
        }
        work.push((index, write, row));
    }

    let read_ms = read_timer.elapsed().as_millis() as u64;
    // Stage in the store, in parallel on blocking threads.
    let by = caller.instance_id();
    let timer = std::time::Instant::now();
    let records = work.len();
    let staged = stage_all(Arc::clone(central), work, caller.clone()).await;
    let staged_at = timer.elapsed();
    let mut ready = Vec::new();
    for (index, row, staged) in staged {
        match staged {
            Staged::Done(outcome) => outcomes[index] = Some(outcome),
            Staged::Ready {
                prepared,
                catchment,
            } => ready.push((index, row, prepared, catchment)),
        }
    }
    if !ready.is_empty() {
        let c = Arc::clone(central);
        blocking(move || c.store.flush())
            .await
            .map_err(store_to_db)?;
        let changes: Vec<HeadChange> = ready
            .iter()
            .map(|(_, _, p, catchment)| HeadChange {
                id: p.id,
                old: p.old,
                new: p.new,
                catchment: catchment.clone(),
                by,
                staging: p.staging_path().map(|s| s.to_string_lossy().into_owned()),
            })
            .collect();
        // If this fails, the prepared writes are dropped: abandoned, nothing
        // acknowledged.
        let flushed_at = timer.elapsed();
        let mut packed_at = flushed_at;
        let applied = if central.db.keeps_history() {
            // Each head goes into the database with its pack, in the same
            // transaction (see `CentralDb::apply_with_history`).
            let c = Arc::clone(central);
            let (back, packs) = blocking(move || {
                let packs = spread(ready.iter().collect(), |(_, _, prepared, _)| {
                    c.store.prepared_pack(prepared)
                })
                .ok_or_else(|| StoreError::Io {
                    path: std::path::PathBuf::new(),
                    source: std::io::Error::other("a thread making packs failed"),
                })?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
                Ok((ready, packs))
            })
            .await
            .map_err(store_to_db)?;
            ready = back;
            packed_at = timer.elapsed();
            central.db.apply_with_history(&changes, &packs).await?
        } else {
            central.db.apply(&changes).await?
        };
        let committed_at = timer.elapsed();
        let c = Arc::clone(central);
        // Each record's ref moves on its own: spread over the cores.
        let published = blocking(move || {
            let work: Vec<_> = ready.into_iter().zip(applied).collect();
            let published = spread(work, |((index, _, prepared, _), applied)| {
                publish_one(&c, index, prepared, applied)
            })
            .ok_or_else(|| StoreError::Io {
                path: std::path::PathBuf::new(),
                source: std::io::Error::other("a thread moving refs failed"),
            })?;
            let mut results = Vec::with_capacity(published.len());
            let mut done = Vec::with_capacity(published.len());
            for (index, outcome, moved) in published {
                results.push((index, outcome));
                done.extend(moved);
            }
            c.store.flush()?;
            Ok::<_, StoreError>((results, done))
        })
        .await
        .map_err(store_to_db)?;
        let (results, done) = published;
        for (index, outcome) in results {
            outcomes[index] = Some(outcome);
        }
        tracing::debug!(
            records,
            read_ms,
            stage_ms = staged_at.as_millis() as u64,
            flush_ms = (flushed_at - staged_at).as_millis() as u64,
            pack_ms = (packed_at - flushed_at).as_millis() as u64,
            commit_ms = (committed_at - packed_at).as_millis() as u64,
            publish_ms = (timer.elapsed() - committed_at).as_millis() as u64,
            "write batch applied"
        );
        // Where the database keeps history, no ref_pending rows were
        // written (see `CentralDb::apply_with_history`): nothing to clear.
        if !central.db.keeps_history()
            && let Err(e) = central.db.clear_ref_pending(&done).await
        {
            tracing::warn!(error = %e, "could not clear ref_pending rows (harmless: repair is a no-op)");
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed(ApiError::busy("not processed", 1))))
        .collect())
}

fn store_to_db(e: StoreError) -> DbError {
    DbError::Backend {
        context: "making records durable",
        source: Box::new(e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(e),
        }),
    }
}

/// The answer to a write to a record outside the caller's scope: what the
/// same write to an unknown record would get, so that the answer does not
/// tell a clinic which ids exist elsewhere. (A creation with a chosen id
/// cannot hide that the id is taken: it gets `exists`, without the
/// record's content.)
fn out_of_scope(write: &Write) -> ApiError {
    let id = write.id;
    match &write.kind {
        WriteKind::Api {
            condition: Condition::MustCreate,
            ..
        }
        | WriteKind::Push { expected: None, .. } => ApiError::from(StoreError::Exists { id }),
        WriteKind::Api { .. } => crate::records::no_such_record(id),
        WriteKind::Push { .. } => unknown_pushed(id),
    }
}

/// The answer to a push that updates a record central does not have.
fn unknown_pushed(id: PatientId) -> ApiError {
    ApiError::not_found(format!(
        "patient record {id} does not exist at central; push it as a new record"
    ))
}

/// Publishes one write the database accepted (moves its ref), or drops
/// one it found stale; the outcome, and the (record, head) whose ref
/// moved.
fn publish_one<D: CentralDb>(
    c: &Central<D>,
    index: usize,
    prepared: Prepared,
    applied: Applied,
) -> (usize, Outcome, Option<(PatientId, CommitId)>) {
    match applied {
        Applied::Ok { seq, time } => {
            let id = prepared.id;
            let head = prepared.new;
            let retired = prepared.retired;
            let mut moved = None;
            if let Err(e) = c.store.publish(prepared, Flush::Deferred) {
                // Acknowledged in the database; the ref is repaired from
                // ref_pending.
                tracing::error!(patient = %id, error = %e, "could not move a ref; repairing");
                if let Err(e) = crate::repair::repair_one(&c.store, id, head, None) {
                    tracing::error!(patient = %id, error = %e, "ref repair failed; it is retried at start-up");
                }
            } else {
                moved = Some((id, head));
            }
            c.note_write(id);
            let outcome = Outcome::Applied {
                head,
                seq,
                time,
                retired,
            };
            (index, outcome, moved)
        }
        Applied::Stale { current } => {
            drop(prepared);
            tracing::warn!(?current, "head moved under a held lock (lease expired?)");
            let outcome = Outcome::Failed(ApiError::busy(
                "the record changed while this write was being applied; try again",
                1,
            ));
            (index, outcome, None)
        }
    }
}

/// Stages every write, spread over the available cores.
async fn stage_all<D: CentralDb>(
    central: Arc<Central<D>>,
    work: Vec<(usize, Write, Option<RecordRow>)>,
    caller: Caller,
) -> Vec<(usize, Option<RecordRow>, Staged)> {
    let caller = Arc::new(caller);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let chunk = work.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<_>> = Vec::new();
    let mut work = work.into_iter().peekable();
    while work.peek().is_some() {
        chunks.push(work.by_ref().take(chunk).collect());
    }
    let mut tasks = Vec::new();
    for part in chunks {
        let c = Arc::clone(&central);
        let caller = Arc::clone(&caller);
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|(index, write, row)| {
                    let staged = stage_one(&c, write, row.as_ref(), &caller);
                    (index, row, staged)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        match task.await {
            Ok(part) => out.extend(part),
            Err(e) => tracing::error!(error = %e, "a staging task failed"),
        }
    }
    out
}

fn stage_one<D: CentralDb>(
    central: &Central<D>,
    write: Write,
    row: Option<&RecordRow>,
    caller: &Caller,
) -> Staged {
    let id = write.id;
    let by = caller.instance_id();
    let store = &central.store;
    let prepared = match write.kind {
        // The commit names who wrote through central: the instance whose
        // token was used, or HQ.
        WriteKind::Api {
            condition,
            change,
            meta,
        } => match store.prepare_as(
            caller.commit_name(),
            &id,
            condition,
            change,
            &meta,
            Flush::Deferred,
        ) {
            Ok(p) => p,
            Err(e) => return Staged::Done(Outcome::Failed(ApiError::from(e))),
        },
        WriteKind::Push {
            expected,
            head,
            pack,
        } => {
            match (expected, row) {
                (_, Some(row)) if row.head == head => {
                    // Already applied (a retry after a lost reply).
                    return Staged::Done(Outcome::Applied {
                        head,
                        seq: row.seq,
                        time: row.updated_at,
                        retired: None,
                    });
                }
                (None, Some(row)) => return conflict(central, row, &[]),
                (Some(e), Some(row)) if row.head != e => return conflict(central, row, &[e]),
                (Some(_), None) => {
                    return Staged::Done(Outcome::Failed(unknown_pushed(id)));
                }
                _ => {}
            }
            // Every new commit must name the pushing instance (the audit
            // trail cannot be forged); only instances push.
            let Caller::Instance(instance) = caller else {
                return Staged::Done(Outcome::Failed(ApiError::forbidden(
                    "the sync endpoints are for satellites",
                )));
            };
            let attribution = Attribution {
                names: crate::auth::commit_names(instance),
                sender: format!("instance {} ({})", instance.id, instance.name),
            };
            match store.prepare_received_from(
                &id,
                expected,
                head,
                &pack,
                Flush::Deferred,
                &attribution,
            ) {
                Ok(Received::Ready(p)) => p,
                Ok(Received::Stale { current }) => {
                    tracing::error!(patient = %id, ?current, "the ref disagrees with the database");
                    return Staged::Done(Outcome::Failed(ApiError::busy(
                        "the record is being repaired; try again",
                        5,
                    )));
                }
                Err(e) => return Staged::Done(Outcome::Failed(ApiError::from(e))),
            }
        }
    };
    if !prepared.is_change() {
        return Staged::Done(match row {
            Some(row) => Outcome::Applied {
                head: row.head,
                seq: row.seq,
                time: row.updated_at,
                retired: None,
            },
            None => Outcome::Failed(ApiError::busy("the record is being created; try again", 1)),
        });
    }
    // The record's catchment: the top-level `catchment` of patient.yaml,
    // else the creating instance's first catchment. Unchanged when the write
    // does not touch patient.yaml.
    let creator = match row {
        Some(row) => row.created_by,
        None => by,
    };
    let catchment = match prepared.changed.get(PATIENT_FILE) {
        Some(_) => prepared
            .catchment
            .clone()
            .or_else(|| creator.and_then(|c| central.first_catchment(c))),
        None => match row {
            Some(row) => row.catchment.clone(),
            None => creator.and_then(|c| central.first_catchment(c)),
        },
    };
    Staged::Ready {
        prepared,
        catchment,
    }
}

fn conflict<D: CentralDb>(central: &Central<D>, row: &RecordRow, haves: &[CommitId]) -> Staged {
    match central.store.pack_since(&row.id, row.head, haves) {
        Ok(pack) => Staged::Done(Outcome::Conflict {
            head: row.head,
            seq: row.seq,
            pack,
        }),
        Err(e) => Staged::Done(Outcome::Failed(ApiError::from(e))),
    }
}
