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
    /// Cluster-wide secret (64 hex digits) that seals state handed to clients (the builtin
    /// upstream's `requestState`); every node needs the same one. Random when not given.
    #[arg(long, env = "SHARDGATE_STATE_SECRET", hide_env_values = true)]
    pub state_secret: Option<String>,
    /// Configuration file (TOML): upstreams and limits. Without one, the builtin upstream.
    #[arg(long, env = "SHARDGATE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Seconds after which a session nobody uses (no request, no open stream) is ended.
    #[arg(long, env = "SHARDGATE_SESSION_IDLE_SECS", default_value_t = 1800)]
    pub session_idle_secs: u64,
}

fn parse_secret(hex: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        anyhow::bail!("--state-secret must be 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair)?;
        out[i] = u8::from_str_radix(s, 16).context("--state-secret must be hex")?;
    }
    Ok(out)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let membership = members::parse(&args.members, args.epoch)
        .map_err(anyhow::Error::msg)
        .context("--members")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(id = %args.id, addr = %listener.local_addr()?, epoch = args.epoch, "node listening");
    let state_secret = match &args.state_secret {
        Some(hex) => parse_secret(hex)?,
        None => {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).context("operating system random generator")?;
            s
        }
    };
    let config = NodeConfig {
        id: NodeId(args.id),
        membership,
        state_secret,
        idle_timeout: std::time::Duration::from_secs(args.session_idle_secs.max(1)),
        file: match &args.config {
            Some(path) => shardgate_node::config::NodeFile::load(path)?,
            None => Default::default(),
        },
    };
    shardgate_node::run(config, listener, super::shutdown_on_signal()).await?;
    tracing::info!("node stopped");
    Ok(())
}
