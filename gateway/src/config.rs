//! The gateway's typed configuration, validated once at start.

use shardgate_protocol::listener::{LimitsError, ListenerLimits};
use shardgate_raft::Membership;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How stateless-era calls are routed (see `affinity.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AffinityKey {
    /// Each call by what it needs, as the nodes report it: anywhere (spread evenly), the one
    /// node that holds what all clients share, or its client's correlation key.
    #[default]
    Needed,
    /// Every call by its client's correlation key, whatever the nodes report: one client's
    /// calls always on one node (its upstream's caches stay warm), at the cost of the spread.
    Always,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct GatewayConfig {
    /// Client-facing listener (`/mcp`).
    pub listen: SocketAddr,
    /// Admin listener (`/health`, `/health/ready`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Certificate and key (PEM); when set, the client listener speaks TLS with ALPN h2/http1.1.
    pub tls: Option<TlsFiles>,
    /// With TLS: HTTP/3 on the UDP port of the same number as the client listener's.
    pub http3: bool,
    /// Host names (without port) clients may address; `*` allows any. Guards against DNS
    /// rebinding together with the Origin check.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) allowed besides loopback ones; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The membership the gateway starts from; it adopts newer views from nodes. When its
    /// `cluster` is set, views of any other cluster are never taken; when not, the first
    /// authenticated view names the cluster.
    pub membership: Membership,
    /// Nodes (`host:port`) to follow membership through: the gateway long-polls them, and
    /// then the members it learns of, for newer views. Empty: only 421s bring news.
    pub seeds: Vec<String>,
    /// How stateless-era calls are routed.
    pub affinity: AffinityKey,
    /// How the gateway proves to nodes that it belongs to the cluster (mTLS or HMAC).
    pub credentials: shardgate_trust::Credentials,
    /// Connection limits and timeouts of the client listener.
    pub client_limits: ListenerLimits,
    /// Connection limits and timeouts of the admin listener.
    pub admin_limits: ListenerLimits,
    /// How long a request whose owner refuses connections is held for the ring to move its
    /// key to another node, before the client gets a retryable 503.
    pub failover_hold: std::time::Duration,
    /// Threads that serve client connections, each with its own connections to the nodes;
    /// 0: one per core.
    pub workers: usize,
    /// Who may use `/mcp`: bearer tokens, or (explicitly) anyone.
    pub auth: crate::auth::AuthConfig,
    /// Requests per minute per principal and per client IP.
    pub rate: crate::rate::RateConfig,
}

impl GatewayConfig {
    /// The failover hold's default: the membership's detection of a dead node fits in it.
    pub const DEFAULT_FAILOVER_HOLD: std::time::Duration = std::time::Duration::from_secs(3);
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid membership: {0}")]
    Membership(#[from] shardgate_raft::membership::MembershipError),
    #[error("the gateway needs members to route to, or seeds to learn them from")]
    NoMembers,
    #[error("max body size must be positive")]
    ZeroBodyLimit,
    #[error("client listener: {0}")]
    ClientLimits(LimitsError),
    #[error("admin listener: {0}")]
    AdminLimits(LimitsError),
}

impl GatewayConfig {
    pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

    /// The loopback names a local deployment is reached by.
    pub fn loopback_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.membership.validate()?;
        if self.membership.members.is_empty() && self.seeds.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        self.client_limits
            .validate()
            .map_err(ConfigError::ClientLimits)?;
        self.admin_limits
            .validate()
            .map_err(ConfigError::AdminLimits)?;
        Ok(())
    }
}
