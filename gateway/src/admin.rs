//! The admin listener: liveness, readiness (a ring with an active member is known), the
//! membership view routed by, Prometheus metrics, and the status page ([`crate::status`]).
//! Kept off the client port so it is never exposed with it.

use crate::Gateway;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use shardgate_protocol::cluster_client::ClusterClient;
use std::sync::Arc;

/// The admin routes; `nodes` asks the members for the status page's reports.
pub fn router(gw: Arc<Gateway>, nodes: ClusterClient) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/membership", get(membership))
        .with_state(gw.clone())
        .merge(crate::status::router(gw, nodes))
}

async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.ring.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no ring with an active node yet",
        )
            .into_response()
    }
}

/// The view this gateway routes by, as JSON.
async fn membership(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(gw.ring.current().membership().clone()).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    gw.metrics.view(gw.ring.current().membership());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}
