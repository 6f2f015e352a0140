//! The node's three listeners, each HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN under mTLS):
//! - the **session** listener: `/mcp`, the client traffic gateways forward;
//! - the **internal** listener: Raft and cluster RPCs, the membership view gateways follow,
//!   `status`, `drain` and the reports of [`crate::report`] for operators;
//! - the **admin** listener: `/health`, `/health/ready`, `/metrics`, which probes and scrapers
//!   reach without cluster credentials and which changes nothing.
//!
//! The session and internal listeners take only authenticated requests ([`crate::auth`]).
//!
//! Request path on the session listener: authenticate → parse the body → pick the era → check
//! that this node owns the routing key under a view at least as new as the gateway's (else 421
//! with our epoch) → the session-era or stateless-era handler.

use crate::auth::{Guard, Hop};
use crate::metrics::METRICS;
use crate::session_era;
use crate::state::NodeState;
use crate::stateless_era;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use shardgate_protocol::internal;
use shardgate_protocol::listener::{ListenerLimits, Workers};
use shardgate_protocol::mcp::{self, BodyError, Era, RpcError};
use shardgate_protocol::metered;
use shardgate_protocol::reply;
use shardgate_protocol::traces;
use shardgate_raft::Ring;
use shardgate_raft::consensus::ConsensusError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Largest body a node takes; the gateway enforces the client-facing limit before this.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// The longest a membership long poll is held.
const MAX_MEMBERSHIP_WAIT: Duration = Duration::from_secs(60);
/// How long a request routed under a newer view than this node's waits for the node to apply
/// that view before ownership is decided: a couple of heartbeats normally, so this is only
/// reached by a node that is cut off, which then answers 503.
const CATCH_UP: Duration = Duration::from_secs(2);

/// `/mcp`: what gateways forward.
pub fn session_router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/mcp", get(mcp_get).post(mcp_post).delete(mcp_delete))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Raft, membership, status and drain: what nodes, gateways and operators ask.
pub fn internal_router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(internal::MEMBERSHIP_PATH, get(membership))
        .route(internal::RAFT_PATH, post(raft_rpc))
        .route(internal::STATUS_PATH, get(status))
        .route(internal::DRAIN_PATH, post(drain))
        .route(internal::RELEASE_PATH, post(release))
        .route(internal::REPORT_PATH, get(crate::report::node))
        .route(internal::SESSIONS_PATH, get(crate::report::sessions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Probes and scrapes: read-only, unauthenticated.
pub fn admin_router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The node's listeners, bound before the node starts so that callers learn the ports.
pub struct Listeners {
    pub session: TcpListener,
    pub internal: TcpListener,
    pub admin: TcpListener,
    pub limits: NodeListenerLimits,
}

/// The connection limits and timeouts of each of the node's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeListenerLimits {
    pub session: ListenerLimits,
    pub internal: ListenerLimits,
    pub admin: ListenerLimits,
}

impl Default for NodeListenerLimits {
    fn default() -> Self {
        let session = ListenerLimits::NODE_SESSION;
        NodeListenerLimits {
            session,
            internal: ListenerLimits::NODE_INTERNAL.with_timeouts_of(&session),
            admin: ListenerLimits::ADMIN.with_timeouts_of(&session),
        }
    }
}

/// Serves all three listeners until `shutdown` is cancelled, then finishes the requests in
/// flight. Session connections are served on `workers`, the others on the caller's runtime.
pub async fn serve(
    listeners: Listeners,
    state: Arc<NodeState>,
    guard: &Guard,
    workers: &Workers,
    shutdown: CancellationToken,
) {
    let limits = listeners.limits;
    let router = guard.protect(session_router(state.clone()), Hop::Session);
    let session = shardgate_protocol::listener::serve_on(
        listeners.session,
        limits.session,
        workers,
        |_| router.clone(),
        guard.tls(),
        shutdown.clone(),
    );
    let internal = shardgate_protocol::listener::serve(
        listeners.internal,
        limits.internal,
        guard.protect(internal_router(state.clone()), Hop::Internal),
        guard.tls(),
        shutdown.clone(),
    );
    let admin = shardgate_protocol::listener::serve(
        listeners.admin,
        limits.admin,
        admin_router(state),
        None,
        shutdown,
    );
    tokio::join!(session, internal, admin);
}

/// Ready for traffic: a member of its own view, and serving (it hears from a quorum).
async fn ready(State(node): State<Arc<NodeState>>) -> Response {
    let member = node.ring().membership().member(&node.id).is_some();
    if member && node.serving() && node.store_healthy() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not a serving member of the cluster, or its session store is unavailable",
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
struct MembershipQuery {
    after: Option<u64>,
    wait_ms: Option<u64>,
}

/// The current view, or, with `after`, the first view newer than that epoch (long poll).
async fn membership(
    State(node): State<Arc<NodeState>>,
    Query(q): Query<MembershipQuery>,
) -> Response {
    if let Some(after) = q.after {
        let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_MEMBERSHIP_WAIT);
        let mut views = node.ring.subscribe();
        // Timing out is an answer too: the current view, no newer than `after`.
        let _ = tokio::time::timeout(wait, views.wait_for(|r| r.epoch() > after)).await;
    }
    let ring = node.ring();
    axum::Json(ring.membership().clone()).into_response()
}

fn fixed_membership(node: &NodeState) -> Response {
    reply::refuse(
        StatusCode::NOT_FOUND,
        &format!(
            "node {} has a fixed membership; there is no consensus",
            node.id
        ),
    )
}

async fn raft_rpc(
    State(node): State<Arc<NodeState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(consensus) = &node.consensus else {
        return fixed_membership(&node);
    };
    match consensus.rpc(&name, &body).await {
        Ok(answer) => ([(http::header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(e @ ConsensusError::ForeignCluster { .. }) => {
            reply::refuse(StatusCode::FORBIDDEN, &e.to_string())
        }
        Err(e @ ConsensusError::UnknownRpc(_)) => {
            reply::refuse(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e @ ConsensusError::BadRequest { .. }) => {
            reply::refuse(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => reply::refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn status(State(node): State<Arc<NodeState>>) -> Response {
    match &node.consensus {
        Some(c) => axum::Json(c.status()).into_response(),
        None => fixed_membership(&node),
    }
}

async fn drain(State(node): State<Arc<NodeState>>) -> Response {
    if node.consensus.is_none() {
        return fixed_membership(&node);
    }
    node.drain.cancel();
    StatusCode::ACCEPTED.into_response()
}

/// Hands a session over to the node that asks (`RELEASE_PATH`); answers once it is let go.
async fn release(State(node): State<Arc<NodeState>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<internal::Release>(&body) {
        Ok(r) if node.release(&r.session, &r.owner, r.epoch).await => {
            StatusCode::OK.into_response()
        }
        Ok(_) => (
            StatusCode::CONFLICT,
            "this node's view of the membership does not give the session to the asker",
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("expected a release: {e}")).into_response(),
    }
}

/// This node's part in Raft, as gauges (and the leader changes it saw, as a counter).
fn raft_gauges(registry: &prometheus::Registry, raft: shardgate_raft::consensus::Gauges) {
    use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
    use shardgate_raft::consensus::Role;
    let role = raft.role;
    let gauges = [
        (
            "shardgate_node_raft_term",
            "the node's current Raft term",
            raft.term,
        ),
        (
            "shardgate_node_raft_leader",
            "1 on the Raft leader",
            u64::from(role == Role::Leader),
        ),
        (
            "shardgate_node_raft_has_leader",
            "1 while this node knows a leader",
            u64::from(raft.has_leader),
        ),
        (
            "shardgate_node_raft_commit_index",
            "last log index applied to the membership",
            raft.applied,
        ),
    ];
    for (name, help, value) in gauges {
        if let Ok(g) = IntGauge::new(name, help) {
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            let _ = registry.register(Box::new(g));
        }
    }
    if let Ok(roles) = IntGaugeVec::new(
        Opts::new(
            "shardgate_node_raft_role",
            "1 for the node's Raft role, 0 for the others",
        ),
        &["role"],
    ) {
        for each in [
            Role::Leader,
            Role::Follower,
            Role::Candidate,
            Role::Learner,
            Role::Shutdown,
        ] {
            roles
                .with_label_values(&[each.as_str()])
                .set(i64::from(each == role));
        }
        let _ = registry.register(Box::new(roles));
    }
    if let Ok(c) = IntCounter::new(
        "shardgate_node_raft_leader_changes_total",
        "times this node saw the Raft leader change",
    ) {
        c.inc_by(raft.leader_changes);
        let _ = registry.register(Box::new(c));
    }
}

/// Prometheus text: what this node holds, against its limits.
async fn metrics(State(node): State<Arc<NodeState>>) -> Response {
    use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
    let registry = Registry::new();
    let budgets = &node.budgets;
    let gauges = [
        (
            "shardgate_node_sessions",
            "session-era sessions held",
            node.sessions.len(),
        ),
        (
            "shardgate_node_calls_in_flight",
            "upstream calls running",
            node.calls_in_flight.load(Ordering::Relaxed),
        ),
        (
            "shardgate_node_stateless_calls",
            "stateless-era calls served",
            node.affinity.served() as usize,
        ),
        (
            "shardgate_node_ring_epoch",
            "epoch of the node's ring",
            node.ring().epoch() as usize,
        ),
        (
            "shardgate_node_requests_in_flight",
            "client requests being served, both eras (limits.requests)",
            budgets.requests.used(),
        ),
        (
            "shardgate_node_replay_bytes",
            "bytes of event streams kept for replay (limits.replay_bytes)",
            budgets.replay.used(),
        ),
        (
            "shardgate_node_parked_calls",
            "calls parked for their clients' answers (limits.parked_calls)",
            budgets.parked.used(),
        ),
        (
            "shardgate_node_stdio_processes",
            "stdio upstream processes running (limits.stdio_processes)",
            budgets.processes.used(),
        ),
        (
            "shardgate_node_client_requests_pending",
            "requests sent to session-era clients and not answered yet",
            node.sessions.pending_requests(),
        ),
    ];
    for (name, help, value) in gauges {
        if let Ok(g) = IntGauge::new(name, help) {
            g.set(value as i64);
            let _ = registry.register(Box::new(g));
        }
    }
    if let Some(durable) = &node.durable {
        let counts = &durable.counts;
        let totals = [
            (
                "shardgate_node_store_batches_total",
                "batches the session writer wrote",
                &counts.batches,
            ),
            (
                "shardgate_node_store_writes_total",
                "store calls those batches made",
                &counts.writes,
            ),
            (
                "shardgate_node_takeovers_total",
                "sessions and stateless keys taken over from the store",
                &counts.takeovers,
            ),
            (
                "shardgate_node_sessions_lost_total",
                "sessions dropped because the store refused or could not take their writes",
                &counts.lost,
            ),
            (
                "shardgate_node_sessions_passivated_total",
                "idle sessions that left memory, to be loaded on their next request",
                &counts.passivated,
            ),
        ];
        for (name, help, value) in totals {
            if let Ok(c) = prometheus::IntCounter::new(name, help) {
                c.inc_by(value.load(Ordering::Relaxed));
                let _ = registry.register(Box::new(c));
            }
        }
        if let Ok(g) = IntGauge::new(
            "shardgate_node_store_healthy",
            "1 while the session store takes this node's writes",
        ) {
            g.set(i64::from(durable.healthy()));
            let _ = registry.register(Box::new(g));
        }
    }
    if let Some(auditor) = &node.auditor {
        let totals = [
            (
                "shardgate_node_audit_written_total",
                "tool calls written to the audit",
                auditor.written(),
            ),
            (
                "shardgate_node_audit_dropped_total",
                "tool calls left out of the audit: its queue was full, or PostgreSQL did not \
                 take them in time",
                auditor.dropped(),
            ),
        ];
        for (name, help, value) in totals {
            if let Ok(c) = prometheus::IntCounter::new(name, help) {
                c.inc_by(value);
                let _ = registry.register(Box::new(c));
            }
        }
        if let Ok(g) = IntGauge::new(
            "shardgate_node_audit_queued",
            "tool calls waiting to be written to the audit",
        ) {
            g.set(i64::try_from(auditor.queued()).unwrap_or(i64::MAX));
            let _ = registry.register(Box::new(g));
        }
    }
    if let Ok(limits) = IntGaugeVec::new(
        Opts::new("shardgate_node_limit", "the node's [limits], by key"),
        &["key"],
    ) {
        for (key, value) in budgets.limits.entries() {
            limits
                .with_label_values(&[key])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let _ = registry.register(Box::new(limits));
    }
    if let Some(consensus) = &node.consensus {
        raft_gauges(&registry, consensus.gauges());
    }
    let mut families = registry.gather();
    families.extend(METRICS.gather());
    families.extend(shardgate_store::measured::gather());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %e, "/metrics is cut short");
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The ring to decide ownership by: this node's, once it is at least as new as the view the
/// gateway routed under. A node that lags behind waits for Raft to bring it the newer view
/// (it never takes the epoch on the gateway's word); `None` when it could not catch up in time.
async fn ring_for(node: &NodeState, headers: &HeaderMap) -> Option<Arc<Ring>> {
    let ring = node.ring();
    let routed_under = header(headers, internal::EPOCH).and_then(|e| e.parse::<u64>().ok());
    let Some(wanted) = routed_under.filter(|&e| e > ring.epoch()) else {
        return Some(ring);
    };
    if node.consensus.is_none() {
        // A fixed membership never changes: there is nothing to wait for.
        return Some(ring);
    }
    at_least(&node.ring, wanted, CATCH_UP).await
}

/// The first ring of `views` at epoch `wanted` or later, within `within`.
async fn at_least(
    views: &watch::Sender<Arc<Ring>>,
    wanted: u64,
    within: Duration,
) -> Option<Arc<Ring>> {
    let mut views = views.subscribe();
    let caught_up = tokio::time::timeout(within, views.wait_for(|r| r.epoch() >= wanted)).await;
    match caught_up {
        Ok(Ok(ring)) => Some(ring.clone()),
        _ => None,
    }
}

/// A 503 while this node is cut off from the quorum or cannot catch up with the view the
/// request was routed under; else a 421 unless this node owns the request's routing key. The
/// key is the one the gateway routed by; a request sent to a node directly is routed by its
/// session id.
async fn misdirected(node: &NodeState, headers: &HeaderMap) -> Option<Response> {
    // The deliberately broken build (see `durable.rs`) never turns a request away.
    if cfg!(feature = "unfenced") {
        return None;
    }
    if !node.serving() {
        return Some(not_serving(&format!(
            "node {} cannot reach a quorum of the cluster and serves nothing until it can",
            node.id
        )));
    }
    let key = header(headers, internal::ROUTE_KEY)
        .or_else(|| header(headers, internal::NEW_SESSION))
        .or_else(|| header(headers, mcp::HEADER_SESSION_ID));
    let Some(key) = key else {
        // Nothing to route by: a direct, sessionless request. Any node may answer it.
        return None;
    };
    let Some(ring) = ring_for(node, headers).await else {
        return Some(not_serving(&format!(
            "node {} has not caught up with the cluster's membership; retry",
            node.id
        )));
    };
    if ring.owns(&node.id, key.as_bytes()) {
        return None;
    }
    let owner = ring.owner(key.as_bytes()).map(|m| m.id.to_string());
    tracing::debug!(key, owner = ?owner, epoch = ring.epoch(), "misdirected request");
    let mut resp = reply::refuse(
        StatusCode::MISDIRECTED_REQUEST,
        &format!(
            "node {} does not own this key at epoch {}",
            node.id,
            ring.epoch()
        ),
    );
    resp.headers_mut()
        .insert(internal::EPOCH, HeaderValue::from(ring.epoch()));
    METRICS.misdirected.inc();
    Some(resp)
}

/// 503 for a request this node did nothing with: a gateway holds it and sends it again.
fn not_serving(message: &str) -> Response {
    let mut resp = reply::refuse(StatusCode::SERVICE_UNAVAILABLE, message);
    resp.headers_mut()
        .insert(internal::NOT_SERVING, HeaderValue::from_static("1"));
    resp
}

/// Counts `resp` (the answer to a request that came in at `started`) and meters its body.
fn measured(resp: Response, era: Option<Era>, class: &'static str, started: Instant) -> Response {
    let era = metered::era_label(era);
    traces::answered(era, class, resp.status());
    METRICS
        .requests
        .with_label_values(&[era, class, resp.status().as_str()])
        .inc();
    METRICS
        .latency
        .with_label_values(&[era, class])
        .observe(started.elapsed().as_secs_f64());
    metered::meter(resp, &METRICS.sent_bytes, &METRICS.sse_streams_open)
}

async fn mcp_post(State(node): State<Arc<NodeState>>, headers: HeaderMap, body: Bytes) -> Response {
    // Every request here has passed the guard (`crate::auth`), so its trace context comes
    // from a gateway.
    let span = traces::request("node.request", &Method::POST, &headers);
    serve_post(node, headers, body).instrument(span).await
}

async fn serve_post(node: Arc<NodeState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    METRICS.received_bytes.inc_by(body.len() as u64);
    let body = match mcp::Body::parse(&body) {
        Ok(b) => b,
        Err(BodyError::Parse) => {
            let resp = reply::rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::new(mcp::code::PARSE_ERROR, "Parse error: body is not JSON"),
            );
            return measured(resp, None, "none", started);
        }
        Err(BodyError::Invalid) => {
            let resp = reply::rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::new(
                    mcp::code::INVALID_REQUEST,
                    "Invalid Request: not a JSON-RPC 2.0 message",
                ),
            );
            return measured(resp, None, "none", started);
        }
    };
    let class = metered::body_class(&body);
    let era = mcp::classify_era(
        header(&headers, mcp::HEADER_PROTOCOL_VERSION),
        body.messages.first().map(|(_, v)| v),
    );
    let resp = match misdirected(&node, &headers).await {
        Some(resp) => resp,
        None => match era {
            Era::Session => session_era::post(&node, &headers, body).await,
            Era::Stateless => stateless_era::post(&node, &headers, body).await,
        },
    };
    measured(resp, Some(era), class, started)
}

/// GET and DELETE exist only in the session era; a stateless-era client gets 405.
fn stateless_refusal(headers: &HeaderMap, method: &Method) -> Option<Response> {
    let era = mcp::classify_era(header(headers, mcp::HEADER_PROTOCOL_VERSION), None);
    (era == Era::Stateless).then(|| {
        let mut resp = reply::refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not part of the 2026-07-28 revision"),
        );
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        resp
    })
}

async fn mcp_get(State(node): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    let span = traces::request("node.request", &Method::GET, &headers);
    bodiless(&node, &headers, Method::GET)
        .instrument(span)
        .await
}

async fn mcp_delete(State(node): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    let span = traces::request("node.request", &Method::DELETE, &headers);
    bodiless(&node, &headers, Method::DELETE)
        .instrument(span)
        .await
}

/// GET (a stream) or DELETE (the end of a session), measured.
async fn bodiless(node: &Arc<NodeState>, headers: &HeaderMap, method: Method) -> Response {
    let started = Instant::now();
    let class = metered::bodiless_class(&method);
    if let Some(resp) = stateless_refusal(headers, &method) {
        return measured(resp, Some(Era::Stateless), class, started);
    }
    let resp = match misdirected(node, headers).await {
        Some(resp) => resp,
        None if method == Method::GET => session_era::get(node, headers).await,
        None => session_era::delete(node, headers).await,
    };
    measured(resp, Some(Era::Session), class, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_raft::Membership;

    fn ring(epoch: u64) -> Arc<Ring> {
        Arc::new(Ring::new(Membership {
            epoch,
            ..Membership::default()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_node_waits_for_the_view_the_gateway_routed_under() {
        let views = watch::Sender::new(ring(1));
        let later = views.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.send_replace(ring(2));
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.send_replace(ring(3));
        });
        let started = tokio::time::Instant::now();
        let caught_up = at_least(&views, 3, CATCH_UP).await.expect("caught up");
        assert_eq!(caught_up.epoch(), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_cannot_catch_up_decides_nothing() {
        let views = watch::Sender::new(ring(1));
        let started = tokio::time::Instant::now();
        assert!(at_least(&views, 9, CATCH_UP).await.is_none());
        assert_eq!(started.elapsed(), CATCH_UP);
        assert_eq!(
            at_least(&views, 1, CATCH_UP).await.map(|r| r.epoch()),
            Some(1)
        );
    }
}
