use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{ApiError, Authenticated, PathParam, author_from_headers, read_body};
use chartsync_merge::number::{JsonError, parse_json_exact};
use chartsync_protocol::CommitId;
use chartsync_protocol::api::{FilesBody, HistoryEntry, RecordBody, parse_patch_body};
use chartsync_protocol::id::PatientId;
use chartsync_store::{Change, CommitMeta, Condition, Retirement};

/// One write, as the HTTP layer understood it.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The record.
    pub id: PatientId,
    /// When it applies.
    pub condition: Condition,
    /// What it does.
    pub change: Change,
    /// Who and why.
    pub meta: CommitMeta,
}

/// What serves the record API.
pub trait RecordService: Clone + Send + Sync + 'static {
    /// Who is calling (after authentication).
    type Caller: Clone + Send + 'static;

    /// Largest request body, in bytes.
    fn body_limit(&self) -> usize;

    /// Author name for writes without a `Chartsync-Author` header.
    fn default_author(&self) -> &str;

    /// Authenticates a request.
    fn caller(
        &self,
        headers: &HeaderMap,
    ) -> impl Future<Output = Result<Self::Caller, ApiError>> + Send;

    /// Writes; returns the record after the write.
    fn write(
        &self,
        caller: Self::Caller,
        request: WriteRequest,
    ) -> impl Future<Output = Result<RecordBody, ApiError>> + Send;

    /// Reads the current version.
    fn read(
        &self,
        caller: Self::Caller,
        id: PatientId,
    ) -> impl Future<Output = Result<RecordBody, ApiError>> + Send;

    /// Reads the history, newest first.
    fn history(
        &self,
        caller: Self::Caller,
        id: PatientId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, ApiError>> + Send;
}

/// The routes of the record API.
pub fn record_routes<S: RecordService>() -> Router<S> {
    Router::new()
        .route("/v1/patients", post(create::<S>))
        .route(
            "/v1/patients/{id}",
            get(read::<S>)
                .put(put::<S>)
                .patch(patch::<S>)
                .delete(retire::<S>),
        )
        .route("/v1/patients/{id}/history", get(history::<S>))
        .route("/v1/patients/{id}/restore", post(restore::<S>))
        .route("/v1/patients/{id}/merge", post(merge::<S>))
}

fn etag(head: CommitId) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{head}\""))
        .expect("hex digits and quotes are valid header text")
}

fn record_response(status: StatusCode, record: RecordBody) -> Response {
    let mut response = (status, axum::Json(&record)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(record.head));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/patients/{}", record.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The write condition from `If-Match` / `If-None-Match`.
fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let value = |name| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::trim).map_err(|_| {
                    ApiError::bad_request("bad_header", "precondition headers must be ASCII")
                })
            })
            .transpose()
    };
    match (value(header::IF_MATCH)?, value(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "bad_precondition",
            "send either If-Match or If-None-Match, not both",
        )),
        (None, Some("*")) => Ok(Condition::MustCreate),
        (None, Some(_)) => Err(ApiError::bad_request(
            "bad_precondition",
            "If-None-Match supports only \"*\" (create if absent)",
        )),
        (Some("*"), None) => Ok(Condition::Unconditional),
        (Some(tag), None) => {
            let hash = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_precondition",
                        "If-Match must be one strong ETag, the record's head in double quotes: If-Match: \"<hash>\"",
                    )
                })?;
            hash.parse().map(Condition::MatchHead).map_err(
                |e: chartsync_protocol::CommitIdError| {
                    ApiError::bad_request("bad_precondition", e.to_string())
                },
            )
        }
        (None, None) => Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "a write needs If-Match: \"<head>\" (update that version), If-None-Match: * (create) or If-Match: * (overwrite whatever is there)",
        )),
    }
}

fn files_body(bytes: &[u8]) -> Result<FilesBody, ApiError> {
    crate::body::json_object(bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body must be JSON like {{\"files\": {{\"patient.yaml\": \"...\"}}}}: {e}"),
        )
    })
}

async fn create<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, service.body_limit()).await?;
    let files = files_body(&bytes)?;
    let meta = author_from_headers(&headers, service.default_author(), "Create record")?;
    let request = WriteRequest {
        id: PatientId::random(),
        condition: Condition::MustCreate,
        change: Change::Replace(files.files),
        meta,
    };
    let record = service.write(caller, request).await?;
    Ok(record_response(StatusCode::CREATED, record))
}

async fn put<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let condition = condition(&headers)?;
    let bytes = read_body(&headers, body, service.body_limit()).await?;
    let files = files_body(&bytes)?;
    let default_message = if condition == Condition::MustCreate {
        "Create record"
    } else {
        "Update record"
    };
    let meta = author_from_headers(&headers, service.default_author(), default_message)?;
    let request = WriteRequest {
        id,
        condition,
        change: Change::Replace(files.files),
        meta,
    };
    let record = service.write(caller, request).await?;
    let status = if condition == Condition::MustCreate {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(record_response(status, record))
}

async fn patch<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        Some("application/merge-patch+json") | Some("application/json") => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "PATCH takes Content-Type: application/merge-patch+json",
            ));
        }
    }
    let condition = condition(&headers)?;
    let bytes = read_body(&headers, body, service.body_limit()).await?;
    // Numbers that JSON parsing would silently round (a 23-digit id becomes
    // 1.2345678901234568e22) are refused, not stored changed.
    let value = parse_json_exact(&bytes).map_err(|e| match e {
        JsonError::Syntax { message } => {
            ApiError::bad_request("bad_json", format!("the body is not valid JSON: {message}"))
        }
        inexact @ JsonError::InexactNumber { .. } => {
            ApiError::bad_request("inexact_number", inexact.to_string())
        }
    })?;
    let patch = parse_patch_body(value).map_err(|m| ApiError::bad_request("bad_patch", m))?;
    let meta = author_from_headers(&headers, service.default_author(), "Update record")?;
    let request = WriteRequest {
        id,
        condition,
        change: Change::Patch(patch),
        meta,
    };
    let status = if condition == Condition::MustCreate {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let record = service.write(caller, request).await?;
    Ok(record_response(status, record))
}

async fn read<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = service.read(caller, id).await?;
    if let Some(retired) = Retirement::of(&record.files) {
        return Ok(gone(&record, &retired));
    }
    if let Some(tag) = headers.get(header::IF_NONE_MATCH)
        && tag.as_bytes() == etag(record.head).as_bytes()
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, etag(record.head));
        return Ok(response);
    }
    Ok(record_response(StatusCode::OK, record))
}

async fn history<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
) -> Result<Response, ApiError> {
    let entries = service.history(caller, id).await?;
    Ok(axum::Json(entries).into_response())
}

/// The answer to a read of a retired record: 410 with the tombstone's
/// `ETag` and where the patient's record lives now.
fn gone(record: &RecordBody, retired: &Retirement) -> Response {
    let body = serde_json::json!({
        "error": "retired",
        "message": match retired.replaced_by {
            Some(r) => format!("patient record {} is retired: it was merged into {r}", record.id),
            None => format!("patient record {} is retired", record.id),
        },
        "replaced_by": retired.replaced_by.map(|r| r.to_string()),
        "retired_at": retired.retired_at,
        "head": record.head,
    });
    let mut response = (StatusCode::GONE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(record.head));
    response
}

/// Refuses a body on a request that takes none (DELETE, restore): a
/// client sending one means something this API would not do, say a
/// `replaced_by` on a DELETE, so it is told rather than ignored.
fn no_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().map(str::trim).unwrap_or("?"));
    if matches!(length, Some(l) if l != "0") || headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::bad_request(
            "unexpected_body",
            "this request takes no body: send the precondition in If-Match and nothing else (a merge is POST /v1/patients/{survivor}/merge)",
        ));
    }
    Ok(())
}

/// The condition of a retire or restore: `If-Match` only.
fn match_condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    match condition(headers)? {
        Condition::MustCreate => Err(ApiError::bad_request(
            "bad_precondition",
            "this request changes an existing record: send If-Match: \"<head>\", not If-None-Match",
        )),
        other => Ok(other),
    }
}

async fn retire<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_body(&headers)?;
    let condition = match_condition(&headers)?;
    let meta = author_from_headers(&headers, service.default_author(), "Retire record")?;
    let request = WriteRequest {
        id,
        condition,
        change: Change::Retire { replaced_by: None },
        meta,
    };
    let record = service.write(caller, request).await?;
    Ok(record_response(StatusCode::OK, record))
}

async fn restore<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(id): PathParam<PatientId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_body(&headers)?;
    let condition = match_condition(&headers)?;
    let meta = author_from_headers(&headers, service.default_author(), "Restore record")?;
    let request = WriteRequest {
        id,
        condition,
        change: Change::Restore,
        meta,
    };
    let record = service.write(caller, request).await?;
    Ok(record_response(StatusCode::OK, record))
}

/// Body of `POST /v1/patients/{survivor}/merge`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    /// The record to retire into the survivor.
    retire: PatientId,
    /// Its head, as read (with or without the quotes of an ETag).
    retire_if_match: String,
}

/// A 412 for a merge whose `If-Match` or `retire_if_match` is stale.
fn stale(record: RecordBody, expected: CommitId) -> ApiError {
    ApiError::conflict(chartsync_protocol::api::ConflictBody {
        error: "conflict".into(),
        message: format!(
            "patient record {} changed since version {expected}; re-read it and merge again",
            record.id
        ),
        current_head: Some(record.head),
        expected_head: Some(expected),
        changed: Vec::new(),
        current: record.files,
    })
}

/// Merges record `retire` into `survivor`: the survivor gets one commit
/// holding both records' data, united field by field (lists united, equal
/// values agree; where they differ the survivor's value stays and the
/// other's is listed in `conflicts`); then
/// `retire` is retired with `replaced_by` = survivor.
async fn merge<S: RecordService>(
    Authenticated(caller): Authenticated<S::Caller>,
    State(service): State<S>,
    PathParam(survivor): PathParam<PatientId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Condition::MatchHead(survivor_head) = condition(&headers)? else {
        // Sent, but not a head: `If-Match: *` or `If-None-Match: *`.
        return Err(ApiError::bad_request(
            "bad_precondition",
            "a merge needs the survivor's head as read: If-Match: \"<hash>\" (not * and not If-None-Match)",
        ));
    };
    let bytes = read_body(&headers, body, service.body_limit()).await?;
    let bad = |e: String| {
        ApiError::bad_request(
            "bad_json",
            format!(
                "the body must be a JSON object like {{\"retire\": \"<id>\", \"retire_if_match\": \"<hash>\"}}: {e}"
            ),
        )
    };
    let body: MergeBody = crate::body::json_object(&bytes).map_err(bad)?;
    let other_head: CommitId = body
        .retire_if_match
        .trim()
        .trim_matches('"')
        .parse()
        .map_err(|e: chartsync_protocol::CommitIdError| {
            ApiError::bad_request("bad_precondition", format!("retire_if_match: {e}"))
        })?;
    let other = body.retire;
    let meta = author_from_headers(
        &headers,
        service.default_author(),
        &format!("Merge record {other} into this one (same person)"),
    )?;
    let (record, conflicts) = merge_records(
        &service,
        caller,
        survivor,
        survivor_head,
        other,
        other_head,
        meta,
    )
    .await?;
    let body = serde_json::json!({
        "id": record.id,
        "head": record.head,
        "files": record.files,
        "retired": other,
        "conflicts": conflicts,
    });
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(record.head));
    Ok(response)
}

/// What a merge left for a clinician: per field where the two records
/// differ, the survivor's value (kept) and the other's.
pub type MergeConflicts = Vec<serde_json::Value>;

/// Merges record `other` into `survivor` (both at the heads given, neither
/// retired): the survivor gets one commit holding both records' data,
/// united field by field (lists united, equal values agree; where they
/// differ the survivor's value stays and the other's is listed); then
/// `other` is retired with `replaced_by` = survivor. Used by `POST
/// /v1/patients/{survivor}/merge` and by HQ's page.
pub async fn merge_records<S: RecordService>(
    service: &S,
    caller: S::Caller,
    survivor: PatientId,
    survivor_head: CommitId,
    other: PatientId,
    other_head: CommitId,
    meta: CommitMeta,
) -> Result<(RecordBody, MergeConflicts), ApiError> {
    if other == survivor {
        return Err(ApiError::bad_request(
            "same_record",
            "a record cannot be merged into itself: \"retire\" must name another record",
        ));
    }
    let kept = service.read(caller.clone(), survivor).await?;
    if let Some(r) = Retirement::of(&kept.files) {
        return Err(ApiError::retired(survivor, r.replaced_by));
    }
    let gone = service.read(caller.clone(), other).await?;
    if let Some(r) = Retirement::of(&gone.files) {
        return Err(ApiError::retired(other, r.replaced_by));
    }
    if kept.head != survivor_head {
        return Err(stale(kept, survivor_head));
    }
    if gone.head != other_head {
        return Err(stale(gone, other_head));
    }
    let merged = chartsync_merge::unite_files(&kept.files, &gone.files);
    let conflicts: Vec<serde_json::Value> = merged
        .conflicts
        .iter()
        .map(|c| {
            serde_json::json!({
                "file": c.file,
                "path": c.path,
                "kept": c.theirs,
                "other": c.ours,
            })
        })
        .collect();
    let record = service
        .write(
            caller.clone(),
            WriteRequest {
                id: survivor,
                condition: Condition::MatchHead(survivor_head),
                change: Change::Replace(merged.files),
                meta: meta.clone(),
            },
        )
        .await?;
    service
        .write(
            caller,
            WriteRequest {
                id: other,
                condition: Condition::MatchHead(other_head),
                change: Change::Retire {
                    replaced_by: Some(survivor),
                },
                meta: CommitMeta {
                    message: format!("Retire record: merged into {survivor} (same person)"),
                    ..meta
                },
            },
        )
        .await?;
    Ok((record, conflicts))
}
