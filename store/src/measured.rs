//! The latency of every store operation and the ones that failed, by store and operation, in a
//! registry of their own that the node's `/metrics` includes. A fenced or missing session is an
//! answer, not a failure: only an unreachable store, corrupt data or a misconfiguration counts
//! as an error.

use crate::StoreError;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;
use std::time::Instant;

struct StoreMetrics {
    registry: Registry,
    seconds: HistogramVec,
    errors: IntCounterVec,
}

/// Buckets from 100 µs (an SQLite read) to 5 s (a store timing out).
const BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

static METRICS: LazyLock<Option<StoreMetrics>> = LazyLock::new(|| {
    let registry = Registry::new();
    let seconds = HistogramVec::new(
        HistogramOpts::new(
            "shardgate_node_store_op_seconds",
            "latency of each store operation",
        )
        .buckets(BUCKETS.to_vec()),
        &["store", "op"],
    )
    .ok()?;
    let errors = IntCounterVec::new(
        Opts::new(
            "shardgate_node_store_errors_total",
            "store operations that failed",
        ),
        &["store", "op"],
    )
    .ok()?;
    registry.register(Box::new(seconds.clone())).ok()?;
    registry.register(Box::new(errors.clone())).ok()?;
    Some(StoreMetrics {
        registry,
        seconds,
        errors,
    })
});

/// The operations of a store, as labelled.
const OPS: [&str; 6] = ["claim", "write", "events", "load", "delete", "replicate"];

/// Shows the series of store `kind` at 0 before its first operation: a node that has not used
/// its store yet shows it too.
pub(crate) fn show(kind: &'static str) {
    if let Some(metrics) = METRICS.as_ref() {
        for op in OPS {
            metrics.seconds.with_label_values(&[kind, op]);
            metrics.errors.with_label_values(&[kind, op]);
        }
    }
}

/// The store operations' series, for the node's `/metrics`.
pub fn gather() -> Vec<prometheus::proto::MetricFamily> {
    METRICS
        .as_ref()
        .map(|m| m.registry.gather())
        .unwrap_or_default()
}

/// Runs `op` of the store `kind` (none for a store made of others, whose parts measure
/// themselves), measured.
pub async fn op<T>(
    kind: Option<&'static str>,
    op: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let (Some(kind), Some(metrics)) = (kind, METRICS.as_ref()) else {
        return work.await;
    };
    let started = Instant::now();
    let result = work.await;
    metrics
        .seconds
        .with_label_values(&[kind, op])
        .observe(started.elapsed().as_secs_f64());
    // Looked up on success too, so that the series is there, at 0, before the first failure.
    let errors = metrics.errors.with_label_values(&[kind, op]);
    if let Err(StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Config(_)) =
        &result
    {
        errors.inc();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_is_measured_and_a_failure_counted() {
        show("sqlite");
        let ok: Result<(), StoreError> = op(Some("sqlite"), "load", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let failed: Result<(), StoreError> = op(Some("sqlite"), "write", async {
            Err(StoreError::Unavailable("down".into()))
        })
        .await;
        assert!(failed.is_err());
        let fenced: Result<(), StoreError> =
            op(Some("sqlite"), "write", async { Err(StoreError::Gone) }).await;
        assert!(fenced.is_err());
        let families = gather();
        let errors = families
            .iter()
            .find(|f| f.name() == "shardgate_node_store_errors_total")
            .expect("the errors are shown");
        let write = errors
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == "write"))
            .expect("the write series");
        assert_eq!(
            write.get_counter().get_value(),
            1.0,
            "a missing session is no failure"
        );
        assert!(
            families
                .iter()
                .any(|f| f.name() == "shardgate_node_store_op_seconds")
        );
    }
}
