//! push: records changed here since central last acknowledged them, in
//! batches. Central answers per record: applied, or conflict with its
//! commits (merged here, then pushed again in the same run, a bounded number
//! of times), refused, or busy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chartsync_shared::protocol::sync::{
    PushOutcome, PushRecord, PushRequest, PushResponse, RecordUpdate,
};
use chartsync_shared::{CommitId, PatientId};

use super::apply::{JobError, store_updates};
use super::{Progress, Summary};
use crate::Satellite;
use crate::client::CentralClient;
use crate::db::{CentralState, DirtyRecord};

/// Builds the push records of a page, skipping records with nothing to
/// push (their marks are cleared if no local write happened since the page
/// was read: see `db/sync.rs`).
fn build(
    sat: &Satellite,
    page: &[DirtyRecord],
    summary: &mut Summary,
) -> Result<Vec<PushRecord>, JobError> {
    let store = &sat.store;
    let mut out = Vec::with_capacity(page.len());
    let mut clean = Vec::new();
    for d in page {
        let Some(local) = store.head(&d.id)? else {
            // Marked before a creation that never completed.
            clean.push((d.id, d.changes));
            continue;
        };
        if Some(local) == d.central_head {
            clean.push((d.id, d.changes));
            continue;
        }
        if Some(local) == d.refused_head {
            summary.refused += 1;
            continue;
        }
        let haves: Vec<CommitId> = d.central_head.into_iter().collect();
        let pack = store.pack_since(&d.id, local, &haves)?;
        out.push(PushRecord {
            id: d.id,
            expected: d.central_head,
            head: local,
            pack,
        });
    }
    sat.db.clear_dirty_if(&clean)?;
    Ok(out)
}

/// Handles central's answers; returns the ids to push again in this run.
fn handle(
    sat: &Satellite,
    sent: &[PushRecord],
    counters: &HashMap<PatientId, i64>,
    response: PushResponse,
    summary: &mut Summary,
) -> Result<Vec<PatientId>, JobError> {
    if response.results.len() != sent.len() {
        return Err(JobError::Protocol(format!(
            "{} results for {} records",
            response.results.len(),
            sent.len()
        )));
    }
    let pushed: HashMap<PatientId, CommitId> = sent.iter().map(|r| (r.id, r.head)).collect();
    let mut applied = Vec::new();
    let mut conflicts = Vec::new();
    let mut again = Vec::new();
    for result in response.results {
        let Some(&head) = pushed.get(&result.id) else {
            return Err(JobError::Protocol(format!(
                "a result for {} which was not pushed",
                result.id
            )));
        };
        match result.outcome {
            PushOutcome::Applied {
                head: central,
                seq,
                time,
            } => {
                applied.push((
                    CentralState {
                        id: result.id,
                        head: central,
                        seq,
                        time,
                    },
                    head,
                ));
            }
            PushOutcome::Conflict {
                head: central,
                seq,
                pack,
            } => conflicts.push(RecordUpdate {
                id: result.id,
                head: central,
                seq,
                time: 0,
                base: None,
                pack,
            }),
            PushOutcome::Refused { code, message } => {
                tracing::warn!(patient = %result.id, code, message, "central refused a record");
                sat.db
                    .set_refused(&result.id, head, &format!("{code}: {message}"))?;
                summary.refused += 1;
            }
            PushOutcome::Busy => again.push(result.id),
        }
    }
    // Applied: central has our head. Record it, then clear the marks of
    // records whose head did not move since.
    let states: Vec<CentralState> = applied.iter().map(|(s, _)| s.clone()).collect();
    sat.db.commit_sync(&states, &[], &[])?;
    summary.records_sent += applied.len() as u64;
    let clean: Vec<(PatientId, i64)> = applied
        .iter()
        .filter(|(state, pushed)| state.head == *pushed)
        .filter_map(|(state, _)| counters.get(&state.id).map(|c| (state.id, *c)))
        .collect();
    sat.db.clear_dirty_if(&clean)?;
    // Conflicts: merge central's commits, then push again.
    if !conflicts.is_empty() {
        let ids: Vec<PatientId> = conflicts.iter().map(|u| u.id).collect();
        let stored = store_updates(sat, conflicts)?;
        summary.merged += stored.merged;
        summary.conflicts += stored.conflicts;
        sat.db.commit_sync(&stored.states, &[], &[])?;
        if !stored.refetch.is_empty() {
            tracing::warn!(
                count = stored.refetch.len(),
                "could not merge central's answer; the next pull will"
            );
        }
        again.extend(ids);
    }
    Ok(again)
}

/// Runs push.
pub(crate) async fn run(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    progress: &Progress,
) -> Result<Summary, JobError> {
    let batch = sat.config.sync.batch_size;
    let attempts = sat.config.sync.max_attempts;
    let mut summary = Summary::default();
    let mut after: Option<PatientId> = None;
    let mut retry: Vec<PatientId> = Vec::new();
    loop {
        // Next page of changed records.
        let s = Arc::clone(sat);
        let page = crate::api::spawn_db(move || s.db.dirty_page(after, batch)).await?;
        if page.is_empty() {
            break;
        }
        after = page.last().map(|d| d.id);
        let again = push_page(sat, client, page, &mut summary).await?;
        retry.extend(again);
        progress("push", summary.records_sent);
    }
    // Records merged or busy: push again, a bounded number of times.
    let mut pause = Duration::from_millis(200);
    for attempt in 1..attempts {
        if retry.is_empty() {
            break;
        }
        if attempt > 1 {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        let mut next = Vec::new();
        for chunk in retry.chunks(batch) {
            let ids = chunk.to_vec();
            let s = Arc::clone(sat);
            let page = crate::api::spawn_db(move || {
                let mut page = Vec::new();
                for id in ids {
                    if let Some(state) = s.db.record(&id)? {
                        page.push(DirtyRecord {
                            id,
                            central_head: state.central_head,
                            refused_head: None,
                            changes: state.changes,
                        });
                    }
                }
                Ok::<_, crate::db::DbError>(page)
            })
            .await?;
            next.extend(push_page(sat, client, page, &mut summary).await?);
        }
        retry = next;
    }
    summary.deferred = retry.len() as u64;
    Ok(summary)
}

async fn push_page(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    page: Vec<DirtyRecord>,
    summary: &mut Summary,
) -> Result<Vec<PatientId>, JobError> {
    let timer = std::time::Instant::now();
    let counters: HashMap<PatientId, i64> = page.iter().map(|d| (d.id, d.changes)).collect();
    let s = Arc::clone(sat);
    let mut local = Summary::default();
    let (records, local) = tokio::task::spawn_blocking(move || {
        let records = build(&s, &page, &mut local)?;
        Ok::<_, JobError>((records, local))
    })
    .await
    .map_err(|e| JobError::Task(e.to_string()))??;
    summary.refused += local.refused;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let built = timer.elapsed();
    let request = PushRequest { records };
    let response: PushResponse = client.call("/v1/sync/push", &request).await?;
    let called = timer.elapsed();
    let request_len = request.records.len();
    let s = Arc::clone(sat);
    let (again, local) = tokio::task::spawn_blocking(move || {
        let mut local = Summary::default();
        let again = handle(&s, &request.records, &counters, response, &mut local)?;
        Ok::<_, JobError>((again, local))
    })
    .await
    .map_err(|e| JobError::Task(e.to_string()))??;
    tracing::debug!(
        records = request_len,
        build_ms = built.as_millis() as u64,
        call_ms = (called - built).as_millis() as u64,
        handle_ms = (timer.elapsed() - called).as_millis() as u64,
        "push batch"
    );
    summary.records_sent += local.records_sent;
    summary.merged += local.merged;
    summary.conflicts += local.conflicts;
    summary.refused += local.refused;
    Ok(again)
}
