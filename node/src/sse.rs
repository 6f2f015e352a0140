//! Server-sent events on the wire: event framing, the priming event, keep-alive comments, and
//! the response headers that keep proxies from buffering the stream.

use crate::stream::{Event, EventId};
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderValue, StatusCode, header};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// Idle time after which a `:` comment goes out, well under the ~60 s at which common proxies
/// and load balancers cut a silent connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to clients in the priming event, in milliseconds.
pub const RETRY_MS: u64 = 1000;

/// The priming event: an id the client can resume from, the `retry` hint and empty data.
pub fn priming(id: EventId) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {RETRY_MS}\ndata: \n\n"))
}

/// Something that goes on the wire as one SSE event.
pub trait Frame: Send + 'static {
    fn frame(&self) -> Bytes;
}

/// A session-era event: with its id, so the client can resume after it.
impl Frame for Event {
    fn frame(&self) -> Bytes {
        frame(Some(self.id), &self.data)
    }
}

/// A stateless-era message: no id, since those streams are not resumable.
impl Frame for Bytes {
    fn frame(&self) -> Bytes {
        frame(None, self)
    }
}

/// Frames one event. JSON text has no raw newlines, but split defensively anyway.
fn frame(id: Option<EventId>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.to_string().as_bytes());
        out.extend_from_slice(b"\n");
    }
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// How long a priming event waits for the stream's first message to go out with it. A call
/// answered within this time reaches the client in one write instead of two (through the
/// gateway, one relay instead of two); a longer one gets its priming event when the time is up.
/// The stream is stored before the response starts either way, so a resume from the priming
/// event finds it.
pub const PRIMING_HOLD: Duration = Duration::from_millis(5);
/// Events written together at most, when several are ready at once.
const COALESCE_BYTES: usize = 64 * 1024;

/// What an SSE response starts with.
pub enum Start {
    Nothing,
    /// A message, sent at once.
    Message(Bytes),
    /// A priming event: sent with the first message, or alone after [`PRIMING_HOLD`].
    Priming(Bytes),
}

/// An SSE response: `start`, then every item from `rx`, with keep-alive comments while idle;
/// it ends when every sender is dropped. Items that are ready together go out in one write.
/// `on_close` lives as long as the body, so dropping it signals that the client went away.
pub fn response<T: Frame, G: Send + Unpin + 'static>(
    start: Start,
    rx: mpsc::Receiver<T>,
    on_close: G,
) -> Response {
    let (first, hold) = match start {
        Start::Nothing => (None, None),
        Start::Message(first) => (Some(first), None),
        Start::Priming(first) => (
            Some(first),
            Some(Box::pin(tokio::time::sleep(PRIMING_HOLD))),
        ),
    };
    let events = Events {
        first,
        hold,
        rx,
        idle: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        ended: false,
        _on_close: on_close,
    };
    let mut resp = Response::new(Body::from_stream(events));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The body of an SSE response, polled by the connection that writes it.
struct Events<T, G> {
    first: Option<Bytes>,
    /// Until when `first` waits for company.
    hold: Option<Pin<Box<Sleep>>>,
    rx: mpsc::Receiver<T>,
    /// Restarted with every write; when it fires, a keep-alive comment goes out.
    idle: Pin<Box<Sleep>>,
    ended: bool,
    _on_close: G,
}

impl<T: Frame, G: Unpin> Events<T, G> {
    /// Appends the items that are ready to `out`, up to [`COALESCE_BYTES`]; notes the end of
    /// the stream.
    fn take_ready(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) {
        while out.len() < COALESCE_BYTES {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => out.extend_from_slice(&item.frame()),
                Poll::Ready(None) => {
                    self.ended = true;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    fn sent(&mut self, out: Bytes) -> Poll<Option<Result<Bytes, Infallible>>> {
        let deadline = tokio::time::Instant::now() + KEEP_ALIVE;
        self.idle.as_mut().reset(deadline);
        Poll::Ready(Some(Ok(out)))
    }
}

impl<T: Frame, G: Unpin> Stream for Events<T, G> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            let mut more = BytesMut::new();
            this.take_ready(cx, &mut more);
            if more.is_empty()
                && !this.ended
                && let Some(hold) = this.hold.as_mut()
                && hold.as_mut().poll(cx).is_pending()
            {
                this.first = Some(first);
                return Poll::Pending;
            }
            this.hold = None;
            if more.is_empty() {
                return this.sent(first);
            }
            let mut out = BytesMut::from(&first[..]);
            out.extend_from_slice(&more);
            return this.sent(out.freeze());
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        this.take_ready(cx, &mut out);
        if !out.is_empty() {
            return this.sent(out.freeze());
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.idle.as_mut().poll(cx).is_ready() {
            return this.sent(Bytes::from_static(b":\n\n"));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events_and_priming() {
        let e = Event {
            id: EventId { stream: 2, seq: 5 },
            data: Bytes::from_static(b"{\"a\":1}"),
        };
        assert_eq!(&e.frame()[..], b"id: 2-5\ndata: {\"a\":1}\n\n");
        assert_eq!(&Bytes::from_static(b"{}").frame()[..], b"data: {}\n\n");
        assert_eq!(
            &priming(EventId { stream: 2, seq: 0 })[..],
            b"id: 2-0\nretry: 1000\ndata: \n\n"
        );
    }
}
