//! The satellite-only endpoints: status, the conflict queue, and fetching a
//! visiting patient by id.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chartsync_http::{
    ApiError, Authenticated, PathParam, RecordService, author_from_headers, read_body,
};
use chartsync_protocol::PatientId;
use chartsync_protocol::api::{
    ConflictEntry, FilePatch, FilesBody, PatchBody, RecordBody, StatusBody,
};
use chartsync_store::{Change, Condition};

use crate::api::{LocalApi, blocking, commit_local};
use crate::jobs::JobError;

/// The satellite-only routes.
pub fn routes() -> Router<LocalApi> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/conflicts/{id}/resolve", post(resolve))
        .route("/v1/patients/{id}/fetch", post(fetch))
}

fn internal(e: &(dyn std::error::Error + 'static)) -> ApiError {
    ApiError::internal(e)
}

async fn status(
    State(api): State<LocalApi>,
    headers: HeaderMap,
) -> Result<axum::Json<StatusBody>, ApiError> {
    api.caller(&headers).await?;
    let sat = Arc::clone(&api.0);
    blocking(move || Ok(axum::Json(crate::status(&sat).map_err(|e| internal(&e))?))).await
}

async fn conflicts(
    State(api): State<LocalApi>,
    headers: HeaderMap,
) -> Result<axum::Json<Vec<ConflictEntry>>, ApiError> {
    api.caller(&headers).await?;
    let sat = Arc::clone(&api.0);
    blocking(move || {
        Ok(axum::Json(
            sat.db.open_conflicts().map_err(|e| internal(&e))?,
        ))
    })
    .await
}

/// Records a clinician's resolution: the files given are written on top of
/// the current head (files not given are unchanged); the next push sends it.
async fn resolve(
    Authenticated(()): Authenticated<()>,
    State(api): State<LocalApi>,
    PathParam(id): PathParam<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, api.0.config.max_body_bytes).await?;
    let files: FilesBody = chartsync_http::json_object(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body must be {{\"files\": {{...}}}}: {e}"),
        )
    })?;
    if files.files.is_empty() {
        return Err(ApiError::bad_request(
            "empty_resolution",
            "give the resolved file(s) in \"files\"",
        ));
    }
    let meta = author_from_headers(&headers, "clinic", "Resolve conflict")?;
    let sat = Arc::clone(&api.0);
    let record = blocking(move || {
        let (conflict, resolved) = sat
            .db
            .conflict(id)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| ApiError::not_found(format!("conflict {id} does not exist")))?;
        if resolved {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_resolved",
                format!("conflict {id} is already resolved"),
            ));
        }
        let patient = conflict.patient;
        let patch: PatchBody = files
            .files
            .into_iter()
            .map(|(path, content)| (path, FilePatch::Replace(content)))
            .collect();
        let head = commit_local(
            &sat,
            &patient,
            Condition::Unconditional,
            Change::Patch(patch),
            &meta,
        )?;
        sat.db
            .resolve_conflict(id, head)
            .map_err(|e| internal(&e))?;
        let files = sat
            .store
            .read_at(&patient, head)?
            .ok_or_else(|| ApiError::not_found("the record vanished"))?;
        Ok(RecordBody {
            id: patient,
            head,
            files,
        })
    })
    .await?;
    let mut response = (StatusCode::OK, axum::Json(&record)).into_response();
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}\"", record.head)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}

/// Fetches a visiting patient's record from central by id.
async fn fetch(
    Authenticated(()): Authenticated<()>,
    State(api): State<LocalApi>,
    PathParam(id): PathParam<PatientId>,
) -> Result<Response, ApiError> {
    let sat = Arc::clone(&api.0);
    let head = crate::jobs::fetch_one(&sat, id)
        .await
        .map_err(|e| match e {
            JobError::Sync(crate::client::SyncError::Refused {
                status,
                code,
                message,
            }) => ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                &code,
                format!("central: {message}"),
            ),
            JobError::Sync(e) if e.is_transient() => ApiError::busy(
                format!(
                    "central is not reachable now ({}); try again when online",
                    crate::error_chain(&e)
                ),
                30,
            ),
            other => internal(&other),
        })?;
    let record = api.read((), id).await?;
    let mut response = (StatusCode::OK, axum::Json(&record)).into_response();
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{head}\"")) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}
