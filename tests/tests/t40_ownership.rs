//! Ownership over real processes: a node refuses keys it does not own with 421, and a gateway
//! with a stale ring adopts the node's newer view and retries once, at the right node.

use serde_json::json;
use shardgate_tests::mcp::Client;
use shardgate_tests::{NodeAddrs, Process, signed_post, start_gateway, start_node};
use std::net::TcpListener;

/// `node-0=session/internal,…` for `--members`.
fn member_list(nodes: &[(String, NodeAddrs)]) -> String {
    nodes
        .iter()
        .map(|(id, a)| format!("{id}={}/{}", a.session, a.internal))
        .collect::<Vec<_>>()
        .join(",")
}

/// Three nodes at epoch 2; returns them with their processes.
///
/// A fixed membership names every node's ports before any node starts, so they are picked
/// first; a port taken in between makes a node fail to bind, and the whole set is started
/// again on new ports.
async fn nodes_at_epoch_2() -> anyhow::Result<(Vec<(String, NodeAddrs)>, Vec<Process>)> {
    let mut last = None;
    for _ in 0..3 {
        match try_nodes_at_epoch_2().await {
            Ok(started) => return Ok(started),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

async fn try_nodes_at_epoch_2() -> anyhow::Result<(Vec<(String, NodeAddrs)>, Vec<Process>)> {
    let port = || -> anyhow::Result<std::net::SocketAddr> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let mut nodes = Vec::new();
    for i in 0..3 {
        let addrs = NodeAddrs {
            session: port()?,
            internal: port()?,
            admin: port()?,
        };
        nodes.push((format!("node-{i}"), addrs));
    }
    let members = member_list(&nodes);
    let mut procs = Vec::new();
    for (id, a) in &nodes {
        let (process, _) = start_node(&[
            "--id".into(),
            id.clone(),
            "--listen".into(),
            a.session.to_string(),
            "--internal-listen".into(),
            a.internal.to_string(),
            "--admin-listen".into(),
            a.admin.to_string(),
            "--members".into(),
            members.clone(),
            "--epoch".into(),
            "2".into(),
        ])
        .await?;
        procs.push(process);
    }
    Ok((nodes, procs))
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn t10_a_node_refuses_keys_it_does_not_own() -> anyhow::Result<()> {
    let (nodes, _procs) = nodes_at_epoch_2().await?;
    let http = shardgate_tests::http().build()?;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (mut refused, mut served) = (0, 0);
    for i in 0..60 {
        let new_session = [("x-shardgate-new-session", format!("key-{i}"))];
        let resp = signed_post(&http, nodes[0].1.session, &init, &new_session)?
            .send()
            .await?;
        match resp.status().as_u16() {
            421 => {
                assert_eq!(
                    resp.headers()
                        .get("x-shardgate-epoch")
                        .map(|v| v.as_bytes()),
                    Some(&b"2"[..]),
                    "a 421 names the node's epoch"
                );
                refused += 1;
            }
            200 => served += 1,
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0 && served > 0,
        "refused {refused}, served {served}"
    );
    // A refused initialize created nothing.
    let metrics = http
        .get(format!("http://{}/metrics", nodes[0].1.admin))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(metric(&metrics, "shardgate_node_sessions "), served);
    Ok(())
}

#[tokio::test]
async fn t20_a_stale_gateway_retries_once_at_the_new_owner() -> anyhow::Result<()> {
    let (nodes, _procs) = nodes_at_epoch_2().await?;
    // The gateway still believes in epoch 1, without node-2.
    let (_gateway, gw) = start_gateway(&[
        "--members".into(),
        member_list(&nodes[..2]),
        "--epoch".into(),
        "1".into(),
    ])
    .await?;
    let client = Client::new(&format!("http://{}/mcp", gw.mcp));
    for i in 0..30 {
        let sid = client.initialize().await?;
        assert_eq!(client.count(&sid, 1 + i).await?, 1, "session {sid} works");
    }
    let metrics = client
        .http
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await?
        .text()
        .await?;
    let retried = metric(
        &metrics,
        "shardgate_gateway_misdirected_total{retried=\"yes\"} ",
    );
    println!("misdirected and retried: {retried}");
    assert!(
        retried >= 1,
        "the stale ring sent something to a non-owner:\n{metrics}"
    );
    assert_eq!(metric(&metrics, "shardgate_gateway_ring_epoch "), 2);
    assert_eq!(
        metric(
            &metrics,
            "shardgate_gateway_misdirected_total{retried=\"no\"} "
        ),
        0
    );
    Ok(())
}

#[tokio::test]
async fn t30_an_unreachable_owner_gets_a_clear_answer_and_others_are_unaffected()
-> anyhow::Result<()> {
    let (nodes, mut procs) = nodes_at_epoch_2().await?;
    let (_gateway, gw) = start_gateway(&[
        "--members".into(),
        member_list(&nodes),
        "--epoch".into(),
        "2".into(),
        // A fixed membership never moves a dead node's keys: the hold only delays the answer.
        "--failover-hold-ms".into(),
        "300".into(),
    ])
    .await?;
    let client = Client::new(&format!("http://{}/mcp", gw.mcp));
    // Session ids are random: open sessions until node-2 owns a few and the others own a few,
    // as node-2's own gauge tells.
    let http = shardgate_tests::http().build()?;
    let mut sessions = Vec::new();
    loop {
        sessions.push(client.initialize().await?);
        let metrics = http
            .get(format!("http://{}/metrics", nodes[2].1.admin))
            .send()
            .await?
            .text()
            .await?;
        let on_node_2 = metric(&metrics, "shardgate_node_sessions ") as usize;
        if on_node_2 >= 3 && sessions.len() - on_node_2 >= 3 {
            break;
        }
        anyhow::ensure!(
            sessions.len() < 200,
            "node-2 owns {on_node_2} of 200 sessions"
        );
    }
    // node-2 goes away; its sessions' requests fail loudly (503, retryable: nothing reached
    // it), everyone else's still work.
    procs.pop().expect("three nodes").stop().await?;
    let (mut unreachable, mut served) = (0, 0);
    for (i, sid) in sessions.iter().enumerate() {
        let count = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "counter", "arguments": {}}});
        let resp = client.session_post(sid, &count).send().await?;
        match resp.status().as_u16() {
            503 => {
                let body: serde_json::Value = resp.json().await?;
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("node-2"),
                    "the error names the node: {body}"
                );
                assert_eq!(body["id"], i, "the error answers this request");
                unreachable += 1;
            }
            200 => served += 1,
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
    println!("unreachable {unreachable}, served {served}");
    assert!(unreachable > 0 && served > 0);
    Ok(())
}

#[tokio::test]
async fn t40_trusted_headers_from_clients_are_ignored() -> anyhow::Result<()> {
    let cluster = shardgate_tests::Cluster::builder().nodes(3).start().await?;
    let client = Client::new(&cluster.endpoint);
    let sid = client.initialize().await?;
    // A client naming another routing key cannot steer its request to another node.
    for i in 0..10 {
        let count = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "counter", "arguments": {}}});
        let resp = client
            .session_post(&sid, &count)
            .header("x-shardgate-route-key", format!("elsewhere-{i}"))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(client.count(&sid, 99).await?, 11);
    cluster.stop().await?;
    Ok(())
}
