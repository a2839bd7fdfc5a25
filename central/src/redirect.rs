//! Edits that reach a retired record land on the record that replaced it.
//!
//! A clinic that edited a record offline while HQ merged it into another
//! pushes its edit to the retired record: its push meets the tombstone,
//! the clinic merges the tombstone in (the record stays retired, the edit
//! is in its history) and pushes again. Central accepts that, and then
//! carries the change the push made (tombstone to pushed head) onto the
//! survivor (`chartsync_merge::carry_files`): items added to lists and new
//! fields come in; a field the clinic changed takes the clinic's value
//! where the survivor still holds the value the clinic changed; where the
//! survivor holds a third value, its value stays and the clinic's is named
//! in the carrying commit's message (and stays in the retired record's
//! history; the clinic queues it as a conflict on the survivor once it
//! holds the survivor). The pushing clinic is granted the survivor, so its
//! next fetch-new brings it.

use std::sync::Arc;

use chartsync_merge::carry_files;
use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, RETIRED_FILE, Retirement};

use crate::Central;
use crate::apply::{Outcome, Write, WriteKind, apply_writes};
use crate::auth::Caller;
use crate::db::{CentralDb, Instance};

/// Longest chain of `replaced_by` followed (a record merged into one that
/// was merged in turn).
const MAX_HOPS: usize = 8;

/// How often a carry is tried again when the survivor moves meanwhile.
const ATTEMPTS: usize = 3;

fn without_marker(files: &Files) -> Files {
    let mut out = files.clone();
    out.remove(RETIRED_FILE);
    out
}

/// After a push retired `id` at `new` with `replaced_by`: when the record
/// that replaces it has been retired into `id` in turn (two clinics merged
/// the same pair in opposite directions while offline), the tombstone
/// central accepted first wins and this later one is undone: `id` is
/// restored with its data, and stays the survivor. Failures are logged.
pub async fn after_retire<D: CentralDb>(central: &Arc<Central<D>>, id: PatientId, new: CommitId) {
    if let Err(e) = undo_cycle(central, id, new).await {
        tracing::error!(patient = %id, code = %e.code, message = %e.message, "could not undo a merge that contradicts an earlier one");
    }
}

async fn undo_cycle<D: CentralDb>(
    central: &Arc<Central<D>>,
    id: PatientId,
    new: CommitId,
) -> Result<(), chartsync_http::ApiError> {
    let c = Arc::clone(central);
    let files = chartsync_http::blocking(move || Ok(c.store.read_at(&id, new)?)).await?;
    let Some(Retirement {
        replaced_by: Some(mut next),
        ..
    }) = files.as_ref().and_then(Retirement::of)
    else {
        return Ok(());
    };
    let mut cycle = false;
    for _ in 0..MAX_HOPS {
        if next == id {
            cycle = true;
            break;
        }
        let Some(row) = central
            .db
            .records(&[next])
            .await
            .map_err(|e| chartsync_http::ApiError::internal(&e))?
            .into_iter()
            .next()
            .flatten()
        else {
            break;
        };
        let c = Arc::clone(central);
        let (nid, head) = (next, row.head);
        let files = chartsync_http::blocking(move || Ok(c.store.read_at(&nid, head)?)).await?;
        match files.as_ref().and_then(Retirement::of) {
            Some(Retirement {
                replaced_by: Some(after),
                ..
            }) => next = after,
            _ => break,
        }
    }
    if !cycle {
        return Ok(());
    }
    let write = Write {
        id,
        kind: WriteKind::Api {
            condition: Condition::MatchHead(new),
            change: Change::Restore,
            meta: CommitMeta::new(
                "chartsync",
                "chartsync@localhost",
                "Restore record: another record was merged into this one first (central's first accepted merge wins); this record stays the survivor",
            ),
        },
    };
    match apply_writes(central, &Caller::Admin, vec![write])
        .await
        .map_err(|e| chartsync_http::ApiError::internal(&e))?
        .into_iter()
        .next()
    {
        Some(Outcome::Applied { .. }) => {
            tracing::info!(patient = %id, "a later merge in the opposite direction was undone");
            Ok(())
        }
        Some(Outcome::Failed(e)) => Err(e),
        _ => Err(chartsync_http::ApiError::busy("the record is busy", 1)),
    }
}

/// After a push to `id` moved its head from `old` to `new`: when `old` was
/// a tombstone with `replaced_by` and the push changed the record's data,
/// carries that change onto the survivor. Failures are logged: the edit is
/// in the retired record's history either way.
pub async fn after_push<D: CentralDb>(
    central: &Arc<Central<D>>,
    instance: &Instance,
    id: PatientId,
    old: CommitId,
    new: CommitId,
) {
    if let Err(e) = carry(central, instance, id, old, new).await {
        tracing::error!(patient = %id, code = %e.code, message = %e.message, "could not carry an edit of a retired record onto its survivor; it stays in the retired record's history");
    }
}

async fn carry<D: CentralDb>(
    central: &Arc<Central<D>>,
    instance: &Instance,
    id: PatientId,
    old: CommitId,
    new: CommitId,
) -> Result<(), chartsync_http::ApiError> {
    let c = Arc::clone(central);
    let (before, after) = chartsync_http::blocking(move || {
        Ok((c.store.read_at(&id, old)?, c.store.read_at(&id, new)?))
    })
    .await?;
    let (Some(before), Some(after)) = (before, after) else {
        return Ok(());
    };
    let Some(Retirement {
        replaced_by: Some(mut survivor),
        ..
    }) = Retirement::of(&before)
    else {
        return Ok(());
    };
    // A push that restores the record, or changes nothing but the marker,
    // is not an edit to carry.
    if Retirement::of(&after).is_none() || without_marker(&before) == without_marker(&after) {
        return Ok(());
    }
    let base = without_marker(&before);
    let ours = without_marker(&after);
    for _ in 0..ATTEMPTS {
        let Some((head, files)) = read_active(central, &mut survivor).await? else {
            return Ok(());
        };
        // The clinic's change (the record before the push to after it),
        // applied to the survivor.
        let merged = carry_files(&files, &base, &ours);
        if merged.files == files {
            break;
        }
        let mut message = format!(
            "Carry an edit made at {} to retired record {id}, which was merged into this one",
            instance.name
        );
        if !merged.conflicts.is_empty() {
            message.push_str(
                "\n\nThis record's value was kept where both changed a field; the clinic's values:",
            );
            for conflict in &merged.conflicts {
                let value = conflict
                    .ours
                    .as_ref()
                    .map_or_else(|| "(absent)".to_string(), |v| v.to_string());
                message.push_str(&format!("\n{}{}: {value}", conflict.file, conflict.path));
            }
        }
        let write = Write {
            id: survivor,
            kind: WriteKind::Api {
                condition: Condition::MatchHead(head),
                change: Change::Replace(merged.files),
                meta: CommitMeta::new("chartsync", "chartsync@localhost", &message),
            },
        };
        let outcome = apply_writes(central, &Caller::Admin, vec![write])
            .await
            .map_err(|e| chartsync_http::ApiError::internal(&e))?
            .into_iter()
            .next();
        match outcome {
            Some(Outcome::Applied { .. }) => {
                tracing::info!(patient = %id, survivor = %survivor, "edit of a retired record carried onto its survivor");
                break;
            }
            Some(Outcome::Failed(e))
                if e.status == axum::http::StatusCode::PRECONDITION_FAILED
                    || e.status == axum::http::StatusCode::CONFLICT => {}
            Some(Outcome::Failed(e)) => return Err(e),
            _ => {}
        }
    }
    central
        .db
        .grant(instance.id, &survivor, "merged")
        .await
        .map_err(|e| chartsync_http::ApiError::internal(&e))?;
    Ok(())
}

/// The survivor's head and files, following `replaced_by` when it was
/// retired in turn (`survivor` is updated); `None` when the chain ends at
/// a record retired without a successor, or is too long.
async fn read_active<D: CentralDb>(
    central: &Arc<Central<D>>,
    survivor: &mut PatientId,
) -> Result<Option<(CommitId, Files)>, chartsync_http::ApiError> {
    for _ in 0..MAX_HOPS {
        let row = central
            .db
            .records(&[*survivor])
            .await
            .map_err(|e| chartsync_http::ApiError::internal(&e))?
            .into_iter()
            .next()
            .flatten();
        let Some(row) = row else {
            return Ok(None);
        };
        let c = Arc::clone(central);
        let (sid, head) = (*survivor, row.head);
        let files = chartsync_http::blocking(move || Ok(c.store.read_at(&sid, head)?)).await?;
        let Some(files) = files else {
            return Ok(None);
        };
        match Retirement::of(&files) {
            None => return Ok(Some((head, files))),
            Some(Retirement {
                replaced_by: Some(next),
                ..
            }) if next != *survivor => *survivor = next,
            Some(_) => return Ok(None),
        }
    }
    Ok(None)
}
