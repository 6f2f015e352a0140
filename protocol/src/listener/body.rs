//! Request and response bodies as a listener sees them: a request is in flight until its
//! response has been sent in full, and a request body that stalls is cut off.

use super::{Conn, millis_since};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Version, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
/// The router behind one connection: counts the requests in flight and times request bodies.
pub(super) struct Service {
    pub(super) router: Router,
    pub(super) conn: Arc<Conn>,
    pub(super) body_timeout: Duration,
    /// The client's address, for handlers that ask (`ConnectInfo<SocketAddr>`).
    pub(super) peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<Incoming>) -> Answer {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let in_flight = InFlight::start(&self.conn);
        let http1 = req.version() <= Version::HTTP_11;
        // Only a body still to come can stall; most GETs have none.
        let stalled = (!req.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        let timeout = self.body_timeout;
        let req = req.map(|body| Timed {
            body,
            timeout,
            stall: None,
            waiting: false,
            stalled: stalled.clone(),
        });
        // A router is always ready (`poll_ready` is a constant `Ready`).
        let future = tower::Service::call(&mut self.router.clone(), req);
        Answer {
            future,
            in_flight: Some(in_flight),
            stalled,
            http1,
        }
    }
}

/// Counts a request as in flight for as long as it lives: through the handler, then inside the
/// response body until that has been sent.
pub(super) struct InFlight(Arc<Conn>);

impl InFlight {
    pub(super) fn start(conn: &Arc<Conn>) -> InFlight {
        conn.requests.fetch_add(1, Ordering::AcqRel);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        // Before the count: whoever sees the count at zero also sees when it got there.
        conn.idle_since
            .store(millis_since(conn.epoch), Ordering::Relaxed);
        if conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            conn.wake.notify_one();
        }
    }
}

/// The router's answer, or 408 when the request body stalled.
pub(super) struct Answer {
    future: RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
    stalled: Option<Arc<AtomicBool>>,
    http1: bool,
}

impl Future for Answer {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(mut response) = ready!(Pin::new(&mut this.future).poll(cx));
        if this
            .stalled
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            // Whatever the handler made of the failed read, the client is to blame.
            response = crate::reply::refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request body made no progress in time",
            );
            if this.http1 {
                // The rest of the body may still come; the connection cannot be reused.
                let close = HeaderValue::from_static("close");
                response.headers_mut().insert(header::CONNECTION, close);
            }
        }
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| Tracked { body, in_flight })))
    }
}

/// A response body that keeps its request in flight until it has been sent.
pub(super) struct Tracked {
    body: axum::body::Body,
    in_flight: Option<InFlight>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            self.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once it has made no progress for `timeout` while being read.
pub(super) struct Timed<B = Incoming> {
    pub(super) body: B,
    pub(super) timeout: Duration,
    /// Made on the first wait, then reset: most bodies arrive with their head.
    pub(super) stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` is armed for the current wait.
    pub(super) waiting: bool,
    /// Set when the body stalled; none for a body that had ended with its head.
    pub(super) stalled: Option<Arc<AtomicBool>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body made no progress for {0:?}")]
struct Stalled(Duration);

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(stalled) = &this.stalled else {
            return Poll::Ready(None);
        };
        if stalled.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Stalled(this.timeout).into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.timeout;
        let stall = this
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            stall.as_mut().reset(deadline);
            this.waiting = true;
        }
        ready!(stall.as_mut().poll(cx));
        stalled.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Stalled(this.timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.stalled.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
