//! `shardgate node`: one session host.

use crate::members;
use anyhow::Context;
use shardgate_node::NodeConfig;
use shardgate_raft::NodeId;
use std::net::SocketAddr;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's id (`node-<ordinal>` in a StatefulSet).
    #[arg(long, env = "SHARDGATE_NODE_ID")]
    pub id: String,
    /// Internal listener for gateways (HTTP/1.1 and h2c).
    #[arg(long, env = "SHARDGATE_NODE_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Static membership: `node-0=host:port,node-1=host:port,…` (weights as `=host:port*2`).
    #[arg(long, env = "SHARDGATE_MEMBERS")]
    pub members: String,
    /// Epoch of that membership view.
    #[arg(long, env = "SHARDGATE_EPOCH", default_value_t = 1)]
    pub epoch: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let membership = members::parse(&args.members, args.epoch)
        .map_err(anyhow::Error::msg)
        .context("--members")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(id = %args.id, addr = %listener.local_addr()?, epoch = args.epoch, "node listening");
    let config = NodeConfig {
        id: NodeId(args.id),
        membership,
    };
    shardgate_node::run(config, listener, super::shutdown_on_signal()).await?;
    tracing::info!("node stopped");
    Ok(())
}
