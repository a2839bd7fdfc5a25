//! The satellite's local record API: the clinic's applications read and
//! write here, whether central is reachable or not.

use std::sync::Arc;

use axum::http::HeaderMap;
use chartsync_http::{ApiError, RecordService, WriteRequest};
use chartsync_protocol::CommitId;
use chartsync_protocol::PatientId;
use chartsync_protocol::api::{HistoryEntry, RecordBody};
use chartsync_store::{Change, CommitMeta, Condition, Flush};
use subtle::ConstantTimeEq;

use crate::Satellite;

/// The record API on the satellite's own store.
#[derive(Debug, Clone)]
pub struct LocalApi(pub Arc<Satellite>);

pub(crate) use chartsync_http::blocking;

/// Commits a change made at this clinic, as every local write does (the
/// record API, a conflict resolved through the API or on the clinic's
/// page): the record is marked changed before its head moves, so a crash
/// cannot hide the change from the next push, and counted again after it
/// moved (see `db/sync.rs`). Blocking.
pub(crate) fn commit_local(
    sat: &Satellite,
    id: &PatientId,
    condition: Condition,
    change: Change,
    meta: &CommitMeta,
) -> Result<CommitId, ApiError> {
    let prepared = sat.store.prepare(id, condition, change, meta, Flush::Now)?;
    let changed = prepared.is_change();
    if changed {
        sat.db.mark_dirty(id).map_err(|e| ApiError::internal(&e))?;
    }
    let head = sat.store.publish(prepared, Flush::Now)?;
    if changed {
        sat.db
            .note_moved(&[*id])
            .map_err(|e| ApiError::internal(&e))?;
    }
    Ok(head)
}

impl RecordService for LocalApi {
    type Caller = ();

    fn body_limit(&self) -> usize {
        self.0.config.max_body_bytes
    }

    fn default_author(&self) -> &str {
        "clinic"
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.0.config.api_token else {
            return Ok(());
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(expected.0.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "send Authorization: Bearer <api_token> (from the satellite's configuration)",
            ))
        }
    }

    async fn write(&self, _caller: (), request: WriteRequest) -> Result<RecordBody, ApiError> {
        let sat = Arc::clone(&self.0);
        blocking(move || {
            let WriteRequest {
                id,
                condition,
                change,
                meta,
            } = request;
            let head = commit_local(&sat, &id, condition, change, &meta)?;
            let files = sat
                .store
                .read_at(&id, head)?
                .ok_or_else(|| ApiError::not_found(format!("patient record {id} vanished")))?;
            Ok(RecordBody { id, head, files })
        })
        .await
    }

    async fn read(&self, _caller: (), id: PatientId) -> Result<RecordBody, ApiError> {
        let sat = Arc::clone(&self.0);
        blocking(move || {
            let snapshot = sat.store.read(&id)?;
            Ok(RecordBody {
                id,
                head: snapshot.head,
                files: snapshot.files,
            })
        })
        .await
    }

    async fn history(&self, _caller: (), id: PatientId) -> Result<Vec<HistoryEntry>, ApiError> {
        let sat = Arc::clone(&self.0);
        blocking(move || Ok(sat.store.history(&id)?)).await
    }
}
