//! Trust inside the cluster, over real processes: nothing unauthenticated is obeyed by a node's
//! session or internal listener (HMAC between hand-assembled nodes, mTLS under `shardgate up`),
//! a gateway takes no view it cannot authenticate or that belongs to another cluster, a node
//! of another cluster is refused, a stateless retry may land on any node, a session id is
//! never given twice, and no secret is visible in `ps`.

use axum::Router;
use axum::response::IntoResponse;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use shardgate_raft::Membership;
use shardgate_tests::raft::RaftCluster;
use shardgate_tests::{Cluster, scratch, signed_post, start_gateway, start_node};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(20);

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
}

/// What a forger sends, unsigned or signed under the wrong secret.
struct Forgery {
    method: Method,
    path: &'static str,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn forgeries() -> Vec<Forgery> {
    let raft = |name: &'static str, body: Value| Forgery {
        method: Method::POST,
        path: name,
        body,
        headers: Vec::new(),
    };
    vec![
        raft("/internal/drain", json!({})),
        raft(
            "/internal/raft/join",
            json!({"id": "node-0", "addr": "evil.example:1", "session_addr": "evil.example:2",
                   "weight": 1000}),
        ),
        raft(
            "/internal/raft/propose",
            json!({"id": "node-0", "state": "down"}),
        ),
        raft(
            "/internal/raft/append",
            json!({"vote": {"leader_id": {"term": 1000, "node_id": 9}, "committed": true},
                   "prev_log_id": null, "entries": [], "leader_commit": null}),
        ),
        raft("/internal/raft/leave", json!({"id": "node-0"})),
        Forgery {
            method: Method::GET,
            path: "/internal/membership",
            body: Value::Null,
            headers: Vec::new(),
        },
    ]
}

#[tokio::test]
async fn t10_unauthenticated_requests_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("trust-hmac")?, 2, &[])?;
    cluster.start(2).await?;
    let before = cluster.wait_for_agreement(CONVERGE).await?;
    let term = cluster.status(0).await?.term;
    let node = cluster
        .addrs(0)
        .ok_or_else(|| anyhow::anyhow!("no node-0"))?;
    let http = shardgate_tests::http()
        .timeout(Duration::from_secs(5))
        .build()?;
    let wrong = shardgate_trust::signature::Signer::from(&shardgate_trust::Secret::from_bytes(
        b"another-cluster-secret-of-at-least-32-bytes".to_vec(),
    )?);
    for f in forgeries() {
        let url = format!("http://{}{}", node.internal, f.path);
        let body = if f.body.is_null() {
            String::new()
        } else {
            f.body.to_string()
        };
        let unsigned = http
            .request(f.method.clone(), &url)
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(unsigned.status(), 401, "unsigned {} {}", f.method, f.path);
        let mut headers = HeaderMap::new();
        for (name, value) in &f.headers {
            headers.insert(*name, value.parse()?);
        }
        let (auth, _) = shardgate_trust::signature::sign_request(
            &wrong,
            &f.method,
            f.path,
            &headers,
            body.as_bytes(),
        );
        let forged = http
            .request(f.method.clone(), &url)
            .header(shardgate_trust::signature::AUTH_HEADER, auth)
            .body(body)
            .send()
            .await?;
        assert_eq!(forged.status(), 401, "wrong secret {} {}", f.method, f.path);
    }
    // The session listener too: a client choosing its own session id, with a foreign Host.
    let unsigned = http
        .post(format!("http://{}/mcp", node.session))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-shardgate-new-session", "chosen-by-the-caller")
        .header("host", "evil.example")
        .header("origin", "http://evil.example")
        .body(initialize().to_string())
        .send()
        .await?;
    assert_eq!(unsigned.status(), 401);
    // The admin listener answers anyone, and changes nothing.
    let metrics = http
        .get(format!("http://{}/metrics", node.admin))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("shardgate_node_sessions 0"), "{metrics}");

    // Nothing changed: same members, epoch and term, and node-0 still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = cluster.wait_for_agreement(CONVERGE).await?;
    assert_eq!(after, before, "the membership is untouched");
    assert_eq!(cluster.status(0).await?.term, term, "no forged term");
    assert!(cluster.pid(0).is_some() && cluster.status(0).await?.serving);
    Ok(())
}

#[tokio::test]
async fn t20_under_mtls_a_client_without_a_cluster_certificate_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    let (_, node) = cluster.nodes[0];
    // A TLS client that trusts the cluster CA but has no certificate of its own.
    let ca = std::fs::read(cluster.credentials.join("ca.pem"))?;
    let no_cert = shardgate_tests::http()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .timeout(Duration::from_secs(5))
        .build()?;
    for (method, url) in [
        (
            Method::POST,
            format!("https://{}/internal/drain", node.internal),
        ),
        (
            Method::GET,
            format!("https://{}/internal/membership", node.internal),
        ),
        (Method::POST, format!("https://{}/mcp", node.session)),
    ] {
        let resp = no_cert.request(method.clone(), &url).send().await?;
        assert_eq!(resp.status(), 401, "{method} {url}");
        // Plain HTTP to a TLS listener is no way around it.
        let plain = shardgate_tests::http()
            .timeout(Duration::from_secs(5))
            .build()?
            .request(method, url.replace("https://", "http://"))
            .send()
            .await;
        assert!(
            plain.as_ref().map_or(true, |r| !r.status().is_success()),
            "{plain:?}"
        );
    }
    // With the cluster's certificate the same node answers, and it is still the only member.
    let status: shardgate_raft::consensus::Status = serde_json::from_slice(
        &cluster
            .cluster_client()?
            .call(
                Method::GET,
                &node.internal.to_string(),
                "/internal/status",
                Vec::new(),
                Duration::from_secs(5),
            )
            .await?,
    )?;
    assert_eq!(status.membership.members.len(), 1);
    assert!(status.serving);
    cluster.stop().await?;
    Ok(())
}

/// A fake node that answers every membership poll with `view`, signed under the harness's
/// secret when `sign` (bound to each request, as a real node does).
async fn fake_node(view: Membership, sign: bool) -> anyhow::Result<std::net::SocketAddr> {
    let body = serde_json::to_vec(&view)?;
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let body = body.clone();
        async move {
            let mut resp = (StatusCode::OK, body.clone()).into_response();
            let nonce = headers
                .get(shardgate_trust::signature::AUTH_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(' ').find_map(|p| p.strip_prefix("n=")))
                .map(str::to_owned);
            if let (true, Some(nonce), Ok(signer)) = (sign, nonce, shardgate_tests::signer()) {
                let value = shardgate_trust::signature::sign_response(&signer, 200, &nonce, &body);
                resp.headers_mut()
                    .insert(shardgate_trust::signature::AUTH_HEADER, value);
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::test]
async fn t30_a_gateway_takes_no_forged_or_foreign_view() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("trust-views")?, 1, &[])?;
    cluster.start(1).await?;
    let real = cluster.wait_for_agreement(CONVERGE).await?;
    let member = real.members[0].clone();
    let forged = |cluster: Option<String>| Membership {
        cluster,
        ring: Default::default(),
        epoch: u64::MAX,
        members: vec![shardgate_raft::Member {
            addr: "127.0.0.1:1".into(),
            session_addr: "127.0.0.1:1".into(),
            ..member.clone()
        }],
    };
    // A forger that cannot sign, and a member of our trust domain that serves another
    // cluster's view (a second cluster sharing the secret): both answer at once, every time.
    let unsigned = fake_node(forged(real.cluster.clone()), false).await?;
    let foreign = fake_node(forged(Some("another-cluster".into())), true).await?;
    let real_cluster = real.cluster.clone().unwrap_or_default();
    let gateways = [
        vec![
            "--seeds".to_string(),
            format!("{unsigned},{}", cluster.addr(0)?),
        ],
        vec![
            "--seeds".to_string(),
            format!("{foreign},{unsigned},{}", cluster.addr(0)?),
            "--cluster-id".to_string(),
            real_cluster,
        ],
    ];
    let http = shardgate_tests::http().build()?;
    for args in gateways {
        let (_gateway, gw) = start_gateway(&args).await?;
        let view_of_gateway = || async {
            let resp = http
                .get(format!("http://{}/membership", gw.admin))
                .send()
                .await?;
            anyhow::Ok(resp.json::<Membership>().await?)
        };
        let deadline = std::time::Instant::now() + CONVERGE;
        let mut view = view_of_gateway().await?;
        while view.epoch < real.epoch && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            view = view_of_gateway().await?;
        }
        assert_eq!(
            view.cluster, real.cluster,
            "follows the real cluster: {args:?}"
        );
        // Let the forgers answer many more polls.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let view = view_of_gateway().await?;
        assert_eq!(view.epoch, real.epoch, "no forged epoch adopted: {view:?}");
        assert_eq!(view.cluster, real.cluster);
    }
    Ok(())
}

#[tokio::test]
async fn t40_a_node_of_another_cluster_refuses_to_start() -> anyhow::Result<()> {
    let dir = scratch("trust-foreign")?;
    let mut a = RaftCluster::new(dir.join("a"), 1, &[])?;
    a.start(1).await?;
    let a_view = a.wait_for_agreement(CONVERGE).await?;
    // Cluster B's node-0, stopped, then started again pointing at cluster A.
    let mut b = RaftCluster::new(dir.join("b"), 1, &[])?;
    b.start(1).await?;
    let b_view = b.wait_for_agreement(CONVERGE).await?;
    assert_ne!(a_view.cluster, b_view.cluster, "two foundings, two ids");
    b.kill(0).await?;
    let started = start_node(&[
        "--id".into(),
        "node-0".into(),
        "--data-dir".into(),
        dir.join("b").join("node-0").display().to_string(),
        "--seeds".into(),
        a.addr(0)?,
        "--timings".into(),
        "relaxed".into(),
    ])
    .await;
    let mut refused = match started {
        Err(e) => format!("{e:#}"),
        Ok((process, _)) => match process.wait(CONVERGE).await {
            Ok(status) => {
                assert!(!status.success(), "a foreign node must not keep running");
                status.to_string()
            }
            Err(e) => anyhow::bail!("the foreign node kept running: {e}"),
        },
    };
    refused.push_str(" (refused)");
    println!("{refused}");
    assert_eq!(
        a.wait_for_agreement(CONVERGE).await?,
        a_view,
        "A is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn t50_a_stateless_retry_may_land_on_another_node() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("trust-mrtr")?, 2, &[])?;
    cluster.start(2).await?;
    cluster.wait_for_agreement(CONVERGE).await?;
    let http = shardgate_tests::http().build()?;
    let name = "test_input_required_result_request_state";
    let call = |id: i64, extra: Value| {
        let mut params = json!({"name": name, "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}});
        if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
            p.extend(extra);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    };
    let headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", "tools/call".to_string()),
        ("mcp-name", name.to_string()),
    ];
    let [first, second] = [0, 1].map(|i| cluster.addrs(i));
    let (first, second) = (
        first.ok_or_else(|| anyhow::anyhow!("no node-0"))?,
        second.ok_or_else(|| anyhow::anyhow!("no node-1"))?,
    );
    let r1: Value = signed_post(&http, first.session, &call(1, json!({})), &headers)?
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(r1["result"]["resultType"], "input_required", "{r1}");
    let state = r1["result"]["requestState"].clone();
    let retry = call(
        2,
        json!({"requestState": state, "inputResponses": {
            "confirm": {"action": "accept", "content": {"ok": true}}}}),
    );
    let r2: Value = signed_post(&http, second.session, &retry, &headers)?
        .send()
        .await?
        .json()
        .await?;
    let text = r2["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.starts_with("state-ok"),
        "node-1 opened node-0's state: {r2}"
    );
    Ok(())
}

#[tokio::test]
async fn t60_a_session_id_is_never_given_twice() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("trust-sid")?, 1, &[])?;
    cluster.start(1).await?;
    cluster.wait_for_agreement(CONVERGE).await?;
    let node = cluster
        .addrs(0)
        .ok_or_else(|| anyhow::anyhow!("no node-0"))?;
    let http = shardgate_tests::http().build()?;
    let sid = [("x-shardgate-new-session", "one-session-id".to_string())];
    let first = signed_post(&http, node.session, &initialize(), &sid)?
        .send()
        .await?;
    assert_eq!(first.status(), 200);
    let again = signed_post(&http, node.session, &initialize(), &sid)?
        .send()
        .await?;
    assert_eq!(
        again.status(),
        409,
        "an id in use is refused, not overwritten"
    );
    let metrics = http
        .get(format!("http://{}/metrics", node.admin))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("shardgate_node_sessions 1"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn t70_ps_shows_no_secret() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(2).start().await?;
    let secret = std::fs::read_to_string(cluster.credentials.join("cluster-secret"))?;
    let secret = secret.trim();
    assert!(secret.len() >= 32);
    let up = cluster.pid().ok_or_else(|| anyhow::anyhow!("no up pid"))?;
    let mut seen = 0;
    for proc in std::fs::read_dir("/proc")? {
        let path = proc?.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let is_up = path.file_name().and_then(|n| n.to_str()) == Some(&up.to_string());
        if !is_up && ppid != Some(up) {
            continue;
        }
        seen += 1;
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!args.contains(secret), "a secret on a command line: {args}");
        assert!(
            !args.contains("BEGIN"),
            "key material on a command line: {args}"
        );
        assert!(!args.contains("--state-secret "), "{args}");
    }
    assert!(seen >= 4, "up, two nodes and a gateway: saw {seen}");
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t80_status_and_drain_next_to_up_need_no_flags() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let text = cluster.shardgate(&["status"]).await?;
    assert_eq!(text.matches(" active ").count(), 3, "{text}");
    assert!(text.contains("cluster "), "the cluster id is shown: {text}");
    cluster.shardgate(&["drain", "node-2"]).await?;
    let text = cluster.shardgate(&["status"]).await?;
    assert_eq!(text.matches(" active ").count(), 2, "{text}");
    assert!(!text.contains("node-2 "), "node-2 has left: {text}");
    cluster.stop().await?;
    Ok(())
}
