//! Server-sent events on the wire: event framing, the priming event, keep-alive comments, and
//! the response headers that keep proxies from buffering the stream.

use crate::stream::{Event, EventId};
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

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

/// An SSE response body: `first` (a priming event, or a first message), then every item from
/// `rx`, with keep-alive comments while idle; it ends when every sender is dropped. `on_close`
/// lives as long as the body, so dropping it can signal that the client went away.
pub fn response<T: Frame, G: Send + 'static>(
    first: Option<Bytes>,
    mut rx: mpsc::Receiver<T>,
    on_close: G,
) -> Response {
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let _on_close = on_close;
        if let Some(first) = first
            && tx.send(Ok(first)).await.is_err()
        {
            return;
        }
        loop {
            let chunk = tokio::select! {
                event = rx.recv() => match event {
                    Some(e) => e.frame(),
                    None => break,
                },
                _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b":\n\n"),
                _ = tx.closed() => break,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    let mut resp = Response::new(body);
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
