//! `shardgate gateway`: the client-facing endpoint.

use crate::{credentials, members};
use anyhow::Context;
use shardgate_gateway::config::{AffinityKey, GatewayConfig, TlsFiles};
use shardgate_protocol::listener::{self, ListenerLimits};
use shardgate_statefulset::ready;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Affinity {
    /// Each call by what it needs, as nodes report it.
    Needed,
    /// Every call by its client's correlation key.
    Always,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Client-facing listener for /mcp.
    #[arg(long, env = "SHARDGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener for /health, /health/ready and /metrics.
    #[arg(long, env = "SHARDGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Nodes' internal listeners to follow membership through, `host:port,…` (in Kubernetes,
    /// the headless Service names); the gateway routes once it has learnt a view from one of
    /// them.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// A membership to start from: `node-0=session/internal,…`, each a `host:port`; newer
    /// views from nodes replace it.
    #[arg(long, env = "SHARDGATE_MEMBERS")]
    pub members: Option<String>,
    /// The id of the cluster to follow (`shardgate status` shows it); views of any other
    /// cluster are refused. Default: the cluster of the first authenticated view.
    #[arg(long, env = "SHARDGATE_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Epoch of that membership view.
    #[arg(long, env = "SHARDGATE_EPOCH", default_value_t = 1)]
    pub epoch: u64,
    /// TLS certificate chain (PEM); with --tls-key, serves HTTPS with ALPN h2/http1.1.
    #[arg(long, env = "SHARDGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SHARDGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Host names clients may use (repeat or comma-separate); `*` for any. Default: loopback.
    #[arg(
        long = "allowed-host",
        env = "SHARDGATE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed besides loopback ones (repeat or comma-separate); `*` for any.
    #[arg(
        long = "allowed-origin",
        env = "SHARDGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SHARDGATE_MAX_BODY_BYTES", default_value_t = GatewayConfig::DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// How stateless-era calls are routed: `needed` spreads calls that need no client state
    /// and keeps the others with their client; `always` keeps every call with its client.
    #[arg(long, env = "SHARDGATE_AFFINITY", value_enum, default_value = "needed")]
    pub affinity: Affinity,
    /// Milliseconds a request whose owner refuses connections (a node that died) is held for
    /// the ring to give its key another owner; then it goes there. Past it, a retryable 503.
    #[arg(long, env = "SHARDGATE_FAILOVER_HOLD_MS", default_value_t = GatewayConfig::DEFAULT_FAILOVER_HOLD.as_millis() as u64)]
    pub failover_hold_ms: u64,
    /// Threads serving client connections, each with its own connections to the nodes, so
    /// that a request never crosses threads on its way through; 0: one per core.
    #[arg(long, env = "SHARDGATE_WORKERS", default_value_t = 0)]
    pub workers: usize,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    #[command(flatten)]
    pub limits: Limits,
    /// Once the listeners are bound, write their addresses here as JSON.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Connection hygiene of the two listeners; the defaults are `ListenerLimits::CLIENT` and
/// `ListenerLimits::ADMIN` (protocol/src/listener.rs).
#[derive(clap::Args, Debug)]
pub struct Limits {
    /// Connections the client listener holds open at once. At the limit, the connection idle
    /// longest is closed to make room; when none is idle, the newcomer is turned away.
    #[arg(long, env = "SHARDGATE_MAX_CONNECTIONS", default_value_t = ListenerLimits::CLIENT.max_connections)]
    pub max_connections: usize,
    /// Connections the admin listener holds open at once.
    #[arg(long, env = "SHARDGATE_ADMIN_MAX_CONNECTIONS", default_value_t = ListenerLimits::ADMIN.max_connections)]
    pub admin_max_connections: usize,
    /// Seconds an HTTP/1.1 request head may take from its first byte.
    #[arg(long, env = "SHARDGATE_HEADER_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "SHARDGATE_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.tls_handshake_timeout.as_secs())]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is cut off with 408. Responses (SSE
    /// streams) are never timed.
    #[arg(long, env = "SHARDGATE_BODY_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a connection with no request in flight stays open, before its first request as
    /// between requests.
    #[arg(long, env = "SHARDGATE_IDLE_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// HTTP/2 streams a client connection may have open at once; more are refused.
    #[arg(long, env = "SHARDGATE_MAX_CONCURRENT_STREAMS", default_value_t = ListenerLimits::CLIENT.max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// HTTP/2: the largest request header list, in bytes.
    #[arg(long, env = "SHARDGATE_MAX_HEADER_LIST_BYTES", default_value_t = ListenerLimits::CLIENT.max_header_list_size)]
    pub max_header_list_bytes: u32,
}

impl Limits {
    /// The client listener's limits and the admin listener's, capped to the descriptor table.
    fn listeners(&self) -> anyhow::Result<(ListenerLimits, ListenerLimits)> {
        let mut client = ListenerLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_list_size: self.max_header_list_bytes,
            max_pending_resets: ListenerLimits::CLIENT.max_pending_resets,
        };
        let mut admin = ListenerLimits {
            max_connections: self.admin_max_connections,
            ..ListenerLimits::ADMIN.with_timeouts_of(&client)
        };
        client.validate().context("client listener")?;
        admin.validate().context("admin listener")?;
        fit_to_descriptors(&mut [&mut client, &mut admin]);
        Ok((client, admin))
    }
}

/// Caps the listeners' connection limits below the process's descriptor table, with a warning.
pub fn fit_to_descriptors(listeners: &mut [&mut ListenerLimits]) {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((table, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if let Some(configured) = listener::fit_to_descriptors(listeners, table) {
        let capped: usize = listeners.iter().map(|l| l.max_connections).sum();
        tracing::warn!(
            configured,
            capped,
            descriptors = table,
            "the connection limits exceed the descriptor table (ulimit -n); lowered"
        );
    }
}

impl Args {
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut membership = match &self.members {
            Some(list) => members::parse(list, self.epoch)
                .map_err(anyhow::Error::msg)
                .context("--members")?,
            None => shardgate_raft::Membership::default(),
        };
        membership.cluster = self.cluster_id.clone();
        let (client_limits, admin_limits) = self.limits.listeners()?;
        let config = GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            allowed_hosts: if self.allowed_hosts.is_empty() {
                GatewayConfig::loopback_hosts()
            } else {
                self.allowed_hosts.clone()
            },
            allowed_origins: self.allowed_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            membership,
            seeds: self.seeds.clone(),
            affinity: match self.affinity {
                Affinity::Needed => AffinityKey::Needed,
                Affinity::Always => AffinityKey::Always,
            },
            credentials: self.credentials.load()?.credentials,
            client_limits,
            admin_limits,
            failover_hold: Duration::from_millis(self.failover_hold_ms),
            workers: self.workers,
        };
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let bound = shardgate_gateway::Bound::bind(&config).await?;
    if let Some(path) = &args.ready_file {
        let addrs = ready::Gateway {
            mcp: bound.mcp.local_addr()?,
            admin: bound.admin.local_addr()?,
        };
        ready::write(path, &addrs)?;
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        endpoint = %format!("{scheme}://{}/mcp", bound.mcp.local_addr()?),
        admin = %bound.admin.local_addr()?,
        "gateway listening"
    );
    shardgate_gateway::run(config, bound, super::shutdown_on_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
