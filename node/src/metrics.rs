//! The node's counters and histograms: what it has done since it started, by era, class and
//! outcome, in one process-wide registry (a node is one process), so that the request path,
//! the session table and the upstream connectors count without being handed a handle. The
//! gauges of what it holds now are read at scrape time (`server::metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use shardgate_protocol::metered::{LATENCY_BUCKETS, registered};
use std::sync::{LazyLock, Mutex, PoisonError, Weak};

pub struct NodeMetrics {
    registry: Registry,
    /// Requests answered, by era, method class and status.
    pub requests: IntCounterVec,
    /// Time to the response head, by era and class.
    pub latency: HistogramVec,
    /// Requests answered 421: not this node's under its view.
    pub misdirected: IntCounter,
    pub sessions_created: IntCounter,
    /// Sessions that ended here, by why ([`Ended`]).
    sessions_ended: IntCounterVec,
    /// Time to take over one session from the store.
    pub takeover_seconds: Histogram,
    pub sse_streams_open: IntGauge,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
    /// HTTP upstream calls, by upstream name.
    pub upstream_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    /// Each HTTP upstream's breaker, read at scrape time.
    breakers: Mutex<Vec<(String, Weak<dyn Breaker>)>>,
}

/// A circuit breaker, as `/metrics` shows it.
pub trait Breaker: Send + Sync {
    /// Whether it fails calls fast now.
    fn is_open(&self) -> bool;
}

/// Why a session ended on this node.
#[derive(Clone, Copy, Debug)]
pub enum Ended {
    /// The client's DELETE.
    Deleted,
    /// Idle past the session timeout.
    Expired,
    /// Released to the node that owns it now.
    HandedOff,
    /// Fenced out: another node holds it in the store.
    Lost,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Deleted => "deleted",
            Ended::Expired => "expired",
            Ended::HandedOff => "handed_off",
            Ended::Lost => "lost",
        }
    }
}

pub static METRICS: LazyLock<NodeMetrics> =
    LazyLock::new(|| NodeMetrics::new().expect("the node's metric names and labels are valid"));

impl NodeMetrics {
    fn new() -> Result<NodeMetrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let histogram = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let metrics = NodeMetrics {
            requests: registered(
                r,
                IntCounterVec::new(
                    Opts::new("shardgate_node_requests_total", "requests answered"),
                    &["era", "class", "status"],
                )?,
            )?,
            latency: registered(
                r,
                HistogramVec::new(
                    histogram(
                        "shardgate_node_request_seconds",
                        "time to the response head",
                    ),
                    &["era", "class"],
                )?,
            )?,
            misdirected: registered(
                r,
                IntCounter::new(
                    "shardgate_node_misdirected_total",
                    "requests answered 421: not this node's under its view",
                )?,
            )?,
            sessions_created: registered(
                r,
                IntCounter::new(
                    "shardgate_node_sessions_created_total",
                    "sessions started here by initialize",
                )?,
            )?,
            sessions_ended: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "shardgate_node_sessions_ended_total",
                        "sessions that ended here, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            takeover_seconds: registered(
                r,
                Histogram::with_opts(histogram(
                    "shardgate_node_takeover_seconds",
                    "time to take over one session from the store",
                ))?,
            )?,
            sse_streams_open: registered(
                r,
                IntGauge::new(
                    "shardgate_node_sse_streams_open",
                    "SSE answers being sent to gateways",
                )?,
            )?,
            received_bytes: registered(
                r,
                IntCounter::new(
                    "shardgate_node_received_bytes_total",
                    "request bodies received on /mcp",
                )?,
            )?,
            sent_bytes: registered(
                r,
                IntCounter::new(
                    "shardgate_node_sent_bytes_total",
                    "response bodies sent on /mcp",
                )?,
            )?,
            upstream_seconds: registered(
                r,
                HistogramVec::new(
                    histogram(
                        "shardgate_node_upstream_call_seconds",
                        "latency of calls to an HTTP upstream",
                    ),
                    &["upstream"],
                )?,
            )?,
            upstream_errors: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "shardgate_node_upstream_errors_total",
                        "calls to an HTTP upstream that failed in transport or were failed fast",
                    ),
                    &["upstream"],
                )?,
            )?,
            breakers: Mutex::default(),
            registry,
        };
        // Every reason shown at 0 before the first, so that a rate over them is defined.
        for why in [
            Ended::Deleted,
            Ended::Expired,
            Ended::HandedOff,
            Ended::Lost,
        ] {
            metrics.sessions_ended(why, 0);
        }
        Ok(metrics)
    }

    /// Counts `n` sessions that ended here for the same reason.
    pub fn sessions_ended(&self, why: Ended, n: u64) {
        self.sessions_ended
            .with_label_values(&[why.label()])
            .inc_by(n);
    }

    /// Shows upstream `name`'s breaker on `/metrics` for as long as it lives.
    pub fn watch_breaker(&self, name: &str, breaker: Weak<dyn Breaker>) {
        // Its series shown at 0 from the start.
        self.upstream_seconds.with_label_values(&[name]);
        self.upstream_errors.with_label_values(&[name]);
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers.retain(|(_, b)| b.strong_count() > 0);
        breakers.push((name.to_owned(), breaker));
    }

    /// The registry's series, and each live upstream breaker's state.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.registry.gather();
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let open = prometheus::IntGaugeVec::new(
            Opts::new(
                "shardgate_node_upstream_breaker_open",
                "1 while the upstream's circuit breaker fails calls fast",
            ),
            &["upstream"],
        );
        if let Ok(open) = open {
            for (name, breaker) in breakers.iter() {
                if let Some(breaker) = breaker.upgrade() {
                    open.with_label_values(&[name.as_str()])
                        .set(i64::from(breaker.is_open()));
                }
            }
            // A family without samples would make the text encoder give up on the scrape.
            families.extend(
                prometheus::core::Collector::collect(&open)
                    .into_iter()
                    .filter(|f| !f.get_metric().is_empty()),
            );
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_builds_and_gathers() {
        METRICS.sessions_ended(Ended::Expired, 1);
        struct Open;
        impl Breaker for Open {
            fn is_open(&self) -> bool {
                true
            }
        }
        let open: std::sync::Arc<dyn Breaker> = std::sync::Arc::new(Open);
        METRICS.watch_breaker("up-1", std::sync::Arc::downgrade(&open));
        let names: Vec<String> = METRICS
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"shardgate_node_sessions_ended_total".to_owned()));
        assert!(names.contains(&"shardgate_node_upstream_breaker_open".to_owned()));
    }
}
