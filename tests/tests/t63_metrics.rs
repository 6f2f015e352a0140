//! The metrics catalog against a real cluster: a scripted workload through the gateway of a
//! three-node `up` (sessions of both eras, a malformed body, a held GET stream, a DELETE, a burst
//! over the per-IP rate limit), then `/metrics` of the gateway and of every node: each series of
//! docs/metrics.md is there, and the counts are the workload's.
//!
//! Series that need what this cluster does not have are checked where it is: the HTTP upstream's
//! (`upstream_*`) in t72_remote_upstreams, the audit's (PostgreSQL) in t92_audit.

use serde_json::json;
use shardgate_tests::Cluster;
use shardgate_tests::mcp::{Client, SseReader};
use shardgate_tests::metrics::{Scrape, catalog, scrape};

const SESSIONS: usize = 6;
/// The per-IP rate the gateway is started with (per minute) and its burst: room for the
/// workload, not for the burst that follows it.
const IP_RATE: &str = "600";
const IP_BURST: &str = "80";
const BURST: usize = 200;

/// Series this cluster cannot show, and where they are checked.
/// Node series whose labels come from the requests served, so that they appear on a node
/// only once it has served one.
const BY_TRAFFIC: [&str; 2] = [
    "shardgate_node_requests_total",
    "shardgate_node_request_seconds",
];
const ELSEWHERE: [&str; 6] = [
    "shardgate_node_upstream_call_seconds",
    "shardgate_node_upstream_errors_total",
    "shardgate_node_upstream_breaker_open",
    "shardgate_node_audit_written_total",
    "shardgate_node_audit_dropped_total",
    "shardgate_node_audit_queued",
];

fn sum_nodes(nodes: &[Scrape], name: &str, with: &[(&str, &str)]) -> f64 {
    nodes.iter().map(|n| n.sum(name, with)).sum()
}

#[tokio::test]
async fn t10_a_workload_shows_in_every_series_of_the_catalog() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("SHARDGATE_IP_RATE_LIMIT_PER_MINUTE", IP_RATE)
        .env("SHARDGATE_IP_RATE_LIMIT_BURST", IP_BURST)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);

    // Session era: initialize + initialized, then two counter calls, in each session.
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        sids.push(c.initialize().await?);
    }
    for sid in &sids {
        for n in 1..=2 {
            assert_eq!(c.count(sid, n).await?, n);
        }
    }
    // Stateless era: three calls.
    for id in 1..=3 {
        c.stateless_count(id, None).await?;
    }
    // A body that is not JSON: refused at the gateway, blamed on the client.
    let refused = c
        .http
        .post(&cluster.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    // One session ended by its client.
    let ended = sids.pop().ok_or_else(|| anyhow::anyhow!("no session"))?;
    assert_eq!(c.delete(&ended).send().await?.status(), 200);
    // One GET stream, held open while the metrics are read.
    let held = c.listen(&sids[0], None).send().await?;
    assert_eq!(held.status(), 200);
    let mut held = SseReader::new(held);
    held.next().await?;

    let http = shardgate_tests::http().build()?;
    let gateway = scrape(&http, &format!("{}/metrics", cluster.admin)).await?;
    let mut nodes = Vec::new();
    for (_, addrs) in &cluster.nodes {
        nodes.push(scrape(&http, &format!("http://{}/metrics", addrs.admin)).await?);
    }

    // Every series of the catalog, on the side that lists it.
    let mut missing = Vec::new();
    for (name, component) in catalog()? {
        if ELSEWHERE.contains(&name.as_str()) {
            continue;
        }
        let shown = match component {
            "gateway" => gateway.families.contains(&name),
            // Labelled by what was served: a node the workload's keys did not reach has none.
            _ if BY_TRAFFIC.contains(&name.as_str()) => {
                nodes.iter().any(|n| n.families.contains(&name))
            }
            _ => nodes.iter().all(|n| n.families.contains(&name)),
        };
        if !shown {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "not on /metrics: {missing:?}");

    // The gateway counted the workload.
    let requests = "shardgate_gateway_requests_total";
    let session_calls = [("era", "session"), ("class", "tools/call")];
    assert_eq!(gateway.sum(requests, &session_calls), (SESSIONS * 2) as f64);
    let initialized = [("class", "initialize"), ("status", "200")];
    assert_eq!(gateway.sum(requests, &initialized), SESSIONS as f64);
    assert_eq!(
        gateway.sum(requests, &[("class", "notification"), ("status", "202")]),
        SESSIONS as f64
    );
    assert_eq!(
        gateway.sum(requests, &[("era", "stateless"), ("status", "200")]),
        3.0
    );
    assert_eq!(
        gateway.sum(requests, &[("era", "none"), ("status", "400")]),
        1.0
    );
    assert_eq!(
        gateway.sum(requests, &[("class", "end"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        gateway.sum(
            "shardgate_gateway_errors_total",
            &[("reason", "parse_error"), ("blame", "client")]
        ),
        1.0
    );
    assert_eq!(
        gateway.sum(requests, &[("proto", "http1")]),
        gateway.sum(requests, &[])
    );
    assert_eq!(gateway.sum("shardgate_gateway_sse_streams_open", &[]), 1.0);
    assert_eq!(
        gateway.sum("shardgate_gateway_members", &[("state", "active")]),
        3.0
    );
    assert!(gateway.sum("shardgate_gateway_received_bytes_total", &[]) > 0.0);
    assert!(gateway.sum("shardgate_gateway_sent_bytes_total", &[]) > 0.0);
    let heads = "shardgate_gateway_response_head_seconds_count";
    assert_eq!(gateway.sum(heads, &[]), gateway.sum(requests, &[]));

    // The nodes counted what reached them: the gateway's forwarded requests, no refusals.
    let node_requests = "shardgate_node_requests_total";
    assert_eq!(
        sum_nodes(&nodes, node_requests, &session_calls),
        (SESSIONS * 2) as f64
    );
    assert_eq!(
        sum_nodes(&nodes, node_requests, &[("era", "stateless")]),
        3.0
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_sessions_created_total", &[]),
        SESSIONS as f64
    );
    assert_eq!(
        sum_nodes(
            &nodes,
            "shardgate_node_sessions_ended_total",
            &[("reason", "deleted")]
        ),
        1.0
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_sessions", &[]),
        (SESSIONS - 1) as f64
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_sse_streams_open", &[]),
        1.0
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_takeover_seconds_count", &[]),
        0.0,
        "nothing moved"
    );
    // The default store is SQLite: every session's writes went through it.
    assert!(
        sum_nodes(
            &nodes,
            "shardgate_node_store_op_seconds_count",
            &[("store", "sqlite"), ("op", "write")]
        ) >= SESSIONS as f64
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_store_errors_total", &[]),
        0.0
    );
    // Raft: one leader, every node knows it, all in one term.
    assert_eq!(sum_nodes(&nodes, "shardgate_node_raft_leader", &[]), 1.0);
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_raft_has_leader", &[]),
        3.0
    );
    assert_eq!(
        sum_nodes(&nodes, "shardgate_node_raft_role", &[("role", "leader")]),
        1.0
    );
    let terms: Vec<f64> = nodes
        .iter()
        .map(|n| n.sum("shardgate_node_raft_term", &[]))
        .collect();
    assert!(
        terms.iter().all(|t| *t == terms[0] && *t >= 1.0),
        "{terms:?}"
    );
    assert!(
        nodes
            .iter()
            .all(|n| n.sum("shardgate_node_raft_commit_index", &[]) >= 1.0)
    );
    drop(held);

    // A burst past the per-IP rate: every 429 is counted, by its bucket.
    let mut sends = Vec::new();
    for _ in 0..BURST {
        let req = c.session_post(
            &sids[0],
            &json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
        );
        sends.push(tokio::spawn(async move { req.send().await }));
    }
    let mut limited: u32 = 0;
    for send in sends {
        if send.await??.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the burst was not limited");
    let gateway = scrape(&http, &format!("{}/metrics", cluster.admin)).await?;
    assert_eq!(
        gateway.sum("shardgate_gateway_rate_limited_total", &[("scope", "ip")]),
        f64::from(limited)
    );
    assert_eq!(
        gateway.sum(requests, &[("status", "429")]),
        f64::from(limited)
    );
    cluster.stop().await?;
    Ok(())
}
