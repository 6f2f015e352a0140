//! Stateless-era routing: calls that need nothing of their client spread evenly over the
//! nodes, a client of per-client upstream state keeps the key it was issued (and with it its
//! state, through any gateway), two clients never share state, and a task's requests reach
//! one node.

use futures_util::future::join_all;
use serde_json::{Value, json};
use shardgate_tests::Cluster;
use shardgate_tests::mcp::{self, CLIENT_KEY_HEADER as KEY_HEADER, Client};

const SERVED: &str = "shardgate_node_stateless_calls";

/// A 2026-07-28 request of a client that declares no capabilities.
fn stateless(
    c: &Client,
    id: i64,
    method: &str,
    params: Value,
    name: Option<&str>,
) -> reqwest::RequestBuilder {
    c.stateless(id, method, params, name, json!({}))
}

fn tool(c: &Client, id: i64, name: &str, arguments: Value) -> reqwest::RequestBuilder {
    let params = json!({"name": name, "arguments": arguments});
    stateless(c, id, "tools/call", params, Some(name))
}

/// One `counter` call: the counter's new value, and the key the answer issued, if any.
async fn count(req: reqwest::RequestBuilder, id: i64) -> anyhow::Result<(i64, Option<String>)> {
    let resp = req.send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "counter: HTTP {}",
        resp.status()
    );
    let issued = header(&resp, KEY_HEADER);
    let answer = mcp::response_of(resp, &json!(id)).await?;
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("counter answer without text: {answer}"))?;
    Ok((text.trim().parse()?, issued))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Stateless calls each node has served so far, in node order.
async fn served(cluster: &Cluster, http: &reqwest::Client) -> anyhow::Result<Vec<u64>> {
    let mut per_node = Vec::new();
    for (_, addrs) in &cluster.nodes {
        let text = http
            .get(format!("http://{}/metrics", addrs.admin))
            .send()
            .await?
            .text()
            .await?;
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(SERVED)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        per_node.push(n);
    }
    Ok(per_node)
}

fn delta(before: &[u64], after: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test]
async fn t10_calls_that_need_no_affinity_spread_evenly() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    // The first `echo` teaches the gateway that it can run anywhere.
    let first = tool(&c, 0, "echo", json!({"text": "hi"})).send().await?;
    assert!(first.status().is_success());
    let before = served(&cluster, &c.http).await?;
    const CALLS: i64 = 600;
    for batch in 0..CALLS / 20 {
        let calls = (0..20).map(|i| {
            let id = batch * 20 + i + 1;
            let req = tool(&c, id, "echo", json!({"text": format!("call {id}")}));
            async move {
                let resp = req.send().await?;
                anyhow::ensure!(
                    header(&resp, KEY_HEADER).is_none(),
                    "no key for a call that needs none"
                );
                let answer = mcp::response_of(resp, &json!(id)).await?;
                anyhow::ensure!(
                    answer["result"]["content"][0]["text"] == format!("call {id}"),
                    "{answer}"
                );
                Ok(())
            }
        });
        for done in join_all(calls).await {
            done?;
        }
    }
    let per_node = delta(&before, &served(&cluster, &c.http).await?);
    println!("echo calls per node: {per_node:?}");
    assert_eq!(per_node.iter().sum::<u64>(), CALLS as u64);
    let mean = CALLS as f64 / per_node.len() as f64;
    for n in &per_node {
        assert!(
            (*n as f64) <= 1.1 * mean && (*n as f64) >= mean / 1.1,
            "every node within 1.1× of the mean {mean}: {per_node:?}"
        );
    }
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_two_anonymous_clients_never_see_each_others_counter() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let counter = |id: i64| tool(&c, id, "counter", json!({}));
    // Each is issued a key with its first answer, and sends it back.
    let (a1, key_a) = count(counter(1), 1).await?;
    let (b1, key_b) = count(counter(2), 2).await?;
    let (key_a, key_b) = (
        key_a.ok_or_else(|| anyhow::anyhow!("no key issued to a"))?,
        key_b.ok_or_else(|| anyhow::anyhow!("no key issued to b"))?,
    );
    assert_ne!(key_a, key_b);
    let mut seen_a = vec![a1];
    let mut seen_b = vec![b1];
    for id in 3..7 {
        let (a, issued) = count(counter(id).header(KEY_HEADER, &key_a), id).await?;
        assert_eq!(issued, None, "a key sent back is not replaced");
        seen_a.push(a);
        let (b, _) = count(counter(id).header(KEY_HEADER, &key_b), id).await?;
        seen_b.push(b);
    }
    assert_eq!(seen_a, [1, 2, 3, 4, 5]);
    assert_eq!(seen_b, [1, 2, 3, 4, 5]);

    // A client that keeps cookies, and none other, keeps its counter too.
    let resp = counter(10).send().await?;
    let cookie = header(&resp, "set-cookie")
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no cookie issued"))?;
    assert_eq!(
        mcp::response_of(resp, &json!(10)).await?["result"]["content"][0]["text"],
        "1"
    );
    let (again, _) = count(counter(11).header("cookie", &cookie), 11).await?;
    assert_eq!(again, 2, "the cookie brought back the state");

    // A client that sends nothing back starts afresh every time, and a key made up is nobody's.
    for id in 20..23 {
        assert_eq!(count(counter(id), id).await?.0, 1);
    }
    let made_up = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        count(counter(30).header(KEY_HEADER, made_up), 30).await?.0,
        1
    );
    assert_eq!(
        count(counter(31).header(KEY_HEADER, &key_a), 31).await?.0,
        6
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_a_client_keeps_its_key_and_its_counter_through_any_gateway() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).gateways(2).start().await?;
    let gateways = [
        Client::new(&cluster.gateways[0]),
        Client::new(&cluster.gateways[1]),
    ];
    let counter = |g: usize, id: i64| tool(&gateways[g % 2], id, "counter", json!({}));
    let mut clients = Vec::new();
    for id in 0..10 {
        let (n, key) = count(counter(id as usize, id), id).await?;
        assert_eq!(n, 1);
        clients.push(key.ok_or_else(|| anyhow::anyhow!("no key issued"))?);
    }
    let before = served(&cluster, &gateways[0].http).await?;
    for round in 2..6 {
        for (i, key) in clients.iter().enumerate() {
            let id = round * 100 + i as i64;
            let via = round as usize + i;
            let (n, _) = count(counter(via, id).header(KEY_HEADER, key), id).await?;
            assert_eq!(
                n,
                round,
                "client {i}, round {round}, through gateway {}",
                via % 2
            );
        }
    }
    let per_node = delta(&before, &served(&cluster, &gateways[0].http).await?);
    println!("keyed counter calls per node: {per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() > 1,
        "ten clients' state does not all live on one node: {per_node:?}"
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t40_a_tasks_requests_reach_one_node() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let mut nodes_used = std::collections::BTreeSet::new();
    for task in 0..12 {
        let task_id = format!("task-{task}");
        let before = served(&cluster, &c.http).await?;
        for id in 0..4 {
            let params = json!({"taskId": task_id});
            let resp = stateless(&c, id, "tasks/get", params, Some(&task_id))
                .send()
                .await?;
            // The builtin has no tasks; what matters is where the answer came from.
            assert!(header(&resp, KEY_HEADER).is_none(), "no key for a task");
            let _ = resp.bytes().await?;
        }
        let per_node = delta(&before, &served(&cluster, &c.http).await?);
        let reached: Vec<usize> = (0..per_node.len()).filter(|&i| per_node[i] > 0).collect();
        assert_eq!(reached.len(), 1, "{task_id} reached {per_node:?}");
        assert_eq!(per_node[reached[0]], 4);
        nodes_used.insert(reached[0]);
    }
    assert!(
        nodes_used.len() > 1,
        "tasks are spread by their ids: {nodes_used:?}"
    );
    cluster.stop().await?;
    Ok(())
}
