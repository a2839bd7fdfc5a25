//! The record API over HTTP (axum), the same on satellite and central.
//!
//! Handlers are generic over a [`RecordService`]: the satellite implements
//! it on its local store, central adds authorisation, patient locks and its
//! database. Errors become status codes and JSON bodies in one place,
//! [`ApiError`].

#![forbid(unsafe_code)]

mod body;
mod disk;
mod error;
mod extract;
mod records;
mod serve;
pub mod ui;

pub use body::{author_from_headers, json_object, read_body};
pub use disk::is_disk_full;
pub use error::ApiError;
pub use extract::{Authenticated, PathParam, method_not_allowed};
pub use records::{MergeConflicts, RecordService, WriteRequest, merge_records, record_routes};
pub use serve::{ServeLimits, Tls, serve_app};

/// Runs blocking store or database work off the async threads; a task that
/// dies becomes a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
}

/// The OpenAPI document for a role (`"satellite"` or `"central"`): the paths
/// of `docs/openapi.json` marked for that role or both. Without `bearer`
/// (a satellite with no `api_token`) no operation asks for a token.
pub fn openapi_document(role: &str, bearer: bool) -> String {
    const DOC: &str = include_str!("../../../docs/openapi.json");
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(DOC) else {
        return DOC.to_string();
    };
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        paths.retain(|_, item| {
            matches!(
                item.get("x-chartsync-role").and_then(|r| r.as_str()),
                Some(r) if r == role || r == "both"
            )
        });
    }
    if !bearer && let Some(doc) = doc.as_object_mut() {
        doc.insert("security".to_string(), serde_json::Value::Array(Vec::new()));
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| DOC.to_string())
}

#[cfg(test)]
mod tests {
    use super::openapi_document;

    fn paths(doc: &serde_json::Value) -> Vec<&str> {
        doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn each_role_gets_its_paths_and_security() {
        let central: serde_json::Value =
            serde_json::from_str(&openapi_document("central", true)).expect("JSON");
        let open: serde_json::Value =
            serde_json::from_str(&openapi_document("satellite", false)).expect("JSON");
        let closed: serde_json::Value =
            serde_json::from_str(&openapi_document("satellite", true)).expect("JSON");
        assert!(paths(&central).contains(&"/v1/sync/push"));
        assert!(!paths(&central).contains(&"/v1/conflicts"));
        assert!(paths(&open).contains(&"/v1/conflicts"));
        assert!(!paths(&open).contains(&"/v1/sync/push"));
        assert!(paths(&open).contains(&"/v1/patients/{id}"));
        assert_eq!(open["security"], serde_json::json!([]));
        assert_eq!(closed["security"], central["security"]);
        assert_ne!(closed["security"], serde_json::json!([]));
    }
}
