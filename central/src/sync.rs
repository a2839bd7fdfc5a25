//! The sync endpoints (see `docs/protocol.md`): push, pull, fetch-new,
//! ack and fetch-one. Bodies are binary envelopes
//! ([`chartsync_protocol::envelope`]); only instances may call them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chartsync_http::{ApiError, RecordService, read_body};
use chartsync_protocol::envelope;
use chartsync_protocol::link::{self, LINK_HEADER, LinkEstimate, WORK_HEADER};
use chartsync_protocol::sync::{
    AckRequest, AckResponse, CONTENT_TYPE, FetchNewRequest, FetchNewResponse, FetchOneRequest,
    FetchOneResponse, MAX_ACK_PAGES, MAX_BATCH, MAX_REQUEST_BYTES, MIN_PROTOCOL_VERSION,
    PAGE_BYTES, PROTOCOL_HEADER, PROTOCOL_VERSION, PageAck, PullRequest, PullResponse, PushOutcome,
    PushRequest, PushResponse, PushResult, RecordUpdate,
};
use chartsync_protocol::{CommitId, PatientId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{Outcome, Write, WriteKind, apply_writes};
use crate::auth::Caller;
use crate::db::{CentralDb, Instance, RecordRow, Seq};
use crate::records::CentralApi;

/// Seconds a satellite is told to wait when every sync slot is taken.
const SYNC_RETRY_AFTER_SECS: u64 = 2;

/// The sync routes.
pub fn sync_routes<D: CentralDb>() -> Router<CentralApi<D>> {
    Router::new()
        .route("/v1/sync/push", post(push::<D>))
        .route("/v1/sync/pull", post(pull::<D>))
        .route("/v1/sync/fetch-new", post(fetch_new::<D>))
        .route("/v1/sync/ack", post(ack::<D>))
        .route("/v1/sync/fetch", post(fetch_one::<D>))
}

/// The protocol version a request speaks (from its `Chartsync-Protocol`
/// header, `2` to `6`, optionally with a minor part); the reply speaks it
/// too, so satellites of protocols 2, 3 and 4 keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version(u8);

impl Version {
    /// Whether packs may be thin (deltas on what the receiver holds).
    fn thin(self) -> bool {
        self.0 >= 3
    }

    /// Whether fetch-new pages are given tokens to be acknowledged by.
    fn page_tokens(self) -> bool {
        self.0 >= 6
    }
}

/// What a request says about how to answer it.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    version: Version,
    /// The satellite's link, from its `Chartsync-Link` header.
    link: Option<LinkEstimate>,
    /// When the body had arrived (the reply says how long central worked
    /// since).
    since: Instant,
}

impl Ctx {
    /// The byte budget of a pull or fetch-new page.
    fn page_bytes(&self) -> usize {
        link::batch_bytes_for(self.link.as_ref(), PAGE_BYTES)
    }
}

/// Authenticates an instance, takes one of the sync slots (503 with
/// `Retry-After` when all are taken: a bounded number of batches is held in
/// memory at once) and decodes its batch. The slot is held until the reply
/// is built.
async fn request<D: CentralDb, T: DeserializeOwned>(
    api: &CentralApi<D>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Instance, T, OwnedSemaphorePermit, Ctx), ApiError> {
    let instance = match api.caller(headers).await? {
        Caller::Instance(i) => i,
        Caller::Admin => {
            return Err(ApiError::forbidden(
                "the sync endpoints are for satellites; HQ clients use the record API",
            ));
        }
    };
    crate::reports::note(&api.0, &instance, headers);
    let said = headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    let version = match said
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u8>().ok())
    {
        Some(v) if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v) => Version(v),
        _ => {
            return Err(ApiError::bad_request(
                "protocol_version",
                format!(
                    "this central speaks sync protocols {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; the request says {:?} (upgrade the satellite or central)",
                    said.unwrap_or("nothing")
                ),
            ));
        }
    };
    let link = match headers.get(LINK_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| LinkEstimate::parse(v).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("bad_header", link::LinkHeaderError.to_string())
                })?,
        ),
    };
    api.0
        .sync_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slot = Arc::clone(&api.0.sync_slots)
        .try_acquire_owned()
        .map_err(|_| {
            api.0.metrics.sync_busy.inc();
            ApiError::busy(
                "central is handling as many sync batches as it may at once; try again shortly",
                SYNC_RETRY_AFTER_SECS,
            )
        })?;
    let bytes = read_body(headers, body, api.0.config.max_body_bytes).await?;
    let since = Instant::now();
    let (message, marked) = envelope::decode_versioned(&bytes, MAX_REQUEST_BYTES)
        .map_err(|e| ApiError::bad_request("bad_batch", e.to_string()))?;
    if marked != version.0 {
        return Err(ApiError::bad_request(
            "protocol_version",
            format!(
                "the batch is marked protocol {marked} but the request header says {}",
                version.0
            ),
        ));
    }
    let ctx = Ctx {
        version,
        link,
        since,
    };
    Ok((instance, message, slot, ctx))
}

/// The reply, compressed at the level that fits the satellite's link,
/// saying how long central worked on it. On a slow link it is compressed
/// (hard) while it is sent, block by block, so compressing and the link
/// overlap.
fn reply<T: Serialize>(message: &T, ctx: Ctx) -> Result<Response, ApiError> {
    let level = link::streamed_level_for(ctx.link.as_ref());
    let mut response = if level > link::DEFAULT_LEVEL {
        let (marker, raw) =
            envelope::prepare(message, ctx.version.0).map_err(|e| ApiError::internal(&e))?;
        (StatusCode::OK, streamed(marker, raw, level)).into_response()
    } else {
        let bytes = envelope::encode_at(message, ctx.version.0, level)
            .map_err(|e| ApiError::internal(&e))?;
        (StatusCode::OK, bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    h.insert(PROTOCOL_HEADER, HeaderValue::from(u16::from(ctx.version.0)));
    let work = u64::try_from(ctx.since.elapsed().as_millis()).unwrap_or(u64::MAX);
    h.insert(WORK_HEADER, HeaderValue::from(work));
    Ok(response)
}

/// Hands what a blocking compressor writes to the response body.
struct Chunks(tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>);

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(axum::body::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body of the marker and `raw` compressed at `level` on a blocking
/// thread as it is sent. A failure cuts the body short, which the
/// satellite refuses (the frame declares its size) and asks again.
fn streamed(marker: Vec<u8>, raw: Vec<u8>, level: i32) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks(tx);
        let sent = std::io::Write::write_all(&mut out, &marker)
            .and_then(|()| envelope::compress_to(&raw, level, &mut out));
        if let Err(e) = sent {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "could not compress a reply");
            }
            let _ = out.0.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn check_batch(ids: impl Iterator<Item = PatientId>) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for id in ids {
        if seen.len() >= MAX_BATCH {
            return Err(ApiError::bad_request(
                "batch_too_large",
                format!("a batch holds at most {MAX_BATCH} records"),
            ));
        }
        if !seen.insert(id) {
            return Err(ApiError::bad_request(
                "duplicate_record",
                format!("patient record {id} appears twice in the batch"),
            ));
        }
    }
    Ok(())
}

async fn push<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (instance, request, _slot, ctx): (Instance, PushRequest, _, _) =
        request(&api, &headers, body).await?;
    check_batch(request.records.iter().map(|r| r.id))?;
    let c = &api.0;
    c.metrics.push_batches.inc();
    c.metrics.push_records.add(request.records.len() as u64);
    let ids: Vec<PatientId> = request.records.iter().map(|r| r.id).collect();
    let request_expected: Vec<Option<CommitId>> =
        request.records.iter().map(|r| r.expected).collect();
    let writes = request
        .records
        .into_iter()
        .map(|r| Write {
            id: r.id,
            kind: WriteKind::Push {
                expected: r.expected,
                head: r.head,
                pack: r.pack,
            },
        })
        .collect();
    let expected: Vec<Option<CommitId>> = request_expected;
    let outcomes = apply_writes(c, &Caller::Instance(instance.clone()), writes)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    // Edits pushed to records that were retired into another: carried
    // onto the survivor before answering (see `redirect.rs`). Both cases
    // need the new head retired, which verifying the pushed pack read
    // (`retired`); a tree read tells where it did not.
    let moved: Vec<(PatientId, CommitId, CommitId, Option<bool>)> = ids
        .iter()
        .zip(&expected)
        .zip(&outcomes)
        .filter_map(|((id, old), outcome)| match (old, outcome) {
            (
                Some(old),
                Outcome::Applied {
                    head,
                    retired: retired @ (Some(true) | None),
                    ..
                },
            ) if old != head => Some((*id, *old, *head, *retired)),
            _ => None,
        })
        .collect();
    if !moved.is_empty() {
        let store_c = Arc::clone(c);
        let retired = chartsync_http::blocking(move || {
            let retired_at =
                |id: &PatientId, at: CommitId| store_c.store.is_retired_at(id, at).unwrap_or(false);
            // Both cases need the new head retired (a push from a retired
            // head to an active one is a restore): the old head is read
            // only then.
            Ok(moved
                .into_iter()
                .filter(|(id, _, new, retired)| retired.unwrap_or_else(|| retired_at(id, *new)))
                .map(|(id, old, new, _)| (id, old, new, retired_at(&id, old), true))
                .collect::<Vec<_>>())
        })
        .await
        .unwrap_or_default();
        // First tombstones this push brought (a merge made at the clinic
        // that a merge accepted earlier contradicts is undone), then the
        // edits to records that were retired already.
        for (id, _, new, was, is) in &retired {
            if !*was && *is {
                crate::redirect::after_retire(c, *id, *new).await;
            }
        }
        for (id, old, new, was, _) in retired {
            if was {
                crate::redirect::after_push(c, &instance, id, old, new).await;
            }
        }
    }
    let results = ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| PushResult {
            // Left out on the wire from protocol 5 on (request order).
            id: Some(id),
            outcome: match outcome {
                Outcome::Applied { seq, time, .. } => PushOutcome::Applied { seq, time },
                Outcome::Conflict { head, seq, pack } => {
                    c.metrics.conflicts.inc();
                    PushOutcome::Conflict { head, seq, pack }
                }
                Outcome::Failed(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                    PushOutcome::Busy
                }
                // A fault of central's own (disk full, I/O): the record is
                // not to blame and must be pushed again later.
                Outcome::Failed(e) if e.status.is_server_error() => {
                    c.metrics.store_failures.inc();
                    PushOutcome::Failed {
                        code: e.code.clone(),
                        message: e.message.clone(),
                    }
                }
                Outcome::Failed(e) => PushOutcome::Refused {
                    code: e.code.clone(),
                    message: e.message.clone(),
                },
                Outcome::Busy => PushOutcome::Busy,
            },
        })
        .collect();
    reply(&PushResponse { results }, ctx)
}

/// Packs for a page of records, in order, until their packs pass
/// `budget` bytes (a page holds at least one record, so every page makes
/// progress). Returns the updates and, when the page was cut short, the
/// sequence number of the last record in it: the page's cursor.
async fn updates_within<D: CentralDb>(
    api: &CentralApi<D>,
    rows: Vec<(RecordRow, Option<CommitId>)>,
    budget: usize,
    version: Version,
) -> Result<(Vec<RecordUpdate>, Option<Seq>), ApiError> {
    const CHUNK: usize = 64;
    let mut out: Vec<RecordUpdate> = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    let mut rest = rows.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<_> = rest.by_ref().take(CHUNK).collect();
        for update in updates(api, chunk, version).await? {
            if !out.is_empty() && bytes + update.pack.len() > budget {
                let last = out.last().map(|u| u.seq);
                return Ok((out, last));
            }
            bytes += update.pack.len();
            out.push(update);
        }
    }
    Ok((out, None))
}

/// Where the database keeps every record's history (PostgreSQL): the
/// records sent whole (no base) that have no current copy in `data_dir`
/// and whose history is one change, with that change's pack, which holds
/// the whole record. They are sent from the database as they are, so a
/// clinic fetching thousands of records neither waits for a copy of each
/// to be built nor pushes the records in use out of the bounded copies
/// (see `copies.rs`). Any trouble here leaves them to the copies.
async fn whole_from_database<D: CentralDb>(
    api: &CentralApi<D>,
    rows: &[(RecordRow, Option<CommitId>)],
) -> HashMap<PatientId, Vec<u8>> {
    let c = &api.0;
    let mut out = HashMap::new();
    if !c.db.keeps_history() {
        return out;
    }
    let wanted: Vec<(PatientId, CommitId)> = rows
        .iter()
        .filter(|(_, base)| base.is_none())
        .map(|(row, _)| (row.id, row.head))
        .collect();
    if wanted.is_empty() {
        return out;
    }
    let store_c = Arc::clone(c);
    let cold: Vec<(PatientId, CommitId)> = match tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .filter(|(id, head)| store_c.store.head(id).ok().flatten() != Some(*head))
            .collect()
    })
    .await
    {
        Ok(cold) => cold,
        Err(_) => return out,
    };
    if cold.is_empty() {
        return out;
    }
    let ids: Vec<PatientId> = cold.iter().map(|(id, _)| *id).collect();
    match c.db.whole_packs(&ids).await {
        Ok(packs) => {
            for ((id, head), found) in cold.into_iter().zip(packs) {
                if let Some((at, pack)) = found
                    && at == head
                {
                    out.insert(id, pack);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read whole records from the database; building copies instead");
        }
    }
    out
}

/// Packs for a page of records: from `base(row)` (which the receiver has)
/// to the head, thin (deltas on the base's files) for protocol 3. Built on
/// blocking threads, spread over the cores.
async fn updates<D: CentralDb>(
    api: &CentralApi<D>,
    rows: Vec<(RecordRow, Option<CommitId>)>,
    version: Version,
) -> Result<Vec<RecordUpdate>, ApiError> {
    let timer = Instant::now();
    let mut direct = whole_from_database(api, &rows).await;
    let current: Vec<_> = rows
        .iter()
        .filter(|(row, _)| !direct.contains_key(&row.id))
        .map(|(row, _)| (row.id, row.head))
        .collect();
    crate::Central::catch_up(&api.0, &current, false).await;
    let caught_up = timer.elapsed();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let per = rows.len().div_ceil(threads).max(64);
    type Part = Vec<(RecordRow, Option<CommitId>, Option<Vec<u8>>)>;
    let mut parts: Vec<Part> = Vec::new();
    let mut rest = rows
        .into_iter()
        .map(|(row, base)| {
            let whole = direct.remove(&row.id);
            (row, base, whole)
        })
        .peekable();
    while rest.peek().is_some() {
        parts.push(rest.by_ref().take(per).collect());
    }
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let c = Arc::clone(&api.0);
            tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|(row, base, whole)| {
                        let pack = if let Some(pack) = whole {
                            pack
                        } else if version.thin() {
                            c.store
                                .pack_since_thin(&row.id, row.head, base.as_slice())?
                        } else {
                            c.store.pack_since(&row.id, row.head, base.as_slice())?
                        };
                        Ok(RecordUpdate {
                            id: row.id,
                            head: row.head,
                            seq: row.seq,
                            time: row.updated_at,
                            base,
                            pack,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await.map_err(|e| ApiError::internal(&e))??);
    }
    tracing::trace!(
        records = out.len(),
        catch_up_us = caught_up.as_micros() as u64,
        pack_us = (timer.elapsed() - caught_up).as_micros() as u64,
        "packs for records"
    );
    Ok(out)
}

fn limit(asked: u32) -> usize {
    match asked as usize {
        0 => MAX_BATCH,
        n => n.min(MAX_BATCH),
    }
}

/// A record the receiver holds at its head: the head alone, no pack.
fn head_only(row: &RecordRow) -> RecordUpdate {
    RecordUpdate {
        id: row.id,
        head: row.head,
        seq: row.seq,
        time: row.updated_at,
        base: Some(row.head),
        pack: Vec::new(),
    }
}

async fn pull<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (instance, request, _slot, ctx): (Instance, PullRequest, _, _) =
        request(&api, &headers, body).await?;
    let c = &api.0;
    let limit = limit(request.limit);
    let rows =
        c.db.scope_changes(&instance, request.cursor, limit)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    let more = rows.len() == limit;
    let cursor = rows.last().map_or(request.cursor, |r| r.seq);
    let mut page = Vec::new();
    let mut own = Vec::new();
    let held: Vec<_> = rows
        .into_iter()
        .filter(|r| r.holders.contains(instance.id))
        .collect();
    // The heads as of the cursor, in one look where the backend can.
    let ids: Vec<_> = held.iter().map(|r| r.id).collect();
    let mut bases =
        c.db.heads_at(&ids, request.cursor)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .into_iter();
    let mut later = Vec::new();
    for row in held {
        let at_cursor = bases.next().flatten();
        if row.updated_by == Some(instance.id) {
            // Its own push: it has the commits already.
            own.push(head_only(&row));
            continue;
        }
        // The receiver has the head as of its cursor. A record created
        // after the cursor reached it whole through fetch-new, so it has
        // at least the record's first head, which every head descends from.
        // (If it lacks that commit after all, say after a restore from an
        // old backup, it fetches the record whole.)
        if at_cursor.is_none() {
            later.push(page.len());
        }
        page.push((row, at_cursor));
    }
    // The first heads of records created after the cursor, in one look
    // where the backend can.
    if !later.is_empty() {
        let ids: Vec<_> = later.iter().map(|&i| page[i].0.id).collect();
        let firsts =
            c.db.first_heads(&ids)
                .await
                .map_err(|e| ApiError::internal(&e))?;
        for (i, first) in later.into_iter().zip(firsts) {
            page[i].1 = first;
        }
    }
    // A record whose head is the one the receiver has (created after the
    // cursor and not changed since, which reached it through fetch-new)
    // has nothing to send: said like its own pushes, without building a
    // copy of it to make an empty pack. A clinic's first pull after a
    // first fetch-new goes through all of them.
    let (have, page): (Vec<_>, Vec<_>) = page
        .into_iter()
        .partition(|(row, base)| *base == Some(row.head));
    own.extend(have.iter().map(|(row, _)| head_only(row)));
    let (mut updates, cut) = updates_within(&api, page, ctx.page_bytes(), ctx.version).await?;
    let (cursor, more) = match cut {
        Some(last) => (last, true),
        None => (cursor, more),
    };
    updates.extend(own.into_iter().filter(|u| u.seq <= cursor));
    updates.sort_by_key(|u| u.seq);
    c.metrics.pull_batches.inc();
    c.metrics.pull_records.add(updates.len() as u64);
    reply(
        &PullResponse {
            updates,
            cursor,
            more,
        },
        ctx,
    )
}

/// What a request acknowledged, resolved.
struct Acknowledged {
    /// The (record, head) pairs.
    pairs: Vec<(PatientId, CommitId)>,
    /// Every record named, also those left out of `pairs` (not offered
    /// again in this request's page).
    named: HashSet<PatientId>,
    /// Tokens of the pages acknowledged by token (dropped once the
    /// acknowledgements are taken).
    taken: Vec<u64>,
    /// Tokens central does not know (protocol 6): the satellite
    /// acknowledges those pages by their ids instead.
    forgotten: Vec<u64>,
}

/// The (record, head) pairs acknowledged by head and by page (protocol
/// 5: a page's records at their heads as of the page's cursor, which is
/// what the page sent; protocol 6: a page by its token alone, its records
/// those central recorded it offered). Checks everything before anything
/// changes: at most [`MAX_BATCH`] records by head and by ids, each once,
/// at most [`MAX_ACK_PAGES`] pages, no page cursor beyond the last
/// sequence number given out, a token's cursor the page's. A record that
/// did not exist at its page's cursor is left out, as an unknown id is.
async fn acknowledged<D: CentralDb>(
    api: &CentralApi<D>,
    instance: &Instance,
    acks: &[chartsync_protocol::sync::Ack],
    pages: &[PageAck],
) -> Result<Acknowledged, ApiError> {
    if pages.len() > MAX_ACK_PAGES {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "a request acknowledges at most {MAX_ACK_PAGES} pages by cursor; it has {}",
                pages.len()
            ),
        ));
    }
    check_batch(
        acks.iter()
            .map(|a| a.id)
            .chain(pages.iter().flat_map(|p| p.ids.iter().copied())),
    )?;
    let mut out = Acknowledged {
        pairs: acks.iter().map(|a| (a.id, a.head)).collect(),
        named: acks
            .iter()
            .map(|a| a.id)
            .chain(pages.iter().flat_map(|p| p.ids.iter().copied()))
            .collect(),
        taken: Vec::new(),
        forgotten: Vec::new(),
    };
    if pages.is_empty() {
        return Ok(out);
    }
    let c = &api.0;
    let last = c.db.last_seq().await.map_err(|e| ApiError::internal(&e))?;
    if let Some(bad) = pages.iter().find(|p| p.cursor > last) {
        return Err(ApiError::bad_request(
            "bad_batch",
            format!(
                "a page acknowledged at sequence number {}, after the last one central gave out ({last}): no page had that cursor",
                bad.cursor
            ),
        ));
    }
    let tokens: Vec<u64> = pages
        .iter()
        .filter(|p| p.page != 0)
        .map(|p| p.page)
        .collect();
    let mut offered = if tokens.is_empty() {
        Vec::new()
    } else {
        c.db.offered_pages(instance.id, &tokens)
            .await
            .map_err(|e| ApiError::internal(&e))?
    }
    .into_iter();
    let mut resolved: Vec<(u64, Vec<PatientId>)> = Vec::new();
    for page in pages {
        if page.page == 0 {
            resolved.push((page.cursor, page.ids.clone()));
            continue;
        }
        match offered.next().flatten() {
            None => out.forgotten.push(page.page),
            Some((cursor, _)) if cursor != page.cursor => {
                return Err(ApiError::bad_request(
                    "bad_batch",
                    format!(
                        "a page acknowledged by token at sequence number {}: that page's cursor was {cursor}",
                        page.cursor
                    ),
                ));
            }
            Some((cursor, ids)) => {
                out.taken.push(page.page);
                // A record also acknowledged otherwise counts once.
                let ids: Vec<PatientId> =
                    ids.into_iter().filter(|id| out.named.insert(*id)).collect();
                resolved.push((cursor, ids));
            }
        }
    }
    for (cursor, ids) in resolved.iter().filter(|(_, ids)| !ids.is_empty()) {
        let heads =
            c.db.heads_at(ids, *cursor)
                .await
                .map_err(|e| ApiError::internal(&e))?;
        out.pairs.extend(
            ids.iter()
                .zip(heads)
                .filter_map(|(id, head)| Some((*id, head?))),
        );
    }
    Ok(out)
}

/// Forgets the pages acknowledged by token once their acknowledgements
/// are taken (a failure leaves them to the weekly sweep: a page
/// acknowledged again is acknowledged twice, which changes nothing).
async fn drop_taken<D: CentralDb>(api: &CentralApi<D>, instance: &Instance, taken: &[u64]) {
    if taken.is_empty() {
        return;
    }
    if let Err(e) = api.0.db.drop_pages(instance.id, taken).await {
        tracing::warn!(error = %e, instance = instance.id, "could not drop acknowledged fetch-new pages");
    }
}

/// Takes acknowledgements: the instance now holds these records. Returns
/// the acknowledged records whose head moved since the acknowledged head.
async fn take_acks<D: CentralDb>(
    api: &CentralApi<D>,
    instance: &Instance,
    acks: &[(PatientId, CommitId)],
    version: Version,
) -> Result<Vec<RecordUpdate>, ApiError> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let c = &api.0;
    let ids: Vec<PatientId> = acks.iter().map(|a| a.0).collect();
    let timer = Instant::now();
    let rows =
        c.db.records(&ids)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    let read_at = timer.elapsed();
    let caller = Caller::Instance(instance.clone());
    let mut accepted = Vec::new();
    let mut moved = Vec::new();
    for (&(id, head), row) in acks.iter().zip(rows) {
        let Some(row) = row else { continue };
        if !c
            .in_scope(&caller, &row)
            .await
            .map_err(|e| ApiError::internal(&e))?
        {
            continue;
        }
        accepted.push(id);
        if row.head != head {
            moved.push((row, Some(head)));
        }
    }
    let scoped_at = timer.elapsed();
    c.db.add_holder(instance.id, &accepted)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::debug!(
        acks = acks.len(),
        read_ms = read_at.as_millis() as u64,
        scope_ms = (scoped_at - read_at).as_millis() as u64,
        holders_ms = (timer.elapsed() - scoped_at).as_millis() as u64,
        "acknowledgements taken"
    );
    updates(api, moved, version).await
}

async fn fetch_new<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (instance, request, _slot, ctx): (Instance, FetchNewRequest, _, _) =
        request(&api, &headers, body).await?;
    let c = &api.0;
    let timer = Instant::now();
    let acks = acknowledged(&api, &instance, &request.acks, &request.pages).await?;
    let moved = take_acks(&api, &instance, &acks.pairs, ctx.version).await?;
    drop_taken(&api, &instance, &acks.taken).await;
    let acked_at = timer.elapsed();
    // Records acknowledged (even those left out above) are not offered again.
    let acked = &acks.named;
    // A cursor from another scope epoch restarts from the beginning.
    let from: Seq = if request.epoch == instance.scope_epoch {
        request.cursor
    } else {
        0
    };
    let limit = limit(request.limit);
    let rows =
        c.db.scope_changes(&instance, from, limit)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    let listed_at = timer.elapsed();
    let more = rows.len() == limit;
    let cursor = rows.last().map_or(from, |r| r.seq);
    let page: Vec<(RecordRow, Option<CommitId>)> = rows
        .into_iter()
        .filter(|r| !r.holders.contains(instance.id) && !acked.contains(&r.id))
        .map(|r| (r, None))
        .collect();
    let (records, cut) = updates_within(&api, page, ctx.page_bytes(), ctx.version).await?;
    tracing::debug!(
        acks = acked.len(),
        records = records.len(),
        acks_ms = acked_at.as_millis() as u64,
        list_ms = (listed_at - acked_at).as_millis() as u64,
        packs_ms = (timer.elapsed() - listed_at).as_millis() as u64,
        "fetch-new page"
    );
    let (cursor, more) = match cut {
        Some(last) => (last, true),
        None => (cursor, more),
    };
    // Protocol 6: the page's ids are kept under a token, by which the
    // satellite acknowledges the page once it stored all of it.
    let page = if ctx.version.page_tokens() && !records.is_empty() {
        let token = crate::db::pages::new_token();
        let ids: Vec<PatientId> = records.iter().map(|r| r.id).collect();
        c.db.record_page(
            instance.id,
            token,
            cursor,
            &ids,
            chrono::Utc::now().timestamp(),
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
        token
    } else {
        0
    };
    c.metrics.fetch_batches.inc();
    c.metrics.fetch_records.add(records.len() as u64);
    reply(
        &FetchNewResponse {
            records,
            cursor,
            epoch: instance.scope_epoch,
            more,
            moved,
            page,
            forgotten: acks.forgotten,
        },
        ctx,
    )
}

async fn ack<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (instance, request, _slot, ctx): (Instance, AckRequest, _, _) =
        request(&api, &headers, body).await?;
    let acks = acknowledged(&api, &instance, &request.acks, &request.pages).await?;
    let moved = take_acks(&api, &instance, &acks.pairs, ctx.version).await?;
    drop_taken(&api, &instance, &acks.taken).await;
    reply(
        &AckResponse {
            moved,
            forgotten: acks.forgotten,
        },
        ctx,
    )
}

async fn fetch_one<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (instance, request, _slot, ctx): (Instance, FetchOneRequest, _, _) =
        request(&api, &headers, body).await?;
    let c = &api.0;
    let row =
        c.db.records(&[request.id])
            .await
            .map_err(|e| ApiError::internal(&e))?
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| crate::records::no_such_record(request.id))?;
    // Fetching by id is what brings a visiting patient into scope (ids are
    // random UUIDs: knowing one is knowing the patient); it is recorded
    // (the grant) for audit. So no record is out of scope here: an
    // unknown id gets the same 404 as everywhere else.
    c.db.grant(instance.id, &row.id, "fetched")
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(patient = %row.id, instance = instance.id, "record fetched by id");
    let mut records = updates(&api, vec![(row, None)], ctx.version).await?;
    c.metrics.fetch_records.inc();
    let record = records
        .pop()
        .ok_or_else(|| ApiError::not_found("the record vanished"))?;
    reply(&FetchOneResponse { record }, ctx)
}
