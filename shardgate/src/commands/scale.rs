//! `shardgate scale --nodes N`: asks the local cluster that `shardgate up` runs for N nodes, and
//! waits until the cluster has exactly N members, all active. `up` adds the next ordinals one by
//! one, or drains the highest first, as the Kubernetes StatefulSet controller does; the command
//! prints a line for each step it sees (the view's epoch and states, the sessions a draining
//! member still holds).

use super::cluster::{self, Progress, Target};
use crate::credentials::ClusterCredentials;
use anyhow::{Context, bail};
use shardgate_raft::MemberState;
use shardgate_statefulset::local;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many nodes the cluster should run (at least 1).
    #[arg(long)]
    pub nodes: usize,
    /// Nodes' internal listeners of the local cluster to scale, `host:port,…`. Default: the
    /// only local cluster `shardgate up` runs.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// How long to wait for the cluster to reach that size, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print each step as a JSON object, one per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let entry = local::find(&args.seeds).context(
        "no local cluster found: `shardgate scale` scales what `shardgate up` runs here \
         (give --seeds when more than one runs); on Kubernetes, scale the node StatefulSet",
    )?;
    entry.request_scale(args.nodes)?;
    let target = Target::resolve(entry.seeds.clone(), &ClusterCredentials::of(&entry))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut progress = Progress::new(args.json);
    loop {
        // Seeds move as nodes come and go: ask the ones the cluster records now.
        let seeds = local::find(&target.seeds)
            .map(|e| e.seeds)
            .unwrap_or_else(|| target.seeds.clone());
        if let Ok(status) = shardgate_statefulset::status(&target.client, &seeds).await {
            let view = &status.membership;
            progress.step(
                view,
                &cluster::draining_sessions(&target.client, view).await,
            );
            let members = &view.members;
            let active = members
                .iter()
                .filter(|m| m.state == MemberState::Active)
                .count();
            if members.len() == args.nodes && active == args.nodes {
                let epoch = status.membership.epoch;
                progress.say(
                    &format!("{} nodes, epoch {epoch}", args.nodes),
                    serde_json::json!({"nodes": args.nodes, "epoch": epoch}),
                );
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the cluster did not reach {} nodes within {} s",
                args.nodes,
                args.timeout_secs
            );
        }
        tokio::time::sleep(cluster::PROGRESS_EVERY).await;
    }
}
