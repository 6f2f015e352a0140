//! `shardgate gateway`: the client-facing endpoint.

use crate::{credentials, members, ready};
use anyhow::Context;
use shardgate_gateway::config::{AffinityKey, GatewayConfig, TlsFiles};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    /// Once the listeners are bound, write their addresses here as JSON.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
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
