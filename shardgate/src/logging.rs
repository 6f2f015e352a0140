//! Logging: human-readable by default, JSON with `LOG_FORMAT=json`; the filter from
//! `LOG_LEVEL` (tracing's env-filter syntax, default `info,openraft=warn`: openraft logs every
//! failed heartbeat to an unreachable peer as an error, and our failure detector says once
//! what that means).

use tracing_subscriber::EnvFilter;

use shardgate_statefulset::LOG_LEVEL;

pub const LOG_FORMAT: &str = "LOG_FORMAT";
const DEFAULT_FILTER: &str = "info,openraft=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_env(LOG_LEVEL).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var(LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
