//! Traces over OTLP/HTTP (protobuf) from the gateway and node roles, when an endpoint is
//! configured. With none, nothing of OpenTelemetry is set up and requests make no spans
//! (`shardgate_protocol::traces`).
//!
//! Where to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT`
//! with `/v1/traces`, else, as the older deployment guide named it, `JAEGER_HOST` and
//! `JAEGER_PORT` (default 4318) as `http://HOST:PORT/v1/traces`: Jaeger takes OTLP/HTTP on
//! its port 4318, not on its old agent and collector ports. `OTEL_SERVICE_NAME` names the
//! service, by default `shardgate-gateway` or `shardgate-node`; `OTEL_EXPORTER_OTLP_HEADERS`
//! and the `OTEL_BSP_*` batch settings are read as OpenTelemetry defines them.
//!
//! Exporting never holds a request up: a finished span goes into the SDK's batch queue
//! (bounded, 2,048 spans; past that spans are dropped), which a thread of its own drains. Each
//! batch is sent by our reqwest client on the process's runtime ([`Collector`]). A collector
//! that does not answer costs one warning per outage, and at shutdown at most the export
//! timeout: 2 s unless `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`
//! (milliseconds) say otherwise.

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const JAEGER_HOST: &str = "JAEGER_HOST";
pub const JAEGER_PORT: &str = "JAEGER_PORT";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";

const TRACES_PATH: &str = "/v1/traces";
const OTLP_HTTP_PORT: &str = "4318";
/// Short, so that a process whose collector is gone still stops at once.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Jaeger's ports that do not speak OTLP/HTTP (agent UDP, Thrift HTTP, model gRPC, OTLP gRPC),
/// which a configuration written for its old clients may still name.
const JAEGER_LEGACY_PORTS: [&str; 5] = ["6831", "6832", "14268", "14250", "4317"];

/// The exporter of a running process: flushed at shutdown.
pub struct Traces {
    provider: SdkTracerProvider,
    timeout: Duration,
    pub endpoint: String,
    /// What is likely wrong with the configuration, for the log once it is set up.
    pub doubt: Option<String>,
}

impl Traces {
    /// Exports what is still queued, waiting at most the export timeout (and a little more
    /// for the thread to hand the batch over).
    pub fn shutdown(self) {
        if let Err(e) = self
            .provider
            .shutdown_with_timeout(self.timeout + Duration::from_millis(500))
        {
            tracing::debug!(error = %e, "traces not flushed at shutdown");
        }
    }
}

/// Sets up the exporter if an endpoint is configured, for the service `role` names unless
/// `OTEL_SERVICE_NAME` does; returns it and the tracer for the subscriber's layer.
pub fn start(role: &str, runtime: &Handle) -> anyhow::Result<Option<(Traces, SdkTracer)>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let Some((endpoint, doubt)) = endpoint(var)? else {
        return Ok(None);
    };
    let timeout = timeout(var)?;
    let service = var(SERVICE_NAME).unwrap_or_else(|| role.to_owned());
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("the traces exporter's HTTP client")?;
    let collector = Collector {
        client,
        runtime: runtime.clone(),
        endpoint: endpoint.clone(),
        failing: AtomicBool::new(false),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(collector)
        .with_endpoint(&endpoint)
        .with_timeout(timeout)
        .build()
        .context("the traces exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("shardgate");
    let traces = Traces {
        provider,
        timeout,
        endpoint,
        doubt,
    };
    Ok(Some((traces, tracer)))
}

/// The OTLP/HTTP traces URL the environment names, if any (`var` reads one variable, `None`
/// when unset or blank), and a doubt about it worth a warning.
fn endpoint(
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    let mut doubt = None;
    let (name, url) = if let Some(url) = var(TRACES_ENDPOINT) {
        (TRACES_ENDPOINT, url.trim().to_owned())
    } else if let Some(base) = var(ENDPOINT) {
        let url = format!("{}{TRACES_PATH}", base.trim().trim_end_matches('/'));
        (ENDPOINT, url)
    } else if let Some(host) = var(JAEGER_HOST) {
        let port = var(JAEGER_PORT).unwrap_or_else(|| OTLP_HTTP_PORT.to_owned());
        let port = port.trim();
        // A configuration written for Jaeger's old clients: what it names is tried all the
        // same (a port may be mapped), and the log says what is likely wrong.
        if JAEGER_LEGACY_PORTS.contains(&port) {
            doubt = Some(format!(
                "{JAEGER_PORT}={port} is not Jaeger's OTLP/HTTP port: traces go to Jaeger over \
                 OTLP/HTTP, on its port {OTLP_HTTP_PORT}"
            ));
        }
        (
            JAEGER_HOST,
            format!("http://{}:{port}{TRACES_PATH}", host.trim()),
        )
    } else {
        return Ok(None);
    };
    let parsed = reqwest::Url::parse(&url).with_context(|| format!("{name}: {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("{name}: {url:?} is not an http(s) URL");
    }
    Ok(Some((url, doubt)))
}

fn timeout(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Duration> {
    for name in [TRACES_TIMEOUT, TIMEOUT] {
        if let Some(ms) = var(name) {
            let ms: u64 = ms
                .trim()
                .parse()
                .with_context(|| format!("{name}={ms:?}: milliseconds"))?;
            return Ok(Duration::from_millis(ms));
        }
    }
    Ok(DEFAULT_TIMEOUT)
}

/// Sends each export with our reqwest client, on the runtime: the batch processor's thread
/// has no runtime, which reqwest's async client needs. Reports a collector that does not
/// answer once, when it stops answering, and once when it answers again.
#[derive(Debug)]
struct Collector {
    client: reqwest::Client,
    runtime: Handle,
    endpoint: String,
    /// Whether the last export failed.
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { client.send_bytes(request).await })
            .await;
        let answer = sent.unwrap_or_else(|e| Err(Box::new(e)));
        self.report(&answer);
        answer
    }
}

impl Collector {
    fn report(&self, answer: &Result<Response<Bytes>, HttpError>) {
        let problem = match answer {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(shardgate_protocol::causes(e.as_ref())),
        };
        match problem {
            None if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "exporting traces again");
            }
            Some(error) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    error,
                    "cannot export traces; spans are dropped until the collector answers"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn url(found: anyhow::Result<Option<(String, Option<String>)>>) -> Option<String> {
        found.ok().flatten().map(|(url, _)| url)
    }

    #[test]
    fn no_endpoint_means_no_traces() {
        assert_eq!(url(endpoint(env(&[]))), None);
        assert_eq!(url(endpoint(env(&[(JAEGER_PORT, "4318")]))), None);
    }

    #[test]
    fn the_traces_endpoint_wins_and_the_general_one_gains_the_path() {
        let both = env(&[
            (TRACES_ENDPOINT, "http://collector:4318/custom"),
            (ENDPOINT, "http://other:4318"),
            (JAEGER_HOST, "jaeger"),
        ]);
        assert_eq!(
            url(endpoint(both)).as_deref(),
            Some("http://collector:4318/custom")
        );
        let general = env(&[(ENDPOINT, "http://collector:4318/")]);
        assert_eq!(
            url(endpoint(general)).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
    }

    #[test]
    fn jaeger_host_and_port_name_an_otlp_http_endpoint() {
        let host = env(&[(JAEGER_HOST, "jaeger")]);
        assert_eq!(
            url(endpoint(host)).as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
        let both = env(&[(JAEGER_HOST, "jaeger"), (JAEGER_PORT, "14318")]);
        assert_eq!(
            url(endpoint(both)).as_deref(),
            Some("http://jaeger:14318/v1/traces")
        );
        let agent = env(&[(JAEGER_HOST, "jaeger"), (JAEGER_PORT, "6831")]);
        let (url, doubt) = endpoint(agent).ok().flatten().unwrap_or_default();
        assert_eq!(url, "http://jaeger:6831/v1/traces");
        assert!(
            doubt.is_some_and(|d| d.contains("4318")),
            "the old agent port is doubted"
        );
    }

    #[test]
    fn an_endpoint_that_is_no_http_url_is_refused() {
        assert!(endpoint(env(&[(ENDPOINT, "collector:4318")])).is_err());
        assert!(endpoint(env(&[(TRACES_ENDPOINT, "not a url")])).is_err());
    }

    #[test]
    fn the_export_timeout_is_short_unless_configured() {
        assert_eq!(timeout(env(&[])).ok(), Some(DEFAULT_TIMEOUT));
        assert_eq!(
            timeout(env(&[(TIMEOUT, "500"), (TRACES_TIMEOUT, "250")])).ok(),
            Some(Duration::from_millis(250))
        );
        assert!(timeout(env(&[(TIMEOUT, "2s")])).is_err());
    }
}
