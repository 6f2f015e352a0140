//! Talking to a running cluster from the command line: `status`, `drain`, and `up` waiting for
//! its members. Any node answers for the cluster; each seed is tried in turn. Every request is
//! authenticated with the cluster credentials, found by [`Target::resolve`].

use crate::credentials::ClusterCredentials;
use anyhow::{Context, bail};
use http::Method;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::internal;
use shardgate_statefulset::{local, status};
use std::time::Duration;

/// How long one node gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The nodes to ask and the client to ask them with.
pub struct Target {
    pub seeds: Vec<String>,
    pub client: ClusterClient,
}

impl Target {
    /// Credentials from the flags or the environment; else those of the local cluster the
    /// seeds point into (or, without seeds, the only local cluster running).
    pub fn resolve(seeds: Vec<String>, flags: &ClusterCredentials) -> anyhow::Result<Target> {
        let (seeds, flags) = if flags.given() {
            (seeds, flags.clone())
        } else {
            match local::find(&seeds) {
                Some(entry) => {
                    let seeds = if seeds.is_empty() {
                        entry.seeds.clone()
                    } else {
                        seeds
                    };
                    (seeds, ClusterCredentials::of(&entry))
                }
                None if seeds.is_empty() => bail!(
                    "no local cluster is running here: give --seeds host:port of a node's \
                     internal listener, and cluster credentials"
                ),
                None => (seeds, flags.clone()),
            }
        };
        let loaded = flags.load()?;
        let client =
            ClusterClient::new(&loaded.credentials, ASK_TIMEOUT).map_err(anyhow::Error::msg)?;
        Ok(Target { seeds, client })
    }
}

/// Asks node `id` (found through the seeds) to drain and leave; waits until it has.
pub async fn drain(target: &Target, id: &str, within: Duration) -> anyhow::Result<()> {
    let Target { seeds, client } = target;
    let current = status(client, seeds).await?;
    let member = current
        .membership
        .members
        .iter()
        .find(|m| m.id.0 == id)
        .with_context(|| format!("{id} is not a member"))?;
    client
        .call(
            Method::POST,
            &member.addr,
            internal::DRAIN_PATH,
            Vec::new(),
            ASK_TIMEOUT,
        )
        .await
        .with_context(|| format!("{id} refused to drain"))?;
    let deadline = tokio::time::Instant::now() + within;
    // Ask the others: the draining node stops answering once it has left.
    let others: Vec<String> = current
        .membership
        .members
        .iter()
        .filter(|m| m.id.0 != id)
        .map(|m| m.addr.clone())
        .chain(seeds.iter().cloned())
        .collect();
    while tokio::time::Instant::now() < deadline {
        if let Ok(now) = status(client, &others).await
            && !now.membership.members.iter().any(|m| m.id.0 == id)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{id} has not left within {within:?}")
}
