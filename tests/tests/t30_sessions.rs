//! Sessions end to end over real processes: spread over nodes, resumed streams, bad input.

use futures_util::StreamExt;
use serde_json::{Value, json};
use shardgate_tests::mcp::{Client, SseReader};
use shardgate_tests::{Cluster, mcp};
use std::collections::BTreeMap;

/// `shardgate_node_sessions` from a node's /metrics.
async fn node_sessions(http: &reqwest::Client, addr: &std::net::SocketAddr) -> anyhow::Result<u64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("shardgate_node_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no session gauge in {text}"))
}

#[tokio::test]
async fn t10_thousand_sessions_spread_evenly_over_three_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let client = Client::new(&cluster.endpoint);
    let sessions: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let c = client.clone();
            async move { c.initialize().await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sessions: Vec<String> = sessions.into_iter().collect::<anyhow::Result<_>>()?;
    let unique: std::collections::HashSet<_> = sessions.iter().collect();
    assert_eq!(unique.len(), 1000, "session ids are unique");
    let mut load = BTreeMap::new();
    for (id, addr) in &cluster.nodes {
        load.insert(id.clone(), node_sessions(&client.http, &addr.admin).await?);
    }
    let total: u64 = load.values().sum();
    assert_eq!(
        total, 1000,
        "every session lives on exactly one node: {load:?}"
    );
    let max = *load.values().max().unwrap_or(&0) as f64;
    let ratio = max / (total as f64 / load.len() as f64);
    println!("sessions per node: {load:?}; max/mean = {ratio:.3}");
    assert!(ratio < 1.3, "uneven spread {load:?} (max/mean {ratio:.3})");
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_resumed_stream_gets_exactly_the_missed_events_of_that_stream() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let client = Client::new(&cluster.endpoint);
    let sid = client.initialize().await?;
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 6, "delay_ms": 150},
        "_meta": {"progressToken": "resume-test"}
    }});
    let resp = client.session_post(&sid, &slow).send().await?;
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let priming = reader.next().await?.expect("priming event");
    assert_eq!(priming.data, "", "the first event primes the stream");
    let stream = priming
        .id
        .as_deref()
        .and_then(|id| id.split_once('-'))
        .map(|(s, _)| s.to_string())
        .expect("event ids name their stream");
    let mut seen = vec![];
    for _ in 0..2 {
        seen.push(reader.next().await?.expect("progress event"));
    }
    drop(reader); // the connection drops mid-stream

    // Meanwhile another stream of the same session carries its own events.
    let other = client
        .request(
            &sid,
            8,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}}),
        )
        .await?;
    assert_eq!(other["result"]["content"][0]["text"], "x");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let last = seen.last().and_then(|e| e.id.clone()).expect("an id");
    let resumed = client
        .http
        .get(&client.endpoint)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", mcp::SESSION_VERSION)
        .header("last-event-id", &last)
        .send()
        .await?;
    assert_eq!(resumed.status(), 200);
    let replay = SseReader::new(resumed).collect().await?;
    let seq = |e: &mcp::Event| -> (String, u64) {
        let (s, n) =
            e.id.as_deref()
                .and_then(|id| id.split_once('-'))
                .expect("id");
        (s.to_string(), n.parse().expect("seq"))
    };
    let (_, last_seq) = seq(seen.last().expect("seen"));
    let seqs: Vec<u64> = replay.iter().map(|e| seq(e).1).collect();
    assert!(
        replay.iter().all(|e| seq(e).0 == stream),
        "only stream {stream}: {replay:?}"
    );
    assert_eq!(
        seqs,
        (last_seq + 1..=last_seq + seqs.len() as u64).collect::<Vec<_>>(),
        "exactly the events after {last}, in order, once"
    );
    let messages: Vec<Value> = replay.iter().filter_map(|e| e.json()).collect();
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 6 - 2, "the four progress events not yet seen");
    let result = messages.last().expect("the response ends the replay");
    assert_eq!(result["id"], 7);
    assert!(result.get("result").is_some(), "{result}");
    cluster.stop().await?;
    Ok(())
}

/// Sends `req` and returns its status and JSON body (or Null).
async fn status_and_body(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

#[tokio::test]
async fn t30_bad_input_gets_its_status_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    assert_eq!(c.count(&sid, 1).await?, 1);
    let count = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "counter", "arguments": {}}});

    let evil_origin = c
        .session_post(&sid, &count)
        .header("origin", "https://evil.example.com");
    assert_eq!(status_and_body(evil_origin).await?.0, 403);
    let evil_host = c
        .session_post(&sid, &count)
        .header("host", "evil.example.com");
    assert_eq!(status_and_body(evil_host).await?.0, 403);
    let bare = |accept: &str, content_type: &str| {
        c.http
            .post(&c.endpoint)
            .header("accept", accept)
            .header("content-type", content_type)
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", mcp::SESSION_VERSION)
            .body(count.to_string())
    };
    let html_only = bare("text/html", "application/json");
    assert_eq!(status_and_body(html_only).await?.0, 406);
    let text_body = bare("application/json, text/event-stream", "text/plain");
    assert_eq!(status_and_body(text_body).await?.0, 415);
    let huge = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "counter", "arguments": {"pad": "x".repeat(5 * 1024 * 1024)}}});
    // Over HTTP/2 a refusal before the body is read still reaches the client (HTTP/1.1 closes
    // the connection mid-upload, which many clients report as a send error instead).
    let h2 = Client::with_http(
        shardgate_tests::http().http2_prior_knowledge().build()?,
        &c.endpoint,
    );
    assert_eq!(status_and_body(h2.session_post(&sid, &huge)).await?.0, 413);
    let malformed = c
        .http
        .post(&c.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .body("{\"jsonrpc\": \"2.0\", \"id\": 4, \"method\": \"tools/call\"");
    let (status, body) = status_and_body(malformed).await?;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let not_rpc = c.session_post(&sid, &json!({"hello": "world"}));
    let (status, body) = status_and_body(not_rpc).await?;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    assert_eq!(
        status_and_body(c.post(&count)).await?.0,
        400,
        "no session id"
    );
    let unknown = c.session_post("no-such-session", &count);
    assert_eq!(status_and_body(unknown).await?.0, 404);
    let bad_version = c
        .post(&count)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "1999-01-01");
    assert_eq!(status_and_body(bad_version).await?.0, 400);
    let stateless_get = c
        .http
        .get(&c.endpoint)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2026-07-28");
    assert_eq!(status_and_body(stateless_get).await?.0, 405);
    let stateless_mismatch = c
        .post(
            &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "prompts/list");
    let (status, body) = status_and_body(stateless_mismatch).await?;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32020))
    );

    // None of that reached the session: the counter moves on from where it was.
    assert_eq!(c.count(&sid, 6).await?, 2);

    let delete = c.delete(&sid);
    assert!(matches!(status_and_body(delete).await?.0, 200 | 204));
    assert_eq!(status_and_body(c.session_post(&sid, &count)).await?.0, 404);
    cluster.stop().await?;
    Ok(())
}
