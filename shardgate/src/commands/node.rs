//! `shardgate node`: one session host.

use crate::{credentials, members};
use anyhow::{Context, bail};
use shardgate_node::server::NodeListenerLimits;
use shardgate_node::{Listeners, MembershipSource, NodeConfig};
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::listener::ListenerLimits;
use shardgate_raft::NodeId;
use shardgate_raft::consensus::{Consensus, ConsensusConfig, DEFAULT_FOUND_WAIT, Timing};
use shardgate_statefulset::{Timings, ready};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's id, `node-<ordinal>`. In a StatefulSet, leave it out: the ordinal is taken
    /// from the pod's name (`POD_NAME`, e.g. `shardgate-3` → `node-3`).
    #[arg(long, env = "SHARDGATE_NODE_ID")]
    pub id: Option<String>,
    /// Session listener: the `/mcp` traffic gateways forward (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "SHARDGATE_NODE_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Internal listener: Raft, membership, status and drain, for nodes, gateways and
    /// operators.
    #[arg(
        long,
        env = "SHARDGATE_INTERNAL_LISTEN",
        default_value = "127.0.0.1:7101"
    )]
    pub internal_listen: SocketAddr,
    /// Admin listener: /health, /health/ready and /metrics, without credentials.
    #[arg(long, env = "SHARDGATE_ADMIN_LISTEN", default_value = "127.0.0.1:7102")]
    pub admin_listen: SocketAddr,
    /// The host other nodes and gateways reach this node by (in Kubernetes, the pod's name in
    /// the headless Service); the ports are the listeners'. Default: the listeners' addresses.
    #[arg(long, env = "SHARDGATE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Once the listeners are bound, write their addresses here as JSON (for supervisors that
    /// start nodes on port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Membership through Raft: where this node keeps its log, vote and snapshots (a
    /// persistent volume). Ordinal 0 starts the cluster when it finds this empty.
    #[arg(long, env = "SHARDGATE_DATA_DIR", conflicts_with = "members")]
    pub data_dir: Option<PathBuf>,
    /// Internal listeners of members to join through, `host:port,…` (in Kubernetes, the
    /// headless Service names).
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Raft voters: the lowest ordinals, 1, 3 or 5; the other members are learners.
    #[arg(long, env = "SHARDGATE_VOTERS", default_value_t = 3)]
    pub voters: usize,
    /// This node's share of keys, relative to the others'.
    #[arg(long, env = "SHARDGATE_WEIGHT", default_value_t = 1)]
    pub weight: u32,
    /// Consensus timings; `relaxed` tolerates a starved CPU at the cost of slower failover.
    #[arg(
        long,
        env = "SHARDGATE_TIMINGS",
        value_enum,
        default_value = "production"
    )]
    pub timings: Timings,
    /// A member silent this long (milliseconds) is marked `Down` by the leader.
    #[arg(long, env = "SHARDGATE_DOWN_AFTER_MS")]
    pub down_after_ms: Option<u64>,
    /// A node that has not heard from a quorum this long (milliseconds) stops serving.
    #[arg(long, env = "SHARDGATE_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// How long node-0, on an empty data dir, waits for its seeds to say whether a cluster
    /// exists before it founds one (milliseconds).
    #[arg(long, env = "SHARDGATE_FOUND_WAIT_MS", default_value_t = DEFAULT_FOUND_WAIT.as_millis() as u64)]
    pub found_wait_ms: u64,
    /// A fixed membership instead of Raft: `node-0=session/internal,…`, each a `host:port`
    /// (weights as `…*2`).
    #[arg(long, env = "SHARDGATE_MEMBERS")]
    pub members: Option<String>,
    /// Epoch of that fixed membership.
    #[arg(long, env = "SHARDGATE_EPOCH", default_value_t = 1)]
    pub epoch: u64,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// A file holding the secret that seals state handed to clients (MRTR `requestState`);
    /// every node needs the same one. Or set SHARDGATE_STATE_SECRET. Default: derived from
    /// the cluster secret.
    #[arg(long, env = "SHARDGATE_STATE_SECRET_FILE")]
    pub state_secret_file: Option<PathBuf>,
    /// Configuration file (TOML): upstreams and limits. Without one, the builtin upstream.
    #[arg(long, env = "SHARDGATE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Seconds after which a session nobody uses (no request, no open stream) is ended.
    #[arg(long, env = "SHARDGATE_SESSION_IDLE_SECS", default_value_t = 1800)]
    pub session_idle_secs: u64,
    /// Threads serving the session listener's connections (each gateway's HTTP/2 connections
    /// and the streams on them stay on one); 0: one per core.
    #[arg(long, env = "SHARDGATE_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Where sessions are written through to, so that they outlive this node:
    /// `sqlite:<path>` (one file the nodes of one machine share), `redis://host:port[,…]` (a
    /// Redis Cluster, by its seed nodes) or `postgres://…`. Without one (or with `none`),
    /// sessions live in memory only and die with their node.
    #[arg(long, env = "SHARDGATE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// PostgreSQL behind a Redis `--store`: written behind in batches, and loaded from when
    /// Redis has lost a session.
    #[arg(
        long,
        env = "SHARDGATE_STORE_DURABLE",
        requires = "store",
        hide_env_values = true
    )]
    pub store_durable: Option<String>,
    /// When a client may see what its session did: `memory` (at once), `store` (once the
    /// store has it) or `replicated` (once a replica has it too).
    #[arg(long, env = "SHARDGATE_ACK", default_value = "store")]
    pub ack: shardgate_node::durable::Ack,
    /// Seconds after which a stored session with nothing open or in flight leaves memory; its
    /// next request loads it again.
    #[arg(long, env = "SHARDGATE_PASSIVATE_AFTER_SECS", default_value_t = 60)]
    pub passivate_after_secs: u64,
    #[command(flatten)]
    pub limits: Limits,
}

/// Connection hygiene of the three listeners; the defaults are `ListenerLimits::NODE_SESSION`,
/// `NODE_INTERNAL` and `ADMIN` (protocol/src/listener/limits.rs). The timeouts apply to all three.
#[derive(clap::Args, Debug)]
pub struct Limits {
    /// Connections the session listener, and the internal one, each hold open at once. At the
    /// limit, the connection idle longest is closed to make room; when none is idle, the
    /// newcomer is turned away.
    #[arg(long, env = "SHARDGATE_NODE_MAX_CONNECTIONS", default_value_t = ListenerLimits::NODE_SESSION.max_connections)]
    pub max_connections: usize,
    /// Connections the admin listener holds open at once.
    #[arg(long, env = "SHARDGATE_NODE_ADMIN_MAX_CONNECTIONS", default_value_t = ListenerLimits::ADMIN.max_connections)]
    pub admin_max_connections: usize,
    /// Seconds an HTTP/1.1 request head may take from its first byte.
    #[arg(long, env = "SHARDGATE_NODE_HEADER_TIMEOUT_SECS", default_value_t = ListenerLimits::NODE_SESSION.header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "SHARDGATE_NODE_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = ListenerLimits::NODE_SESSION.tls_handshake_timeout.as_secs())]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is cut off with 408.
    #[arg(long, env = "SHARDGATE_NODE_BODY_TIMEOUT_SECS", default_value_t = ListenerLimits::NODE_SESSION.body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a connection with no request in flight stays open; longer than the gateways'
    /// and nodes' client pools keep idle connections (90 s).
    #[arg(long, env = "SHARDGATE_NODE_IDLE_TIMEOUT_SECS", default_value_t = ListenerLimits::NODE_SESSION.idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// HTTP/2 streams one connection to the session listener may have open at once: a
    /// gateway's one connection carries every SSE stream to this node.
    #[arg(long, env = "SHARDGATE_NODE_MAX_CONCURRENT_STREAMS", default_value_t = ListenerLimits::NODE_SESSION.max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// HTTP/2: the largest request header list, in bytes.
    #[arg(long, env = "SHARDGATE_NODE_MAX_HEADER_LIST_BYTES", default_value_t = ListenerLimits::NODE_SESSION.max_header_list_size)]
    pub max_header_list_bytes: u32,
}

impl Limits {
    /// Each listener's limits, capped to the descriptor table.
    fn listeners(&self) -> anyhow::Result<NodeListenerLimits> {
        let session = ListenerLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_list_size: self.max_header_list_bytes,
            max_pending_resets: ListenerLimits::NODE_SESSION.max_pending_resets,
        };
        let others = |preset: ListenerLimits, max_connections| ListenerLimits {
            max_connections,
            max_header_list_size: self.max_header_list_bytes,
            ..preset.with_timeouts_of(&session)
        };
        let mut limits = NodeListenerLimits {
            session,
            internal: others(ListenerLimits::NODE_INTERNAL, self.max_connections),
            admin: others(ListenerLimits::ADMIN, self.admin_max_connections),
        };
        for (name, l) in [
            ("session", &limits.session),
            ("internal", &limits.internal),
            ("admin", &limits.admin),
        ] {
            l.validate().with_context(|| format!("{name} listener"))?;
        }
        let NodeListenerLimits {
            session,
            internal,
            admin,
        } = &mut limits;
        super::gateway::fit_to_descriptors(&mut [session, internal, admin]);
        Ok(limits)
    }
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

/// `host:port` as others reach a listener bound at `bound`.
fn advertised(host: Option<&str>, bound: SocketAddr) -> String {
    match host {
        Some(h) => format!("{h}:{}", bound.port()),
        None => bound.to_string(),
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let id = identity(args.id.as_deref())?;
    let loaded = args.credentials.load()?;
    let state_secret =
        credentials::state_key(args.state_secret_file.as_deref(), loaded.secret.as_ref())?;
    let listeners = Listeners {
        session: bind(args.listen).await?,
        internal: bind(args.internal_listen).await?,
        admin: bind(args.admin_listen).await?,
        limits: args.limits.listeners()?,
    };
    let bound = ready::Node {
        session: listeners.session.local_addr()?,
        internal: listeners.internal.local_addr()?,
        admin: listeners.admin.local_addr()?,
    };
    if let Some(path) = &args.ready_file {
        ready::write(path, &bound)?;
    }
    let host = args.advertise.as_deref();
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
            let defaults = match args.timings {
                Timings::Production => Timing::default(),
                Timings::Relaxed => Timing::relaxed(),
            };
            let timing = Timing {
                down_after: args
                    .down_after_ms
                    .map_or(defaults.down_after, Duration::from_millis),
                lease: args.lease_ms.map_or(defaults.lease, Duration::from_millis),
                ..defaults
            };
            let transport = ClusterClient::new(&loaded.credentials, timing.admin_timeout())
                .map_err(anyhow::Error::msg)?;
            let consensus = Consensus::start(
                ConsensusConfig {
                    id: id.clone(),
                    addr: advertised(host, bound.internal),
                    session_addr: advertised(host, bound.session),
                    weight: args.weight,
                    data_dir: dir.clone(),
                    seeds: args.seeds.clone(),
                    voters: args.voters,
                    timing,
                    found_wait: Duration::from_millis(args.found_wait_ms),
                },
                Arc::new(transport),
            )
            .await
            .context("cannot start consensus")?;
            MembershipSource::Raft(consensus)
        }
        _ => bail!("give either --data-dir (membership through Raft) or --members (fixed)"),
    };
    tracing::info!(%id, session = %bound.session, internal = %bound.internal, admin = %bound.admin, "node listening");
    for (flag, env, url) in [
        ("--store", "SHARDGATE_STORE", &args.store),
        (
            "--store-durable",
            "SHARDGATE_STORE_DURABLE",
            &args.store_durable,
        ),
    ] {
        if let Some(url) = url {
            crate::credentials::url_from_environment_if_secret(flag, env, url)?;
        }
    }
    let config = NodeConfig {
        workers: args.workers,
        id,
        membership,
        state_secret,
        credentials: loaded.credentials,
        idle_timeout: std::time::Duration::from_secs(args.session_idle_secs.max(1)),
        file: match &args.config {
            Some(path) => shardgate_node::config::NodeFile::load(path)?,
            None => Default::default(),
        },
        store: args
            .store
            .filter(|url| url != "none")
            .map(|url| shardgate_node::StoreOptions {
                url,
                durable: args.store_durable,
                ack: args.ack,
                passivate_after: std::time::Duration::from_secs(args.passivate_after_secs.max(1)),
            }),
    };
    let signals = super::signals();
    shardgate_node::run(config, listeners, signals.stop, signals.leave).await?;
    tracing::info!("node stopped");
    Ok(())
}
