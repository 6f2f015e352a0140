//! Remote (Streamable HTTP) upstreams behind the gateway, in both eras: the Python SDK against
//! each kind of upstream, credentials that never reach an upstream, an upstream that forgets a
//! session, a dead upstream and its breaker, and `Mcp-Param-*` headers.

use anyhow::Context;
use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::metrics::scrape;
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, free_addr, peers, scratch};
use std::time::Duration;

#[tokio::test]
async fn t20_python_sdk_against_each_kind_of_upstream() -> anyhow::Result<()> {
    let dir = scratch("sdk-upstreams")?;
    let reference = Peer::everything().await?;
    let echo = [
        "echo",
        r#"{"message": "through shardgate"}"#,
        "through shardgate",
    ];

    std::fs::write(
        dir.join("http.toml"),
        http_config("everything", &reference.url, "session"),
    )?;
    std::fs::write(dir.join("stdio.toml"), everything_stdio_config()?)?;
    for config in ["http.toml", "stdio.toml"] {
        let cluster = Cluster::builder()
            .nodes(2)
            .config(dir.join(config))
            .start()
            .await?;
        let legacy = peers::sdk_client(&cluster.endpoint, "legacy", &echo).await?;
        assert!(legacy.contains("ok legacy"), "{config}: {legacy}");
        // auto mode picks the stateless era: a stateless client bridged to a session-era upstream.
        let auto = peers::sdk_client(&cluster.endpoint, "auto", &echo).await?;
        assert!(auto.contains("ok auto"), "{config}: {auto}");
        println!("{config}: {legacy}{auto}");
        cluster.stop().await?;
    }

    // A session-era client bridged to a stateless-era upstream: another shardgate cluster,
    // whose builtin upstream speaks 2026-07-28.
    let upstream = Cluster::builder().nodes(1).start().await?;
    std::fs::write(
        dir.join("bridge.toml"),
        http_config("modern", &upstream.endpoint, "stateless"),
    )?;
    let cluster = Cluster::builder()
        .nodes(2)
        .config(dir.join("bridge.toml"))
        .start()
        .await?;
    let legacy = peers::sdk_client(&cluster.endpoint, "legacy", &[]).await?;
    assert!(legacy.contains("ok legacy 2025-11-25"), "{legacy}");
    cluster.stop().await?;
    upstream.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t50_a_client_token_never_reaches_an_upstream() -> anyhow::Result<()> {
    let dir = scratch("token")?;
    let log = dir.join("headers.jsonl");
    let recording = Peer::recording(&log).await?;
    let config = write_config(&dir, &http_config("rec", &recording.url, "session"))?;
    let cluster = Cluster::builder().nodes(2).config(&config).start().await?;
    let http = shardgate_tests::http()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                reqwest::header::HeaderValue::from_static("Bearer client-secret-token"),
            )]
            .into_iter()
            .collect(),
        )
        .build()?;
    let c = Client::with_http(http, &cluster.endpoint);
    let sid = c.initialize().await?;
    let answer = c
        .request(
            &sid,
            1,
            "tools/call",
            json!({"name": "whoami", "arguments": {"text": "x"}}),
        )
        .await?;
    assert_eq!(tool_text(&answer).as_deref(), Some("recorded: x"));
    cluster.stop().await?;

    let lines = std::fs::read_to_string(&log)?;
    let requests: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        requests.len() >= 3,
        "initialize, initialized, call: {lines}"
    );
    for r in &requests {
        assert_eq!(
            r["headers"]["authorization"], "Bearer node-credential",
            "the node's own credential, always: {r}"
        );
    }
    assert!(
        !lines.contains("client-secret-token"),
        "the client's token reached the upstream:\n{lines}"
    );
    Ok(())
}

#[tokio::test]
async fn t55_an_upstream_that_forgets_the_session_is_initialized_again() -> anyhow::Result<()> {
    let dir = scratch("upstream-404")?;
    let log = dir.join("headers.jsonl");
    let port = free_addr()?.port();
    let upstream = Peer::recording_on(&log, port).await?;
    let config = write_config(&dir, &http_config("rec", &upstream.url, "session"))?;
    let cluster = Cluster::builder().nodes(1).config(&config).start().await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let call = |id: i64, text: &'static str| {
        let (c, sid) = (c.clone(), sid.clone());
        async move {
            let answer = c
                .request(
                    &sid,
                    id,
                    "tools/call",
                    json!({"name": "whoami", "arguments": {"text": text}}),
                )
                .await?;
            tool_text(&answer).ok_or_else(|| anyhow::anyhow!("{answer}"))
        }
    };
    assert_eq!(call(1, "before").await?, "recorded: before");
    // A restarted upstream has forgotten every session: it answers 404 to ours.
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _upstream = Peer::recording_on(&log, port).await?;
    assert_eq!(call(2, "after").await?, "recorded: after");
    cluster.stop().await?;

    let lines = std::fs::read_to_string(&log)?;
    let initializes = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["method"] == "POST" && r["headers"].get("mcp-session-id").is_none())
        .count();
    assert_eq!(
        initializes, 2,
        "initialized once, then again after the 404:\n{lines}"
    );
    Ok(())
}

#[tokio::test]
async fn t56_a_dead_upstream_is_named_and_its_breaker_opens() -> anyhow::Result<()> {
    let dir = scratch("breaker")?;
    let closed = free_addr()?.port();
    let config = format!(
        "[[upstream]]\nname = \"gone\"\n[upstream.http]\nurl = \"http://127.0.0.1:{closed}/mcp\"\nbreaker_failures = 2\nbreaker_open_secs = 600\n"
    );
    let cluster = Cluster::builder()
        .nodes(1)
        .config(write_config(&dir, &config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let mut messages = Vec::new();
    for _ in 0..3 {
        let answer = initialize_answer(&c).await?;
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
        messages.push(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    println!("{messages:#?}");
    assert!(
        messages.iter().all(|m| m.starts_with("upstream gone: ")),
        "{messages:?}"
    );
    assert!(!messages[0].contains("not tried again"), "{messages:?}");
    assert!(
        messages[2].contains("not tried again"),
        "the breaker is open: {messages:?}"
    );
    // /metrics tells the same: two calls that failed, one failed fast, the breaker open.
    let admin = &cluster.nodes.first().context("no node")?.1.admin;
    let http = shardgate_tests::http().build()?;
    let node = scrape(&http, &format!("http://{admin}/metrics")).await?;
    let gone = [("upstream", "gone")];
    assert_eq!(node.sum("shardgate_node_upstream_errors_total", &gone), 3.0);
    assert_eq!(
        node.sum("shardgate_node_upstream_call_seconds_count", &gone),
        2.0
    );
    assert_eq!(node.sum("shardgate_node_upstream_breaker_open", &gone), 1.0);
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t57_mcp_param_headers_reach_a_stateless_upstream_and_nothing_else_does()
-> anyhow::Result<()> {
    let dir = scratch("param-headers")?;
    let (url, seen) = recording_stateless_upstream().await?;
    let config = write_config(&dir, &http_config("modern", &url, "stateless"))?;
    let cluster = Cluster::builder().nodes(1).config(&config).start().await?;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "weather", "arguments": {"region": "eu-west"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }});
    let resp = shardgate_tests::http()
        .build()?
        .post(&cluster.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "weather")
        .header("mcp-param-region", "eu-west")
        .header("authorization", "Bearer client-secret-token")
        .body(body.to_string())
        .send()
        .await?;
    let answer: Value = resp.json().await?;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    cluster.stop().await?;
    let call = seen.call()?;
    assert!(call.contains("mcp-param-region: eu-west"), "{call}");
    assert!(call.contains("mcp-name: weather"), "{call}");
    assert!(
        call.contains("authorization: bearer node-credential"),
        "{call}"
    );
    assert!(!call.contains("client-secret-token"), "{call}");
    Ok(())
}
