//! The session host: where MCP sessions live and their upstream calls run.
//!
//! Layout, in the order a forwarded request flows through it:
//! - [`server`]: the internal listener; ownership check (421) and the split by era.
//! - [`protocol`]: MCP facts shared with the gateway — revisions, headers, message shapes.
//! - [`internal`]: the trusted headers gateways add and the internal endpoints.
//! - [`session_era`] → [`session`] → [`stream`] → [`sse`]: sessions, their event streams with
//!   replay logs, and the SSE wire format.
//! - [`stateless_checks`] → [`stateless_era`]: the 2026-07-28 request checks and handler.
//! - [`upstream`]: what a call is served by; [`upstream::builtin`] is our own MCP server,
//!   [`upstream::connector`] reaches real ones over stdio or HTTP, [`upstream::federation`]
//!   puts several behind one session; [`upstreams`] builds them from [`config`].
//! - [`listener`]: the HTTP/1.1 + HTTP/2 accept loop gateways and nodes share.
//! - [`reply`]: HTTP answers with JSON-RPC error bodies.

pub mod config;
pub mod internal;
pub mod listener;
pub mod protocol;
pub mod reply;
pub mod server;
pub mod session;
pub mod session_era;
pub mod sse;
pub mod stateless_checks;
pub mod stateless_era;
pub mod stream;
pub mod upstream;
pub mod upstreams;

pub use server::NodeState;

use shardgate_raft::{Membership, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The membership view the node starts with (static until membership comes from Raft).
    pub membership: Membership,
    /// Cluster-wide key sealing state handed to clients (MRTR `requestState`).
    pub state_secret: [u8; 32],
    /// Sessions (and stateless affinity state) unused this long are ended.
    pub idle_timeout: Duration,
    /// Upstreams and limits (`--config`); the default is one builtin upstream.
    pub file: config::NodeFile,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {0} is not in its own membership list")]
    NotAMember(NodeId),
    #[error("invalid membership: {0}")]
    Membership(#[from] shardgate_raft::membership::MembershipError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Runs a node on an already-bound listener, serving its configured upstreams, until
/// `shutdown`.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    config.membership.validate()?;
    if config.membership.member(&config.id).is_none() {
        return Err(NodeError::NotAMember(config.id));
    }
    let upstream = upstreams::build(&config.file, config.state_secret)?;
    let state = Arc::new(NodeState::new(config.id, config.membership, upstream));
    tokio::spawn(reap_idle(
        state.clone(),
        config.idle_timeout,
        shutdown.clone(),
    ));
    server::serve(listener, state, shutdown).await;
    Ok(())
}

/// Ends idle sessions and forgets idle affinity state, a few times per timeout.
async fn reap_idle(node: Arc<NodeState>, timeout: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let (sessions, keys) = node.reap_idle(timeout);
        if sessions + keys > 0 {
            tracing::info!(sessions, affinity_keys = keys, "ended idle state");
        }
    }
}
