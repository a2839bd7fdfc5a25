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
use chartsync_store::{Change, CommitMeta, Condition};

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
    type Caller: Send + 'static;

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
            get(read::<S>).put(put::<S>).patch(patch::<S>),
        )
        .route("/v1/patients/{id}/history", get(history::<S>))
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
    serde_json::from_slice(bytes).map_err(|e| {
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
