//! `shardgate drain node-N`: the node marks itself `Draining` (its keys move to the others),
//! hands its sessions off, and leaves the cluster; the command prints a line for each step it
//! sees (the view's epoch and states, the sessions the node still holds) and returns once the
//! node has left.

use super::cluster::{self, Progress, Target};
use crate::credentials;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The member to drain, `node-N`.
    pub id: String,
    /// Nodes' internal listeners to reach the cluster through, `host:port,…`. Default: the
    /// local cluster `shardgate up` runs.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// How long to wait for the node to leave, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Print each step as a JSON object, one per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::resolve(args.seeds, &args.credentials)?;
    let mut progress = Progress::new(args.json);
    let within = Duration::from_secs(args.timeout_secs);
    cluster::drain(&target, &args.id, within, &mut progress).await?;
    progress.say(
        &format!("{} has left the cluster", args.id),
        serde_json::json!({"left": args.id}),
    );
    Ok(())
}
