//! `shardgate node`: one session host.

use crate::members;
use anyhow::{Context, bail};
use shardgate_node::{MembershipSource, NodeConfig};
use shardgate_raft::NodeId;
use shardgate_raft::consensus::{Consensus, ConsensusConfig, Timing};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's id, `node-<ordinal>`. In a StatefulSet, leave it out: the ordinal is taken
    /// from the pod's name (`POD_NAME`, e.g. `shardgate-3` → `node-3`).
    #[arg(long, env = "SHARDGATE_NODE_ID")]
    pub id: Option<String>,
    /// Internal listener for gateways and other nodes (HTTP/1.1 and h2c).
    #[arg(long, env = "SHARDGATE_NODE_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// The address other nodes and gateways reach this node at; default: `--listen`.
    #[arg(long, env = "SHARDGATE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Membership through Raft: where this node keeps its log, vote and snapshots (a
    /// persistent volume). Ordinal 0 starts the cluster when it finds this empty.
    #[arg(long, env = "SHARDGATE_DATA_DIR", conflicts_with = "members")]
    pub data_dir: Option<PathBuf>,
    /// Members to join through, `host:port,…` (in Kubernetes, the headless Service names).
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Raft voters: the lowest ordinals, 1, 3 or 5; the other members are learners.
    #[arg(long, env = "SHARDGATE_VOTERS", default_value_t = 3)]
    pub voters: usize,
    /// This node's share of keys, relative to the others'.
    #[arg(long, env = "SHARDGATE_WEIGHT", default_value_t = 1)]
    pub weight: u32,
    /// A member silent this long (milliseconds) is marked `Down` by the leader.
    #[arg(long, env = "SHARDGATE_DOWN_AFTER_MS")]
    pub down_after_ms: Option<u64>,
    /// A node that has not heard from a quorum this long (milliseconds) stops serving.
    #[arg(long, env = "SHARDGATE_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// A fixed membership instead of Raft: `node-0=host:port,node-1=host:port,…` (weights as
    /// `=host:port*2`).
    #[arg(long, env = "SHARDGATE_MEMBERS")]
    pub members: Option<String>,
    /// Epoch of that fixed membership.
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

/// `node-<ordinal>` from `--id`, or from the StatefulSet pod name.
fn identity(id: Option<&str>) -> anyhow::Result<NodeId> {
    if let Some(id) = id {
        return Ok(NodeId(id.to_owned()));
    }
    let pod = std::env::var("POD_NAME").context("give --id, or run with POD_NAME set")?;
    let ordinal: u64 = pod
        .rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .with_context(|| format!("POD_NAME {pod:?} does not end in an ordinal"))?;
    Ok(NodeId(format!("node-{ordinal}")))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let id = identity(args.id.as_deref())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let membership = match (&args.members, &args.data_dir) {
        (Some(list), None) => MembershipSource::Fixed(
            members::parse(list, args.epoch)
                .map_err(anyhow::Error::msg)
                .context("--members")?,
        ),
        (None, Some(dir)) => {
            if ![1, 3, 5].contains(&args.voters) {
                bail!("--voters must be 1, 3 or 5");
            }
            let defaults = Timing::default();
            let timing = Timing {
                down_after: args
                    .down_after_ms
                    .map_or(defaults.down_after, Duration::from_millis),
                lease: args.lease_ms.map_or(defaults.lease, Duration::from_millis),
                ..defaults
            };
            let consensus = Consensus::start(ConsensusConfig {
                id: id.clone(),
                addr: args.advertise.clone().unwrap_or_else(|| addr.to_string()),
                session_addr: args.advertise.clone().unwrap_or_else(|| addr.to_string()),
                weight: args.weight,
                data_dir: dir.clone(),
                seeds: args.seeds.clone(),
                voters: args.voters,
                timing,
            })
            .await
            .context("cannot start consensus")?;
            MembershipSource::Raft(consensus)
        }
        _ => bail!("give either --data-dir (membership through Raft) or --members (fixed)"),
    };
    tracing::info!(%id, %addr, "node listening");
    let state_secret = match &args.state_secret {
        Some(hex) => parse_secret(hex)?,
        None => {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).context("operating system random generator")?;
            s
        }
    };
    let config = NodeConfig {
        id,
        membership,
        state_secret,
        idle_timeout: std::time::Duration::from_secs(args.session_idle_secs.max(1)),
        file: match &args.config {
            Some(path) => shardgate_node::config::NodeFile::load(path)?,
            None => Default::default(),
        },
    };
    let signals = super::signals();
    shardgate_node::run(config, listener, signals.stop, signals.leave).await?;
    tracing::info!("node stopped");
    Ok(())
}
