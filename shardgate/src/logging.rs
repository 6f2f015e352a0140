//! Logging: human-readable by default, JSON with `LOG_FORMAT=json`; the filter from
//! `LOG_LEVEL` (tracing's env-filter syntax, default `info,openraft=warn`: openraft logs every
//! failed heartbeat to an unreachable peer as an error, and our failure detector says once
//! what that means).
//!
//! Traces, for the roles that serve requests and when an endpoint is configured ([`traces`]):
//! a second layer takes the spans of `shardgate_protocol::traces::TARGET`, whatever
//! `LOG_LEVEL` says, and only those; the log leaves them out, so that its lines read the same
//! with traces on or off.

use crate::traces::{self, Traces};
use shardgate_protocol::traces::TARGET;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use shardgate_statefulset::LOG_LEVEL;

pub const LOG_FORMAT: &str = "LOG_FORMAT";
const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Sets up logging, and traces for `role` (the service it names) when one is given and an
/// endpoint is configured; their exports are sent on `runtime`.
pub fn init(
    role: Option<&str>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Option<Traces>> {
    let filter =
        EnvFilter::try_from_env(LOG_LEVEL).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var(LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let exporter = match role {
        Some(role) => traces::start(role, runtime)?,
        None => None,
    };
    let Some((traces, tracer)) = exporter else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if json {
            builder.json().init();
        } else {
            builder.init();
        }
        return Ok(None);
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match json {
        true => logs.json().boxed(),
        false => logs.boxed(),
    };
    let logs = logs.with_filter(filter.and(filter_fn(|m| m.target() != TARGET)));
    // Spans are timed from creation to close, and their parents come from the span tree: the
    // layer need not time every poll nor make each span the thread's OpenTelemetry context.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(filter_fn(|m| m.target() == TARGET).with_max_level_hint(Level::INFO));
    tracing_subscriber::registry().with(logs).with(spans).init();
    shardgate_protocol::traces::turn_on();
    tracing::info!(endpoint = %traces.endpoint, "exporting traces");
    if let Some(doubt) = &traces.doubt {
        tracing::warn!("{doubt}");
    }
    Ok(Some(traces))
}
