//! Duplicate patients at central: an indexer that follows the change
//! sequence (every accepted change of a record re-reads its `patient.yaml`
//! at the accepted head, replaces its blocking keys and compares it with
//! the records sharing a key), and the routes that list and dismiss pairs.
//!
//! Indexing runs beside serving, never in a write's path: a push is
//! acknowledged as fast as before and considered within seconds. It writes
//! one transaction per batch of records, with the cursor, so a crash
//! repeats at most one batch; and it waits for a pause in sync traffic (no
//! sync request for a moment), so it takes no time from a clinic's run. A record that cannot be read
//! is indexed as having no identifying fields and logged, so it never
//! stops the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use chartsync_dedup::{
    MAX_BLOCK, Person, PersonView, blocking_keys, compare_views_at_least, key_plan, stored_keys,
};
use chartsync_http::{ApiError, Authenticated, read_body};
use chartsync_protocol::{CommitId, PatientId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Central;
use crate::auth::Caller;
use crate::db::{
    CentralDb, DbError, DuplicateEntry, DuplicatePair, DuplicateUpdate, Seq, StoredCandidates,
};
use crate::records::CentralApi;

/// Pairs scoring below this are not kept (nor listed, whatever
/// `min_score` a request asks for).
pub const KEEP_SCORE: f64 = 0.5;

/// Pause when there is nothing to index.
const IDLE: Duration = Duration::from_secs(1);

/// A pause in sync traffic: no sync request for this long. Indexing waits
/// for one, at most [`MAX_DEFER`] (so a central that is never quiet still
/// gets there).
const QUIET: Duration = Duration::from_secs(1);
const MAX_DEFER: Duration = Duration::from_secs(10);

/// Records indexed between two looks at sync traffic; [`BUSY_STEP`] when
/// the pause did not come within [`MAX_DEFER`] (a central that is never
/// quiet still keeps up with about 25 records a second).
const STEP: usize = 32;
const BUSY_STEP: usize = 256;

/// Largest dismiss body (two ids and a little white space).
const MAX_DISMISS_BODY: usize = 4096;

/// Most pairs a request lists.
const MAX_LIMIT: usize = 1000;

/// Most pairs looked at for an instance's list (the rest are outside its
/// scope).
const MAX_SCAN: usize = 50_000;

/// Indexes changed records until `stop` turns true.
pub async fn run<D: CentralDb>(central: Arc<Central<D>>, mut stop: watch::Receiver<bool>) {
    // Whether sync requests came during the last step.
    let mut traffic = false;
    let mut unreadable = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        // Sync traffic first: when there was some, wait for a pause in it.
        let mut step = STEP;
        if traffic || syncing(&central, central.sync_requests.load(Ordering::Relaxed)) {
            match wait_for_quiet(&central, &mut stop).await {
                None => return,
                Some(false) => step = BUSY_STEP,
                Some(true) => {}
            }
        }
        let seen = central.sync_requests.load(Ordering::Relaxed);
        let done = match index_pending(&central, step, &mut unreadable).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "duplicate indexing failed; trying again");
                0
            }
        };
        traffic = syncing(&central, seen);
        if done == 0 {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Whether sync batches are being handled, or requests came after `seen`.
fn syncing<D: CentralDb>(central: &Central<D>, seen: u64) -> bool {
    central.sync_slots.available_permits() < central.config.max_concurrent_sync.max(1)
        || central.sync_requests.load(Ordering::Relaxed) != seen
}

/// Waits until no sync request has come for [`QUIET`], at most
/// [`MAX_DEFER`]: `Some(true)` after a pause, `Some(false)` when none came,
/// `None` when asked to stop.
async fn wait_for_quiet<D: CentralDb>(
    central: &Central<D>,
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let mut waited = Duration::ZERO;
    while waited < MAX_DEFER {
        let before = central.sync_requests.load(Ordering::Relaxed);
        tokio::select! {
            _ = stop.changed() => return None,
            _ = tokio::time::sleep(QUIET) => waited += QUIET,
        }
        if !syncing(central, before) {
            return Some(true);
        }
    }
    Some(false)
}

/// How many times a record whose accepted head cannot be read yet is tried
/// again (a second apart) before it is indexed as having no identifying
/// fields, so that it never holds up the records after it for long.
const MAX_UNREADABLE: u32 = 10;

/// Indexes up to `limit` records changed after the cursor; returns how
/// many. A record whose accepted head cannot be read yet (the database
/// accepts a head just before the repository publishes it) ends the step
/// before it, and is tried again; `unreadable` counts the tries.
pub async fn index_pending<D: CentralDb>(
    central: &Arc<Central<D>>,
    limit: usize,
    unreadable: &mut HashMap<PatientId, u32>,
) -> Result<usize, DbError> {
    let cursor = central.db.duplicates_cursor().await?;
    let changed = central.db.changed_after(cursor, limit).await?;
    let mut batch: Vec<Pending> = Vec::with_capacity(changed.len());
    for &(seq, id, head) in &changed {
        let person = match person_at(central, id, head).await {
            Found::Unreadable => {
                let tries = unreadable.entry(id).or_insert(0);
                *tries += 1;
                if *tries < MAX_UNREADABLE {
                    break;
                }
                tracing::warn!(patient = %id, %head, "duplicate index: the record stays unreadable; indexed without its fields until its next change");
                None
            }
            Found::Nothing => None,
            Found::Person(p) => Some(p),
        };
        unreadable.remove(&id);
        batch.push(Pending { seq, id, person });
    }
    let done = batch.len();
    if !batch.is_empty() {
        let stored = stored_candidates(&central.db, &batch, MAX_BLOCK).await?;
        let updates = compare_batch(batch, stored).await?;
        central.db.index_duplicates(updates).await?;
    }
    Ok(done)
}

/// A record to index: the change indexed, and what its accepted head
/// says about the patient (`None`: nothing identifying).
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: Seq,
    pub id: PatientId,
    pub person: Option<Person>,
}

/// What a record's accepted head says about the patient.
enum Found {
    /// Its identifying fields.
    Person(Person),
    /// None: no `patient.yaml`, or no field found.
    Nothing,
    /// The head cannot be read (yet): logged.
    Unreadable,
}

/// The identifying fields of the record at `head`.
async fn person_at<D: CentralDb>(
    central: &Arc<Central<D>>,
    id: PatientId,
    head: CommitId,
) -> Found {
    Central::catch_up(central, &[(id, head)], false).await;
    let c = Arc::clone(central);
    let files = tokio::task::spawn_blocking(move || c.store.read_at(&id, head)).await;
    let files = match files {
        Ok(Ok(Some(files))) => files,
        Ok(Ok(None)) => {
            tracing::debug!(patient = %id, %head, "duplicate index: the accepted head is not in the repository yet");
            return Found::Unreadable;
        }
        Ok(Err(e)) => {
            tracing::warn!(patient = %id, error = %e, "duplicate index: cannot read the record");
            return Found::Unreadable;
        }
        Err(e) => {
            tracing::warn!(patient = %id, error = %e, "duplicate index: the read task failed");
            return Found::Unreadable;
        }
    };
    // A retired record is nobody's duplicate any more (a restore is a
    // change, and indexes it again).
    if files.contains_key(chartsync_store::RETIRED_FILE) {
        return Found::Nothing;
    }
    let Some(document) = files
        .get("patient.yaml")
        .and_then(|text| chartsync_merge::parse_yaml(text).ok())
    else {
        return Found::Nothing;
    };
    let person = Person::from_document(&document, &central.config.duplicates.fields());
    if person.is_empty() {
        Found::Nothing
    } else {
        Found::Person(person)
    }
}

/// The indexed records sharing a block with each record of `batch` (none
/// for a record without fields), with their stored fields, in order: the
/// index as it was before the batch. Blocks larger than `max_block` are
/// searched through finer keys (the indexer's is [`MAX_BLOCK`]).
pub async fn stored_candidates<D: CentralDb>(
    db: &D,
    batch: &[Pending],
    max_block: usize,
) -> Result<Vec<StoredCandidates>, DbError> {
    let plans = batch
        .iter()
        .map(|p| p.person.as_ref().map(key_plan).unwrap_or_default())
        .collect();
    db.duplicate_candidates_many(plans, max_block).await
}

/// Compares each record of `batch` with its candidates: `stored[i]` (from
/// [`stored_candidates`]) for record `i`, less the records indexed earlier
/// in the batch (their stored fields are out of date), and those earlier
/// records themselves when they share a key with it (as if the batch were
/// indexed one record after another). On blocking threads, as many as the
/// machine has cores; the updates come back in the batch's order.
pub async fn compare_batch(
    batch: Vec<Pending>,
    stored: Vec<StoredCandidates>,
) -> Result<Vec<DuplicateUpdate>, DbError> {
    if stored.len() != batch.len() {
        return Err(DbError::Damaged("duplicate candidates"));
    }
    tokio::task::spawn_blocking(move || compare_all(&batch, stored))
        .await
        .map_err(|e| DbError::Backend {
            context: "comparing duplicate candidates",
            source: Box::new(e),
        })?
}

/// [`compare_batch`] on this thread and others.
fn compare_all(
    batch: &[Pending],
    stored: Vec<StoredCandidates>,
) -> Result<Vec<DuplicateUpdate>, DbError> {
    // Each record's position in the batch (its first, should one appear
    // twice), and the batch's records by key.
    let mut position: HashMap<PatientId, usize> = HashMap::with_capacity(batch.len());
    let mut keys: Vec<Vec<String>> = Vec::with_capacity(batch.len());
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, pending) in batch.iter().enumerate() {
        position.entry(pending.id).or_insert(i);
        keys.push(
            pending
                .person
                .as_ref()
                .map(blocking_keys)
                .unwrap_or_default(),
        );
    }
    for (i, k) in keys.iter().enumerate() {
        for key in k {
            by_key.entry(key.as_str()).or_default().push(i);
        }
    }
    let one = |i: usize, stored: StoredCandidates| -> Result<DuplicateUpdate, DbError> {
        let pending = &batch[i];
        let Some(person) = &pending.person else {
            return Ok(DuplicateUpdate {
                id: pending.id,
                seq: pending.seq,
                entry: None,
                pairs: Vec::new(),
            });
        };
        // The earlier records of the batch sharing a key, in batch order.
        let mut earlier: Vec<usize> = keys[i]
            .iter()
            .filter_map(|k| by_key.get(k.as_str()))
            .flatten()
            .copied()
            .filter(|&j| j < i)
            .collect();
        earlier.sort_unstable();
        earlier.dedup();
        let mut pairs = Vec::new();
        let mut consider =
            |other: PatientId, other_person: PersonView<'_>| -> Result<(), DbError> {
                if other == pending.id {
                    return Ok(());
                }
                if let Some(pair) = compare_pair(pending.id, person.view(), other, other_person)? {
                    pairs.push(pair);
                }
                Ok(())
            };
        for (other, row) in stored.iter() {
            if position.get(&other).is_some_and(|&j| j < i) {
                continue;
            }
            if let Some(other_person) = PersonView::from_row(row) {
                consider(other, other_person)?;
            }
        }
        for j in earlier {
            if let Some(other_person) = &batch[j].person {
                consider(batch[j].id, other_person.view())?;
            }
        }
        Ok(DuplicateUpdate {
            id: pending.id,
            seq: pending.seq,
            entry: Some(DuplicateEntry {
                person: person.to_row(),
                keys: stored_keys(person),
            }),
            pairs,
        })
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(batch.len().div_ceil(MIN_SHARE))
        .max(1);
    if threads == 1 {
        return stored
            .into_iter()
            .enumerate()
            .map(|(i, s)| one(i, s))
            .collect();
    }
    // Interleaved shares (record i to thread i % threads), so that each
    // gets its part of the large and the small records.
    let mut shares: Vec<Vec<(usize, StoredCandidates)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in stored.into_iter().enumerate() {
        shares[i % threads].push((i, s));
    }
    let one = &one;
    let done: Vec<Result<Vec<(usize, DuplicateUpdate)>, DbError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(i, s)| Ok((i, one(i, s)?)))
                        .collect::<Result<Vec<_>, DbError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut out: Vec<Option<DuplicateUpdate>> = (0..batch.len()).map(|_| None).collect();
    for share in done {
        for (i, update) in share? {
            out[i] = Some(update);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The fewest records worth a comparing thread of their own.
const MIN_SHARE: usize = 8;

/// `id` (fields `person`) compared with `other`: the pair if it scores at
/// least [`KEEP_SCORE`].
fn compare_pair(
    id: PatientId,
    person: PersonView<'_>,
    other: PatientId,
    other_person: PersonView<'_>,
) -> Result<Option<DuplicatePair>, DbError> {
    // The pair is stored with its ids in byte order; its fields' values
    // follow the same order.
    let (a, b, pa, pb) = if other.as_bytes() < id.as_bytes() {
        (other, id, other_person, person)
    } else {
        (id, other, person, other_person)
    };
    let Some(comparison) = compare_views_at_least(pa, pb, KEEP_SCORE) else {
        return Ok(None);
    };
    Ok(Some(DuplicatePair {
        a,
        b,
        score: comparison.score,
        fields: serde_json::to_string(&comparison.fields)
            .map_err(|_| DbError::Damaged("duplicate_pairs.fields"))?,
    }))
}

/// `GET /v1/duplicates` and `POST /v1/duplicates/dismiss`.
pub fn routes<D: CentralDb>() -> Router<CentralApi<D>> {
    Router::new()
        .route("/v1/duplicates", get(list::<D>))
        .route("/v1/duplicates/dismiss", post(dismiss::<D>))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    min_score: Option<f64>,
    limit: Option<usize>,
}

/// Whether the caller may read both records of the pair.
async fn may_read_both<D: CentralDb>(
    central: &Central<D>,
    caller: &Caller,
    a: PatientId,
    b: PatientId,
) -> Result<bool, ApiError> {
    if let Caller::Admin = caller {
        return Ok(true);
    }
    let rows = central
        .db
        .records(&[a, b])
        .await
        .map_err(|e| ApiError::internal(&e))?;
    for row in rows {
        let Some(row) = row else { return Ok(false) };
        if !central
            .in_scope(caller, &row)
            .await
            .map_err(|e| ApiError::internal(&e))?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn pair_json(pair: &DuplicatePair) -> Value {
    let fields: Value = serde_json::from_str(&pair.fields).unwrap_or(Value::Array(Vec::new()));
    json!({
        "a": pair.a.to_string(),
        "b": pair.b.to_string(),
        "score": pair.score,
        "fields": fields,
    })
}

async fn list<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    Authenticated(caller): Authenticated<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let c = &api.0;
    let min_score = query.min_score.unwrap_or(c.config.duplicates.min_score);
    if !(0.0..=1.0).contains(&min_score) {
        return Err(ApiError::bad_request(
            "bad_query",
            "min_score must be between 0 and 1",
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let mut out = Vec::new();
    let mut offset = 0;
    let page = if matches!(caller, Caller::Admin) {
        limit
    } else {
        500
    };
    while out.len() < limit && offset < MAX_SCAN {
        let pairs =
            c.db.duplicate_pairs(min_score.max(KEEP_SCORE), offset, page)
                .await
                .map_err(|e| ApiError::internal(&e))?;
        offset += pairs.len();
        let last = pairs.len() < page;
        for pair in pairs {
            if out.len() < limit && may_read_both(c, &caller, pair.a, pair.b).await? {
                out.push(pair_json(&pair));
            }
        }
        if last {
            break;
        }
    }
    Ok(axum::Json(json!({ "pairs": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DismissBody {
    a: PatientId,
    b: PatientId,
}

async fn dismiss<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    Authenticated(caller): Authenticated<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let body = read_body(&headers, body, MAX_DISMISS_BODY).await?;
    let body: DismissBody = chartsync_http::json_object(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body must be {{\"a\": \"<id>\", \"b\": \"<id>\"}}: {e}"),
        )
    })?;
    if body.a == body.b {
        return Err(ApiError::bad_request(
            "bad_pair",
            "a and b are the same record",
        ));
    }
    let c = &api.0;
    if !may_read_both(c, &caller, body.a, body.b).await? {
        return Err(ApiError::not_found("one of the records does not exist"));
    }
    c.db.dismiss_duplicate(&body.a, &body.b, chrono::Utc::now().timestamp())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(axum::Json(json!({
        "dismissed": { "a": body.a.to_string(), "b": body.b.to_string() }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(given: &str, family: &str, born: &str) -> Person {
        Person {
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            birth_date: Some(chartsync_dedup::BirthDate(born.into())),
            ..Person::default()
        }
    }

    fn pending(id: PatientId, p: Option<Person>) -> Pending {
        Pending {
            seq: 1,
            id,
            person: p,
        }
    }

    fn others(update: &DuplicateUpdate) -> Vec<PatientId> {
        update
            .pairs
            .iter()
            .map(|p| if p.a == update.id { p.b } else { p.a })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_is_compared_as_if_indexed_one_record_after_another() {
        let (stored_grace, aminah, amina, esther) = (
            PatientId::random(),
            PatientId::random(),
            PatientId::random(),
            PatientId::random(),
        );
        let grace = person("grace", "wanjiru", "19850930");
        let stored_row: StoredCandidates = [(stored_grace, grace.to_row().as_str())]
            .into_iter()
            .collect();
        // Enough others (strangers) for the work to be shared among
        // threads.
        let strangers: Vec<Pending> = (0..40)
            .map(|i| {
                let p = person(&format!("x{i}"), &format!("y{i}"), "20010101");
                pending(PatientId::random(), Some(p))
            })
            .collect();
        let mut batch = vec![
            // The stored Grace becomes someone else, before a new Grace
            // comes: the new one is not paired with her old fields.
            pending(stored_grace, Some(person("esther", "njeri", "19610203"))),
            pending(esther, None),
            pending(amina, Some(person("amina", "odhiambo", "19900412"))),
            // The same person twice in one batch: found (the later one
            // holds the pair).
            pending(aminah, Some(person("aminah", "odhiambo", "19900412"))),
        ];
        batch.extend(strangers.iter().cloned());
        let new_grace = PatientId::random();
        batch.push(pending(new_grace, Some(grace.clone())));
        let mut stored: Vec<StoredCandidates> =
            batch.iter().map(|_| StoredCandidates::default()).collect();
        let last = stored.len() - 1;
        stored[last] = stored_row.clone();
        let updates = compare_batch(batch.clone(), stored).await.expect("compare");
        assert_eq!(updates.len(), batch.len());
        for (u, p) in updates.iter().zip(&batch) {
            assert_eq!(u.id, p.id, "in the batch's order");
            assert_eq!(u.entry.is_some(), p.person.is_some());
        }
        assert!(updates[0].pairs.is_empty());
        assert!(updates[1].pairs.is_empty() && updates[1].entry.is_none());
        assert!(updates[2].pairs.is_empty());
        assert_eq!(others(&updates[3]), vec![amina]);
        let named = [stored_grace, esther, amina, aminah, new_grace];
        assert!(
            updates[4..last]
                .iter()
                .all(|u| others(u).iter().all(|o| !named.contains(o)))
        );
        assert!(others(&updates[last]).is_empty(), "{:?}", updates[last]);

        // The new Grace first: the stored one (not indexed again yet) is
        // her pair.
        let batch = vec![
            pending(new_grace, Some(grace)),
            pending(stored_grace, Some(person("esther", "njeri", "19610203"))),
        ];
        let stored = vec![stored_row, StoredCandidates::default()];
        let updates = compare_batch(batch, stored).await.expect("compare");
        assert_eq!(others(&updates[0]), vec![stored_grace]);
        assert!(updates[1].pairs.is_empty());
    }
}
