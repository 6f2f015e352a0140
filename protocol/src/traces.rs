//! Distributed traces across the hops: the W3C trace context (`traceparent`, `tracestate`)
//! that a request carries from its client through the gateway and the node to an HTTP upstream,
//! and the switch that makes all of it free when no exporter is configured.
//!
//! Spans are plain `tracing` spans of target [`TARGET`], made only while traces are on
//! ([`exported_span!`](crate::exported_span), [`request`]); the binary's exporter takes spans of
//! that target and nothing else, and its log output leaves them out. Each hop continues the
//! trace of the hop before it ([`request`]) and hands the next hop its own span's context
//! ([`inject`]), never the context it was given: a client's `traceparent` is replaced, not passed
//! on.
//!
//! Attributes name the era, the method class, the status, nodes and upstreams: never a session
//! id, a key or a token.

use http::{HeaderMap, Method, StatusCode};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span that is exported.
pub const TARGET: &str = "shardgate::trace";

/// The W3C trace context headers: a hop takes them from the hop before it and sends its own.
pub const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether an exporter is installed. Set once at start, read on every request: while it is
/// false a request makes no span and reads or writes no trace header.
static ON: AtomicBool = AtomicBool::new(false);

/// Called by the binary once it has installed an exporter and the W3C propagator.
pub fn turn_on() {
    ON.store(true, Ordering::Relaxed);
}

#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// An `info` span of target [`TARGET`] while traces are on, else `Span::none()`, which costs
/// nothing to make, enter or record into.
#[macro_export]
macro_rules! exported_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        if $crate::traces::on() {
            ::tracing::info_span!(target: $crate::traces::TARGET, $name $(, $($fields)*)?)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The span of a request one hop serves (`hop` names it: `gateway.request`, `node.request`),
/// continuing the trace the request's headers carry, if any; [`answered`] fills in the rest.
pub fn request(hop: &'static str, method: &Method, headers: &HeaderMap) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = hop,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.response.status_code = Empty,
        mcp.era = Empty,
        mcp.class = Empty,
    );
    if headers.contains_key(HEADERS[0]) {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        });
        // Fails only without the OpenTelemetry layer, which `on()` rules out.
        let _ = span.set_parent(parent);
    }
    span
}

/// Notes how the current request span ([`request`]) was answered.
pub fn answered(era: &'static str, class: &'static str, status: StatusCode) {
    if !on() {
        return;
    }
    let span = Span::current();
    span.record("mcp.era", era);
    span.record("mcp.class", class);
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// The current span while traces are on, for a task spawned to go on with the request's work
/// to continue its trace (`.instrument(traces::current())`); else `Span::none()`.
pub fn current() -> Span {
    if on() { Span::current() } else { Span::none() }
}

/// The trace the current request belongs to, as the collector shows it (32 hex digits), so that
/// a log line can name it; `None` while traces are off.
pub fn trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    if !on() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let id = span.span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// Writes the current span's context into `headers`, as the parent of what the next hop does.
pub fn inject(headers: &mut HeaderMap) {
    if !on() {
        return;
    }
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn while_off_a_request_makes_no_span_and_sends_no_trace_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HEADERS[0],
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        assert!(request("node.request", &Method::POST, &headers).is_none());
        assert!(crate::exported_span!("node.takeover").is_none());
        let mut out = HeaderMap::new();
        inject(&mut out);
        assert!(out.is_empty());
        assert_eq!(trace_id(), None);
    }
}
