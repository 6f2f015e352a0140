//! What gateways and nodes measure the same way: the bounded label values of a request (its era
//! and its method's class), and a response body that counts the bytes it sends and, for an SSE
//! answer, holds an open-streams gauge up until it ends or is dropped.

use crate::mcp::{Body as McpBody, Era, Message};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus::{IntCounter, IntGauge};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Latency buckets of both sides, from 250 µs to 10 s: a hop on this path takes well under a
/// millisecond, an upstream call can take seconds.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers `metric` in `registry` and hands it back.
pub fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &prometheus::Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// The `era` label: `none` for a request refused before its era was known.
pub fn era_label(era: Option<Era>) -> &'static str {
    match era {
        Some(Era::Session) => "session",
        Some(Era::Stateless) => "stateless",
        None => "none",
    }
}

/// The `class` label of a JSON-RPC method: a fixed set, whatever a client sends.
pub fn method_class(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "tools/call" => "tools/call",
        "tools/list" => "tools/list",
        "ping" => "ping",
        m if m.starts_with("resources/") => "resources",
        m if m.starts_with("prompts/") => "prompts",
        m if m.starts_with("completion/") => "completion",
        m if m.starts_with("logging/") => "logging",
        m if m.starts_with("tasks/") => "tasks",
        _ => "other",
    }
}

/// The `class` label of a POST body: its first message's.
pub fn body_class(body: &McpBody) -> &'static str {
    match body.messages.first() {
        Some((Message::Request { method, .. }, _)) => method_class(method),
        Some((Message::Notification { .. }, _)) => "notification",
        Some((Message::Response { .. }, _)) => "response",
        None => "none",
    }
}

/// The `class` label of a bodiless request: GET opens a stream, DELETE ends a session.
pub fn bodiless_class(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "stream",
        http::Method::DELETE => "end",
        _ => "none",
    }
}

/// Whether a response is an SSE stream.
pub fn is_event_stream(resp: &Response) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// `resp` with a body that adds what it sends to `sent`; an SSE answer also counts in `open`
/// while it lasts.
pub fn meter(resp: Response, sent: &IntCounter, open: &IntGauge) -> Response {
    let open = is_event_stream(&resp).then(|| {
        open.inc();
        OpenStream(open.clone())
    });
    let sent = sent.clone();
    resp.map(|inner| {
        Body::new(Metered {
            inner,
            sent,
            _open: open,
        })
    })
}

/// One open SSE stream, counted until dropped.
struct OpenStream(IntGauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Metered {
    inner: Body,
    sent: IntCounter,
    _open: Option<OpenStream>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[test]
    fn classes_are_a_fixed_set() {
        assert_eq!(method_class("tools/call"), "tools/call");
        assert_eq!(method_class("resources/read"), "resources");
        assert_eq!(method_class("tasks/get"), "tasks");
        assert_eq!(method_class("x/made-up-by-a-client-1234"), "other");
        assert_eq!(method_class("resourcesX"), "other");
    }

    #[tokio::test]
    async fn a_metered_body_counts_its_bytes_and_its_stream() {
        let sent = IntCounter::new("sent", "sent").expect("metric");
        let open = IntGauge::new("open", "open").expect("metric");
        let resp = Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from("data: 1\n\n"))
            .expect("response");
        let resp = meter(resp, &sent, &open);
        assert_eq!(open.get(), 1);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), 9);
        assert_eq!(sent.get(), 9);
        assert_eq!(open.get(), 0, "the stream is counted until its body goes");

        let json = Response::new(Body::from("{}"));
        let json = meter(json, &sent, &open);
        assert_eq!(open.get(), 0, "a JSON answer is not a stream");
        assert_eq!(
            json.body().size_hint().exact(),
            Some(2),
            "the length stays known"
        );
    }
}
