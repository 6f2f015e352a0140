//! The session host: where MCP sessions live and their upstream calls run.
//!
//! Layout, in the order a forwarded request flows through it (the MCP facts, the listener and
//! the request checks it shares with the gateway are in `shardgate-protocol`):
//! - [`server`]: the session, internal and admin listeners; ownership check (421) and the
//!   split by era; [`report`]: what the internal listener tells operators.
//! - [`auth`]: only members of the cluster's trust domain reach the session and internal
//!   listeners (mTLS or HMAC).
//! - [`state`]: [`NodeState`], what every handler of a node shares.
//! - [`session_era`] → [`session`] → [`stream`] → [`sse`]: sessions, their event streams with
//!   replay logs, and the SSE wire format.
//! - [`budget`] and [`replay`]: what a node holds at most (`[limits]`), and the refusals.
//! - [`durable`] and [`takeover`]: sessions written through to a store (`--store`), and taken
//!   over from it by their next owner.
//! - [`stateless_era`]: the 2026-07-28 handler.
//! - [`audit`]: every `tools/call` of either era, one row of the store's audit when it ends
//!   (stores with PostgreSQL only).
//! - [`upstream`]: what a call is served by; [`upstream::builtin`] is our own MCP server,
//!   [`upstream::connector`] reaches real ones over stdio or HTTP, [`upstream::federation`]
//!   puts several behind one session; [`upstreams`] builds them from [`config`].

pub mod audit;
pub mod auth;
pub mod budget;
pub mod config;
pub mod durable;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod server;
pub mod session;
pub mod session_era;
pub mod sse;
pub mod state;
pub mod stateless_era;
pub mod stream;
pub mod takeover;
pub mod upstream;
pub mod upstreams;

pub use server::Listeners;
pub use state::NodeState;

use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::listener::Workers;
use shardgate_raft::consensus::Consensus;
use shardgate_raft::{MemberState, Membership, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a drain waits for the calls in flight before the node leaves anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How long a node that stops waits for its last audit rows to be written (PostgreSQL may be
/// what is down).
const AUDIT_FLUSH: Duration = Duration::from_secs(5);

/// Where a node's membership comes from.
pub enum MembershipSource {
    /// A fixed list (`--members`): tests of routing, and clusters that never change.
    Fixed(Membership),
    /// Agreed on through Raft, which the node has already joined or is joining.
    Raft(Arc<Consensus>),
}

/// What a node needs to start.
pub struct NodeConfig {
    pub id: NodeId,
    pub membership: MembershipSource,
    /// Cluster-wide key sealing state handed to clients (MRTR `requestState`); the same on
    /// every node, so a client's retry may land on any of them.
    pub state_secret: [u8; 32],
    /// How gateways, nodes and operators prove they belong to the cluster.
    pub credentials: shardgate_trust::Credentials,
    /// Sessions (and stateless affinity state) unused this long are ended.
    pub idle_timeout: Duration,
    /// Upstreams and limits (`--config`); the default is one builtin upstream.
    pub file: config::NodeFile,
    /// Where sessions are written through to; none keeps them in memory only.
    pub store: Option<StoreOptions>,
    /// Threads serving the session listener's connections; 0: one per core.
    pub workers: usize,
}

/// The store sessions are written through to, and how.
pub struct StoreOptions {
    /// `sqlite:<path>`, `redis://host:port[,host:port…]` (a Redis Cluster) or `postgres://…`.
    pub url: String,
    /// PostgreSQL behind a Redis store: written behind, loaded from when Redis lost a session.
    pub durable: Option<String>,
    pub ack: durable::Ack,
    /// How long a session with nothing open or in flight stays in memory.
    pub passivate_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {0} is not in its own membership list")]
    NotAMember(NodeId),
    #[error("invalid membership: {0}")]
    Membership(#[from] shardgate_raft::membership::MembershipError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("session store: {0}")]
    Store(#[from] shardgate_store::StoreError),
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
}

/// Runs a node on already-bound listeners, serving its configured upstreams, until
/// `shutdown` (stop, staying a member: a restart comes back as the same member) or `drain`
/// (leave the cluster first; also asked for by `POST /internal/drain`).
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    drain: CancellationToken,
) -> Result<(), NodeError> {
    let budgets = Arc::new(budget::Budgets::new(&config.file.limits));
    let upstream = upstreams::build(&config.file, config.state_secret, &budgets)?;
    let (membership, consensus) = match config.membership {
        MembershipSource::Fixed(m) => {
            m.validate()?;
            if m.member(&config.id).is_none() {
                return Err(NodeError::NotAMember(config.id));
            }
            (m, None)
        }
        MembershipSource::Raft(c) => (c.watch().borrow().clone(), Some(c)),
    };
    let (lost_tx, lost) = tokio::sync::mpsc::unbounded_channel();
    let (durable, passivate_after) = match &config.store {
        Some(options) => {
            let store = shardgate_store::open(
                &options.url,
                options.durable.as_deref(),
                config.idle_timeout,
            )
            .await?;
            let durable =
                durable::Durable::start(store, options.ack, stream::LOG_CAPACITY, lost_tx);
            (Some(Arc::new(durable)), options.passivate_after)
        }
        None => (None, config.idle_timeout),
    };
    let mut state = NodeState::new(
        config.id,
        membership,
        consensus.clone(),
        upstream,
        budgets,
        durable,
    )
    .with_setup(report::Setup::new(&config.file, config.store.as_ref()));
    if state.durable.is_some() {
        match ClusterClient::new(&config.credentials, takeover::RELEASE_WAIT) {
            Ok(peers) => state = state.with_peers(peers),
            Err(e) => {
                tracing::warn!(error = %e, "no client for hand-overs; takeovers claim at once")
            }
        }
    }
    let state = Arc::new(state);
    let stop = CancellationToken::new();
    if let Some(c) = &consensus {
        tokio::spawn(follow(state.clone(), c.watch(), stop.clone()));
    }
    tokio::spawn(drop_lost(state.clone(), lost));
    if state.durable.is_some() {
        tokio::spawn(keep_alive(state.clone(), config.idle_timeout, stop.clone()));
    }
    tokio::spawn(reap_idle(
        state.clone(),
        config.idle_timeout,
        passivate_after,
        stop.clone(),
    ));
    let guard = auth::Guard::new(config.credentials);
    // They outlive the listeners: what requests started on them (upstream connections, stdio
    // processes) still runs while the node hands over and flushes below.
    let workers =
        Arc::new(Workers::start(config.workers, "node-worker").map_err(NodeError::Workers)?);
    let serving = {
        let (state, stop, workers) = (state.clone(), stop.clone(), workers.clone());
        tokio::spawn(async move { server::serve(listeners, state, &guard, &workers, stop).await })
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = drain.cancelled() => leave(&state).await,
        _ = state.drain.cancelled() => leave(&state).await,
    }
    stop.cancel();
    let _ = serving.await;
    if let Some(durable) = &state.durable {
        durable.flushed().await;
        durable.store.flush().await;
    }
    if let Some(auditor) = &state.auditor
        && tokio::time::timeout(AUDIT_FLUSH, auditor.flush())
            .await
            .is_err()
    {
        tracing::warn!(
            queued = auditor.queued(),
            "stopping before the last audit rows were written"
        );
    }
    if let Some(c) = consensus {
        c.shutdown().await;
    }
    Ok(())
}

/// Keeps the node's ring on the newest membership consensus has applied.
async fn follow(
    node: Arc<NodeState>,
    mut views: tokio::sync::watch::Receiver<Membership>,
    stop: CancellationToken,
) {
    let mut seen = node.ring().epoch();
    loop {
        let view = views.borrow_and_update().clone();
        // Views are numbered one by one; this node sees the newest, and may miss some between.
        let skipped = view.epoch > seen.saturating_add(1);
        let epoch = view.epoch;
        if node.adopt(view) {
            if skipped {
                tracing::info!(
                    from = seen,
                    to = epoch,
                    "membership views skipped: the sessions held here are checked against the store before they serve again"
                );
                node.doubt_held_sessions();
            }
            seen = epoch;
            let moved = node.let_go_of_moved_sessions();
            if moved > 0 {
                tracing::info!(
                    sessions = moved,
                    "let go of sessions now owned by other nodes"
                );
            }
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Drains the node: `Draining` through Raft (its keys move to the others, so no new session
/// lands here, and a node with a store lets go of its sessions for their new owners to take
/// over), the calls in flight get a grace period to finish, then it leaves. Without a store, the
/// sessions it still holds end with it.
async fn leave(node: &NodeState) {
    let Some(consensus) = &node.consensus else {
        return;
    };
    tracing::info!(node = %node.id, "draining");
    if let Err(e) = consensus.set_state(&node.id, MemberState::Draining).await {
        tracing::warn!(error = %e, "could not mark this node draining; leaving anyway");
    }
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    // Until this node has adopted the view in which it drains, it has not started letting go
    // of its sessions; then it waits until every one of them is handed over (its calls in
    // flight answered and stored) and no other call runs.
    let draining = || {
        node.ring()
            .membership()
            .member(&node.id)
            .is_none_or(|m| m.state != MemberState::Active)
    };
    while (!draining()
        || node.calls_in_flight() > 0
        || node.letting_go()
        || (node.durable.is_some() && !node.sessions.is_empty()))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match consensus.leave().await {
        Ok(()) => tracing::info!(node = %node.id, "left the cluster"),
        Err(e) => tracing::warn!(error = %e, "could not leave the cluster"),
    }
}

/// Drops the sessions the store says this node may no longer write.
async fn drop_lost(
    node: Arc<NodeState>,
    mut lost: tokio::sync::mpsc::UnboundedReceiver<durable::Lost>,
) {
    while let Some(l) = lost.recv().await {
        node.drop_lost(&l);
    }
}

/// Restarts the store's time to live of every session held here, a few times per time to live:
/// a session in memory is alive, whether or not it wrote anything lately.
async fn keep_alive(node: Arc<NodeState>, ttl: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for id in node.sessions.ids() {
            if let Some(link) = node.sessions.get(&id).as_deref().and_then(|s| s.link()) {
                link.touch();
            }
        }
    }
}

/// Ends (or, with a store, passivates) idle sessions and forgets idle affinity state, a few
/// times per idle time.
async fn reap_idle(
    node: Arc<NodeState>,
    timeout: Duration,
    passivate_after: Duration,
    shutdown: CancellationToken,
) {
    let shortest = timeout.min(passivate_after);
    let mut tick = tokio::time::interval((shortest / 4).max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let (sessions, keys) = node.reap_idle(timeout, passivate_after);
        if sessions + keys > 0 {
            tracing::info!(
                sessions,
                affinity_keys = keys,
                "ended or passivated idle state"
            );
        }
    }
}
