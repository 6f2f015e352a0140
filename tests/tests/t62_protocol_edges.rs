//! Protocol edges through the gateway: large batches and the revisions that removed batching,
//! request ids beyond f64 precision, and refusals that must not echo what they refuse.

use serde_json::{Value, json};
use shardgate_tests::Cluster;
use shardgate_tests::mcp::{self, Client, SseReader};

/// An id no f64 holds: it must come back exactly as sent, in both eras.
const BIG_ID: &str = "123456789012345678901234567890";

fn initialize(id: &str, version: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"edges","version":"0"}}}}}}"#
    )
}

/// A raw POST: the body is sent as written, so ids are not rewritten by a JSON library.
fn post(c: &Client, body: String) -> reqwest::RequestBuilder {
    c.http
        .post(&c.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

/// Starts a session at `version`; returns its id.
async fn session_at(c: &Client, version: &str) -> anyhow::Result<String> {
    let resp = post(c, initialize("0", version)).send().await?;
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no session id"))?;
    mcp::response_of(resp, &json!(0)).await?;
    Ok(sid)
}

/// A stateless-era request with the `_meta` that era requires; `Mcp-Method` says
/// `header_method` (the body's method, unless a test wants them to disagree).
fn stateless(c: &Client, id: &str, method: &str, header_method: &str) -> reqwest::RequestBuilder {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    post(c, body)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", header_method)
}

fn has_big_id(text: &str) -> bool {
    text.contains(&format!(r#""id":{BIG_ID}"#))
}

#[tokio::test]
async fn t10_batches_are_answered_whole_and_only_where_they_exist() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(2).start().await?;
    let c = Client::new(&cluster.endpoint);

    // 2025-03-26: every answer of a large batch on the batch's own stream, however fast the
    // answers come (they are written at once, faster than any client reads).
    let sid = session_at(&c, "2025-03-26").await?;
    for size in [300, 2000] {
        let batch: Vec<Value> = (1..=size)
            .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "ping"}))
            .collect();
        let resp = post(&c, Value::Array(batch).to_string())
            .header("mcp-session-id", &sid)
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        let mut ids: Vec<i64> = SseReader::new(resp)
            .collect()
            .await?
            .iter()
            .filter_map(|e| e.json())
            .filter(|m| m.get("result").is_some())
            .filter_map(|m| m["id"].as_i64())
            .collect();
        ids.sort_unstable();
        assert_eq!(
            ids.len(),
            size as usize,
            "{size}: every answer on the stream"
        );
        assert_eq!(ids, (1..=size).collect::<Vec<_>>(), "{size}: each once");
    }

    // 2025-06-18 removed batching: refused whole, as an invalid JSON-RPC request.
    for version in ["2025-06-18", "2025-11-25"] {
        let sid = session_at(&c, version).await?;
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        ]);
        let resp = post(&c, batch.to_string())
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", version)
            .send()
            .await?;
        assert_eq!(resp.status(), 400, "{version}");
        let refusal: Value = resp.json().await?;
        assert_eq!(refusal["error"]["code"], -32600, "{version}: {refusal}");
        assert_eq!(refusal["id"], Value::Null, "{version}: {refusal}");
    }
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_ids_round_trip_byte_exact_in_both_eras() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(2).start().await?;
    let c = Client::new(&cluster.endpoint);

    // Session era: the initialize answer, an answer on a stream, and a gateway refusal.
    let resp = post(&c, initialize(BIG_ID, "2025-11-25")).send().await?;
    let text = resp.text().await?;
    assert!(has_big_id(&text), "initialize: {text}");
    let sid = session_at(&c, "2025-11-25").await?;
    let ping = format!(r#"{{"jsonrpc":"2.0","id":{BIG_ID},"method":"ping"}}"#);
    let resp = post(&c, ping.clone())
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await?;
    let text = resp.text().await?;
    assert!(has_big_id(&text), "ping: {text}");
    let resp = post(&c, ping).send().await?;
    assert_eq!(resp.status(), 400, "no session id");
    let text = resp.text().await?;
    assert!(has_big_id(&text), "refusal: {text}");

    // Stateless era: an answer, and a refusal by the checks.
    let text = stateless(&c, BIG_ID, "tools/list", "tools/list")
        .send()
        .await?
        .text()
        .await?;
    assert!(has_big_id(&text), "tools/list: {text}");
    let resp = stateless(&c, BIG_ID, "tools/list", "prompts/list")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await?;
    assert!(has_big_id(&text), "header mismatch: {text}");
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_refusals_do_not_echo_large_headers() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    let c = Client::new(&cluster.endpoint);
    let long = "x".repeat(8192);
    let short_and_clean = |what: &str, text: &str| {
        assert!(text.len() < 1024, "{what}: {} bytes echoed", text.len());
        assert!(!text.contains(&"x".repeat(100)), "{what}: {text}");
    };

    // Refused by the gateway's checks (stateless era, Mcp-Method against the body).
    let resp = stateless(&c, "1", "tools/list", &long).send().await?;
    assert_eq!(resp.status(), 400);
    short_and_clean("Mcp-Method", &resp.text().await?);

    // Refused by the gateway's Host check.
    let resp = stateless(&c, "1", "tools/list", "tools/list")
        .header("host", format!("{long}.example.com"))
        .send()
        .await?;
    assert_eq!(resp.status(), 403);
    short_and_clean("Host", &resp.text().await?);

    // Refused by the node (session era, an MCP-Protocol-Version it does not speak).
    let sid = session_at(&c, "2025-11-25").await?;
    let resp = post(&c, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into())
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", long.as_str())
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    short_and_clean("MCP-Protocol-Version", &resp.text().await?);
    cluster.stop().await?;
    Ok(())
}
