//! Budgets: each `[limits]` key reached through the gateway, refused with the status and the
//! JSON-RPC error that name it, and what it bounds staying under it (the node's memory under
//! the replay budget included).

use futures_util::future::join_all;
use serde_json::{Value, json};
use shardgate_tests::mcp::{self, Client, SseReader};
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, rss_bytes, scratch};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// A cluster of one node (the builtin, unless `upstreams` says otherwise) under `limits`.
async fn cluster_with(name: &str, limits: &str, upstreams: &str) -> anyhow::Result<Cluster> {
    let dir = scratch(name)?;
    let config = write_config(&dir, &format!("[limits]\n{limits}\n\n{upstreams}"))?;
    Cluster::builder().nodes(1).config(config).start().await
}

/// Asserts a refusal: its status, a `Retry-After`, and a JSON-RPC error naming `limit`.
async fn assert_refused(resp: reqwest::Response, status: u16, limit: &str) -> anyhow::Result<()> {
    assert_eq!(resp.status().as_u16(), status, "refused with {status}");
    assert!(
        resp.headers().get("retry-after").is_some(),
        "a refusal for {limit} says when to retry"
    );
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["data"]["limit"], limit, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(limit), "the message names {limit}: {body}");
    Ok(())
}

fn call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// A `slow` call that runs for about `secs` seconds, sent in the background.
fn slow_call(
    c: &Client,
    sid: &str,
    id: i64,
    secs: u64,
) -> tokio::task::JoinHandle<anyhow::Result<Value>> {
    let req = c.session_post(
        sid,
        &call(id, "slow", json!({"steps": secs * 2, "delay_ms": 500})),
    );
    tokio::spawn(async move { mcp::response_of(req.send().await?, &json!(id)).await })
}

#[tokio::test]
async fn t10_a_node_holds_at_most_its_sessions() -> anyhow::Result<()> {
    let cluster = cluster_with("budget-sessions", "sessions = 3", "").await?;
    let c = Client::new(&cluster.endpoint);
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(c.initialize().await?);
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": mcp::SESSION_VERSION, "capabilities": {},
        "clientInfo": {"name": "one-too-many", "version": "0"}}});
    assert_refused(c.post(&init).send().await?, 503, "limits.sessions").await?;
    let http = shardgate_tests::http().build()?;
    assert_eq!(
        cluster
            .node_metric(&http, "shardgate_node_sessions")
            .await?,
        3
    );

    let deleted = c.delete(&sids[0]).send().await?;
    assert!(deleted.status().is_success());
    c.initialize()
        .await
        .map_err(|e| e.context("an ended session frees its place"))?;
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_requests_in_flight_are_bounded_per_session_and_per_node() -> anyhow::Result<()> {
    let limits = "requests = 3\nrequests_per_session = 2";
    let cluster = cluster_with("budget-requests", limits, "").await?;
    let c = Client::new(&cluster.endpoint);
    let http = shardgate_tests::http().build()?;
    let (a, b) = (c.initialize().await?, c.initialize().await?);
    let running = [slow_call(&c, &a, 1, 4), slow_call(&c, &a, 2, 4)];
    let started = cluster
        .wait_for_metric(
            &http,
            "shardgate_node_requests_in_flight",
            Duration::from_secs(10),
            |n| n == 2,
        )
        .await?;
    assert!(started, "two calls of session a run");

    let third = c
        .session_post(&a, &call(3, "echo", json!({"text": "x"})))
        .send()
        .await?;
    assert_refused(third, 429, "limits.requests_per_session").await?;
    let batch = json!([
        call(4, "echo", json!({"text": "x"})),
        call(5, "echo", json!({"text": "y"}))
    ]);
    let refused = c.session_post(&b, &batch).send().await?;
    // 2025-11-25 has no batches; the refusal is about batching, not budgets.
    assert_eq!(refused.status().as_u16(), 400);

    let b_running = slow_call(&c, &b, 6, 4);
    let full = cluster
        .wait_for_metric(
            &http,
            "shardgate_node_requests_in_flight",
            Duration::from_secs(10),
            |n| n == 3,
        )
        .await?;
    assert!(full, "the node serves three");
    let over = c
        .session_post(&b, &call(7, "echo", json!({"text": "x"})))
        .send()
        .await?;
    assert_refused(over, 503, "limits.requests").await?;
    let stateless = c
        .stateless(
            8,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}}),
            Some("echo"),
            json!({}),
        )
        .send()
        .await?;
    assert_refused(stateless, 503, "limits.requests").await?;

    for done in join_all(running.into_iter().chain([b_running])).await {
        let answer = done??;
        assert!(
            answer.get("result").is_some(),
            "admitted calls finish: {answer}"
        );
    }
    assert_eq!(
        cluster
            .node_metric(&http, "shardgate_node_requests_in_flight")
            .await?,
        0
    );
    let echo = c
        .request(
            &a,
            9,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "again"}}),
        )
        .await?;
    assert_eq!(
        tool_text(&echo).as_deref(),
        Some("again"),
        "the budget is back"
    );
    cluster.stop().await?;
    Ok(())
}

/// The attack that filled 1.1 GB: 4 sessions × 70 calls echoing 4 MB each. Finished streams
/// are kept for replay only within the budgets; a resume into a dropped one is an explicit gap.
#[tokio::test]
async fn t30_replay_memory_stays_within_its_budget() -> anyhow::Result<()> {
    const BUDGET: u64 = 32 * MIB;
    let limits = format!(
        "replay_bytes = {BUDGET}\nreplay_bytes_per_session = {}",
        8 * MIB
    );
    let cluster = cluster_with("budget-replay", &limits, "").await?;
    let http = shardgate_tests::http().build()?;
    let c = Client::new(&cluster.endpoint);
    let [node] = cluster.node_pids()?[..] else {
        anyhow::bail!("one node expected");
    };
    let before = rss_bytes(node)?;
    let text = "x".repeat(4_000_000);
    let mut first_event = None;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(c.initialize().await?);
    }
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let runs = sessions.iter().enumerate().map(|(s, sid)| {
        let (c, text, peak) = (c.clone(), text.clone(), peak.clone());
        async move {
            let mut first = None;
            for i in 0..70 {
                let resp = c
                    .session_post(sid, &call(i, "echo", json!({"text": text})))
                    .send()
                    .await?;
                let mut events = SseReader::new(resp);
                while let Some(event) = events.next().await? {
                    if first.is_none() {
                        first = event.id.clone();
                    }
                }
                if s == 0 && i % 10 == 0 {
                    let rss = rss_bytes(node)?;
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
            }
            anyhow::Ok(first)
        }
    });
    for (i, first) in join_all(runs).await.into_iter().enumerate() {
        let first = first?;
        if i == 0 {
            first_event = first;
        }
    }
    let after = rss_bytes(node)?;
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed).max(after);
    let kept = cluster
        .node_metric(&http, "shardgate_node_replay_bytes")
        .await?;
    println!(
        "node RSS before {} MiB, peak {} MiB, after {} MiB; replay kept {} MiB of {} MiB",
        before / MIB,
        peak / MIB,
        after / MIB,
        kept / MIB,
        BUDGET / MIB
    );
    assert!(
        kept <= BUDGET,
        "the node keeps at most its replay budget: {kept}"
    );
    // Without the budgets this run grew the node by 1.1 GB. Beyond what is kept for replay,
    // the node holds the four requests in flight (each 4 MB as body, parsed value, answer and
    // event: about 80 MB at once) and what the allocator retains of them; none of it grows
    // with the number of calls. The store the nodes of `up` write through to makes two more
    // short-lived copies of each event (the write and its SQL statement): measured 240 MiB
    // growth with it, against 125 MiB without.
    let grown = after.saturating_sub(before);
    assert!(
        grown < BUDGET + 288 * MIB,
        "the node grew by {} MiB",
        grown / MIB
    );

    let first_event = first_event.ok_or_else(|| anyhow::anyhow!("no event id seen"))?;
    let resume = c
        .http
        .get(&c.endpoint)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sessions[0])
        .header("mcp-protocol-version", mcp::SESSION_VERSION)
        .header("last-event-id", &first_event)
        .send()
        .await?;
    assert_eq!(resume.status().as_u16(), 400, "a dropped stream is a gap");
    let body = resume.text().await?;
    assert!(
        body.contains("no longer keeps") || body.contains("no longer kept"),
        "{body}"
    );
    cluster.stop().await?;
    Ok(())
}

/// A session-era upstream that asks its client mid-call, bridged to stateless-era clients:
/// each such call is parked until the client answers, and no more than the budget are.
#[tokio::test]
async fn t40_parked_calls_are_bounded() -> anyhow::Result<()> {
    let reference = Cluster::builder().nodes(1).start().await?;
    let upstream = http_config("builtin", &reference.endpoint, "session");
    let cluster = cluster_with("budget-parked", "parked_calls = 2", &upstream).await?;
    let c = Client::new(&cluster.endpoint);
    let http = shardgate_tests::http().build()?;
    let ask = |id: i64| {
        c.stateless(
            id,
            "tools/call",
            json!({"name": "test_sampling", "arguments": {"prompt": "hi"}}),
            Some("test_sampling"),
            json!({"sampling": {}}),
        )
    };
    for id in 1..=2 {
        let answer = mcp::response_of(ask(id).send().await?, &json!(id)).await?;
        assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
    }
    assert_eq!(
        cluster
            .node_metric(&http, "shardgate_node_parked_calls")
            .await?,
        2
    );
    let answer = mcp::response_of(ask(3).send().await?, &json!(3)).await?;
    assert_eq!(
        answer["error"]["data"]["limit"], "limits.parked_calls",
        "{answer}"
    );
    assert_eq!(
        cluster
            .node_metric(&http, "shardgate_node_parked_calls")
            .await?,
        2
    );
    cluster.stop().await?;
    reference.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t50_an_upstream_message_over_the_limit_fails_its_call_only() -> anyhow::Result<()> {
    let dir = scratch("budget-message-pids")?;
    let pids = dir.join("pids");
    std::fs::create_dir_all(&pids)?;
    let limits = format!("upstream_message_bytes = {}", MIB);
    let cluster = cluster_with("budget-message", &limits, &raw_stdio_config(&pids, 0.0)?).await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let small = c
        .request(
            &sid,
            1,
            "tools/call",
            json!({"name": "big", "arguments": {"bytes": 1000}}),
        )
        .await?;
    assert_eq!(tool_text(&small).map(|t| t.len()), Some(1000));
    let big = c
        .request(
            &sid,
            2,
            "tools/call",
            json!({"name": "big", "arguments": {"bytes": 2 * MIB}}),
        )
        .await?;
    let message = big["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("limits.upstream_message_bytes"), "{big}");
    let echo = c
        .request(
            &sid,
            3,
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

#[tokio::test]
async fn t60_stdio_processes_are_bounded_per_principal() -> anyhow::Result<()> {
    let dir = scratch("budget-principal-pids")?;
    let pids = dir.join("pids");
    std::fs::create_dir_all(&pids)?;
    let limits = "stdio_processes = 8\nstdio_processes_per_principal = 2";
    let cluster = cluster_with("budget-principal", limits, &raw_stdio_config(&pids, 0.0)?).await?;
    let c = Client::new(&cluster.endpoint);
    let (a, _b) = (c.initialize().await?, c.initialize().await?);
    let refused = initialize_answer(&c).await?;
    assert_eq!(
        refused["error"]["data"]["limit"], "limits.stdio_processes_per_principal",
        "anonymous clients are one principal: {refused}"
    );
    assert_eq!(live_pids(&pids)?.len(), 2);
    let deleted = c.delete(&a).send().await?;
    assert!(deleted.status().is_success());
    let http = shardgate_tests::http().build()?;
    let freed = cluster
        .wait_for_metric(
            &http,
            "shardgate_node_stdio_processes",
            Duration::from_secs(10),
            |n| n == 1,
        )
        .await?;
    assert!(freed, "the ended session's process is gone");
    c.initialize()
        .await
        .map_err(|e| e.context("its place is free again"))?;
    cluster.stop().await?;
    Ok(())
}

/// The body of a chunked HTTP/1.1 response read off a raw socket: the chunks' data joined, and
/// whether the last chunk came (the server ended the body, rather than the read stopping).
fn dechunk(raw: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..at]);
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET answered {head}");
    let mut rest = &raw[at + 4..];
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol])?.trim(), 16)?;
        if size == 0 {
            return Ok((body, true));
        }
        let Some(chunk) = rest.get(eol + 2..eol + 2 + size) else {
            break;
        };
        body.extend_from_slice(chunk);
        rest = rest.get(eol + 4 + size..).unwrap_or_default();
    }
    Ok((body, false))
}

#[tokio::test(flavor = "multi_thread")]
async fn t70_a_client_that_does_not_read_its_stream_is_cut_off_and_resumes_from_the_log()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::builder().nodes(1).start().await?;
    let client = Client::new(&cluster.endpoint);
    let sid = client.initialize().await?;
    // The standalone stream, on a socket with a small receive window that nobody reads.
    let gateway: std::net::SocketAddr = cluster
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut conn = socket.connect(gateway).await?;
    conn.write_all(
        format!(
            "GET /mcp HTTP/1.1\r\nHost: {gateway}\r\nAccept: text/event-stream\r\n\
             Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {}\r\n\r\n",
            mcp::SESSION_VERSION
        )
        .as_bytes(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Calls answered as JSON: their progress goes to the standalone stream, far more of it than
    // the way to the client buffers.
    const CALLS: i64 = 24;
    const STEPS: u64 = 1000;
    let calls = (1..=CALLS).map(|id| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": STEPS, "delay_ms": 0},
            "_meta": {"progressToken": id}}});
        let req = client.session_post_json(&sid, &body);
        async move { req.send().await?.error_for_status().map(drop) }
    });
    for answered in join_all(calls).await {
        answered?;
    }
    let sent = CALLS as u64 * STEPS;
    // Now the client reads: it gets what was on its way, then the end of the body, because the
    // node detached a listener that fell behind instead of waiting for it.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.ends_with(b"0\r\n\r\n") {
                return Ok(());
            }
        }
    })
    .await;
    let (body, ended) = dechunk(&raw)?;
    assert!(
        read.is_ok() && ended,
        "the stream was not cut off: {} bytes read and still open",
        raw.len()
    );
    let mut parser = shardgate_protocol::sse::Parser::default();
    parser.push(&body);
    let events: Vec<_> = std::iter::from_fn(|| parser.next_event()).collect();
    let progress = events.iter().filter(|e| !e.data.is_empty()).count() as u64;
    println!(
        "{sent} events sent; the client got {progress} ({} KiB) before it was cut off",
        body.len() / 1024
    );
    assert!(
        progress < sent,
        "the client was cut off only after everything was sent"
    );
    // Its events stay replayable: from the last one it got, the rest comes from the stream's
    // log, or the node says exactly which events it no longer keeps.
    let last = events
        .iter()
        .rev()
        .find_map(|e| e.position())
        .ok_or_else(|| anyhow::anyhow!("no event with an id"))?;
    let resumed = client.resume(&sid, &last.to_string()).send().await?;
    if resumed.status().is_success() {
        let mut reader = SseReader::new(resumed);
        let next = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the resumed stream ended at once"))?;
        let at = next.position().ok_or_else(|| anyhow::anyhow!("no id"))?;
        assert_eq!((at.stream, at.seq), (last.stream, last.seq + 1));
    } else {
        let text = resumed.text().await?;
        println!("resuming after {last}: {text}");
        assert!(text.contains("no longer kept"), "{text}");
        // The newest events are kept: a resume from near the end gets exactly the rest.
        let near = shardgate_protocol::sse::EventId {
            stream: last.stream,
            seq: sent - 10,
        };
        let resumed = client.resume(&sid, &near.to_string()).send().await?;
        assert!(resumed.status().is_success(), "{}", resumed.status());
        let mut reader = SseReader::new(resumed);
        for seq in sent - 9..=sent {
            let next = tokio::time::timeout(Duration::from_secs(5), reader.next())
                .await??
                .ok_or_else(|| anyhow::anyhow!("the resumed stream ended early"))?;
            assert_eq!(next.position().map(|p| p.seq), Some(seq));
        }
    }
    cluster.stop().await?;
    Ok(())
}
