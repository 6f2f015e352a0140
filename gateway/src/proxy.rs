//! The `/mcp` endpoint: one client request, through these phases in order:
//!
//! 1. edge checks — Host/Origin (403), method (405), Accept (406), Content-Type (415),
//!    body size (413), JSON-RPC shape (400);
//! 2. era — session era (2025-03-26 … 2025-11-25) or stateless era (2026-07-28);
//! 3. routing key — a minted session id for `initialize`, the client's `Mcp-Session-Id`
//!    afterwards; in the stateless era (checked first against the 2026-07-28 header rules, so
//!    a malformed request never reaches a node) what the call needs ([`crate::affinity`]):
//!    any node, the shared node, its task's, or its client's correlation key;
//! 4. forward to the owner (one retry after a 421) and stream the answer back; a stateless
//!    answer teaches the gateway what such calls need, and hands a newly issued key out.

use crate::affinity;
use crate::broken;
use crate::checks;
use crate::error::ProxyError;
use crate::forward::{self, Route};
use crate::metrics;
use crate::{Gateway, Worker};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use shardgate_protocol::internal;
use shardgate_protocol::internal::ANONYMOUS;
use shardgate_protocol::internal::Placement;
use shardgate_protocol::mcp::{self, BodyError, Era, Message, RequestId};
use shardgate_protocol::metered;
use shardgate_protocol::reply;
use shardgate_protocol::stateless_checks;
use shardgate_protocol::traces;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// `/mcp`: in a span that continues the client's trace while traces are on.
pub async fn mcp(State(worker): State<Arc<Worker>>, req: Request) -> Response {
    let span = traces::request("gateway.request", req.method(), req.headers());
    answer(worker, req).instrument(span).await
}

/// Serves the request, counts and logs it.
async fn answer(worker: Arc<Worker>, req: Request) -> Response {
    let started = Instant::now();
    let gw = &worker.gw;
    let (method, proto) = (req.method().clone(), metrics::proto_label(req.version()));
    // What only the access log shows is noted only when it is written.
    let logged = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO);
    let mut seen = Seen {
        logged,
        trace: logged.then(traces::trace_id).flatten(),
        ..Seen::default()
    };
    let (resp, era) = match handle(&worker, req, &mut seen).await {
        Ok(ok) => ok,
        Err((e, id)) => {
            gw.metrics
                .errors
                .with_label_values(&[e.label(), blame_label(&e)])
                .inc();
            tracing::debug!(error = %e, retry_safe = e.retry_safe(), "request refused");
            let mut resp = reply::rpc_error(e.status(), id.as_ref(), &e.rpc_error());
            if let ProxyError::MethodNotAllowed(allow) = e {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            if let ProxyError::Auth(refusal) = &e
                && let Some(challenge) = gw.auth.challenge(refusal)
            {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            if let ProxyError::RateLimited(limited) = &e {
                gw.metrics
                    .rate_limited
                    .with_label_values(&[limited.by])
                    .inc();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, limited.retry_after_secs().into());
            }
            (resp, None)
        }
    };
    let era = metered::era_label(era);
    let status = resp.status();
    traces::answered(era, seen.class, status);
    gw.metrics
        .requests
        .with_label_values(&[
            proto,
            metrics::method_label(&method),
            era,
            seen.class,
            status.as_str(),
        ])
        .inc();
    let elapsed = started.elapsed();
    gw.metrics
        .latency
        .with_label_values(&[era, seen.class])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: ACCESS_LOG,
        principal = seen.principal.as_deref().unwrap_or("-"),
        era,
        method = %method,
        class = seen.class,
        session = seen.session.as_deref().unwrap_or("-"),
        node = seen.node.as_deref().unwrap_or("-"),
        status = status.as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0,
        trace = seen.trace.as_deref().unwrap_or("-"),
    );
    let mut resp = metered::meter(resp, &gw.metrics.sent_bytes, &gw.metrics.sse_streams_open);
    if let Some(alt_svc) = &gw.alt_svc {
        resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
    }
    resp
}

fn blame_label(e: &ProxyError) -> &'static str {
    match e.blame() {
        crate::error::Blame::Client => "client",
        crate::error::Blame::Gateway => "gateway",
        crate::error::Blame::Node => "node",
    }
}

type Refused = (ProxyError, Option<RequestId>);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the access log line and the metrics say of a request, learnt as it is served.
struct Seen {
    /// The method's class ([`metered::body_class`]).
    class: &'static str,
    /// Whether the access log line is written: the fields below are noted only then.
    logged: bool,
    principal: Option<String>,
    /// The start of the session id: enough to find it in `shardgate sessions`, not enough to
    /// use it.
    session: Option<String>,
    /// The node the request was sent to.
    node: Option<String>,
    /// The trace the request is part of, while traces are exported.
    trace: Option<String>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            class: "none",
            logged: false,
            principal: None,
            session: None,
            node: None,
            trace: None,
        }
    }
}

impl Seen {
    /// Notes where `route` sends the request: the owner of its key in the current view and,
    /// in the session era, the start of its session id.
    fn routed(&mut self, gw: &Gateway, route: &Route, era: Era) {
        if !self.logged {
            return;
        }
        self.node = gw
            .ring
            .current()
            .owner(route.key.as_bytes())
            .map(|m| m.id.to_string());
        if era == Era::Session {
            self.session = Some(route.key.chars().take(LOGGED_ID_CHARS).collect());
        }
    }
}

/// The target of the access log: one line per request at `info`, silenced with
/// `LOG_LEVEL=info,shardgate::access=off`.
const ACCESS_LOG: &str = "shardgate::access";

/// How much of a session id the access log shows.
const LOGGED_ID_CHARS: usize = 8;

/// Serves one request, noting in `seen` what it learns on the way.
async fn handle(
    worker: &Worker,
    req: Request,
    seen: &mut Seen,
) -> Result<(Response, Option<Era>), Refused> {
    let gw = &*worker.gw;
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let refuse = |e: ProxyError| (e, None);
    // Before anything costs more than this: a client over its rate is not even verified.
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        gw.rate
            .check_ip(peer.ip())
            .map_err(|l| refuse(ProxyError::RateLimited(l)))?;
    }
    checks::host_and_origin(
        &gw.config,
        headers,
        parts.uri.authority().map(|a| a.as_str()),
    )
    .map_err(refuse)?;
    let principal = gw
        .auth
        .principal(headers)
        .await
        .map_err(|r| refuse(ProxyError::Auth(r)))?;
    if seen.logged {
        seen.principal = Some(principal.clone());
    }
    if principal != ANONYMOUS {
        gw.rate
            .check_principal(&principal)
            .map_err(|l| refuse(ProxyError::RateLimited(l)))?;
    }
    let version = header(headers, mcp::HEADER_PROTOCOL_VERSION);
    match parts.method {
        Method::POST => {}
        Method::GET | Method::DELETE => {
            if mcp::classify_era(version, None) == Era::Stateless {
                return Err(refuse(ProxyError::MethodNotAllowed("POST")));
            }
            seen.class = metered::bodiless_class(&parts.method);
            if parts.method == Method::GET {
                checks::accept(&parts.method, headers).map_err(refuse)?;
            }
            let Some(sid) = header(headers, mcp::HEADER_SESSION_ID) else {
                return Err(refuse(ProxyError::MissingSession));
            };
            let route = Route {
                key: sid.to_owned(),
                new_session: None,
                principal,
                scope: None,
            };
            seen.routed(gw, &route, Era::Session);
            let (resp, _) = send(
                worker,
                &parts.method,
                headers,
                Bytes::new(),
                &route,
                Vec::new(),
            )
            .await?;
            return Ok((resp, Some(Era::Session)));
        }
        _ => return Err(refuse(ProxyError::MethodNotAllowed("GET, POST, DELETE"))),
    }
    checks::accept(&parts.method, headers).map_err(refuse)?;
    checks::content_type(headers).map_err(refuse)?;
    checks::declared_length(headers, gw.config.max_body_bytes).map_err(refuse)?;
    let bytes = read_body(body, gw.config.max_body_bytes)
        .await
        .map_err(refuse)?;
    gw.metrics.received_bytes.inc_by(bytes.len() as u64);
    let parsed = mcp::Body::parse(&bytes).map_err(|e| match e {
        BodyError::Parse => refuse(ProxyError::Parse),
        BodyError::Invalid => refuse(ProxyError::Invalid),
    })?;
    seen.class = metered::body_class(&parsed);
    let first = parsed.messages.first().map(|(_, v)| v);
    let era = mcp::classify_era(version, first);
    let (route, stateless) = match era {
        Era::Session => (session_route(&parsed, headers, principal)?, None),
        Era::Stateless => {
            let (route, call) = stateless_route(gw, &parsed, headers, principal)?;
            (route, Some(call))
        }
    };
    seen.routed(gw, &route, era);
    // A failure past this point still answers the request it failed: with its id.
    let (mut resp, placement) = send(
        worker,
        &parts.method,
        headers,
        bytes,
        &route,
        requests(&parsed),
    )
    .await
    .map_err(|(e, _)| (e, request_id(&parsed)))?;
    if let Some(call) = stateless {
        if let (Some(method), Some(placement)) = (call.method, placement) {
            gw.affinity.learn(method, call.name, placement);
        }
        if let Some(key) = &call.issued {
            affinity::hand_out(resp.headers_mut(), key, gw.config.tls.is_some());
        }
    }
    Ok((resp, Some(era)))
}

fn session_route(
    parsed: &mcp::Body,
    headers: &HeaderMap,
    principal: String,
) -> Result<Route, Refused> {
    if parsed.initialize().is_some() {
        let sid = shardgate_protocol::session_id::mint();
        return Ok(Route {
            key: sid.clone(),
            new_session: Some(sid),
            principal,
            scope: None,
        });
    }
    let Some(sid) = header(headers, mcp::HEADER_SESSION_ID) else {
        return Err((ProxyError::MissingSession, request_id(parsed)));
    };
    Ok(Route {
        key: sid.to_owned(),
        new_session: None,
        principal,
        scope: None,
    })
}

/// A stateless-era call, for what its answer teaches and owes.
struct StatelessCall<'a> {
    /// The request's method and name (`None` for a body without a request).
    method: Option<&'a str>,
    name: Option<&'a str>,
    /// A key issued to the client with this answer.
    issued: Option<String>,
}

fn stateless_route<'a>(
    gw: &Gateway,
    parsed: &'a mcp::Body,
    headers: &HeaderMap,
    principal: String,
) -> Result<(Route, StatelessCall<'a>), Refused> {
    for (msg, value) in &parsed.messages {
        if let Message::Request { id, .. } = msg {
            stateless_checks::check(headers, value)
                .map_err(|r| (ProxyError::Stateless(r), Some(id.clone())))?;
        }
    }
    let request = parsed.messages.iter().find_map(|(m, v)| match m {
        Message::Request { .. } => Some(v),
        _ => None,
    });
    let method = request.and_then(|v| v.get("method")?.as_str());
    let name = method
        .and_then(stateless_checks::name_field)
        .and_then(|field| request?.get("params")?.get(field)?.as_str());
    let task = method
        .filter(|m| m.starts_with("tasks/"))
        .and_then(|_| task_id(headers, request));
    let ring = gw.ring.current();
    let routed = match method {
        Some(method) => gw.affinity.route(
            &ring,
            &affinity::Request {
                method,
                name,
                task: task.as_deref(),
                // A client without a verified principal is known by the key it was issued.
                principal: (principal != ANONYMOUS).then_some(principal.as_str()),
                key: affinity::presented_key(
                    headers,
                    request.and_then(|v| v.get("params")?.get("requestState")?.as_str()),
                ),
            },
        ),
        // A notification or a response: the node answers it without its upstream.
        None => gw.affinity.route_anywhere(&ring),
    };
    let route = Route {
        key: routed.key,
        new_session: None,
        principal,
        scope: routed.scope,
    };
    let call = StatelessCall {
        method,
        name,
        issued: routed.issued,
    };
    Ok((route, call))
}

/// Protected Resource Metadata (RFC 9728), from the configured resource URI; 404 when auth
/// is off.
pub async fn resource_metadata(State(worker): State<Arc<Worker>>) -> Response {
    match worker.gw.auth.metadata() {
        Some(doc) => {
            let mut resp = Response::new(Body::from(doc));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        None => reply::refuse(StatusCode::NOT_FOUND, "this server takes no bearer tokens"),
    }
}

/// The task a `tasks/*` request is about: `Mcp-Name` (SEP-2663), else `params.taskId`.
fn task_id(headers: &HeaderMap, request: Option<&Value>) -> Option<String> {
    header(headers, mcp::HEADER_NAME)
        .and_then(|raw| stateless_checks::decode_header_value(raw.trim()))
        .or_else(|| {
            let id = request?.get("params")?.get("taskId")?.as_str()?;
            Some(id.to_owned())
        })
        .filter(|id| !id.is_empty())
}

/// The id of a POST's only request, which an error about it answers.
fn single(requests: &[RequestId]) -> Option<RequestId> {
    match requests {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The ids of the requests a POST carries.
fn requests(parsed: &mcp::Body) -> Vec<RequestId> {
    parsed
        .messages
        .iter()
        .filter_map(|(m, _)| match m {
            Message::Request { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn request_id(parsed: &mcp::Body) -> Option<RequestId> {
    parsed.messages.iter().find_map(|(m, _)| match m {
        Message::Request { id, .. } => Some(id.clone()),
        _ => None,
    })
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

/// Forwards the request; returns the answer and, for a stateless-era call, what the node
/// said such calls need. An SSE answer that breaks before the client can resume it ends with
/// an explicit error for each of `requests` not yet answered ([`broken`]).
async fn send(
    worker: &Worker,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
    route: &Route,
    requests: Vec<RequestId>,
) -> Result<(Response, Option<Placement>), Refused> {
    let gw = &*worker.gw;
    let on_misdirected = |retried: bool| {
        gw.metrics
            .misdirected
            .with_label_values(&[if retried { "yes" } else { "no" }])
            .inc();
    };
    let resp = worker
        .forwarder
        .forward(&gw.ring, method, headers, body, route, on_misdirected)
        .await
        .map_err(|e| (e, None))?;
    let (mut parts, body) = resp.into_parts();
    let placement = parts
        .headers
        .get(internal::PLACEMENT)
        .and_then(|v| v.to_str().ok())
        .and_then(Placement::parse);
    forward::strip_response_headers(&mut parts.headers);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if parts.status == StatusCode::MISDIRECTED_REQUEST {
        parts.headers.remove(internal::EPOCH);
    }
    if !is_sse {
        // A JSON answer is small: read whole before it goes out, so that a node lost halfway
        // through it leaves the client an explicit error, not a connection closed mid-answer.
        let body = body.collect().await.map_err(|e| {
            let ring = gw.ring.current();
            let node = ring
                .owner(route.key.as_bytes())
                .map_or_else(|| "the owner".to_owned(), |m| m.id.to_string());
            let error = ProxyError::NodeUnreachable {
                node,
                error: format!("its answer broke off: {e}"),
            };
            (error, single(&requests))
        })?;
        let body = Body::from(body.to_bytes());
        return Ok((Response::from_parts(parts, body), placement));
    }
    parts
        .headers
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    // A stream's end can reach us as an empty data frame of its own; passed on as data, it
    // would go out as an empty HTTP/2 DATA frame that ends nothing, and HTTP/2 clients close a
    // connection after 100 of those (a flood defence).
    let data = body
        .into_data_stream()
        .filter(|chunk| std::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())));
    let body = match requests.is_empty() {
        true => Body::from_stream(data),
        false => Body::from_stream(broken::guard(data, requests)),
    };
    Ok((Response::from_parts(parts, body), placement))
}

#[cfg(test)]
mod tests;
