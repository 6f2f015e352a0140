//! Traces over OTLP/HTTP: a collector in the test receives one trace that runs from the
//! client's `traceparent` through the gateway and the node to an HTTP upstream, which is sent
//! the node's context; and a collector that is not there costs requests nothing and a process
//! that stops on SIGTERM little.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::upstreams::{http_config, recording_stateless_upstream, write_config};
use shardgate_tests::{Cluster, free_addr, scratch, start_gateway_with, start_node_with};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client's trace and span, as its `traceparent` names them.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Exports go out every 100 ms rather than every 5 s, so that the test need not wait.
const SCHEDULE_DELAY: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

/// A span as the collector received it: ids in hex, attributes as text.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver on a free loopback port, keeping every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

impl Collector {
    /// Starts one; returns it and its base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    async fn start() -> anyhow::Result<(Collector, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(collector.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((collector, url))
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The spans of `trace`, once they include every one of `names`.
    async fn trace_with(&self, trace: &str, names: &[&str]) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Received> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace == trace)
                .collect();
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return Ok(spans);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the collector has no {names:?} in trace {trace}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> StatusCode {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|mut a| a.remove("service.name"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    if let Ok(mut spans) = collector.0.lock() {
        spans.extend(received);
    }
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A stateless-era `tools/call` of the upstream's `weather`, with the client's trace context.
fn call(http: &reqwest::Client, endpoint: &str) -> reqwest::RequestBuilder {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "weather", "arguments": {"region": "eu-west"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }});
    http.post(endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "weather")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "client=1")
        .body(body.to_string())
}

#[tokio::test]
async fn t10_one_trace_runs_from_the_client_through_gateway_and_node_to_the_upstream()
-> anyhow::Result<()> {
    let dir = scratch("traces")?;
    let (collector, endpoint) = Collector::start().await?;
    let (url, upstream) = recording_stateless_upstream().await?;
    let config = write_config(&dir, &http_config("modern", &url, "stateless"))?;
    let cluster = Cluster::builder()
        .nodes(1)
        .config(&config)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env(SCHEDULE_DELAY.0, SCHEDULE_DELAY.1)
        .start()
        .await?;
    let resp = call(&shardgate_tests::http().build()?, &cluster.endpoint)
        .send()
        .await?;
    let answer: Value = resp.json().await?;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");

    let names = [
        "gateway.request",
        "gateway.forward",
        "node.request",
        "node.upstream",
    ];
    let spans = collector.trace_with(CLIENT_TRACE, &names).await?;
    cluster.stop().await?;
    let one = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no {name} in {spans:#?}"))
    };
    let request = one("gateway.request")?;
    let forward = one("gateway.forward")?;
    let node = one("node.request")?;
    let upstream_call = one("node.upstream")?;
    for (span, service) in [
        (request, "shardgate-gateway"),
        (forward, "shardgate-gateway"),
        (node, "shardgate-node"),
        (upstream_call, "shardgate-node"),
    ] {
        assert_eq!(span.service, service, "{span:#?}");
    }
    // client → gateway request → its forward → node request → upstream call: the node's parent
    // is the gateway's span, not the client's (whose header the gateway replaced).
    assert_eq!(request.parent, CLIENT_SPAN, "{request:#?}");
    assert_eq!(forward.parent, request.id, "{forward:#?}");
    assert_eq!(node.parent, forward.id, "{node:#?}");
    assert_eq!(upstream_call.parent, node.id, "{upstream_call:#?}");
    for span in [request, node] {
        assert_eq!(span.attributes["mcp.era"], "stateless", "{span:#?}");
        assert_eq!(span.attributes["mcp.class"], "tools/call", "{span:#?}");
        assert_eq!(
            span.attributes["http.response.status_code"], "200",
            "{span:#?}"
        );
    }
    assert_eq!(
        forward.attributes["shardgate.node"], "node-0",
        "{forward:#?}"
    );
    assert_eq!(
        upstream_call.attributes["shardgate.upstream"], "modern",
        "{upstream_call:#?}"
    );

    // The upstream was sent the node's context: the client's trace, the node's call span.
    let head = upstream.call()?;
    let traceparent = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent:"))
        .map(str::trim)
        .with_context(|| format!("no traceparent reached the upstream: {head}"))?;
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[1], CLIENT_TRACE, "{traceparent}");
    assert_eq!(fields[2], upstream_call.id, "{traceparent}");
    // The trace's vendor state goes along the trace, as W3C trace context asks.
    assert!(head.contains("tracestate: client=1"), "{head}");
    Ok(())
}

#[tokio::test]
async fn t20_a_collector_that_is_not_there_costs_requests_nothing_and_stopping_little()
-> anyhow::Result<()> {
    let dir = scratch("traces-nowhere")?;
    let nowhere = format!("http://{}", free_addr()?);
    let envs: Vec<(String, String)> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", nowhere.as_str()),
        SCHEDULE_DELAY,
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (node, at) = start_node_with(
        &[
            "--id".into(),
            "node-0".into(),
            "--data-dir".into(),
            dir.join("node-0").display().to_string(),
        ],
        &envs,
    )
    .await?;
    let (gateway, addrs) = start_gateway_with(
        &[
            "--seeds".into(),
            at.internal.to_string(),
            "--members".into(),
            format!("node-0={}/{}", at.session, at.internal),
        ],
        &envs,
    )
    .await?;
    let client = Client::new(&format!("http://{}/mcp", addrs.mcp));
    let sid = client.initialize().await?;
    // Every 100 ms an export fails meanwhile; no request waits for one.
    let mut slowest = Duration::ZERO;
    for id in 1..=30 {
        let started = Instant::now();
        assert_eq!(client.count(&sid, id).await?, id);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} while exports failed"
    );
    // Each flushes what it still holds on SIGTERM, and gives up on the collector quickly.
    for (role, process) in [("gateway", gateway), ("node", node)] {
        let started = Instant::now();
        process.stop().await?;
        let took = started.elapsed();
        println!("{role} stopped in {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "the {role} took {took:?} to stop"
        );
    }
    Ok(())
}
