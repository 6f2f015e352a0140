//! The gateway's Prometheus metrics, registered once in their own registry.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use shardgate_protocol::metered::{LATENCY_BUCKETS, registered};

/// The `method` label of a request: one of a fixed set, whatever method a client sends, so
/// that clients cannot grow the metric's series without bound.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `proto` label: the HTTP version a request came over.
pub fn proto_label(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "http2",
        http::Version::HTTP_3 => "http3",
        _ => "http1",
    }
}

/// The gateway's series, as docs/metrics.md lists them.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by HTTP version and method, era, method class and status.
    pub requests: IntCounterVec,
    /// Requests refused or failed at the gateway, by reason and blame.
    pub errors: IntCounterVec,
    /// 429 answers, by the bucket that ran dry.
    pub rate_limited: IntCounterVec,
    /// 421 answers from nodes, by whether the retry went to another node.
    pub misdirected: IntCounterVec,
    /// Time to the response head (the start of a stream, for SSE), by era and class.
    pub latency: HistogramVec,
    pub ring_epoch: IntGauge,
    /// Members of the view routed by, by state.
    pub members: IntGaugeVec,
    /// SSE answers being sent to clients.
    pub sse_streams_open: IntGauge,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counters = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };
        let metrics = Metrics {
            requests: counters(
                "shardgate_gateway_requests_total",
                "requests answered",
                &["proto", "method", "era", "class", "status"],
            )?,
            errors: counters(
                "shardgate_gateway_errors_total",
                "requests refused or failed",
                &["reason", "blame"],
            )?,
            rate_limited: counters(
                "shardgate_gateway_rate_limited_total",
                "requests refused with 429, by bucket",
                &["scope"],
            )?,
            misdirected: counters(
                "shardgate_gateway_misdirected_total",
                "421 answers from nodes",
                &["retried"],
            )?,
            latency: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "shardgate_gateway_response_head_seconds",
                        "time until the response head is sent",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["era", "class"],
                )?,
            )?,
            ring_epoch: registered(
                &registry,
                IntGauge::new("shardgate_gateway_ring_epoch", "epoch of the ring in use")?,
            )?,
            members: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "shardgate_gateway_members",
                        "members of the view routed by, by state",
                    ),
                    &["state"],
                )?,
            )?,
            sse_streams_open: registered(
                &registry,
                IntGauge::new(
                    "shardgate_gateway_sse_streams_open",
                    "SSE answers being sent to clients",
                )?,
            )?,
            received_bytes: registered(
                &registry,
                IntCounter::new(
                    "shardgate_gateway_received_bytes_total",
                    "request bodies received on /mcp",
                )?,
            )?,
            sent_bytes: registered(
                &registry,
                IntCounter::new(
                    "shardgate_gateway_sent_bytes_total",
                    "response bodies sent on /mcp",
                )?,
            )?,
            registry,
        };
        // Shown at 0 before the first one, so that a rate over them is defined from the start.
        for retried in ["yes", "no"] {
            metrics.misdirected.with_label_values(&[retried]);
        }
        for scope in ["ip", "principal"] {
            metrics.rate_limited.with_label_values(&[scope]);
        }
        Ok(metrics)
    }

    /// Sets the gauges that describe the view routed by.
    pub fn view(&self, membership: &shardgate_raft::Membership) {
        self.ring_epoch.set(membership.epoch as i64);
        use shardgate_raft::MemberState;
        for (state, label) in [
            (MemberState::Active, "active"),
            (MemberState::Draining, "draining"),
            (MemberState::Down, "down"),
        ] {
            let n = membership
                .members
                .iter()
                .filter(|m| m.state == state)
                .count();
            self.members.with_label_values(&[label]).set(n as i64);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        assert_eq!(method_label(&http::Method::OPTIONS), "OPTIONS");
        let made_up = http::Method::from_bytes(b"X-RANDOM-12345").expect("a token");
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&http::Method::PATCH), "other");
    }
}
