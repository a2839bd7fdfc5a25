//! push: records changed here since central last acknowledged them, in
//! batches. Central answers per record: applied, or conflict with its
//! commits (merged here, then pushed again in the same run, a bounded number
//! of times), refused, or busy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chartsync_protocol::sync::{
    MAX_REQUEST_BYTES, PUSH_BATCH_BYTES, PushOutcome, PushRecord, PushRequest, PushResponse,
    RecordUpdate,
};
use chartsync_protocol::{CommitId, PatientId};

use super::apply::{JobError, store_updates};
use super::{Ahead, Progress, Summary};
use crate::Satellite;
use crate::client::CentralClient;
use crate::db::{CentralState, DirtyRecord, NO_ASIDE};

/// Builds the push records of a page, skipping records with nothing to
/// push (their marks are cleared if no local write happened since the page
/// was read: see `db/sync.rs`). Stops before the packs would pass
/// `budget` bytes (at most [`PUSH_BATCH_BYTES`], less on a slow link; a
/// batch holds at least one record); returns the records and how many of
/// the page's entries were looked at (the rest go in the next batch). A
/// record too large to send in one batch is set aside.
fn build(
    sat: &Satellite,
    page: &[DirtyRecord],
    summary: &mut Summary,
    thin: bool,
    budget: usize,
) -> Result<(Vec<PushRecord>, usize), JobError> {
    let store = &sat.store;
    let mut out = Vec::with_capacity(page.len());
    let mut clean = Vec::new();
    let mut aside = Vec::new();
    let mut bytes = 0usize;
    let mut looked = 0;
    for d in page {
        looked += 1;
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
        // Central's changes could not be merged with this head: pushing it
        // again would only bring the same answer. Pull tries it again.
        if Some(local) == d.aside_head {
            summary.set_aside += 1;
            continue;
        }
        let haves: Vec<CommitId> = d.central_head.into_iter().collect();
        // Protocol 3: changed files as deltas on central's version.
        let pack = if thin {
            store.pack_since_thin(&d.id, local, &haves)?
        } else {
            store.pack_since(&d.id, local, &haves)?
        };
        if pack.len() > MAX_REQUEST_BYTES / 2 {
            let reason = format!(
                "its changes take {} MiB, more than one sync batch may carry ({} MiB); split the record or ask HQ",
                pack.len() >> 20,
                MAX_REQUEST_BYTES >> 21
            );
            aside.push(super::apply::aside(sat, d.id, None, reason));
            summary.set_aside += 1;
            continue;
        }
        if !out.is_empty() && bytes + pack.len() > budget {
            // The next batch starts with it.
            looked -= 1;
            break;
        }
        bytes += pack.len();
        out.push(PushRecord {
            id: d.id,
            expected: d.central_head,
            head: local,
            pack,
        });
    }
    sat.db.clear_dirty_if(&clean)?;
    sat.db.set_aside("push", &aside)?;
    Ok((out, looked))
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
    for (record, result) in sent.iter().zip(response.results) {
        // Protocol 5 leaves the ids out: the results are in request order.
        let id = result.id.unwrap_or(record.id);
        let Some(&head) = pushed.get(&id) else {
            return Err(JobError::Protocol(format!(
                "a result for {id} which was not pushed"
            )));
        };
        match result.outcome {
            PushOutcome::Applied { seq, time } => {
                applied.push((
                    CentralState {
                        id,
                        head,
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
                id,
                head: central,
                seq,
                time: 0,
                base: None,
                pack,
            }),
            PushOutcome::Refused { code, message } => {
                tracing::warn!(patient = %id, code, message, "central refused a record");
                sat.db
                    .set_refused(&id, head, &format!("{code}: {message}"))?;
                summary.refused += 1;
            }
            PushOutcome::Busy => again.push(id),
            // Central's own fault: keep the record for the next run (it
            // stays marked as changed), do not hammer central now.
            PushOutcome::Failed { code, message } => {
                tracing::warn!(patient = %id, code, message, "central could not store a record; it is pushed again next time");
                summary.deferred += 1;
            }
        }
    }
    // Applied: central has our head. Record it, then clear the marks of
    // records whose head did not move since.
    let states: Vec<CentralState> = applied.iter().map(|(s, _)| s.clone()).collect();
    sat.db.commit_sync(&states, &[], &[], NO_ASIDE)?;
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
        sat.db
            .commit_sync(&stored.states, &[], &[], ("push", &stored.set_aside))?;
        if !stored.refetch.is_empty() {
            tracing::warn!(
                count = stored.refetch.len(),
                "could not merge central's answer; the next pull will"
            );
        }
        stored.count(summary);
        again.extend(
            ids.into_iter()
                .filter(|id| !stored.set_aside.iter().any(|a| a.id == *id)),
        );
    }
    Ok(again)
}

/// A page made ready to send.
struct Built {
    records: Vec<PushRecord>,
    /// Whether its packs are thin (protocol 3).
    thin: bool,
    counters: HashMap<PatientId, i64>,
    refused: u64,
    set_aside: u64,
    last: Option<PatientId>,
    took: Duration,
}

/// The byte budget of the next push batch: [`PUSH_BATCH_BYTES`] on a fast
/// link, less on a slow one (in slow start, the 2G link it is taken to be:
/// [`crate::client::SLOW_START_BANDWIDTH`]).
fn budget(client: &CentralClient) -> usize {
    client.batch_bytes(PUSH_BATCH_BYTES)
}

/// Loads the next page of changed records after `after` and builds its packs.
async fn load_and_build(
    sat: Arc<Satellite>,
    after: Option<PatientId>,
    thin: bool,
    budget: usize,
) -> Result<Built, JobError> {
    let batch = sat.config.sync.batch_size;
    tokio::task::spawn_blocking(move || {
        let timer = std::time::Instant::now();
        let page = sat.db.dirty_page(after, batch)?;
        build_page(&sat, page, timer, thin, budget)
    })
    .await
    .map_err(|e| JobError::Task(e.to_string()))?
}

fn build_page(
    sat: &Satellite,
    page: Vec<DirtyRecord>,
    timer: std::time::Instant,
    thin: bool,
    budget: usize,
) -> Result<Built, JobError> {
    let counters: HashMap<PatientId, i64> = page.iter().map(|d| (d.id, d.changes)).collect();
    let mut local = Summary::default();
    let (records, looked) = build(sat, &page, &mut local, thin, budget)?;
    Ok(Built {
        records,
        thin,
        counters,
        refused: local.refused,
        set_aside: local.set_aside,
        last: looked
            .checked_sub(1)
            .and_then(|i| page.get(i))
            .map(|d| d.id),
        took: timer.elapsed(),
    })
}

/// Whether two batches may be in flight at once: the round trip was
/// measured short (a LAN, not a link where a cut must cost at most one
/// batch) and batches are not cut short by bytes. Central then stores one
/// batch while it verifies the next.
fn overlap(client: &CentralClient) -> bool {
    client
        .measure()
        .rtt
        .is_some_and(|rtt| rtt < crate::client::SLOW_START_RTT)
        && budget(client) >= PUSH_BATCH_BYTES
}

/// A batch sent on its own task: the ids to push again, and what it did.
type InFlight = Ahead<Result<(Vec<PatientId>, Summary), JobError>>;

fn start_send(sat: &Arc<Satellite>, client: &Arc<CentralClient>, built: Built) -> InFlight {
    let (sat, client) = (Arc::clone(sat), Arc::clone(client));
    Ahead::start(async move {
        let mut local = Summary::default();
        let again = send(&sat, &client, built, &mut local).await?;
        Ok((again, local))
    })
}

/// Waits for a batch in flight and counts what it did.
async fn finish(
    sending: InFlight,
    retry: &mut Vec<PatientId>,
    summary: &mut Summary,
) -> Result<(), JobError> {
    let (again, local) = sending.done().await??;
    retry.extend(again);
    summary.add(&local);
    Ok(())
}

/// Runs push. While central works on one batch, the next batch's packs
/// are built; on a LAN ([`overlap`]) that batch is sent before central
/// answers the first. Unless the link is still being measured: then the
/// next batch waits for the measure.
pub(crate) async fn run(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    progress: &Progress,
) -> Result<Summary, JobError> {
    let batch = sat.config.sync.batch_size;
    let attempts = sat.config.sync.max_attempts;
    let mut summary = Summary::default();
    let mut retry: Vec<PatientId> = Vec::new();
    let mut next = tokio::spawn(load_and_build(
        Arc::clone(sat),
        None,
        client.thin(),
        budget(client),
    ));
    let mut in_flight: Option<InFlight> = None;
    loop {
        let built = next.await.map_err(|e| JobError::Task(e.to_string()))??;
        let Some(last) = built.last else { break };
        let build_next = || {
            tokio::spawn(load_and_build(
                Arc::clone(sat),
                Some(last),
                client.thin(),
                budget(client),
            ))
        };
        // In slow start the next batch is built once this one has
        // measured the link, so that it is sized by what was measured.
        if client.slow_start() {
            if let Some(earlier) = in_flight.take() {
                finish(earlier, &mut retry, &mut summary).await?;
            }
            retry.extend(send(sat, client, built, &mut summary).await?);
            next = build_next();
        } else {
            next = build_next();
            let sending = start_send(sat, client, built);
            if let Some(earlier) = in_flight.take() {
                finish(earlier, &mut retry, &mut summary).await?;
            }
            if overlap(client) {
                in_flight = Some(sending);
            } else {
                finish(sending, &mut retry, &mut summary).await?;
            }
        }
        progress("push", summary.records_sent);
    }
    if let Some(earlier) = in_flight.take() {
        finish(earlier, &mut retry, &mut summary).await?;
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
        let mut again = Vec::new();
        for chunk in retry.chunks(batch) {
            let ids = chunk.to_vec();
            let s = Arc::clone(sat);
            let thin = client.thin();
            let budget = budget(client);
            let built = tokio::task::spawn_blocking(move || {
                let timer = std::time::Instant::now();
                let mut page = Vec::new();
                for id in ids {
                    if let Some(state) = s.db.record(&id)? {
                        page.push(DirtyRecord {
                            id,
                            central_head: state.central_head,
                            refused_head: None,
                            aside_head: None,
                            changes: state.changes,
                        });
                    }
                }
                build_page(&s, page, timer, thin, budget)
            })
            .await
            .map_err(|e| JobError::Task(e.to_string()))??;
            // What did not fit in this batch is tried in the next round.
            if let Some(last) = built.last
                && let Some(at) = chunk.iter().position(|id| *id == last)
            {
                again.extend_from_slice(&chunk[at + 1..]);
            }
            again.extend(send(sat, client, built, &mut summary).await?);
        }
        retry = again;
    }
    summary.deferred += retry.len() as u64;
    Ok(summary)
}

/// Sends a built page and handles central's answers.
async fn send(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    built: Built,
    summary: &mut Summary,
) -> Result<Vec<PatientId>, JobError> {
    summary.refused += built.refused;
    summary.set_aside += built.set_aside;
    if built.records.is_empty() {
        return Ok(Vec::new());
    }
    let timer = std::time::Instant::now();
    let mut request = PushRequest {
        records: built.records,
    };
    let response: PushResponse = match client.call("/v1/sync/push", &request).await {
        // Central turned out to speak protocol 2 only: the same records
        // again with whole packs.
        Err(_) if built.thin && !client.thin() => {
            let s = Arc::clone(sat);
            let records = request.records;
            request.records = tokio::task::spawn_blocking(move || {
                records
                    .into_iter()
                    .map(|mut r| {
                        let haves: Vec<CommitId> = r.expected.into_iter().collect();
                        r.pack = s.store.pack_since(&r.id, r.head, &haves)?;
                        Ok(r)
                    })
                    .collect::<Result<Vec<_>, JobError>>()
            })
            .await
            .map_err(|e| JobError::Task(e.to_string()))??;
            client.call("/v1/sync/push", &request).await?
        }
        other => other?,
    };
    let called = timer.elapsed();
    let request_len = request.records.len();
    let counters = built.counters;
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
        build_ms = built.took.as_millis() as u64,
        call_ms = called.as_millis() as u64,
        handle_ms = (timer.elapsed() - called).as_millis() as u64,
        "push batch"
    );
    summary.records_sent += local.records_sent;
    summary.merged += local.merged;
    summary.conflicts += local.conflicts;
    summary.refused += local.refused;
    summary.set_aside += local.set_aside;
    Ok(again)
}
