//! The gateway's connections to the nodes' session listeners: HTTP/2, a bounded number of
//! streams on each.
//!
//! One connection per node would carry every request and every open SSE stream to it, and an
//! HTTP/2 connection keeps what its busiest moment needed (its table of streams, its buffers)
//! for as long as it lives: 30,000 streams held through one, then closed, left the gateway
//! 12 MiB larger for good. Here a connection takes [`STREAMS`] streams at most; a request that
//! finds every connection to its node full opens another (one at a time per node: the others
//! wait for it), and a connection other than the node's first is closed as soon as its last
//! stream ends, so the gateway shrinks back after a peak.
//!
//! A stream is counted from the request until its answer's body is dropped ([`NodeBody`]),
//! read to the end or not.

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceExt;

/// Streams one connection to a node carries at once, at most.
pub const STREAMS: usize = 256;
/// How long opening a connection (TCP, TLS, the HTTP/2 preface) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pings on a connection, idle or not, so that a node gone silent is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Why a request got no answer.
pub enum Failed {
    /// No connection could be opened, or the one it was to go on closed before the request
    /// was written: nothing of it reached the node.
    Unsent(String),
    /// Anything else: the node may have acted on it.
    Sent(hyper::Error),
}

/// Connections to nodes, by the node's address (`host:port`), opened by `connector`.
pub struct Pool<C> {
    connector: C,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
}

/// The connections to one node.
#[derive(Default)]
struct Node {
    state: Mutex<NodeState>,
}

#[derive(Default)]
struct NodeState {
    /// The first is kept while it is open; the others close once idle.
    conns: Vec<Arc<Conn>>,
    /// The connection being opened, which every request that finds the others full waits for.
    opening: Option<Shared<BoxFuture<'static, Result<(), String>>>>,
}

struct Conn {
    send: SendRequest<Full<Bytes>>,
    streams: AtomicUsize,
}

impl<C> Pool<C>
where
    C: tower::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: C) -> Pool<C> {
        Pool {
            connector,
            nodes: Mutex::default(),
        }
    }

    /// Sends `req` (its URI names the node) on a connection to its node with room for it. A
    /// request the connection never wrote (it closed first) goes once more, on another.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Result<Response<NodeBody>, Failed> {
        let uri = req.uri().clone();
        let authority = uri
            .authority()
            .ok_or_else(|| Failed::Unsent(format!("no node address in {uri}")))?;
        let node = self.node(authority.as_str());
        let mut req = req;
        let mut tries = 0;
        loop {
            let lease = self.lease(&node, &uri).await?;
            let mut send = lease.conn.send.clone();
            match send.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|inner| NodeBody {
                        inner,
                        _lease: lease,
                    }));
                }
                Err(mut unsent) => {
                    // hyper hands back a request it had not written when the connection
                    // closed (or cancels it).
                    let untouched = unsent.take_message();
                    let e = unsent.into_error();
                    if !e.is_canceled() && untouched.is_none() {
                        return Err(Failed::Sent(e));
                    }
                    lease.forget();
                    tries += 1;
                    match untouched {
                        Some(untouched) if tries < 2 => req = untouched,
                        _ => {
                            return Err(Failed::Unsent(format!(
                                "the connection closed before the request went: {e}"
                            )));
                        }
                    }
                }
            }
        }
    }

    /// A place on a connection to `node` with room, opened if none has.
    async fn lease(&self, node: &Arc<Node>, uri: &Uri) -> Result<Lease, Failed> {
        loop {
            let opening = {
                let mut state = lock(&node.state);
                state.conns.retain(|c| !c.send.is_closed());
                if let Some(conn) = state
                    .conns
                    .iter()
                    .find(|c| c.streams.load(Ordering::Relaxed) < STREAMS)
                {
                    conn.streams.fetch_add(1, Ordering::Relaxed);
                    return Ok(Lease {
                        conn: conn.clone(),
                        node: Arc::downgrade(node),
                    });
                }
                match &state.opening {
                    Some(opening) => opening.clone(),
                    None => {
                        let opening = self.open(node.clone(), uri.clone()).shared();
                        state.opening = Some(opening.clone());
                        opening
                    }
                }
            };
            opening.await.map_err(Failed::Unsent)?;
        }
    }

    fn node(&self, authority: &str) -> Arc<Node> {
        let mut nodes = lock(&self.nodes);
        if let Some(node) = nodes.get(authority) {
            return node.clone();
        }
        // A node that left (scaled down, moved address) is forgotten when another is met.
        nodes.retain(|_, node| {
            let state = lock(&node.state);
            state.opening.is_some() || state.conns.iter().any(|c| !c.send.is_closed())
        });
        let node = Arc::new(Node::default());
        nodes.insert(authority.to_owned(), node.clone());
        node
    }

    /// Opens a connection to `node` and adds it; done once it can take requests, or failed.
    fn open(&self, node: Arc<Node>, uri: Uri) -> BoxFuture<'static, Result<(), String>> {
        let connector = self.connector.clone();
        Box::pin(async move {
            let opened = tokio::time::timeout(OPEN_TIMEOUT, handshake(connector, uri)).await;
            let mut state = lock(&node.state);
            state.opening = None;
            let send = match opened {
                Ok(Ok(send)) => send,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(format!("no connection within {OPEN_TIMEOUT:?}")),
            };
            state.conns.push(Arc::new(Conn {
                send,
                streams: AtomicUsize::new(0),
            }));
            Ok(())
        })
    }
}

async fn handshake<C>(connector: C, uri: Uri) -> Result<SendRequest<Full<Bytes>>, String>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = connector
        .oneshot(uri)
        .await
        .map_err(|e| shardgate_protocol::causes(&*e.into()))?;
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .handshake(io)
        .await
        .map_err(|e| shardgate_protocol::causes(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "a connection to a node ended");
        }
    });
    Ok(send)
}

/// A stream on a connection, counted until dropped.
struct Lease {
    conn: Arc<Conn>,
    node: Weak<Node>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.streams.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let Some(node) = self.node.upgrade() else {
            return;
        };
        // The last stream of a connection beyond the first: it goes, unless a request took it
        // again meanwhile (counted under the same lock).
        let mut state = lock(&node.state);
        let first = state.conns.first().map(Arc::as_ptr);
        state.conns.retain(|c| {
            !Arc::ptr_eq(c, &self.conn)
                || first == Some(Arc::as_ptr(c))
                || c.streams.load(Ordering::Relaxed) > 0
        });
    }
}

impl Lease {
    /// Takes the connection out of the pool: it closed under a request.
    fn forget(&self) {
        if let Some(node) = self.node.upgrade() {
            lock(&node.state)
                .conns
                .retain(|c| !Arc::ptr_eq(c, &self.conn));
        }
    }
}

/// A node's answer, holding its stream's place on the connection until dropped.
pub struct NodeBody {
    inner: Incoming,
    _lease: Lease,
}

impl Body for NodeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
