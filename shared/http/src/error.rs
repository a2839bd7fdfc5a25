use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use chartsync_protocol::api::{ConflictBody, ErrorBody};
use chartsync_protocol::id::PatientId;
use chartsync_store::{ReceiveError, StoreError, refs::RefError};

/// An error answer: status, `{"error","message"}` body (or a conflict body
/// for 412), and headers where HTTP asks for them.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: String,
    /// A sentence.
    pub message: String,
    conflict: Option<Box<ConflictBody>>,
    retry_after: Option<u64>,
    extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            conflict: None,
            retry_after: None,
            extra: None,
        }
    }

    /// 409 `retired`: the record is retired; `replaced_by` names the record
    /// that holds the patient now (or is `null`).
    pub fn retired(id: PatientId, replaced_by: Option<PatientId>) -> ApiError {
        let message = match replaced_by {
            Some(r) => format!(
                "patient record {id} is retired: it was merged into {r}; write to {r} instead"
            ),
            None => format!(
                "patient record {id} is retired; restore it (POST /v1/patients/{id}/restore) to write to it again"
            ),
        };
        Self::new(StatusCode::CONFLICT, "retired", message).with_field(
            "replaced_by",
            replaced_by.map_or(serde_json::Value::Null, |r| r.to_string().into()),
        )
    }

    /// Adds a field to the JSON error body (next to `error` and `message`).
    pub fn with_field(mut self, name: &str, value: serde_json::Value) -> ApiError {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), value);
        self
    }

    /// 400.
    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `Retry-After`.
    pub fn busy(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
        }
    }

    /// 500, logging the cause (the client gets no internals); 507
    /// `disk_full` when the cause is a full disk (see [`crate::is_disk_full`]).
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> ApiError {
        if crate::disk::is_disk_full(error) {
            return Self::disk_full(error);
        }
        tracing::error!(error = %chain(error), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// 507 `disk_full`: the server's disk (space or inodes) is full; nothing
    /// was stored.
    pub fn disk_full(error: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %chain(error), "the disk is full");
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "the server's disk is full (no space or no inodes left); nothing was stored: free some space and try again",
        )
    }

    /// 412 with a conflict body.
    pub fn conflict(body: ConflictBody) -> ApiError {
        ApiError {
            conflict: Some(Box::new(body)),
            ..Self::new(StatusCode::PRECONDITION_FAILED, "conflict", "conflict")
        }
    }

    /// The conflict body, for a 412.
    pub fn conflict_body(&self) -> Option<&ConflictBody> {
        self.conflict.as_deref()
    }
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    chain
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { id } => {
                ApiError::not_found(format!("patient record {id} does not exist"))
            }
            StoreError::Exists { id } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "exists",
                format!("patient record {id} already exists"),
            ),
            StoreError::Conflict(c) => ApiError::conflict((*c).into()),
            StoreError::Invalid(e) => ApiError::bad_request(e.code(), e.to_string()),
            StoreError::Received(ReceiveError::Invalid(e)) => {
                ApiError::bad_request(e.code(), e.to_string())
            }
            StoreError::Received(e) => ApiError::bad_request(e.code(), e.to_string()),
            StoreError::Retired { id, replaced_by } => ApiError::retired(id, replaced_by),
            StoreError::NotRetired { id } => ApiError::new(
                StatusCode::CONFLICT,
                "not_retired",
                format!("patient record {id} is not retired; there is nothing to restore"),
            ),
            StoreError::Busy { id } => ApiError::busy(
                format!("patient record {id} is being written by someone else; try again"),
                1,
            ),
            StoreError::Ref(RefError::Locked { .. }) => {
                ApiError::busy("the record is being written by someone else; try again", 1)
            }
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.conflict {
            Some(body) => (self.status, axum::Json(*body)).into_response(),
            None => match self.extra {
                None => (
                    self.status,
                    axum::Json(ErrorBody {
                        error: self.code,
                        message: self.message,
                    }),
                )
                    .into_response(),
                Some(extra) => {
                    let mut body = *extra;
                    body.insert("error".into(), self.code.into());
                    body.insert("message".into(), self.message.into());
                    (self.status, axum::Json(body)).into_response()
                }
            },
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chartsync\""),
            );
        }
        response
    }
}
