//! pull: changes after the saved cursor to records held here. Each page is
//! stored durably before the cursor moves past it.

use std::sync::Arc;

use chartsync_protocol::PatientId;
use chartsync_protocol::sync::{
    FetchOneRequest, FetchOneResponse, PullRequest, PullResponse, RecordUpdate,
};

use chartsync_store::Retirement;

use super::apply::{JobError, Stored, aside, store_updates};
use super::{Ahead, Progress, Summary};
use crate::Satellite;
use crate::client::{CentralClient, SyncError};
use crate::db::{PendingAck, SetAside};

/// The state key of the pull cursor.
pub(crate) const CURSOR: &str = "pull_cursor";

/// The state key set (by migration 6) on a satellite that held records
/// before fetch-new looked for the survivors of the tombstones it stores:
/// until then the next pull looked at every record it listed, including
/// those fetch-new had just created. Its next pull does so once more, then
/// clears the key; otherwise a pull looks only at records whose head moved.
const CHECK_ALL: &str = "pull_checks_all";

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
    let survivors = std::mem::take(&mut stored.survivors);
    super::fetch::follow_survivors(sat, client, survivors, summary).await?;
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
    let (mut cursor, check_all) = super::spawn_db(move || {
        Ok::<_, crate::db::DbError>((
            s.db.state(CURSOR)?.max(0) as u64,
            s.db.state(CHECK_ALL)? != 0,
        ))
    })
    .await?;
    retry_set_aside(sat, client, &mut summary).await?;
    let mut next: Option<Ahead<Result<PullResponse, SyncError>>> = None;
    loop {
        let timer = std::time::Instant::now();
        let page = match next.take() {
            Some(ahead) => ahead.done().await??,
            None => ask(Arc::clone(sat), Arc::clone(client), cursor).await?,
        };
        let called = timer.elapsed();
        let records = page.updates.len();
        if page.cursor < cursor {
            return Err(JobError::Protocol(format!(
                "the cursor went back from {cursor} to {}",
                page.cursor
            )));
        }
        // The next page is asked for while this one is stored: its
        // changes are based on the heads as of this page's cursor, which
        // are here once this page is stored, and it is stored after.
        if page.more {
            next = Some(Ahead::start(ask(
                Arc::clone(sat),
                Arc::clone(client),
                page.cursor,
            )));
        }
        let mut stored = store_page(sat, client, page.updates).await?;
        stored.count(&mut summary);
        // A record that moved here to a tombstone (merged at central into
        // another) brings its survivor, before the cursor moves on: a
        // crash in between pulls the page again.
        let mut survivors = std::mem::take(&mut stored.survivors);
        if check_all {
            let states = stored.states.iter().map(|s| (s.id, s.head)).collect();
            survivors.extend(named_survivors(sat, states).await?);
        }
        if !survivors.is_empty() {
            // Following them delivers acknowledgements and stores what
            // moved since: the page asked ahead, built before, is asked
            // for again afterwards, so that nothing it holds is older
            // than what is stored here by then.
            next = None;
        }
        super::fetch::follow_survivors(sat, client, survivors, &mut summary).await?;
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
    if check_all {
        let s = Arc::clone(sat);
        super::spawn_db(move || s.db.set_state(CHECK_ALL, 0)).await?;
    }
    Ok(summary)
}

/// Asks central for the page after `cursor`.
async fn ask(
    sat: Arc<Satellite>,
    client: Arc<CentralClient>,
    cursor: u64,
) -> Result<PullResponse, SyncError> {
    let request = PullRequest {
        cursor,
        limit: super::page_limit(&sat),
    };
    client.call("/v1/sync/pull", &request).await
}

/// The survivors named by tombstones among records already at central's
/// head here (the check of every pulled record that satellites before
/// the survivor check in `store_updates` relied on; see [`CHECK_ALL`]).
async fn named_survivors(
    sat: &Arc<Satellite>,
    states: Vec<(PatientId, chartsync_protocol::CommitId)>,
) -> Result<Vec<PatientId>, JobError> {
    let s = Arc::clone(sat);
    tokio::task::spawn_blocking(move || {
        let mut out: Vec<PatientId> = Vec::new();
        for (id, head) in states {
            if !s.store.is_retired_at(&id, head)? {
                continue;
            }
            let Some(files) = s.store.read_at(&id, head)? else {
                continue;
            };
            out.extend(Retirement::of(&files).and_then(|r| r.replaced_by));
        }
        Ok::<_, JobError>(out)
    })
    .await
    .map_err(|e| JobError::Task(e.to_string()))?
}
