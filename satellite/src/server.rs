//! The satellite's HTTP server.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chartsync_common::metrics::sample;
use chartsync_http::{ApiError, RecordService, record_routes};
use tokio::net::TcpListener;

use crate::Satellite;
use crate::api::{LocalApi, blocking};

/// The satellite's routes.
pub fn router(sat: Arc<Satellite>) -> Router {
    let api = LocalApi(Arc::clone(&sat));
    let api_token_set = sat.config.api_token.is_some();
    record_routes::<LocalApi>()
        .merge(crate::local::routes())
        .merge(crate::ui::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(move || openapi(api_token_set)))
        .method_not_allowed_fallback(chartsync_http::method_not_allowed::<LocalApi>)
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&sat),
            count,
        ))
        .with_state(api)
}

/// 200 `ok`, or 503 with the reason when the data folder's disk is (nearly)
/// full: out of space or out of inodes, every write would fail.
async fn healthz(State(api): State<LocalApi>) -> Response {
    let sat = Arc::clone(&api.0);
    let checked = tokio::task::spawn_blocking(move || {
        crate::words::disk_sentence(&sat.config.data_dir, &sat.config.disk)
    })
    .await;
    match checked {
        Ok((true, why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not healthy: {why}\n"),
        )
            .into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn count(State(sat): State<Arc<Satellite>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    sat.http.record(response.status().as_u16());
    response
}

/// Serves the local API on `listener` until `shutdown` completes; requests
/// in flight are finished first. Refuses (before serving anything) a
/// listener that is not on a loopback address when no `api_token` is set.
pub async fn serve(
    sat: Arc<Satellite>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    sat.config
        .check_listen(listener.local_addr()?)
        .map_err(std::io::Error::other)?;
    chartsync_http::serve_app(
        listener,
        router(sat),
        None,
        chartsync_http::ServeLimits::default(),
        shutdown,
    )
    .await
}

/// Prometheus text; behind `api_token` when one is set, like the rest of
/// the local API.
async fn metrics(State(api): State<LocalApi>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.caller(&headers).await?;
    let sat = Arc::clone(&api.0);
    blocking(move || {
        let (pending, conflicts) = sat.db.counts().map_err(|e| ApiError::internal(&e))?;
        let mut out = String::new();
        sample(
            &mut out,
            "chartsync_satellite_pending_push",
            "gauge",
            "Records with local changes central has not acknowledged.",
            pending as f64,
        );
        sample(
            &mut out,
            "chartsync_satellite_open_conflicts",
            "gauge",
            "Conflicts waiting for a clinician.",
            conflicts as f64,
        );
        let aside = sat.db.set_aside_count().map_err(|e| ApiError::internal(&e))?;
        sample(
            &mut out,
            "chartsync_satellite_set_aside_records",
            "gauge",
            "Records that could not be stored or merged here, set aside (see `chartsync satellite status`).",
            aside as f64,
        );
        for run in sat.db.run_totals().map_err(|e| ApiError::internal(&e))? {
            let job = run.job.replace('-', "_");
            if let Some(t) = run.last_success {
                sample(
                    &mut out,
                    &format!("chartsync_satellite_{job}_last_success_seconds"),
                    "gauge",
                    "Unix time of the last successful run.",
                    t as f64,
                );
            }
            if let Some(gap) = crate::words::schedule_gap(&sat.config, &run.job) {
                sample(
                    &mut out,
                    &format!("chartsync_satellite_{job}_schedule_seconds"),
                    "gauge",
                    "Longest gap between two scheduled runs (alert when the last success is much older).",
                    gap as f64,
                );
            }
            sample(
                &mut out,
                &format!("chartsync_satellite_{job}_records_total"),
                "counter",
                "Records moved by successful runs.",
                run.records as f64,
            );
            sample(
                &mut out,
                &format!("chartsync_satellite_{job}_bytes_total"),
                "counter",
                "Bytes on the wire of successful runs.",
                run.bytes as f64,
            );
        }
        if let Ok(free) = chartsync_common::disk::free_space(&sat.config.data_dir) {
            sample(
                &mut out,
                "chartsync_satellite_disk_free_bytes",
                "gauge",
                "Bytes free on the data folder's file system.",
                free.bytes as f64,
            );
            if let Some(inodes) = free.inodes {
                sample(
                    &mut out,
                    "chartsync_satellite_disk_free_inodes",
                    "gauge",
                    "Files that can still be created on the data folder's file system.",
                    inodes as f64,
                );
            }
        }
        sat.http.render(&mut out);
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        )
            .into_response())
    })
    .await
}

async fn openapi(api_token_set: bool) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        chartsync_http::openapi_document("satellite", api_token_set),
    )
        .into_response()
}
