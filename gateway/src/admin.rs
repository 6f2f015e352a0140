//! The admin listener: liveness, readiness (a ring with an active member is known), the
//! membership view routed by, and Prometheus metrics. Kept off the client port so it is never exposed with it.

use crate::Gateway;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use std::sync::Arc;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/membership", get(membership))
        .with_state(gw)
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
    gw.metrics.ring_epoch.set(gw.ring.current().epoch() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}
