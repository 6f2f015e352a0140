//! No orphaned work after a client misbehaves: a JSON-only client that disconnects mid-call
//! leaves no request or call running and its session is reaped when idle (while a session
//! with a call in flight is kept); a client that gives up during a stdio upstream's handshake
//! leaves no process and no lost budget slot; a server-to-client request whose call the client
//! cancels is forgotten.

use serde_json::{Value, json};
use shardgate_tests::mcp::{self, Client, SseReader};
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, scratch};
use std::time::Duration;

const REQUESTS: &str = "shardgate_node_requests_in_flight";
const CALLS: &str = "shardgate_node_calls_in_flight";
const SESSIONS: &str = "shardgate_node_sessions";
const PROCESSES: &str = "shardgate_node_stdio_processes";
const PENDING: &str = "shardgate_node_client_requests_pending";

/// Fails unless every node exports each of `names`: the harness reads a missing gauge as 0,
/// which would make a wait for 0 pass without proving anything.
async fn assert_exported(
    cluster: &Cluster,
    http: &reqwest::Client,
    names: &[&str],
) -> anyhow::Result<()> {
    for (id, addrs) in &cluster.nodes {
        let text = http
            .get(format!("http://{}/metrics", addrs.admin))
            .send()
            .await?
            .text()
            .await?;
        for name in names {
            let exported = text
                .lines()
                .any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')));
            assert!(exported, "node {id} does not export {name}");
        }
    }
    Ok(())
}

/// The gauges of every name in `names`, for failure messages.
async fn gauges(cluster: &Cluster, http: &reqwest::Client, names: &[&str]) -> String {
    let mut out = Vec::new();
    for name in names {
        let value = match cluster.node_metric(http, name).await {
            Ok(v) => v.to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        out.push(format!("{name}={value}"));
    }
    out.join(", ")
}

fn call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// A `slow` call of about 30 s: long enough to outlast every test here.
fn long_slow(id: i64) -> Value {
    call(id, "slow", json!({"steps": 60, "delay_ms": 500}))
}

#[tokio::test]
async fn t10_a_client_that_disconnects_mid_call_with_json_only_accept_leaves_nothing_running()
-> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .nodes(1)
        .env("SHARDGATE_SESSION_IDLE_SECS", "2")
        .start()
        .await?;
    let http = shardgate_tests::http().build()?;
    assert_exported(&cluster, &http, &[REQUESTS, CALLS, SESSIONS]).await?;
    let c = Client::new(&cluster.endpoint);

    // Session B: a long call over SSE, kept open for the whole test.
    let b = c.initialize().await?;
    let b_call = {
        let req = c.session_post(&b, &long_slow(1));
        tokio::spawn(async move { mcp::response_of(req.send().await?, &json!(1)).await })
    };
    let b_running = cluster
        .wait_for_metric(&http, REQUESTS, Duration::from_secs(10), |n| n == 1)
        .await?;
    assert!(
        b_running,
        "session b's call never started: {}",
        gauges(&cluster, &http, &[REQUESTS, CALLS]).await
    );

    // Session A: the same call, accepting JSON only, from a client that goes away mid-call.
    let a = c.initialize().await?;
    let mut a_request = c.session_post(&a, &long_slow(1)).build()?;
    a_request.headers_mut().insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    let a_call = {
        let http = c.http.clone();
        tokio::spawn(async move { http.execute(a_request).await })
    };
    let both_running = cluster
        .wait_for_metric(&http, CALLS, Duration::from_secs(10), |n| n == 2)
        .await?;
    assert!(
        both_running,
        "session a's call never started: {}",
        gauges(&cluster, &http, &[REQUESTS, CALLS]).await
    );
    assert_eq!(cluster.node_metric(&http, REQUESTS).await?, 2);
    assert!(!a_call.is_finished(), "a 30 s call answered early");
    a_call.abort();
    let _ = a_call.await;

    // What A left behind ends; B's call goes on.
    let mut settled = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let requests = cluster.node_metric(&http, REQUESTS).await?;
        let calls = cluster.node_metric(&http, CALLS).await?;
        if requests == 1 && calls == 1 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        settled,
        "the disconnected client's request and call still run after 10 s (only b's should): {}",
        gauges(&cluster, &http, &[REQUESTS, CALLS]).await
    );

    // A is idle now and is reaped; B, with its call in flight, is not.
    let reaped = cluster
        .wait_for_metric(&http, SESSIONS, Duration::from_secs(15), |n| n <= 1)
        .await?;
    assert!(
        reaped,
        "the abandoned session was not reaped within 15 s: {}",
        gauges(&cluster, &http, &[SESSIONS, REQUESTS, CALLS]).await
    );
    assert_eq!(
        cluster.node_metric(&http, SESSIONS).await?,
        1,
        "the session with a call in flight is kept"
    );
    assert!(!b_call.is_finished(), "session b's call ended early");
    assert_eq!(
        cluster.node_metric(&http, REQUESTS).await?,
        1,
        "session b's call still runs"
    );
    let gone = c
        .session_post(&a, &call(2, "echo", json!({"text": "a"})))
        .send()
        .await?
        .status();
    assert_eq!(gone.as_u16(), 404, "session a was the one reaped");
    let echo = c
        .request(
            &b,
            3,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "b"}}),
        )
        .await;
    let echo = echo.map_err(|e| e.context("session b was the one kept"))?;
    assert_eq!(tool_text(&echo).as_deref(), Some("b"), "{echo}");

    b_call.abort();
    let _ = b_call.await;
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_a_client_that_leaves_during_a_stdio_handshake_leaves_no_process() -> anyhow::Result<()>
{
    let dir = scratch("orphans-stdio")?;
    let pid_dir = dir.join("pids");
    std::fs::create_dir_all(&pid_dir)?;
    let config = format!(
        "[limits]\nstdio_processes = 1\n\n{}",
        raw_stdio_config(&pid_dir, 4.0)?
    );
    let cluster = Cluster::builder()
        .nodes(1)
        .config(write_config(&dir, &config)?)
        .start()
        .await?;
    let http = shardgate_tests::http().build()?;
    assert_exported(&cluster, &http, &[PROCESSES]).await?;
    let c = Client::new(&cluster.endpoint);

    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": mcp::SESSION_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "impatient", "version": "0"}
    }});
    let impatient = {
        let req = c.post(&init).timeout(Duration::from_secs(1));
        tokio::spawn(async move { req.send().await })
    };
    let mut started = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while started.is_empty() && tokio::time::Instant::now() < deadline {
        started = live_pids(&pid_dir)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !started.is_empty(),
        "the upstream process never started for the handshake"
    );
    match impatient.await? {
        Err(e) if e.is_timeout() => {}
        Err(e) => anyhow::bail!("the impatient initialize failed otherwise: {e}"),
        Ok(resp) => anyhow::bail!(
            "the impatient initialize was answered within 1 s: HTTP {}",
            resp.status()
        ),
    }

    let mut left = (started.clone(), u64::MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        left = (
            live_pids(&pid_dir)?,
            cluster.node_metric(&http, PROCESSES).await?,
        );
        if left.0.is_empty() && left.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left.0.is_empty(),
        "the abandoned handshake's process is still alive after 10 s: pids {:?}",
        left.0
    );
    assert_eq!(
        left.1, 0,
        "{PROCESSES} still counts the abandoned handshake's process after 10 s"
    );

    // The only slot of the process budget is free again.
    let sid = c
        .initialize()
        .await
        .map_err(|e| e.context("a handshake after the abandoned one"))?;
    let echo = c
        .request(
            &sid,
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
        .await?;
    assert_eq!(tool_text(&echo).as_deref(), Some("hi"), "{echo}");
    let now = live_pids(&pid_dir)?;
    assert_eq!(now.len(), 1, "one process serves the new session: {now:?}");
    assert!(
        !started.iter().any(|p| now.contains(p)),
        "a new process, not the abandoned one: {started:?} then {now:?}"
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_a_cancelled_server_request_is_forgotten() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    let http = shardgate_tests::http().build()?;
    assert_exported(&cluster, &http, &[PENDING, REQUESTS]).await?;
    let c = Client::new(&cluster.endpoint);

    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": mcp::SESSION_VERSION,
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": "sampler", "version": "0"}
    }});
    let resp = c.post(&init).send().await?;
    assert!(
        resp.status().is_success(),
        "initialize: HTTP {}",
        resp.status()
    );
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .ok_or_else(|| anyhow::anyhow!("no Mcp-Session-Id on the initialize response"))?
        .to_str()?
        .to_string();
    let answer = mcp::response_of(resp, &json!(0)).await?;
    assert!(answer.get("result").is_some(), "initialize: {answer}");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let status = c.session_post(&sid, &initialized).send().await?.status();
    assert_eq!(status.as_u16(), 202, "notifications/initialized");

    let resp = c
        .session_post(&sid, &call(5, "test_sampling", json!({"prompt": "hi"})))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200, "tools/call test_sampling");
    let mut reader = SseReader::new(resp);
    let asked = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = reader.next().await? {
            let Some(msg) = event.json() else { continue };
            if msg["method"] == "sampling/createMessage" {
                return Ok(msg);
            }
            if msg["id"] == 5 {
                anyhow::bail!("the call was answered before it asked: {msg}");
            }
        }
        anyhow::bail!("the stream ended before sampling/createMessage")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no sampling/createMessage within 10 s"))??;
    println!("asked: {asked}");
    let waiting = cluster
        .wait_for_metric(&http, PENDING, Duration::from_secs(5), |n| n == 1)
        .await?;
    assert!(
        waiting,
        "one request waits for the client's answer: {}",
        gauges(&cluster, &http, &[PENDING, REQUESTS]).await
    );

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 5}});
    let status = c.session_post(&sid, &cancel).send().await?.status();
    assert_eq!(status.as_u16(), 202, "notifications/cancelled");
    let mut forgotten = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let pending = cluster.node_metric(&http, PENDING).await?;
        let requests = cluster.node_metric(&http, REQUESTS).await?;
        if pending == 0 && requests == 0 {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        forgotten,
        "the cancelled call and its question are still held after 10 s: {}",
        gauges(&cluster, &http, &[PENDING, REQUESTS, CALLS]).await
    );

    // A cancelled request gets no answer, and its stream ends.
    let rest = tokio::time::timeout(Duration::from_secs(5), reader.collect())
        .await
        .map_err(|_| anyhow::anyhow!("the cancelled call's stream is still open after 5 s"))??;
    let answered: Vec<Value> = rest
        .iter()
        .filter_map(|e| e.json())
        .filter(|m| m["id"] == 5)
        .collect();
    assert!(
        answered.is_empty(),
        "the cancelled call was answered: {answered:?}"
    );
    let echo = c
        .request(
            &sid,
            6,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "after"}}),
        )
        .await?;
    assert_eq!(
        tool_text(&echo).as_deref(),
        Some("after"),
        "the session goes on"
    );
    cluster.stop().await?;
    Ok(())
}
