//! fetch-new: records in this clinic's scope that it does not hold yet,
//! paged. Every stored record is acknowledged to central (in the next
//! request), so a reply cut off in transit loses nothing: the page comes
//! again. Also fetch-one, for a visiting patient.

use std::collections::HashMap;
use std::sync::Arc;

use chartsync_protocol::sync::{
    Ack, AckRequest, AckResponse, FetchNewRequest, FetchNewResponse, FetchOneRequest,
    FetchOneResponse, MAX_ACK_PAGES, PageAck,
};
use chartsync_protocol::{CommitId, PatientId};

use super::apply::{JobError, MAX_HOPS};
use super::pull::store_page;
use super::{Ahead, Progress, Summary};
use crate::Satellite;
use crate::client::CentralClient;
use crate::db::PendingAck;

const CURSOR: &str = "fetch_cursor";
const EPOCH: &str = "fetch_epoch";

/// The acknowledgements of a request: a record stored at the head its
/// fetch-new page sent, by the page (its cursor and token, or its cursor
/// and the ids; at most [`MAX_ACK_PAGES`] pages, the rest by head), any
/// other by head. The client sends a page by its token to a central of
/// protocol 6, by its ids to one of protocol 5, and every record by head
/// to an older one. Also returns `pending` as delivered: a record of a
/// page that did not fit goes by head, without its page's token, so that
/// clearing it does not clear the rest of its page
/// ([`crate::db::Db::clear_acks`]).
fn acks(pending: &[PendingAck]) -> (Vec<Ack>, Vec<PageAck>, Vec<PendingAck>) {
    let mut acks = Vec::new();
    let mut pages: Vec<PageAck> = Vec::new();
    let mut delivered = Vec::with_capacity(pending.len());
    for a in pending {
        if let Some(cursor) = a.page {
            let token = a.token.unwrap_or(0);
            let at = match pages
                .iter()
                .position(|p| p.cursor == cursor && p.page == token)
            {
                Some(at) => Some(at),
                None if pages.len() < MAX_ACK_PAGES => {
                    pages.push(PageAck {
                        cursor,
                        ids: Vec::new(),
                        heads: Vec::new(),
                        page: token,
                    });
                    Some(pages.len() - 1)
                }
                None => None,
            };
            if let Some(page) = at.and_then(|at| pages.get_mut(at)) {
                page.ids.push(a.id);
                page.heads.push(a.head);
                delivered.push(*a);
                continue;
            }
        }
        acks.push(Ack {
            id: a.id,
            head: a.head,
        });
        delivered.push(PendingAck { token: None, ..*a });
    }
    (acks, pages, delivered)
}

/// Delivers pending acknowledgements alone; stores what moved meanwhile.
/// Returns the survivors named by tombstones among what moved.
async fn deliver_acks(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    summary: &mut Summary,
) -> Result<Vec<PatientId>, JobError> {
    let mut survivors = Vec::new();
    loop {
        let s = Arc::clone(sat);
        let pending =
            super::spawn_db(move || s.db.pending_acks(chartsync_protocol::sync::MAX_BATCH)).await?;
        if pending.is_empty() {
            return Ok(survivors);
        }
        let (acks, pages, pending) = acks(&pending);
        let reply: AckResponse = client
            .call("/v1/sync/ack", &AckRequest { acks, pages })
            .await?;
        let mut stored = store_page(sat, client, reply.moved).await?;
        stored.count(summary);
        survivors.append(&mut stored.survivors);
        let s = Arc::clone(sat);
        let by_token = client.version() >= 6;
        super::spawn_db(move || {
            s.db.commit_sync(&stored.states, &[], &[], ("fetch-new", &stored.set_aside))?;
            s.db.clear_acks(&pending, &reply.forgotten, by_token)
        })
        .await?;
    }
}

/// A fetch-new page and the acknowledgements its request delivered.
struct Asked {
    page: FetchNewResponse,
    delivered: Vec<PendingAck>,
}

/// Asks central for the page after `cursor`, delivering the pending
/// acknowledgements.
async fn ask(
    sat: Arc<Satellite>,
    client: Arc<CentralClient>,
    cursor: u64,
    epoch: u64,
) -> Result<Asked, JobError> {
    let s = Arc::clone(&sat);
    let pending =
        super::spawn_db(move || s.db.pending_acks(chartsync_protocol::sync::MAX_BATCH)).await?;
    let (acks, pages, delivered) = acks(&pending);
    let request = FetchNewRequest {
        cursor,
        epoch,
        limit: super::page_limit(&sat),
        acks,
        pages,
    };
    let page: FetchNewResponse = client.call("/v1/sync/fetch-new", &request).await?;
    Ok(Asked { page, delivered })
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
    let mut ahead: Option<Ahead<Result<Asked, JobError>>> = None;
    loop {
        let Asked { page, delivered } = match ahead.take() {
            Some(ahead) => ahead.done().await??,
            None => ask(Arc::clone(sat), Arc::clone(client), cursor, epoch).await?,
        };
        // Central has the acknowledgements now (but of pages it no longer
        // knew by their token: those go by their ids next time).
        let s = Arc::clone(sat);
        let forgotten = page.forgotten.clone();
        let by_token = client.version() >= 6;
        super::spawn_db(move || s.db.clear_acks(&delivered, &forgotten, by_token)).await?;
        // The next page is asked for while this one is stored (on a LAN,
        // central builds it meanwhile; on a slow link, it is on its way).
        // It starts after this page's cursor; this page's records are
        // acknowledged with the request after it, or at the end.
        if page.more {
            ahead = Some(Ahead::start(ask(
                Arc::clone(sat),
                Arc::clone(client),
                page.cursor,
                page.epoch,
            )));
        }
        let (next, next_epoch) = (page.cursor, page.epoch);
        // The page sent its records at their heads as of its cursor.
        let offered: HashMap<PatientId, CommitId> = page
            .records
            .iter()
            .filter(|u| u.seq <= next)
            .map(|u| (u.id, u.head))
            .collect();
        let all_offered = offered.len() == page.records.len();
        let token = page.page;
        let mut updates = page.moved;
        updates.extend(page.records);
        let mut stored = store_page(sat, client, updates).await?;
        stored.count(&mut summary);
        // A record that reached this clinic retired (merged at central
        // into another) brings its survivor, before the page counts as
        // stored: a crash in between fetches the page again.
        let survivors = std::mem::take(&mut stored.survivors);
        if !survivors.is_empty() {
            // Following them delivers acknowledgements, which the page
            // asked ahead may be delivering too, and stores what moved
            // since: that page is asked for again afterwards, so that
            // nothing it holds is older than what is stored here by then.
            ahead = None;
        }
        follow_survivors(sat, client, survivors, &mut summary).await?;
        let s = Arc::clone(sat);
        // Everything stored from this page is acknowledged next time: by
        // the page when stored at the head the page sent (not one that
        // moved, or was fetched whole at a newer head), else by head; by
        // the page's token alone when every record it offered was stored
        // so (central then takes all the ids it recorded for the page).
        let at_offered = |s: &&crate::db::CentralState| offered.get(&s.id) == Some(&s.head);
        let whole = token != 0
            && all_offered
            && stored
                .states
                .iter()
                .filter(at_offered)
                .map(|s| s.id)
                .collect::<std::collections::HashSet<_>>()
                .len()
                == offered.len();
        let held: Vec<PendingAck> = stored
            .states
            .iter()
            .map(|s| {
                let paged = at_offered(&s);
                PendingAck {
                    id: s.id,
                    head: s.head,
                    page: paged.then_some(next),
                    token: (paged && whole).then_some(token),
                }
            })
            .collect();
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
    let survivors = deliver_acks(sat, client, &mut summary).await?;
    follow_survivors(sat, client, survivors, &mut summary).await?;
    Ok(summary)
}

/// Fetches one record by id from central (a visiting patient) and
/// acknowledges it: from then on it is held and synced. A record merged
/// into another at central brings the record that replaced it.
pub async fn fetch_one(sat: &Arc<Satellite>, id: PatientId) -> Result<CommitId, JobError> {
    let client = Arc::new(CentralClient::new(&sat.config)?);
    let (head, mut survivors) = fetch_by_id(sat, &client, id).await?;
    let mut summary = Summary::default();
    survivors.extend(deliver_acks(sat, &client, &mut summary).await?);
    follow_survivors(sat, &client, survivors, &mut summary).await?;
    Ok(head)
}

/// Fetches by id the survivors that tombstones stored here name, those
/// this clinic does not hold yet (a record merged into another at central:
/// the clinic that held the retired record goes on with the survivor),
/// following a chain of merges up to [`MAX_HOPS`], and acknowledges them.
/// A survivor central will not send is logged and left; losing the link
/// stops the job.
pub(crate) async fn follow_survivors(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    mut survivors: Vec<PatientId>,
    summary: &mut Summary,
) -> Result<(), JobError> {
    let mut seen = std::collections::HashSet::new();
    let mut fetched = false;
    for _ in 0..MAX_HOPS {
        if survivors.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for id in survivors {
            if !seen.insert(id) || sat.store.exists(&id) {
                continue;
            }
            match fetch_by_id(sat, client, id).await {
                Ok((_, named)) => {
                    summary.records_received += 1;
                    fetched = true;
                    next.extend(named);
                }
                Err(JobError::Sync(e)) if !e.is_transient() => {
                    tracing::warn!(patient = %id, error = %crate::error_chain(&e), "central would not send the record that replaced a retired one");
                }
                Err(e) => return Err(e),
            }
        }
        if fetched {
            next.extend(deliver_acks(sat, client, summary).await?);
            fetched = false;
        }
        survivors = next;
    }
    Ok(())
}

/// Fetches one record by id and stores it, its acknowledgement pending;
/// returns its head and the survivor its tombstone names, if any.
async fn fetch_by_id(
    sat: &Arc<Satellite>,
    client: &Arc<CentralClient>,
    id: PatientId,
) -> Result<(CommitId, Vec<PatientId>), JobError> {
    let reply: FetchOneResponse = client
        .call("/v1/sync/fetch", &FetchOneRequest { id })
        .await?;
    let mut stored = store_page(sat, client, vec![reply.record]).await?;
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
    let survivors = std::mem::take(&mut stored.survivors);
    let s = Arc::clone(sat);
    let ack = vec![PendingAck::by_head((id, head))];
    super::spawn_db(move || {
        s.db.commit_sync(&stored.states, &[], &ack, crate::db::NO_ASIDE)
    })
    .await?;
    Ok((head, survivors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More pages known by their tokens than a request acknowledges: the
    /// first [`MAX_ACK_PAGES`] go by token and are cleared whole; a record
    /// of a page beyond them goes by head and only it is cleared, the rest
    /// of its page staying pending under its token.
    #[test]
    fn pages_beyond_what_a_request_acknowledges_are_not_cleared_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let db = crate::db::Db::open(&dir.path().join("s.sqlite")).expect("db");
        let pages = MAX_ACK_PAGES as u64 + 2;
        // The records of the last two pages sort first by id, so that a
        // read with room for two more than a record a page takes them.
        let id = |t: u64| {
            let mut bytes = *PatientId::random().as_bytes();
            bytes[0] = if t > MAX_ACK_PAGES as u64 { 0 } else { 0x80 };
            PatientId::from_bytes(bytes).expect("a version 4 id")
        };
        let all: Vec<PendingAck> = (1..=pages)
            .flat_map(|t| [t, t])
            .map(|t| PendingAck {
                id: id(t),
                head: CommitId([t as u8; 20]),
                page: Some(100 + t),
                token: Some(t),
            })
            .collect();
        db.commit_sync(&[], &[], &all, crate::db::NO_ASIDE)
            .expect("sync");
        // Room for one record a page: the read holds the first 16 pages.
        let read = db.pending_acks(MAX_ACK_PAGES + 2).expect("pending");
        let firsts: std::collections::BTreeSet<u64> = read[..MAX_ACK_PAGES]
            .iter()
            .filter_map(|a| a.token)
            .collect();
        assert_eq!(firsts.len(), MAX_ACK_PAGES, "{read:?}");
        let (by_head, by_page, delivered) = acks(&read);
        assert_eq!(by_page.len(), MAX_ACK_PAGES);
        assert_eq!(by_head.len(), 2, "{by_head:?}");
        assert_eq!(delivered.len(), read.len());
        for a in &by_head {
            let sent = delivered.iter().find(|d| d.id == a.id).expect("delivered");
            assert_eq!(sent.token, None, "sent by head, not by its page");
        }
        // Central took the 16 pages whole (by token) and two records by
        // head.
        db.clear_acks(&delivered, &[], true).expect("clear");
        let left = db.pending_acks(100).expect("pending");
        let want: Vec<PatientId> = all
            .iter()
            .filter(|a| {
                !firsts.contains(&a.token.unwrap_or(0)) && !by_head.iter().any(|h| h.id == a.id)
            })
            .map(|a| a.id)
            .collect();
        let mut got: Vec<PatientId> = left.iter().map(|a| a.id).collect();
        let mut want = want;
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|a| a.token.is_some()), "{left:?}");
    }
}
