//! Central's HTTP server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chartsync_http::{ApiError, ServeLimits, openapi_document, record_routes, serve_app};
use tokio::net::TcpListener;

use crate::Central;
use crate::db::CentralDb;
use crate::records::CentralApi;

/// Central's routes.
pub fn router<D: CentralDb>(central: Arc<Central<D>>) -> Router {
    let api = CentralApi(Arc::clone(&central));
    record_routes::<CentralApi<D>>()
        .merge(crate::sync::sync_routes::<D>())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::<D>))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi_document("central"),
                )
            }),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&central),
            count::<D>,
        ))
        .with_state(api)
}

async fn count<D: CentralDb>(
    State(c): State<Arc<Central<D>>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    c.metrics.http.record(response.status().as_u16());
    response
}

async fn metrics<D: CentralDb>(State(api): State<CentralApi<D>>) -> Result<Response, ApiError> {
    let counts = api
        .0
        .db
        .counts()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.0.metrics.render(&counts),
    )
        .into_response())
}

/// TLS settings for [`serve`].
pub use chartsync_http::Tls;

/// Loads the certificate and key of `[tls]`.
pub async fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<Tls> {
    Tls::from_pem_file(cert, key).await
}

/// How long shutdown waits for a repack in progress.
const UPKEEP_EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Serves central on `listener` (with TLS if given) until `shutdown`
/// completes; requests in flight (writes included) are finished first. Also
/// runs repository upkeep.
pub async fn serve<D: CentralDb>(
    central: Arc<Central<D>>,
    listener: TcpListener,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (queue, receiver) = tokio::sync::mpsc::channel(4096);
    let (stop_upkeep, upkeep_stop) = tokio::sync::watch::channel(false);
    central.set_upkeep(queue);
    let upkeep = tokio::spawn(crate::upkeep::run(
        Arc::clone(&central),
        receiver,
        upkeep_stop,
    ));
    let app = router(Arc::clone(&central));
    let result = serve_app(listener, app, tls, ServeLimits::default(), shutdown).await;
    central.clear_upkeep();
    // One way to stop: the signal, then wait for a repack in progress to
    // finish and release its patient lease. Past the deadline the task is
    // left to the runtime's shutdown; its lease then expires as after a
    // crash.
    let _ = stop_upkeep.send(true);
    if tokio::time::timeout(UPKEEP_EXIT_DEADLINE, upkeep)
        .await
        .is_err()
    {
        tracing::warn!("repository upkeep did not stop within its deadline");
    }
    result
}
