//! The local StatefulSet: what `shardgate up` runs on one machine, shaped like the Kubernetes
//! controller — nodes `node-0..node-N-1` with stable identities and data dirs, started in order,
//! restarted with their identity when they die — plus gateways in front of them, and a TCP front
//! before the gateways when there are several.
//!
//! Layout:
//! - [`controller`]: starts, watches, restarts and stops the processes.
//! - [`front`]: the round-robin TCP front before two or more gateways.
//! - [`ready`]: the ready files through which a process started on port 0 reports its ports.
//! - [`local`]: where a running `up` records its nodes and credentials, so that `shardgate
//!   status` and `shardgate drain` next to it need no flags.
//! - [`store`]: the session store every node writes through to, and how its URLs are shown.

pub mod controller;
pub mod front;
pub mod local;
pub mod ready;
pub mod store;

pub use controller::{Options, run};

use anyhow::bail;
use http::Method;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::internal;
use shardgate_raft::consensus::Status;
use std::time::Duration;

/// Set on the processes the controller starts: they stop when it is gone, however it ended.
pub const EXIT_WITH_PARENT: &str = "SHARDGATE_EXIT_WITH_PARENT";
/// The log filter every process reads; the controller quiets its children unless it is set.
pub const LOG_LEVEL: &str = "LOG_LEVEL";

/// Consensus timings: what production uses, or a relaxed set for starved machines (CI).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timings {
    #[default]
    Production,
    Relaxed,
}

/// How long one node gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The status of the first seed (a node's internal listener) that answers.
pub async fn status(client: &ClusterClient, seeds: &[String]) -> anyhow::Result<Status> {
    if seeds.is_empty() {
        bail!("give --seeds host:port of at least one node");
    }
    let mut last = None;
    for seed in seeds {
        let answer = client
            .call(
                Method::GET,
                seed,
                internal::STATUS_PATH,
                Vec::new(),
                ASK_TIMEOUT,
            )
            .await
            .map_err(anyhow::Error::from)
            .and_then(|body| Ok(serde_json::from_slice(&body)?));
        match answer {
            Ok(status) => return Ok(status),
            Err(e) => last = Some(e.context(format!("node {seed}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node answered")))
}
