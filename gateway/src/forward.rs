//! Forwarding to the owning node's session listener over pooled HTTP/2 ([`pool`]: a bounded
//! number of streams per connection), and the retries a 421 allows.
//!
//! Every request is authenticated as the node demands: over h2 with our client certificate
//! under mTLS, or over h2c with an HMAC signature over the request and its trusted headers.
//! Membership views come from nodes' internal listeners through the [`ClusterClient`], which
//! checks that each answer came from a member.
//!
//! A node answers 421 before it does anything with a request, so re-sending after a 421 is
//! safe (to the new owner, once a view names one). So is re-sending a request whose connection was refused, or closed before the request
//! was written to it (hyper cancels such a request): nothing reached the node. Such a request
//! is held (for the configured failover hold) until the ring gives its key another owner, then
//! sent there, so a client sees latency where a node died, not an error. Nothing else is
//! retried, because a node that took a request may already have acted on it; the error names
//! every cause hyper gives. The response body is handed back as it arrives: SSE streams pass
//! through unbuffered.

use crate::error::ProxyError;
use crate::ring_view::RingView;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use pool::{Failed, NodeBody, Pool};
use shardgate_protocol::causes;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::internal;
use shardgate_protocol::traces;
use shardgate_raft::{Member, Membership};
use shardgate_trust::Credentials;
use shardgate_trust::signature::{self, Signer};
use std::time::Duration;
use tracing::Instrument;

mod pool;

/// How often a held request tries its owner again while the ring has not moved its key.
const REFUSED_RETRY: Duration = Duration::from_millis(250);
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
    /// Stateless era: the correlation key whose upstream state the call runs in.
    pub scope: Option<String>,
}

pub struct Forwarder {
    /// `/mcp` traffic: h2 under mTLS, h2c under HMAC.
    client: NodeClient,
    scheme: &'static str,
    /// Signs each forwarded request under HMAC.
    signer: Option<Signer>,
    /// Membership views, from nodes' internal listeners.
    cluster: ClusterClient,
    /// How long a request for a node that refuses connections waits for its key to move.
    failover_hold: Duration,
}

impl Forwarder {
    pub fn new(credentials: &Credentials, failover_hold: Duration) -> Result<Forwarder, String> {
        let (scheme, signer) = match credentials {
            Credentials::Mtls(_) => ("https", None),
            Credentials::Hmac(signer) => ("http", Some(signer.clone())),
        };
        Ok(Forwarder {
            client: NodeClient::new(credentials),
            scheme,
            signer,
            cluster: ClusterClient::new(credentials, POLL_CAP)?,
            failover_hold,
        })
    }

    /// Sends the request to the key's owner. On 421 (the node took nothing of it) adopts the
    /// refusing node's newer view and sends it to the new owner; when no view names another
    /// owner yet (the node is handing the session over, or learned of the change first), holds
    /// it until the ring moves the key, for at most the failover hold.
    pub async fn forward(
        &self,
        ring: &RingView,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
        on_misdirected: impl Fn(bool),
    ) -> Result<Response<NodeBody>, ProxyError> {
        let key = route.key.as_bytes();
        let view = ring.current();
        let mut target = view.owner(key).ok_or(ProxyError::NoNodes)?.clone();
        let mut epoch = view.epoch();
        let deadline = tokio::time::Instant::now() + self.failover_hold;
        loop {
            let sent = self
                .send(&target, epoch, method, headers, body.clone(), route)
                .await;
            let resp = match sent {
                Err(Unsent::Refused) => {
                    // Held until the key has a node that takes it; that node may in turn say it
                    // no longer owns the key (the ring moved on again), handled below.
                    let (resp, node) = self
                        .failover(ring, &target, method, headers, body.clone(), route)
                        .await?;
                    target = node;
                    resp
                }
                Err(Unsent::Failed(e)) => return Err(e),
                Ok(resp) => resp,
            };
            if resp.status() != StatusCode::MISDIRECTED_REQUEST {
                return Ok(resp);
            }
            if let Some(newer) = self.membership_of(&target).await {
                ring.adopt(newer);
            }
            let mut view = ring.current();
            if view.owner(key).is_some_and(|next| next.id == target.id) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match ring.moved(key, &target.id, left).await {
                    Some(moved) => view = moved,
                    None => {
                        on_misdirected(false);
                        return Err(ProxyError::Misdirected {
                            node: target.id.to_string(),
                        });
                    }
                }
            }
            let next = view.owner(key).ok_or(ProxyError::NoNodes)?.clone();
            if tokio::time::Instant::now() > deadline {
                on_misdirected(false);
                return Err(ProxyError::Misdirected {
                    node: target.id.to_string(),
                });
            }
            on_misdirected(true);
            tracing::debug!(from = %target.id, to = %next.id, epoch = view.epoch(), "retrying at the new owner");
            target = next;
            epoch = view.epoch();
        }
    }

    /// Holds a request whose owner refused the connection (or is not serving yet) until the
    /// ring moves its key (then sends it to the new owner) or the owner takes requests again
    /// (restarted under the same identity), trying it every [`REFUSED_RETRY`]. Returns the
    /// answer and the node that gave it.
    async fn failover(
        &self,
        ring: &RingView,
        dead: &Member,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
    ) -> Result<(Response<NodeBody>, Member), ProxyError> {
        let key = route.key.as_bytes();
        let deadline = tokio::time::Instant::now() + self.failover_hold;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ProxyError::NodeDown {
                    node: dead.id.to_string(),
                });
            }
            let (node, epoch) = match ring.moved(key, &dead.id, left.min(REFUSED_RETRY)).await {
                Some(view) => {
                    let next = view.owner(key).ok_or(ProxyError::NoNodes)?.clone();
                    tracing::debug!(from = %dead.id, to = %next.id, epoch = view.epoch(), "sending a held request to the new owner");
                    (next, view.epoch())
                }
                None => (dead.clone(), ring.current().epoch()),
            };
            match self
                .send(&node, epoch, method, headers, body.clone(), route)
                .await
            {
                Err(Unsent::Refused) if node.id == dead.id => continue,
                Err(unsent) => return Err(unsent.into_error(&node)),
                Ok(resp) => return Ok((resp, node)),
            }
        }
    }

    /// One attempt at `node`, in a span of its own: a request sent again after a 421 is a
    /// second hop.
    async fn send(
        &self,
        node: &Member,
        epoch: u64,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
    ) -> Result<Response<NodeBody>, Unsent> {
        let span = shardgate_protocol::exported_span!(
            "gateway.forward",
            otel.kind = "client",
            shardgate.node = %node.id,
            shardgate.epoch = epoch,
        );
        self.send_once(node, epoch, method, headers, body, route)
            .instrument(span)
            .await
    }

    async fn send_once(
        &self,
        node: &Member,
        epoch: u64,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        route: &Route,
    ) -> Result<Response<NodeBody>, Unsent> {
        let uri = format!("{}://{}/mcp", self.scheme, node.session_addr);
        let mut out = HeaderMap::with_capacity(headers.len() + 5);
        for (name, value) in headers {
            let n = name.as_str();
            // The client's token stays here: nodes learn the principal it proved. The client's
            // trace context is replaced by this hop's below.
            if HOP_BY_HOP.contains(&n)
                || n == "host"
                || n == "content-length"
                || n == "authorization"
                || n.starts_with(internal::PREFIX)
                || traces::HEADERS.contains(&n)
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        let trusted = [
            (internal::ROUTE_KEY, Some(route.key.as_str())),
            (internal::NEW_SESSION, route.new_session.as_deref()),
            (internal::PRINCIPAL, Some(route.principal.as_str())),
            (internal::SCOPE, route.scope.as_deref()),
        ];
        for (name, value) in trusted {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                out.insert(name, v);
            }
        }
        out.insert(internal::EPOCH, HeaderValue::from(epoch));
        traces::inject(&mut out);
        if let Some(signer) = &self.signer {
            let (value, _) = signature::sign_request(signer, method, "/mcp", &out, &body);
            out.insert(signature::AUTH_HEADER, value);
        }
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| Unsent::Failed(unreachable_node(node, e)))?;
        *req.headers_mut() = out;
        let resp = self.client.request(req).await.map_err(|e| match e {
            Failed::Unsent(why) => {
                tracing::debug!(node = %node.id, %why, "nothing reached the node");
                Unsent::Refused
            }
            Failed::Sent(e) => Unsent::Failed(unreachable_node(node, causes(&e))),
        })?;
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().contains_key(internal::NOT_SERVING)
        {
            return Err(Unsent::Refused);
        }
        Ok(resp)
    }

    /// Long-polls the node at `addr` (its internal listener) for a view newer than `after`,
    /// for up to `wait`; `None` if it does not answer, or not as a member.
    pub async fn poll_membership(
        &self,
        addr: &str,
        after: u64,
        wait: Duration,
    ) -> Option<Membership> {
        let path = format!(
            "{}?after={after}&wait_ms={}",
            internal::MEMBERSHIP_PATH,
            wait.as_millis()
        );
        self.fetch_membership(addr, &path, wait + REFRESH_TIMEOUT)
            .await
    }

    /// Asks a node for its membership view; `None` if it does not answer in time.
    async fn membership_of(&self, node: &Member) -> Option<Membership> {
        self.fetch_membership(&node.addr, internal::MEMBERSHIP_PATH, REFRESH_TIMEOUT)
            .await
    }

    async fn fetch_membership(
        &self,
        addr: &str,
        path: &str,
        within: Duration,
    ) -> Option<Membership> {
        let fetched = self
            .cluster
            .call(Method::GET, addr, path, Vec::new(), within)
            .await;
        match fetched {
            Ok(body) => serde_json::from_slice(&body).ok(),
            Err(e) => {
                tracing::debug!(node = addr, error = %e, "no membership view");
                None
            }
        }
    }
}

/// The longest a membership long poll may be held, with room for the answer.
const POLL_CAP: Duration = Duration::from_secs(90);

/// The pooled client to nodes' session listeners ([`pool`]): h2 with our certificate under
/// mTLS, h2c under HMAC.
enum NodeClient {
    Plain(Pool<HttpConnector>),
    Tls(Pool<HttpsConnector<HttpConnector>>),
}

impl NodeClient {
    fn new(credentials: &Credentials) -> NodeClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        match credentials {
            Credentials::Mtls(mtls) => {
                http.enforce_http(false);
                // The connector offers the ALPN protocols it is enabled for (h2) itself.
                let mut config = (*mtls.client).clone();
                config.alpn_protocols.clear();
                let tls = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_only()
                    .enable_http2()
                    .wrap_connector(http);
                NodeClient::Tls(Pool::new(tls))
            }
            Credentials::Hmac(_) => NodeClient::Plain(Pool::new(http)),
        }
    }

    async fn request(&self, req: Request<Full<Bytes>>) -> Result<Response<NodeBody>, Failed> {
        match self {
            NodeClient::Plain(pool) => pool.request(req).await,
            NodeClient::Tls(pool) => pool.request(req).await,
        }
    }
}

/// Why a request got no answer from a node.
enum Unsent {
    /// The connection could not be made, or the node said it is not serving yet
    /// ([`internal::NOT_SERVING`]): nothing reached the node, or it did nothing.
    Refused,
    /// Anything else: the node may have acted on the request.
    Failed(ProxyError),
}

impl Unsent {
    fn into_error(self, node: &Member) -> ProxyError {
        match self {
            Unsent::Refused => ProxyError::NodeDown {
                node: node.id.to_string(),
            },
            Unsent::Failed(e) => e,
        }
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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let ours: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(internal::PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (SendRequest)")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connection error: peer closed connection")]
    struct Inner;

    #[test]
    fn an_error_names_its_causes() {
        let e = Outer(Inner);
        assert_eq!(
            causes(&e),
            "client error (SendRequest): connection error: peer closed connection"
        );
    }
}
