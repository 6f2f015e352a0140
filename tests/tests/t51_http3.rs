//! HTTP/3 through the gateway: the same `/mcp` as over TCP, with our own QUIC client (quinn and
//! the h3 crate's client). Both eras, SSE answers, the standalone GET stream resumed with
//! `Last-Event-ID` on a new connection after the first was cut, DELETE, `Alt-Svc` on TCP
//! answers pointing at the UDP port, a client that changes address keeping its connection, and
//! GOAWAY on shutdown letting a call in flight finish.

use http::Method;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use shardgate_tests::http3::H3;
use shardgate_tests::{TlsGateway, client_tls, scratch};
use std::net::SocketAddr;

/// A one-node cluster behind a gateway with a self-signed certificate for `localhost`, hence
/// HTTP/3.
struct Gateway {
    cluster: TlsGateway,
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    /// The certificate as PEM, for clients that read trust from a file.
    ca: std::path::PathBuf,
}

async fn cluster(name: &str) -> anyhow::Result<Gateway> {
    let dir = scratch(name)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cluster = TlsGateway::start(&dir, &cert).await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    Ok(Gateway {
        addr: cluster.addrs.mcp,
        ca: cluster.cert.clone(),
        cluster,
        roots,
    })
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "h3-test", "version": "0"}}})
}

fn call(id: i64, tool: &str, meta: Option<Value>) -> Value {
    let mut params = json!({"name": tool, "arguments": {}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

fn text(answer: &Value) -> Option<&str> {
    answer["result"]["content"][0]["text"].as_str()
}

#[tokio::test]
async fn t10_a_session_over_http3_resumed_after_its_connection_is_cut() -> anyhow::Result<()> {
    let gateway = cluster("h3-session").await?;
    let (addr, roots) = (gateway.addr, &gateway.roots);
    let mut h3 = H3::connect(addr, roots.clone()).await?;

    let init = h3.post(None, &initialize()).await?;
    assert_eq!(init.status, 200);
    let sid = init
        .header("mcp-session-id")
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session id"))?;
    let answer = init.answer(&json!(0)).await?;
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-11-25",
        "{answer}"
    );
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(h3.post(Some(&sid), &note).await?.status, 202);
    for n in 1..=2 {
        let resp = h3.post(Some(&sid), &call(n, "counter", None)).await?;
        assert_eq!(resp.status, 200);
        let answer = resp.answer(&json!(n)).await?;
        assert_eq!(text(&answer), Some(n.to_string().as_str()), "{answer}");
    }

    // The standalone stream, opened on this connection; its priming event has an id.
    let headers = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", sid.as_str()),
    ];
    let mut listening = h3.request(Method::GET, &headers, None).await?;
    assert_eq!(listening.status, 200);
    let primed = listening
        .event()
        .await?
        .and_then(|e| e.id)
        .ok_or_else(|| anyhow::anyhow!("no priming event id"))?;

    // The connection goes; meanwhile a call on another one sends progress notifications on
    // the standalone stream, which nobody hears.
    h3.cut();
    let mut again = H3::connect(addr, roots.clone()).await?;
    let meta = json!({"progressToken": "p-1"});
    let resp = again
        .request(
            Method::POST,
            &[("accept", "application/json"), ("mcp-session-id", &sid)],
            Some(&call(3, "test_tool_with_progress", Some(meta))),
        )
        .await?;
    assert_eq!(resp.status, 200);
    let answer: Value = serde_json::from_slice(&resp.body().await?)?;
    assert!(answer.get("result").is_some(), "{answer}");

    // Resumed from the priming event: every notification it missed, in order.
    let resume = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", sid.as_str()),
        ("last-event-id", primed.as_str()),
    ];
    let mut resumed = again.request(Method::GET, &resume, None).await?;
    assert_eq!(resumed.status, 200);
    let mut progress = Vec::new();
    while progress.len() < 3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), resumed.event())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the resumed stream ended"))?;
        if let Some(msg) = event.json()
            && msg["method"] == "notifications/progress"
        {
            progress.push(msg["params"]["progress"].as_i64().unwrap_or(-1));
        }
    }
    assert_eq!(progress, [0, 50, 100]);
    drop(resumed);

    let gone = again
        .request(Method::DELETE, &[("mcp-session-id", &sid)], None)
        .await?;
    assert_eq!(gone.status, 200);
    let after = again.post(Some(&sid), &call(4, "counter", None)).await?;
    assert_eq!(after.status, 404);
    Ok(())
}

#[tokio::test]
async fn t20_stateless_calls_and_alt_svc() -> anyhow::Result<()> {
    let gateway = cluster("h3-stateless").await?;
    let (addr, roots) = (gateway.addr, &gateway.roots);
    let mut h3 = H3::connect(addr, roots.clone()).await?;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "echo", "arguments": {"text": "over quic"},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    let headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let resp = h3.request(Method::POST, &headers, Some(&body)).await?;
    assert_eq!(resp.status, 200);
    let answer = resp.answer(&json!(1)).await?;
    assert_eq!(text(&answer), Some("over quic"), "{answer}");

    // Over TCP, the answer advertises HTTP/3 on the same port number.
    let config = client_tls(roots.clone(), &[b"h2"])?;
    let http = shardgate_tests::http()
        .tls_backend_preconfigured(config)
        .resolve("localhost", addr)
        .build()?;
    let resp = http
        .post(format!("https://localhost:{}/mcp", addr.port()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize().to_string())
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("alt-svc").and_then(|v| v.to_str().ok()),
        Some(format!("h3=\":{}\"; ma=86400", addr.port()).as_str())
    );
    Ok(())
}

#[tokio::test]
async fn t30_a_client_that_is_not_ours() -> anyhow::Result<()> {
    let gateway = cluster("h3-aioquic").await?;
    let (addr, ca) = (gateway.addr, &gateway.ca);
    let out = tokio::process::Command::new(shardgate_tests::peers::python()?)
        .arg(shardgate_tests::peers::python_script("h3_client.py"))
        .args([&addr.ip().to_string(), &addr.port().to_string()])
        .arg(ca)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "aioquic client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(report["initialize_status"], "200", "{report}");
    assert_eq!(report["protocol_version"], "2025-11-25", "{report}");
    assert!(report["session"].is_string(), "{report}");
    assert_eq!(report["initialized_status"], "202", "{report}");
    assert_eq!(report["call_status"], "200", "{report}");
    assert_eq!(report["echo"], "hello from aioquic", "{report}");
    Ok(())
}

#[tokio::test]
async fn t40_up_with_tls_serves_https_and_http3() -> anyhow::Result<()> {
    let cluster = shardgate_tests::Cluster::builder()
        .nodes(1)
        .tls()
        .start()
        .await?;
    let ca = cluster
        .edge_ca
        .clone()
        .ok_or_else(|| anyhow::anyhow!("up --tls named no CA"))?;
    assert!(
        cluster.endpoint.starts_with("https://"),
        "{}",
        cluster.endpoint
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    let addr: SocketAddr = cluster
        .endpoint
        .trim_start_matches("https://")
        .trim_end_matches("/mcp")
        .parse()?;
    let mut h3 = H3::connect(addr, roots).await?;
    let init = h3.post(None, &initialize()).await?;
    assert_eq!(init.status, 200);
    assert!(init.header("mcp-session-id").is_some());
    cluster.stop().await?;
    Ok(())
}

/// A session-era call as the session's client sends it.
async fn session(h3: &mut H3) -> anyhow::Result<String> {
    let init = h3.post(None, &initialize()).await?;
    anyhow::ensure!(init.status == 200, "initialize: {}", init.status);
    let sid = init
        .header("mcp-session-id")
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session id"))?;
    init.answer(&json!(0)).await?;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    anyhow::ensure!(h3.post(Some(&sid), &note).await?.status == 202);
    Ok(sid)
}

#[tokio::test]
async fn t50_a_client_that_changes_address_keeps_its_connection() -> anyhow::Result<()> {
    let gateway = cluster("h3-migration").await?;
    let mut h3 = H3::connect(gateway.addr, gateway.roots.clone()).await?;
    let sid = session(&mut h3).await?;
    let answer = h3.post(Some(&sid), &call(1, "counter", None)).await?;
    assert_eq!(text(&answer.answer(&json!(1)).await?), Some("1"));

    let (before, connection) = (h3.local_addr()?, h3.connection_id());
    let after = h3.migrate()?;
    assert_ne!(before.port(), after.port());
    // The same connection, from the new address: the session goes on where it was.
    for n in 2..=3 {
        let resp = h3.post(Some(&sid), &call(n, "counter", None)).await?;
        assert_eq!(resp.status, 200);
        let answer = resp.answer(&json!(n)).await?;
        assert_eq!(text(&answer), Some(n.to_string().as_str()), "{answer}");
    }
    assert_eq!(h3.connection_id(), connection);
    Ok(())
}

#[tokio::test]
async fn t60_shutdown_sends_goaway_and_lets_a_call_in_flight_finish() -> anyhow::Result<()> {
    let Gateway {
        cluster,
        addr,
        roots,
        ..
    } = cluster("h3-goaway").await?;
    let TlsGateway {
        gateway,
        node: _node,
        ..
    } = cluster;
    let mut h3 = H3::connect(addr, roots).await?;
    let sid = session(&mut h3).await?;
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 10, "delay_ms": 100}}});
    let in_flight = h3.post(Some(&sid), &slow).await?;
    assert_eq!(in_flight.status, 200);

    // SIGTERM while the call runs (about a second): GOAWAY, then the grace to finish.
    let stopping = tokio::spawn(gateway.stop());
    let answer = in_flight.answer(&json!(7)).await?;
    assert_eq!(text(&answer), Some("Finished 10 steps"), "{answer}");
    // After GOAWAY this connection takes no new request.
    let refused = h3.post(Some(&sid), &call(8, "counter", None)).await;
    assert!(refused.is_err(), "a request after GOAWAY was taken");
    let status = stopping.await??;
    assert!(status.success(), "the gateway exited with {status}");
    Ok(())
}
