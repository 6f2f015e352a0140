//! Both eras on one endpoint, end to end: every session-era revision, batches, the two
//! meanings of a dropped connection, and server-to-client requests answered through another
//! gateway.

use serde_json::{Value, json};
use shardgate_tests::Cluster;
use shardgate_tests::mcp::{self, Client, SseReader};
use std::time::Duration;

fn initialize(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {"sampling": {}},
        "clientInfo": {"name": "eras", "version": "0"}}})
}

fn stateless_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

/// Starts a session at `version`; returns its id and the negotiated revision.
async fn session_at(c: &Client, version: &str) -> anyhow::Result<(String, String)> {
    let resp = c.post(&initialize(version)).send().await?;
    anyhow::ensure!(
        resp.status() == 200,
        "initialize at {version}: HTTP {}: {}",
        resp.status(),
        resp.text().await?
    );
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no session id"))?;
    let answer = mcp::response_of(resp, &json!(0)).await?;
    let negotiated = answer["result"]["protocolVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((sid, negotiated))
}

const IN_FLIGHT: &str = "shardgate_node_calls_in_flight";

async fn calls_in_flight(cluster: &Cluster, http: &reqwest::Client) -> anyhow::Result<u64> {
    cluster.node_metric(http, IN_FLIGHT).await
}

/// Waits until the cluster has `want` calls in flight; false if it does not within `within`.
async fn settles_at(
    cluster: &Cluster,
    http: &reqwest::Client,
    want: u64,
    within: Duration,
) -> anyhow::Result<bool> {
    cluster
        .wait_for_metric(http, IN_FLIGHT, within, |n| n == want)
        .await
}

#[tokio::test]
async fn t10_every_session_revision_and_batches() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let (sid, negotiated) = session_at(&c, version).await?;
        assert_eq!(negotiated, version);
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": version}}});
        let resp = c
            .post(&call)
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", version)
            .send()
            .await?;
        let events = SseReader::new(resp).collect().await?;
        // Clients before 2025-11-25 may choke on an empty `data`: they get no priming event.
        let primed = events.first().is_some_and(|e| e.data.is_empty());
        assert_eq!(primed, version == "2025-11-25", "{version}: {events:?}");
        let answer = events.iter().filter_map(|e| e.json()).next_back();
        assert_eq!(
            answer.map(|a| a["result"]["content"][0]["text"].clone()),
            Some(json!(version))
        );
    }
    let (_, negotiated) = session_at(&c, "2024-01-01").await?;
    assert_eq!(
        negotiated, "2025-11-25",
        "an unknown revision gets our latest"
    );

    // 2025-03-26 batches: two requests, two answers, one HTTP exchange.
    let (sid, _) = session_at(&c, "2025-03-26").await?;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "add", "arguments": {"a": 2, "b": 3}}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    ]);
    let resp = c
        .http
        .post(&c.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .body(batch.to_string())
        .send()
        .await?;
    let answers: Value = resp.json().await?;
    let answers = answers.as_array().cloned().unwrap_or_default();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|a| a["id"] == 2 && a["result"] == json!({}))
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_stateless_discover_and_calls() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let stateless = |id: i64, method: &str, params: Value| {
        let mut params = params;
        params["_meta"] = stateless_meta();
        let mut req = c
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = params.get("name").and_then(Value::as_str) {
            req = req.header("mcp-name", name);
        }
        req
    };
    let discover: Value = stateless(1, "server/discover", json!({}))
        .send()
        .await?
        .json()
        .await?;
    let versions = discover["result"]["supportedVersions"].clone();
    for v in ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"] {
        assert!(
            versions.as_array().is_some_and(|a| a.contains(&json!(v))),
            "{v} in {versions}; server/discover answered {discover}"
        );
    }
    let echo = stateless(
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    )
    .send()
    .await?;
    assert!(
        echo.headers().get("mcp-session-id").is_none(),
        "no session in the stateless era"
    );
    let echo: Value = echo.json().await?;
    assert_eq!(echo["result"]["resultType"], "complete");
    assert_eq!(echo["result"]["content"][0]["text"], "hi");
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_a_dropped_stream_cancels_only_in_the_stateless_era() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let slow = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": 50, "delay_ms": 100},
            "_meta": {"progressToken": "p"}}})
    };

    // Stateless: closing the response stream is the cancellation.
    let mut body = slow(1);
    body["params"]["_meta"] = stateless_meta();
    body["params"]["_meta"]["progressToken"] = json!("p");
    let resp = c
        .post(&body)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow")
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 200,
        "the slow call: HTTP {}: {}",
        resp.status(),
        resp.text().await?
    );
    let mut reader = SseReader::new(resp);
    assert!(reader.next().await?.is_some(), "the call streams progress");
    assert_eq!(calls_in_flight(&cluster, &c.http).await?, 1);
    drop(reader);
    // The call would run for 5 s; it stops long before that.
    assert!(
        settles_at(&cluster, &c.http, 0, Duration::from_secs(3)).await?,
        "closing the stream cancelled the call"
    );

    // Session era: a dropped connection is not a cancellation; notifications/cancelled is.
    let sid = c.initialize().await?;
    let resp = c.session_post(&sid, &slow(2)).send().await?;
    let mut reader = SseReader::new(resp);
    assert!(reader.next().await?.is_some());
    drop(reader);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls_in_flight(&cluster, &c.http).await?,
        1,
        "still running"
    );
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2, "reason": "test"}});
    assert_eq!(c.session_post(&sid, &cancel).send().await?.status(), 202);
    assert!(
        settles_at(&cluster, &c.http, 0, Duration::from_secs(3)).await?,
        "notifications/cancelled stopped the call"
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t40_a_client_answer_reaches_the_asking_node_through_any_gateway() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).gateways(2).start().await?;
    assert_eq!(cluster.gateways.len(), 2);
    let (a, b) = (
        Client::new(&cluster.gateways[0]),
        Client::new(&cluster.gateways[1]),
    );
    let (sid, _) = session_at(&a, "2025-11-25").await?;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "test_sampling", "arguments": {"prompt": "via two gateways"}}});
    let mut stream = SseReader::new(a.session_post(&sid, &call).send().await?);
    let request = loop {
        let event = stream
            .next()
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if let Some(msg) = event.json()
            && msg["method"] == "sampling/createMessage"
        {
            break msg;
        }
    };
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "model": "test-model", "stopReason": "endTurn",
        "content": {"type": "text", "text": "answered through the other gateway"}}});
    assert_eq!(b.session_post(&sid, &answer).send().await?.status(), 202);
    let result = loop {
        let event = stream
            .next()
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if let Some(msg) = event.json()
            && msg["id"] == 5
        {
            break msg;
        }
    };
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("answered through the other gateway"),
        "{result}"
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t50_up_stops_every_process_it_started() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|(_, a)| [a.session, a.internal, a.admin])
        .map(|a| a.to_string())
        .collect();
    let endpoint = cluster.endpoint.clone();
    let status = cluster.stop().await?;
    assert!(status.success(), "up exits cleanly on SIGTERM: {status}");
    let gateway = endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    for addr in addrs.iter().chain([&gateway]) {
        assert!(
            tokio::net::TcpStream::connect(addr.as_str()).await.is_err(),
            "{addr} still accepts connections"
        );
    }
    Ok(())
}
