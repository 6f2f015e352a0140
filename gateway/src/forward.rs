//! Forwarding to the owning node over pooled h2c, and the one retry a 421 allows.
//!
//! A node answers 421 before it does anything with a request, so re-sending after a 421 is
//! safe; nothing else is retried, because a node that took a request may already have acted on
//! it. The response body is handed back as it arrives: SSE streams pass through unbuffered.

use crate::error::ProxyError;
use crate::ring_view::RingView;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shardgate_node::internal;
use shardgate_raft::{Member, Membership};
use std::time::Duration;

/// How long a membership refresh may take before the 421 is passed on as unavailable.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus `host`, which the
/// client sets for the node's address.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the gateway decided about a request: where it goes and what the node must be told.
pub struct Route {
    pub key: String,
    /// Set for `initialize`: the session id the gateway minted.
    pub new_session: Option<String>,
    pub principal: String,
}

pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_while_idle(true)
            .build(connector);
        Forwarder { client }
    }

    /// Sends the request to the key's owner; on 421 adopts the refusing node's newer view and
    /// tries the new owner once.
    pub async fn forward(
        &self,
        ring: &RingView,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
        on_misdirected: impl Fn(bool),
    ) -> Result<Response<Incoming>, ProxyError> {
        let view = ring.current();
        let owner = view
            .owner(route.key.as_bytes())
            .ok_or(ProxyError::NoNodes)?
            .clone();
        let resp = self
            .send(&owner, view.epoch(), method, headers, body.clone(), route)
            .await?;
        if resp.status() != StatusCode::MISDIRECTED_REQUEST {
            return Ok(resp);
        }
        if let Some(newer) = self.membership_of(&owner).await {
            ring.adopt(newer);
        }
        let view = ring.current();
        let next = view
            .owner(route.key.as_bytes())
            .ok_or(ProxyError::NoNodes)?
            .clone();
        on_misdirected(next.id != owner.id);
        if next.id == owner.id {
            return Err(ProxyError::Misdirected {
                node: owner.id.to_string(),
            });
        }
        tracing::debug!(from = %owner.id, to = %next.id, epoch = view.epoch(), "retrying at the new owner");
        self.send(&next, view.epoch(), method, headers, body, route)
            .await
    }

    async fn send(
        &self,
        node: &Member,
        epoch: u64,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
    ) -> Result<Response<Incoming>, ProxyError> {
        let uri = format!("http://{}/mcp", node.addr);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| unreachable_node(node, e))?;
        let out = req.headers_mut();
        for (name, value) in headers {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n)
                || n == "host"
                || n == "content-length"
                || internal::ALL.contains(&n)
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        let trusted = [
            (internal::ROUTE_KEY, Some(route.key.as_str())),
            (internal::NEW_SESSION, route.new_session.as_deref()),
            (internal::PRINCIPAL, Some(route.principal.as_str())),
        ];
        for (name, value) in trusted {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                out.insert(name, v);
            }
        }
        out.insert(internal::EPOCH, HeaderValue::from(epoch));
        self.client
            .request(req)
            .await
            .map_err(|e| unreachable_node(node, e))
    }

    /// Long-polls the node at `addr` for a view newer than `after`, for up to `wait`; `None`
    /// if it does not answer.
    pub async fn poll_membership(
        &self,
        addr: &str,
        after: u64,
        wait: Duration,
    ) -> Option<Membership> {
        let url = format!(
            "http://{addr}{}?after={after}&wait_ms={}",
            internal::MEMBERSHIP_PATH,
            wait.as_millis()
        );
        self.fetch_membership(url, wait + REFRESH_TIMEOUT).await
    }

    /// Asks a node for its membership view; `None` if it does not answer in time.
    async fn membership_of(&self, node: &Member) -> Option<Membership> {
        let url = format!("http://{}{}", node.addr, internal::MEMBERSHIP_PATH);
        self.fetch_membership(url, REFRESH_TIMEOUT).await
    }

    async fn fetch_membership(&self, url: String, within: Duration) -> Option<Membership> {
        let req = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let fetch = async {
            let resp = self.client.request(req).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice(&body).ok()
        };
        tokio::time::timeout(within, fetch).await.ok()?
    }
}

fn unreachable_node(node: &Member, e: impl std::fmt::Display) -> ProxyError {
    ProxyError::NodeUnreachable {
        node: node.id.to_string(),
        error: e.to_string(),
    }
}

/// Response headers that must not reach the client: hop-by-hop ones and our own.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP.iter().chain(internal::ALL.iter()) {
        headers.remove(*name);
    }
}
