//! The accept loop shared by gateway and node listeners: HTTP/1.1 and HTTP/2 on one port
//! (h2c by prior knowledge, or ALPN when TLS is configured), with graceful shutdown.
//!
//! A listener that demands client certificates (a node's, under mTLS) still completes the
//! handshake of a client without one, and answers each of its requests 401: a refusal the
//! client can read, rather than a handshake failure it has to guess at.
//!
//! Every listener is bounded by its [`ListenerLimits`], so that connections which hold a
//! descriptor without using it cannot crowd out the clients that do:
//! - at most `max_connections` open at once. At the limit, the connection idle longest is
//!   closed to make room for the newcomer; when none is idle, the newcomer is closed at once.
//!   Either way the accept queue keeps moving, long before the descriptor table is full;
//! - a TLS handshake, every HTTP/1.1 request head from its first byte ([`head`]) and each stall
//!   of a request body are timed. A stalled body is answered 408, and an HTTP/1.1 connection
//!   closed;
//! - a connection with no request in flight, before its first request as between requests,
//!   is closed after `idle_timeout` (a pool's spare connection is used long after it opened,
//!   and the connection limit's eviction, not a shorter wait, bounds idle ones). A request is in
//!   flight until its response has been sent in full, so SSE answers and GET streams that last
//!   hours are never cut: only reading the request is timed, never writing the response;
//! - HTTP/2 concurrent streams and header list size; streams beyond the limit are refused. A
//!   peer that resets more than `max_pending_resets` streams before they were taken up has its
//!   connection closed (a flood of opened-and-reset streams).
//!
//! We run our own loop rather than `axum::serve` for these knobs, and because one gateway→node
//! connection multiplexes every SSE stream of every session on that node, so the node's session
//! listener allows far more concurrent streams than a client-facing one, and far more resets:
//! a node that wakes from a stall gets one for every call given up meanwhile
//! ([`ListenerLimits`]'s presets).

mod body;
mod head;
mod limits;

use body::Service;
use head::HeadTimed;

pub use limits::{LimitsError, ListenerLimits, fit_to_descriptors};

use axum::Router;
use axum::response::IntoResponse;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long open connections (long-lived SSE streams, mostly) get to finish after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a connection asked to close (idle, evicted) gets to say goodbye (an HTTP/2 GOAWAY
/// and its ping) before it is dropped, when it has nothing in flight.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a newcomer at the connection limit waits for the idle connection closed for it.
const MAKE_ROOM: Duration = Duration::from_secs(1);
/// HTTP/2 pings on quiet connections, to find peers that are gone.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// At most one warning this often while a listener is at its connection limit.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// TLS on a listener.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// Requests on a connection without a verified client certificate get 401.
    pub client_certificate_required: bool,
}

/// What every request on a connection without the client certificate it needs gets.
fn unauthenticated() -> Router {
    Router::new().fallback(|| async {
        crate::reply::refuse(
            StatusCode::UNAUTHORIZED,
            "a client certificate of the cluster CA is required",
        )
        .into_response()
    })
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, every
/// connection on the runtime that accepts it.
pub async fn serve(
    listener: TcpListener,
    limits: ListenerLimits,
    router: Router,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) {
    accept(listener, limits, Lanes::Here(router), tls, shutdown).await
}

/// Serves `listener` within `limits` until `shutdown` is cancelled, each connection on one of
/// `workers` (the one with the fewest connections open) with the router made for it: from its
/// handshake to its end, with every task its requests spawn, on that worker's thread. The
/// accept loop and the limits are shared by all.
pub async fn serve_on(
    listener: TcpListener,
    limits: ListenerLimits,
    workers: &Workers,
    mut router: impl FnMut(usize) -> Router,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) {
    let lanes = workers
        .handles
        .iter()
        .enumerate()
        .map(|(i, runtime)| Lane {
            runtime: runtime.clone(),
            router: router(i),
            open: Arc::new(AtomicUsize::new(0)),
        })
        .collect();
    accept(listener, limits, Lanes::Workers(lanes), tls, shutdown).await
}

/// Where a listener's connections are served.
enum Lanes {
    /// On the runtime that accepted them.
    Here(Router),
    /// Each on one worker.
    Workers(Vec<Lane>),
}

/// One worker's share of a listener.
struct Lane {
    runtime: Handle,
    router: Router,
    /// Connections open on the worker.
    open: Arc<AtomicUsize>,
}

impl Lanes {
    /// Starts serving a connection, on the lane with the fewest open.
    fn start(&self, shared: &Arc<Shared>, mut slot: Slot, tcp: TcpStream, peer: SocketAddr) {
        let lane = match self {
            Lanes::Here(router) => {
                tokio::spawn(connection(shared.clone(), slot, tcp, peer, router.clone()));
                return;
            }
            Lanes::Workers(lanes) => lanes.iter().min_by_key(|l| l.open.load(Ordering::Relaxed)),
        };
        let Some(lane) = lane else { return };
        // A socket belongs to the runtime that registered it: it moves to the worker's.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        lane.open.fetch_add(1, Ordering::Relaxed);
        slot.lane = Some(lane.open.clone());
        let (shared, router) = (shared.clone(), lane.router.clone());
        lane.runtime.spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => connection(shared, slot, tcp, peer, router).await,
                Err(e) => tracing::debug!(%peer, error = %e, "a worker cannot take a connection"),
            }
        });
    }
}

/// Threads that each drive a single-threaded runtime. A connection served on one stays there
/// with everything its requests do, down to the connections they open (the gateway's to nodes):
/// a request and the task that writes it onward never wake each other across threads.
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers, one per core for 0, their threads named `name-<i>`.
    pub fn start(count: usize, name: &str) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut workers = Workers {
            handles: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// How many there are: at least one.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is at least one.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stops the workers, dropping whatever they still run, and waits for their threads.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    limits: ListenerLimits,
    lanes: Lanes,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared::new(limits, tls, shutdown));
    let mut next_id = 0u64;
    let (mut refused, mut warned) = (0u64, None::<Instant>);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => break,
        };
        let Some(permit) = shared.admit().await else {
            drop(tcp);
            refused += 1;
            if warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused,
                    "at the connection limit with nothing idle to close: refusing connections"
                );
                (refused, warned) = (0, Some(Instant::now()));
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let slot = Slot::open(&shared, next_id, permit);
        lanes.start(&shared, slot, tcp, peer);
    }
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!("closing connections still open after the shutdown grace period");
    }
}

/// What a listener's connections share.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    tls: Option<Tls>,
    limits: ListenerLimits,
    shutdown: CancellationToken,
    /// One per open connection.
    permits: Arc<Semaphore>,
    /// The open connections, to find the one idle longest when the limit is reached.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// What connections measure their idle times from.
    epoch: Instant,
}

impl Shared {
    fn new(limits: ListenerLimits, tls: Option<Tls>, shutdown: CancellationToken) -> Shared {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Heads are timed by `HeadTimed`: hyper's timer would also cut idle connections.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_size)
            .max_pending_accept_reset_streams(limits.max_pending_resets)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL);
        Shared {
            builder,
            tls,
            limits,
            shutdown,
            permits: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            open: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// A slot for a new connection; at the limit, one freed by closing the connection idle
    /// longest, or none when nothing is idle.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        if !self.evict_longest_idle() {
            return None;
        }
        tokio::time::timeout(MAKE_ROOM, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Asks the connection idle longest to close; false when none is idle.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let victim = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        let Some(victim) = victim else { return false };
        tracing::debug!("at the connection limit: closing the connection idle longest");
        victim.evicted.store(true, Ordering::Relaxed);
        victim.wake.notify_one();
        true
    }
}

/// One open connection's place in its listener; gives the slot back when dropped.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
    conn: Arc<Conn>,
    /// The count of connections open on the worker serving it, if one does.
    lane: Option<Arc<AtomicUsize>>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn open(shared: &Arc<Shared>, id: u64, permit: OwnedSemaphorePermit) -> Slot {
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(millis_since(shared.epoch)),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
            epoch: shared.epoch,
        });
        shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, conn.clone());
        Slot {
            shared: shared.clone(),
            id,
            conn,
            lane: None,
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        if let Some(lane) = &self.lane {
            lane.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection's task and its requests share.
struct Conn {
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// Requests begun on the connection: each one's head has been read.
    requests: AtomicU64,
    /// When the connection last had nothing in flight, in milliseconds since `epoch`.
    idle_since: AtomicU64,
    /// Set by the listener on the connection it closes to make room.
    evicted: AtomicBool,
    /// Wakes the connection's task to look again: its last request finished, or it was evicted.
    wake: Notify,
    epoch: Instant,
}

impl Conn {
    /// When the connection is to be closed, if nothing arrives; none while a request is in
    /// flight. `closing`: since when it has been asked to close.
    fn close_at(&self, limits: &ListenerLimits, closing: Option<Instant>) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since =
            self.epoch + Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        Some(match closing {
            Some(at) => at.max(idle_since) + CLOSE_GRACE,
            // Before its first request as between requests: a client's pool may open a spare
            // connection and use it many seconds later, and closing it sooner than an idle one
            // races that request as closing a kept-alive one would (see `head.rs`).
            None => idle_since + limits.idle_timeout,
        })
    }
}

/// A connection from its TLS handshake, if any, to its end.
async fn connection(
    shared: Arc<Shared>,
    slot: Slot,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
) {
    let Some(tls) = &shared.tls else {
        return drive(&shared, &slot.conn, tcp, router, peer).await;
    };
    let handshake = tokio::time::timeout(
        shared.limits.tls_handshake_timeout,
        tls.acceptor.accept(tcp),
    );
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        },
        // Nothing is in flight yet, so a wake-up can only be an eviction.
        _ = slot.conn.wake.notified() => return,
        _ = shared.shutdown.cancelled() => return,
    };
    let certified = stream.get_ref().1.peer_certificates().is_some();
    let router = if tls.client_certificate_required && !certified {
        tracing::debug!(%peer, "a connection without a client certificate");
        unauthenticated()
    } else {
        router
    };
    drive(&shared, &slot.conn, stream, router, peer).await
}

/// Serves HTTP on `io` until the peer is done, or the connection has been idle too long, is
/// evicted, or the listener shuts down: then it is closed gracefully, and dropped if it lingers
/// with nothing in flight.
async fn drive<I>(shared: &Shared, conn: &Arc<Conn>, io: I, router: Router, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = Service {
        router,
        conn: conn.clone(),
        body_timeout: shared.limits.body_timeout,
        peer,
    };
    let io = HeadTimed::new(io, conn.clone(), shared.limits.header_timeout);
    let http = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut http = std::pin::pin!(http);
    let mut closing: Option<Instant> = None;
    loop {
        // While requests are in flight, look again now and then; the last one's end wakes us.
        let close_at = conn.close_at(&shared.limits, closing);
        let look_at = close_at.unwrap_or_else(|| Instant::now() + shared.limits.idle_timeout);
        let close = tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shared.shutdown.cancelled(), if closing.is_none() => true,
            _ = conn.wake.notified() => closing.is_none() && conn.evicted.load(Ordering::Relaxed),
            // Looked at again now: a request may have begun since (its start wakes nobody), and
            // a connection is never closed under a request in flight.
            _ = tokio::time::sleep_until(look_at) => conn
                .close_at(&shared.limits, closing)
                .is_some_and(|at| at <= Instant::now()),
        };
        if close {
            if closing.is_some() {
                tracing::debug!(%peer, "dropping a connection that did not close in time");
                return;
            }
            http.as_mut().graceful_shutdown();
            closing = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
