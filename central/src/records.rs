//! The record API on central (HQ clients with the admin token, or
//! instances within their scope).

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use chartsync_http::{ApiError, RecordService, WriteRequest};
use chartsync_protocol::PatientId;
use chartsync_protocol::api::{HistoryEntry, RecordBody};

use crate::Central;
use crate::apply::{Outcome, Write, WriteKind, apply_writes};
use crate::auth::Caller;
use crate::db::{CentralDb, RecordRow};

/// The record API on central.
#[derive(Debug)]
pub struct CentralApi<D>(pub Arc<Central<D>>);

impl<D> Clone for CentralApi<D> {
    fn clone(&self) -> Self {
        CentralApi(Arc::clone(&self.0))
    }
}

pub(crate) use chartsync_http::blocking;

/// The answer to a record the caller may not see: the same as for a record
/// that does not exist (a 403 would tell a clinic which ids exist
/// elsewhere).
pub fn no_such_record(id: PatientId) -> ApiError {
    ApiError::not_found(format!("patient record {id} does not exist"))
}

impl<D: CentralDb> CentralApi<D> {
    /// The record's row, if the caller may see it; otherwise the same 404
    /// whether it does not exist or is outside the caller's scope. An
    /// instance asking for an unknown id pays the scope check's grant
    /// look-up all the same, so the two cost about the same time.
    async fn visible(&self, caller: &Caller, id: PatientId) -> Result<RecordRow, ApiError> {
        let c = &self.0;
        let row =
            c.db.records(&[id])
                .await
                .map_err(|e| ApiError::internal(&e))?
                .into_iter()
                .next()
                .flatten();
        let Some(row) = row else {
            if let Caller::Instance(instance) = caller {
                c.db.has_grant(instance.id, &id)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
            }
            return Err(no_such_record(id));
        };
        if !c
            .in_scope(caller, &row)
            .await
            .map_err(|e| ApiError::internal(&e))?
        {
            return Err(no_such_record(id));
        }
        Ok(row)
    }
}

impl<D: CentralDb> RecordService for CentralApi<D> {
    type Caller = Caller;

    fn body_limit(&self) -> usize {
        self.0.config.max_body_bytes
    }

    fn default_author(&self) -> &str {
        "hq"
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let caller = self.0.auth.caller(&self.0.db, headers).await?;
        if let Caller::Instance(instance) = &caller {
            self.0.remember(instance).await;
        }
        Ok(caller)
    }

    async fn write(&self, caller: Caller, request: WriteRequest) -> Result<RecordBody, ApiError> {
        let c = &self.0;
        let WriteRequest {
            id,
            condition,
            change,
            meta,
        } = request;
        let write = Write {
            id,
            kind: WriteKind::Api {
                condition,
                change,
                meta,
            },
        };
        let outcome = apply_writes(c, &caller, vec![write])
            .await
            .map_err(|e| ApiError::internal(&e))?
            .into_iter()
            .next();
        match outcome {
            Some(Outcome::Applied { head, .. }) => {
                let store = Arc::clone(c);
                blocking(move || {
                    let files = store.store.read_at(&id, head)?.ok_or_else(|| {
                        ApiError::not_found(format!("patient record {id} vanished"))
                    })?;
                    Ok(RecordBody { id, head, files })
                })
                .await
            }
            Some(Outcome::Failed(e)) => {
                if e.status == StatusCode::PRECONDITION_FAILED {
                    c.metrics.conflicts.inc();
                }
                Err(e)
            }
            Some(Outcome::Busy) | None => Err(ApiError::busy(
                format!("patient record {id} is being written by someone else; try again"),
                1,
            )),
            Some(Outcome::Conflict { .. }) => Err(ApiError::busy("try again", 1)),
        }
    }

    async fn read(&self, caller: Caller, id: PatientId) -> Result<RecordBody, ApiError> {
        let row = self.visible(&caller, id).await?;
        Central::catch_up(&self.0, &[(id, row.head)], false).await;
        let c = Arc::clone(&self.0);
        blocking(move || {
            // The database's head: what was acknowledged.
            let files = c.store.read_at(&id, row.head)?.ok_or_else(|| {
                ApiError::not_found(format!("patient record {id} is not on disk"))
            })?;
            Ok(RecordBody {
                id,
                head: row.head,
                files,
            })
        })
        .await
    }

    async fn history(&self, caller: Caller, id: PatientId) -> Result<Vec<HistoryEntry>, ApiError> {
        let row = self.visible(&caller, id).await?;
        Central::catch_up(&self.0, &[(id, row.head)], false).await;
        let c = Arc::clone(&self.0);
        blocking(move || Ok(c.store.history_at(&id, Some(row.head))?)).await
    }
}
