//! fetch-new: records in this clinic's scope that it does not hold yet,
//! paged. Every stored record is acknowledged to central (in the next
//! request), so a reply cut off in transit loses nothing: the page comes
//! again. Also fetch-one, for a visiting patient.

use std::sync::Arc;

use chartsync_protocol::sync::{
    Ack, AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, FetchOneRequest,
    FetchOneResponse,
};
use chartsync_protocol::{CommitId, PatientId};

use super::apply::JobError;
use super::pull::store_page;
use super::{Progress, Summary};
use crate::Satellite;
use crate::client::CentralClient;

const CURSOR: &str = "fetch_cursor";
const EPOCH: &str = "fetch_epoch";

fn acks(pending: &[(PatientId, CommitId)]) -> Vec<Ack> {
    pending
        .iter()
        .map(|(id, head)| Ack {
            id: *id,
            head: *head,
        })
        .collect()
}

/// Delivers pending acknowledgements alone; stores what moved meanwhile.
async fn deliver_acks(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    summary: &mut Summary,
) -> Result<(), JobError> {
    loop {
        let s = Arc::clone(sat);
        let pending =
            super::spawn_db(move || s.db.pending_acks(chartsync_protocol::sync::MAX_BATCH)).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let reply: AckResponse = client
            .call(
                "/v1/sync/ack",
                &AckRequest {
                    acks: acks(&pending),
                },
            )
            .await?;
        let stored = store_page(sat, client, reply.moved).await?;
        stored.count(summary);
        let s = Arc::clone(sat);
        super::spawn_db(move || {
            s.db.commit_sync(&stored.states, &[], &[], ("fetch-new", &stored.set_aside))?;
            s.db.clear_acks(&pending)
        })
        .await?;
    }
}

/// Runs fetch-new.
pub(crate) async fn run(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    progress: &Progress,
) -> Result<Summary, JobError> {
    let mut summary = Summary::default();
    let s = Arc::clone(sat);
    let (mut cursor, mut epoch) = super::spawn_db(move || {
        Ok::<_, crate::db::DbError>((
            s.db.state(CURSOR)?.max(0) as u64,
            s.db.state(EPOCH)?.max(0) as u64,
        ))
    })
    .await?;
    loop {
        let s = Arc::clone(sat);
        let pending =
            super::spawn_db(move || s.db.pending_acks(chartsync_protocol::sync::MAX_BATCH)).await?;
        let request = FetchNewRequest {
            cursor,
            epoch,
            limit: super::page_limit(sat, client),
            acks: acks(&pending),
        };
        let page: FetchNewResponse = client.call("/v1/sync/fetch-new", &request).await?;
        // Central has the acknowledgements now.
        let s = Arc::clone(sat);
        let delivered = pending.clone();
        super::spawn_db(move || s.db.clear_acks(&delivered)).await?;
        let mut updates = page.moved;
        updates.extend(page.records);
        let stored = store_page(sat, client, updates).await?;
        stored.count(&mut summary);
        let s = Arc::clone(sat);
        let (next, next_epoch) = (page.cursor, page.epoch);
        // Everything stored from this page is acknowledged next time.
        let held: Vec<(PatientId, CommitId)> =
            stored.states.iter().map(|s| (s.id, s.head)).collect();
        super::spawn_db(move || {
            s.db.commit_sync(
                &stored.states,
                &[(CURSOR, next as i64), (EPOCH, next_epoch as i64)],
                &held,
                ("fetch-new", &stored.set_aside),
            )
        })
        .await?;
        cursor = next;
        epoch = next_epoch;
        progress("fetch-new", summary.records_received);
        if !page.more {
            break;
        }
    }
    deliver_acks(sat, client, &mut summary).await?;
    Ok(summary)
}

/// Fetches one record by id from central (a visiting patient) and
/// acknowledges it: from then on it is held and synced.
pub async fn fetch_one(sat: &Arc<Satellite>, id: PatientId) -> Result<CommitId, JobError> {
    let client = Arc::new(CentralClient::new(&sat.config)?);
    let reply: FetchOneResponse = client
        .call("/v1/sync/fetch", &FetchOneRequest { id })
        .await?;
    let stored = store_page(sat, &client, vec![reply.record]).await?;
    let Some(head) = stored.states.iter().find(|s| s.id == id).map(|s| s.head) else {
        let why = stored
            .set_aside
            .iter()
            .find(|a| a.id == id)
            .map_or("no reason given", |a| a.reason.as_str());
        return Err(JobError::Protocol(format!(
            "central's copy of {id} could not be stored: {why}"
        )));
    };
    let s = Arc::clone(sat);
    let ack = vec![(id, head)];
    super::spawn_db(move || {
        s.db.commit_sync(&stored.states, &[], &ack, crate::db::NO_ASIDE)
    })
    .await?;
    let mut summary = Summary::default();
    deliver_acks(sat, &client, &mut summary).await?;
    Ok(head)
}
