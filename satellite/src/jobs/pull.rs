//! pull: changes after the saved cursor to records held here. Each page is
//! stored durably before the cursor moves past it.

use std::sync::Arc;

use chartsync_protocol::PatientId;
use chartsync_protocol::sync::{
    FetchOneRequest, FetchOneResponse, PullRequest, PullResponse, RecordUpdate,
};

use chartsync_store::Retirement;

use super::apply::{JobError, Stored, aside, store_updates};
use super::{Progress, Summary};
use crate::Satellite;
use crate::client::{CentralClient, SyncError};
use crate::db::{PendingAck, SetAside};

/// The state key of the pull cursor.
pub(crate) const CURSOR: &str = "pull_cursor";

/// Stores a page of updates (fetching whole any record whose update could
/// not be applied) and returns what it did. A record that cannot be stored
/// even whole, or that central will not send, is set aside: it never stops
/// the page.
pub(crate) async fn store_page(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    updates: Vec<RecordUpdate>,
) -> Result<Stored, JobError> {
    let s = Arc::clone(sat);
    let mut stored = tokio::task::spawn_blocking(move || store_updates(&s, updates))
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
    let refetch = std::mem::take(&mut stored.refetch);
    if refetch.is_empty() {
        return Ok(stored);
    }
    let (whole, refused) = fetch_whole(sat, client, refetch).await?;
    stored.set_aside.extend(refused);
    let s = Arc::clone(sat);
    let mut again = tokio::task::spawn_blocking(move || store_updates(&s, whole))
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
    for id in std::mem::take(&mut again.refetch) {
        let reason = "central's copy could not be stored here even when fetched whole".to_string();
        again.set_aside.push(aside(sat, id, None, reason));
    }
    stored.extend(again);
    Ok(stored)
}

/// Records created here from central's copies, acknowledged by head.
fn acks_by_head(created: &[(PatientId, chartsync_protocol::CommitId)]) -> Vec<PendingAck> {
    created.iter().copied().map(PendingAck::by_head).collect()
}

/// Fetches records whole from central, one request each. A record central
/// refuses to send (out of scope now, unknown) is set aside; losing the
/// link stops the job.
async fn fetch_whole(
    sat: &Satellite,
    client: &CentralClient,
    ids: Vec<PatientId>,
) -> Result<(Vec<RecordUpdate>, Vec<SetAside>), JobError> {
    let mut whole = Vec::new();
    let mut refused = Vec::new();
    for id in ids {
        match client
            .call::<_, FetchOneResponse>("/v1/sync/fetch", &FetchOneRequest { id })
            .await
        {
            Ok(reply) => whole.push(reply.record),
            Err(SyncError::Refused {
                status,
                code,
                message,
            }) => refused.push(aside(
                sat,
                id,
                None,
                format!("central would not send the record ({status} {code}): {message}"),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((whole, refused))
}

/// Tries again, whole, records set aside whose next attempt is due; at
/// most this many a run.
const RETRIES_PER_RUN: usize = 20;

async fn retry_set_aside(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    summary: &mut Summary,
) -> Result<(), JobError> {
    let s = Arc::clone(sat);
    let due = super::spawn_db(move || s.db.set_aside_due(RETRIES_PER_RUN)).await?;
    if due.is_empty() {
        return Ok(());
    }
    let ids: Vec<PatientId> = due.into_iter().map(|(id, _)| id).collect();
    let (whole, refused) = fetch_whole(sat, client, ids).await?;
    let s = Arc::clone(sat);
    let mut stored = tokio::task::spawn_blocking(move || store_updates(&s, whole))
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
    stored.set_aside.extend(refused);
    for id in std::mem::take(&mut stored.refetch) {
        let reason = "central's copy could not be stored here even when fetched whole".to_string();
        stored.set_aside.push(aside(sat, id, None, reason));
    }
    stored.count(summary);
    let s = Arc::clone(sat);
    super::spawn_db(move || {
        s.db.commit_sync(
            &stored.states,
            &[],
            &acks_by_head(&stored.created),
            ("pull", &stored.set_aside),
        )
    })
    .await?;
    Ok(())
}

/// Runs pull.
pub(crate) async fn run(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    progress: &Progress,
) -> Result<Summary, JobError> {
    let mut summary = Summary::default();
    let s = Arc::clone(sat);
    let mut cursor = super::spawn_db(move || s.db.state(CURSOR)).await?.max(0) as u64;
    retry_set_aside(sat, client, &mut summary).await?;
    let mut pulled = Vec::new();
    loop {
        let request = PullRequest {
            cursor,
            limit: super::page_limit(sat),
        };
        let timer = std::time::Instant::now();
        let page: PullResponse = client.call("/v1/sync/pull", &request).await?;
        let called = timer.elapsed();
        let records = page.updates.len();
        if page.cursor < cursor {
            return Err(JobError::Protocol(format!(
                "the cursor went back from {cursor} to {}",
                page.cursor
            )));
        }
        let stored = store_page(sat, client, page.updates).await?;
        stored.count(&mut summary);
        pulled.extend(stored.states.iter().map(|s| (s.id, s.head)));
        // Durable records first, then the cursor (with their states).
        let s = Arc::clone(sat);
        let next = page.cursor;
        let created = acks_by_head(&stored.created);
        super::spawn_db(move || {
            s.db.commit_sync(
                &stored.states,
                &[(CURSOR, next as i64)],
                &created,
                ("pull", &stored.set_aside),
            )
        })
        .await?;
        tracing::debug!(
            records,
            call_ms = called.as_millis() as u64,
            store_ms = (timer.elapsed() - called).as_millis() as u64,
            "pull page stored"
        );
        cursor = next;
        progress("pull", summary.records_received);
        if !page.more {
            break;
        }
    }
    fetch_survivors(sat, pulled, &mut summary).await?;
    Ok(summary)
}

/// A record pulled retired into another (a merge at central) brings the
/// survivor here, fetched by id, when this clinic does not hold it yet.
async fn fetch_survivors(
    sat: &Arc<Satellite>,
    pulled: Vec<(PatientId, chartsync_protocol::CommitId)>,
    summary: &mut Summary,
) -> Result<(), JobError> {
    if pulled.is_empty() {
        return Ok(());
    }
    let s = Arc::clone(sat);
    let survivors = tokio::task::spawn_blocking(move || {
        let mut out: Vec<PatientId> = Vec::new();
        for (id, head) in pulled {
            if !s.store.is_retired_at(&id, head)? {
                continue;
            }
            let Some(files) = s.store.read_at(&id, head)? else {
                continue;
            };
            if let Some(survivor) = Retirement::of(&files).and_then(|r| r.replaced_by)
                && !s.store.exists(&survivor)
                && !out.contains(&survivor)
            {
                out.push(survivor);
            }
        }
        Ok::<_, JobError>(out)
    })
    .await
    .map_err(|e| JobError::Task(e.to_string()))??;
    for survivor in survivors {
        match super::fetch_one(sat, survivor).await {
            Ok(_) => summary.records_received += 1,
            Err(JobError::Sync(e)) if !e.is_transient() => {
                tracing::warn!(patient = %survivor, error = %crate::error_chain(&e), "central would not send the record that replaced a retired one");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
