//! Central's HTTP server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chartsync_http::{
    ApiError, RecordService, ServeLimits, openapi_document, record_routes, serve_app,
};
use tokio::net::TcpListener;

use crate::Central;
use crate::auth::Caller;
use crate::db::CentralDb;
use crate::records::CentralApi;

/// Central's routes.
pub fn router<D: CentralDb>(central: Arc<Central<D>>) -> Router {
    let api = CentralApi(Arc::clone(&central));
    record_routes::<CentralApi<D>>()
        .merge(crate::sync::sync_routes::<D>())
        .merge(crate::ui::routes::<D>())
        .merge(crate::duplicates::routes::<D>())
        .route("/healthz", get(healthz::<D>))
        .route("/metrics", get(metrics::<D>))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi_document("central", true),
                )
            }),
        )
        .method_not_allowed_fallback(chartsync_http::method_not_allowed::<CentralApi<D>>)
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&central),
            count::<D>,
        ))
        .with_state(api)
}

/// How long `/healthz` waits for the database.
const HEALTH_DB_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// 200 `ok` when the database answers a small query within two seconds,
/// else 503 with the reason: a load balancer then stops sending requests
/// to a central that lost its database (PostgreSQL down or failing over).
async fn healthz<D: CentralDb>(State(api): State<CentralApi<D>>) -> Response {
    match tokio::time::timeout(HEALTH_DB_WAIT, api.0.db.instances_version()).await {
        Ok(Ok(_)) => "ok\n".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the database failed");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not healthy: the database failed; see the log\n",
            )
                .into_response()
        }
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not healthy: the database did not answer within 2 s\n",
        )
            .into_response(),
    }
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

/// Prometheus text, for HQ only: it needs the admin token (instances'
/// tokens get 403), since its counts describe every clinic's traffic.
async fn metrics<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Caller::Instance(_) = api.caller(&headers).await? {
        return Err(ApiError::forbidden(
            "/metrics needs HQ's admin token (scrape it with Authorization: Bearer <admin token>)",
        ));
    }
    let counts = api
        .0
        .db
        .counts()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut text = api.0.metrics.render(&counts);
    crate::reports::render_disk(&mut text, &api.0.config.data_dir);
    let reports = api
        .0
        .db
        .reports()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let instances = api
        .0
        .db
        .instances()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    crate::reports::render(&mut text, &instances, &reports);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
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

/// The warning logged at every start when central would serve plain HTTP
/// on an address other machines can reach (tokens and patient records
/// would cross the network unencrypted).
pub fn plain_http_warning(address: std::net::SocketAddr, tls: bool) -> Option<String> {
    (!tls && !address.ip().is_loopback()).then(|| {
        format!(
            "central serves plain HTTP on {address}, which other machines can reach: tokens and patient records cross the network unencrypted; add a [tls] section, or listen on 127.0.0.1 behind a TLS-terminating proxy"
        )
    })
}

/// Serves central on `listener` (with TLS if given) until `shutdown`
/// completes; requests in flight (writes included) are finished first. Also
/// runs repository upkeep. Warns (every start) when it serves plain HTTP
/// on a non-loopback address.
pub async fn serve<D: CentralDb>(
    central: Arc<Central<D>>,
    listener: TcpListener,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(warning) = plain_http_warning(listener.local_addr()?, tls.is_some()) {
        tracing::warn!("{warning}");
    }
    let (queue, receiver) = tokio::sync::mpsc::channel(4096);
    let (stop_upkeep, upkeep_stop) = tokio::sync::watch::channel(false);
    central.set_upkeep(queue);
    let upkeep = tokio::spawn(crate::upkeep::run(
        Arc::clone(&central),
        receiver,
        upkeep_stop,
    ));
    // Duplicate indexing, unless `[duplicates] index = false` leaves it
    // to other processes sharing the database.
    let duplicates = central.config.duplicates.index.then(|| {
        tokio::spawn(crate::duplicates::run(
            Arc::clone(&central),
            stop_upkeep.subscribe(),
        ))
    });
    let app = router(Arc::clone(&central));
    let result = serve_app(listener, app, tls, ServeLimits::default(), shutdown).await;
    central.clear_upkeep();
    // One way to stop: the signal, then wait for a repack in progress to
    // finish and release its patient lease. Past the deadline the task is
    // left to the runtime's shutdown; its lease then expires as after a
    // crash.
    let _ = stop_upkeep.send(true);
    if let Some(duplicates) = duplicates {
        let _ = duplicates.await;
    }
    if tokio::time::timeout(UPKEEP_EXIT_DEADLINE, upkeep)
        .await
        .is_err()
    {
        tracing::warn!("repository upkeep did not stop within its deadline");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::plain_http_warning;

    #[test]
    fn plain_http_off_loopback_is_warned_about() {
        for open in ["0.0.0.0:7700", "[::]:7700", "10.1.2.3:7700"] {
            let warning = plain_http_warning(open.parse().expect("addr"), false).expect(open);
            assert!(
                warning.contains("[tls]") && !warning.contains('\n'),
                "{warning}"
            );
            assert!(plain_http_warning(open.parse().expect("addr"), true).is_none());
        }
        for local in ["127.0.0.1:7700", "[::1]:7700"] {
            assert!(plain_http_warning(local.parse().expect("addr"), false).is_none());
        }
    }
}
