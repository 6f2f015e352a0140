//! The official TypeScript SDK v2 client (`@modelcontextprotocol/client` 2.4) through the
//! gateway, pinned to the stateless era: `listen()` resolves only on an acknowledgement whose
//! subscription id is the listen request's own JSON-RPC id, and the change it then waits for
//! must carry the same id. Checked wherever a listen is served: the builtin, a remote
//! upstream of either era (the connector forwards, or bridges), and a federation.

use serde_json::Value;
use shardgate_tests::{Cluster, peers, scratch};

/// Runs the SDK's listen against `endpoint`, triggering the change with `trigger`.
async fn listens(endpoint: &str, trigger: &str) -> anyhow::Result<()> {
    let out = peers::ts_sdk("listen_client.mjs", endpoint, &[trigger]).await?;
    anyhow::ensure!(out.contains("ok listen 2026-07-28"), "{out}");
    anyhow::ensure!(out.contains(r#""toolsListChanged":true"#), "{out}");
    Ok(())
}

/// A node configuration of `toml`, in a scratch directory named `name`.
fn config(name: &str, toml: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = scratch(name)?.join("shardgate.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

#[tokio::test]
async fn t10_listen_is_acknowledged_under_its_own_request_id() -> anyhow::Result<()> {
    // One node: the listen stream and the call that announces the change share its feed.
    let cluster = Cluster::builder().nodes(1).start().await?;
    let outcome = listens(&cluster.endpoint, "test_trigger_tool_change").await;
    cluster.stop().await?;
    outcome
}

#[tokio::test]
async fn t20_through_remote_upstreams_of_both_eras_and_a_federation() -> anyhow::Result<()> {
    let reference = Cluster::builder().nodes(1).start().await?;
    let url = Value::String(reference.endpoint.clone()).to_string();
    let mut outcome = Ok(());
    for era in ["stateless", "session"] {
        let toml = format!(
            "[[upstream]]\nname = \"remote\"\n[upstream.http]\nurl = {url}\nera = \"{era}\"\n"
        );
        let cluster = Cluster::builder()
            .nodes(1)
            .config(config(&format!("ts-listen-{era}"), &toml)?)
            .start()
            .await?;
        outcome = listens(&cluster.endpoint, "test_trigger_tool_change")
            .await
            .map_err(|e| e.context(format!("through a {era}-era upstream")));
        cluster.stop().await?;
        if outcome.is_err() {
            break;
        }
    }
    reference.stop().await?;
    outcome?;

    let toml = "[[upstream]]\nname = \"a\"\n[upstream.builtin]\n\n[[upstream]]\nname = \"b\"\n[upstream.builtin]\n";
    let cluster = Cluster::builder()
        .nodes(1)
        .config(config("ts-listen-federation", toml)?)
        .start()
        .await?;
    let outcome = listens(&cluster.endpoint, "b__test_trigger_tool_change").await;
    cluster.stop().await?;
    outcome.map_err(|e| e.context("through a federation"))
}
