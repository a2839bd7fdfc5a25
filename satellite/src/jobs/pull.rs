//! pull: changes after the saved cursor to records held here. Each page is
//! stored durably before the cursor moves past it.

use std::sync::Arc;

use chartsync_protocol::sync::{PullRequest, PullResponse, RecordUpdate};

use super::apply::{JobError, Stored, store_updates};
use super::{Progress, Summary};
use crate::Satellite;
use crate::client::CentralClient;

/// The state key of the pull cursor.
pub(crate) const CURSOR: &str = "pull_cursor";

/// Stores a page of updates (fetching whole any record whose update could
/// not be applied) and returns what it did.
pub(crate) async fn store_page(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    updates: Vec<RecordUpdate>,
) -> Result<Stored, JobError> {
    let s = Arc::clone(sat);
    let mut stored = tokio::task::spawn_blocking(move || store_updates(&s, updates))
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
    if !stored.refetch.is_empty() {
        let mut whole = Vec::new();
        for id in std::mem::take(&mut stored.refetch) {
            let reply: chartsync_protocol::sync::FetchOneResponse = client
                .call(
                    "/v1/sync/fetch",
                    &chartsync_protocol::sync::FetchOneRequest { id },
                )
                .await?;
            whole.push(reply.record);
        }
        let s = Arc::clone(sat);
        let again = tokio::task::spawn_blocking(move || store_updates(&s, whole))
            .await
            .map_err(|e| JobError::Task(e.to_string()))??;
        stored.states.extend(again.states);
        stored.created.extend(again.created);
        stored.received += again.received;
        stored.merged += again.merged;
        stored.conflicts += again.conflicts;
        stored.refused += again.refused;
        if !again.refetch.is_empty() {
            return Err(JobError::Protocol(format!(
                "{} record(s) could not be stored even when fetched whole",
                again.refetch.len()
            )));
        }
    }
    Ok(stored)
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
    loop {
        let request = PullRequest {
            cursor,
            limit: sat.config.sync.batch_size as u32,
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
        // Durable records first, then the cursor (with their states).
        let s = Arc::clone(sat);
        let next = page.cursor;
        let created: Vec<_> = stored.created.clone();
        super::spawn_db(move || {
            s.db.commit_sync(&stored.states, &[(CURSOR, next as i64)], &created)
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
    Ok(summary)
}
