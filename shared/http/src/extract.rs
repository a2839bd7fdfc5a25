//! Extractors and fallbacks that keep every answer JSON and in the
//! documented order: authentication first, then the path, then the body.

use std::fmt::Display;
use std::str::FromStr;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

use super::{ApiError, RecordService};

/// The caller of a request, authenticated by the service before anything
/// else about the request is looked at: a missing or wrong token is a 401
/// whatever else is wrong with the request. Put it first among a handler's
/// arguments.
#[derive(Debug)]
pub struct Authenticated<C>(pub C);

impl<S: RecordService> FromRequestParts<S> for Authenticated<S::Caller> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &S) -> Result<Self, ApiError> {
        service.caller(&parts.headers).await.map(Authenticated)
    }
}

/// The one parameter of a route's path (a patient id, a conflict id),
/// parsed with [`FromStr`]; anything that does not parse is a JSON 400
/// `invalid_id` (not axum's plain-text rejection).
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParam<T>
where
    S: Send + Sync,
    T: FromStr + Send,
    T::Err: Display,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_id",
                    format!("the id in the path is not valid: {}", e.body_text()),
                )
            })?;
        raw.parse().map(PathParam).map_err(|e: T::Err| {
            ApiError::bad_request(
                "invalid_id",
                format!("the id in the path is not valid: {e}"),
            )
        })
    }
}

/// Paths anyone may ask (no token), whatever the method.
const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/openapi.json"];

/// The answer to a method a route does not serve: a JSON 405 (axum adds
/// the `Allow` header). On routes behind a token the caller is
/// authenticated first, so a missing or wrong token is still a 401.
/// Install with `Router::method_not_allowed_fallback` after every route.
pub async fn method_not_allowed<S: RecordService>(
    State(service): State<S>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiError {
    if !PUBLIC_PATHS.contains(&uri.path())
        && let Err(e) = service.caller(&headers).await
    {
        return e;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; the Allow header lists the methods it takes",
            uri.path()
        ),
    )
}
