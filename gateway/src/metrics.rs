//! The gateway's Prometheus metrics, registered once in their own registry.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

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

pub struct Metrics {
    registry: Registry,
    /// Requests answered, by HTTP method, era and status.
    pub requests: IntCounterVec,
    /// Requests refused or failed at the gateway, by reason and blame.
    pub errors: IntCounterVec,
    /// 421 answers from nodes, by whether the retry went to another node.
    pub misdirected: IntCounterVec,
    /// Time to the response head (the start of a stream, for SSE), by method.
    pub latency: HistogramVec,
    pub ring_epoch: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("shardgate_gateway_requests_total", "requests answered"),
            &["method", "era", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "shardgate_gateway_errors_total",
                "requests refused or failed",
            ),
            &["reason", "blame"],
        )?;
        let misdirected = IntCounterVec::new(
            Opts::new(
                "shardgate_gateway_misdirected_total",
                "421 answers from nodes",
            ),
            &["retried"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "shardgate_gateway_response_head_seconds",
                "time until the response head is sent",
            ),
            &["method"],
        )?;
        let ring_epoch = IntGauge::new("shardgate_gateway_ring_epoch", "epoch of the ring in use")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(misdirected.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ring_epoch.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            errors,
            misdirected,
            latency,
            ring_epoch,
        })
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
