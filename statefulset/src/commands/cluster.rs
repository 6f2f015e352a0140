//! Talking to a running cluster from the command line: `status`, `drain`, and `up` waiting for
//! its members. Any node answers for the cluster; each seed is tried in turn.

use anyhow::{Context, bail};
use shardgate_node::internal;
use shardgate_raft::consensus::Status;
use std::time::Duration;

/// How long one node gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .build()
        .context("HTTP client")
}

/// The status of the first seed that answers.
pub async fn status(client: &reqwest::Client, seeds: &[String]) -> anyhow::Result<Status> {
    if seeds.is_empty() {
        bail!("give --seeds host:port of at least one node");
    }
    let mut last = None;
    for seed in seeds {
        let url = format!("http://{seed}{}", internal::STATUS_PATH);
        match ask(client, &url).await {
            Ok(status) => return Ok(status),
            Err(e) => last = Some(e.context(format!("node {seed}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node answered")))
}

async fn ask(client: &reqwest::Client, url: &str) -> anyhow::Result<Status> {
    let resp = client.get(url).send().await?;
    let code = resp.status();
    let body = resp.text().await?;
    if !code.is_success() {
        bail!("HTTP {code}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Asks node `id` (found through the seeds) to drain and leave; waits until it has.
pub async fn drain(seeds: &[String], id: &str, within: Duration) -> anyhow::Result<()> {
    let client = client()?;
    let status = status(&client, seeds).await?;
    let member = status
        .membership
        .members
        .iter()
        .find(|m| m.id.0 == id)
        .with_context(|| format!("{id} is not a member"))?;
    let url = format!("http://{}{}", member.addr, internal::DRAIN_PATH);
    let resp = client.post(&url).send().await?;
    if !resp.status().is_success() {
        bail!("{id} refused to drain: HTTP {}", resp.status());
    }
    let deadline = tokio::time::Instant::now() + within;
    // Ask the others: the draining node stops answering once it has left.
    let others: Vec<String> = status
        .membership
        .members
        .iter()
        .filter(|m| m.id.0 != id)
        .map(|m| m.addr.clone())
        .chain(seeds.iter().cloned())
        .collect();
    while tokio::time::Instant::now() < deadline {
        if let Ok(now) = self::status(&client, &others).await
            && !now.membership.members.iter().any(|m| m.id.0 == id)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{id} has not left within {within:?}")
}
