//! Membership through Raft (openraft 0.9): the nodes agree on one [`Membership`], and every
//! change to it bumps its epoch.
//!
//! Layout, in the order a membership change flows through it:
//! - `bootstrap.rs`: ordinal 0 founds the cluster; every node asks to join until it is a member.
//! - `changes.rs`: a request reaches the leader, which adds learners, commits commands and keeps
//!   Raft's voters on the lowest ordinals.
//! - `command.rs`: the commands and the pure function that applies them.
//! - `state_machine.rs`, `log_store.rs` (over `disk.rs`): openraft's storage, as files in
//!   `data_dir`; applied membership is published on a `watch` channel.
//! - `transport.rs`, `network.rs`, `rpc.rs`: the wire, Raft's sending side, and the receiving
//!   side of every RPC (what `POST /internal/raft/{name}` calls).
//! - `detector.rs`: the leader probes members and proposes `Down`/`Active` verdicts.
//! - `lease.rs`: whether this node may serve (fails closed without a quorum).
//! - `timing.rs`: heartbeats, elections, probes, `Down` verdicts and the lease, and the order
//!   between them that keeps two nodes from owning one key.
//! - `types.rs`, `error.rs`: openraft's type configuration, node ids, and errors.

mod bootstrap;
mod changes;
mod command;
mod detector;
mod disk;
mod error;
mod lease;
mod log_store;
mod network;
mod rpc;
mod state_machine;
mod timing;
mod transport;
mod types;

pub use error::ConsensusError;
pub use rpc::RPC_NAMES;
pub use timing::Timing;
pub use transport::{BoxFuture, HttpTransport, Transport, TransportError};

use crate::{MemberState, Membership, NodeId};
use lease::Lease;
use log_store::LogStore;
use network::Network;
use openraft::{ServerState, SnapshotPolicy};
use rpc::{LeaveRequest, ProbeReply, ProposeRequest};
use serde::{Deserialize, Serialize};
use state_machine::StateMachineStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use types::{Metrics, Raft, node_id, ordinal};

#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    /// `node-<ordinal>`; the ordinal is the Raft node id.
    pub id: NodeId,
    /// This node's internal listener (`host:port`), as the other nodes reach it.
    pub addr: String,
    /// This node's session listener (`host:port`), as gateways reach it.
    pub session_addr: String,
    pub weight: u32,
    /// Where the log, the vote and snapshots are kept (a persistent volume in Kubernetes).
    pub data_dir: PathBuf,
    /// Internal addresses (`host:port`) of members to join through.
    pub seeds: Vec<String>,
    /// Voters in the Raft group: 1, 3 or 5, the lowest ordinals; the others are learners.
    pub voters: usize,
    pub timing: Timing,
}

impl ConsensusConfig {
    /// Checks the configuration and returns the Raft node id.
    fn check(&self) -> Result<u64, ConsensusError> {
        let bad = |what: String| Err(ConsensusError::Config(what));
        let Some(nid) = ordinal(&self.id) else {
            return bad(format!("id {:?} is not node-<ordinal>", self.id.0));
        };
        if self.weight == 0 {
            return bad("weight must be positive".to_owned());
        }
        if self.addr.trim().is_empty() || self.session_addr.trim().is_empty() {
            return bad("addr and session_addr must not be empty".to_owned());
        }
        if self.voters == 0 || self.voters.is_multiple_of(2) {
            return bad(format!(
                "voters must be odd (1, 3 or 5), not {}",
                self.voters
            ));
        }
        self.timing.check()?;
        Ok(nid)
    }
}

/// What `shardgate status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub membership: Membership,
    /// Whether this node has heard from a quorum within its lease.
    pub serving: bool,
}

/// A running consensus node: a Raft group member plus its join loop and failure detector.
pub struct Consensus {
    shared: Arc<Shared>,
    join: Mutex<Option<AbortHandle>>,
    detector: AbortHandle,
}

/// What the public handle, the RPC handlers and the background loops share.
pub(crate) struct Shared {
    id: NodeId,
    nid: u64,
    config: ConsensusConfig,
    raft: Raft,
    metrics: watch::Receiver<Metrics>,
    membership: Arc<watch::Sender<Membership>>,
    transport: Arc<dyn Transport>,
    lease: Lease,
    /// Set by `leave`, so that this node, while it still leads, does not join itself back.
    leaving: AtomicBool,
    /// Serializes membership changes on the leader: openraft takes one at a time, and voters
    /// must not be reconciled while a join is half-way (learner added, `Join` not committed).
    changes: tokio::sync::Mutex<()>,
}

/// Raft snapshots every this many entries. A snapshot is a few hundred bytes, so taking them
/// often costs nothing and keeps the log (held in memory) short.
const SNAPSHOT_EVERY: u64 = 100;

impl Consensus {
    /// Starts this node with the HTTP transport.
    pub async fn start(config: ConsensusConfig) -> Result<Arc<Consensus>, ConsensusError> {
        let transport = HttpTransport::new(config.timing.admin_timeout())
            .map_err(|e| ConsensusError::Config(format!("http client: {e}")))?;
        Consensus::start_with(config, Arc::new(transport)).await
    }

    /// Starts this node over any transport (tests use an in-process one with faults).
    pub async fn start_with(
        config: ConsensusConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let nid = config.check()?;
        let storage = |source| ConsensusError::Storage {
            path: config.data_dir.clone(),
            source,
        };
        let (dir, owner) = (config.data_dir.clone(), config.id.0.clone());
        disk::blocking(move || disk::claim(&dir, &owner))
            .await
            .map_err(storage)?;
        let log = LogStore::open(&config.data_dir).await.map_err(storage)?;
        let state_machine = StateMachineStore::open(&config.data_dir)
            .await
            .map_err(storage)?;
        let pristine = log.is_pristine() && !state_machine.has_snapshot();
        let membership = state_machine.publisher();
        let network = Network::new(transport.clone(), config.timing.heartbeat * 2);
        let raft = Raft::new(
            nid,
            Arc::new(raft_config(&config.timing)?),
            network,
            log,
            state_machine,
        )
        .await
        .map_err(|e| ConsensusError::Failed(e.to_string()))?;
        tracing::info!(id = %config.id, pristine, "consensus started");

        let shared = Arc::new(Shared {
            id: config.id.clone(),
            nid,
            metrics: raft.metrics(),
            raft,
            membership,
            transport,
            lease: Lease::default(),
            leaving: AtomicBool::new(false),
            changes: tokio::sync::Mutex::new(()),
            config,
        });
        if let Err(e) = bootstrap::found_if_first(&shared, pristine).await {
            let _ = shared.raft.shutdown().await;
            return Err(e);
        }
        let join = tokio::spawn(bootstrap::join_loop(shared.clone())).abort_handle();
        let detector = tokio::spawn(detector::run(shared.clone())).abort_handle();
        Ok(Arc::new(Consensus {
            shared,
            join: Mutex::new(Some(join)),
            detector,
        }))
    }

    /// The applied membership; every committed change arrives with a higher epoch.
    pub fn watch(&self) -> watch::Receiver<Membership> {
        self.shared.membership.subscribe()
    }

    /// Serves one RPC from another node (`name` is one of [`RPC_NAMES`]) and returns the reply
    /// body. Errors are for the caller's HTTP layer: an unknown name or a malformed body.
    pub async fn rpc(&self, name: &str, body: &[u8]) -> Result<Vec<u8>, ConsensusError> {
        rpc::serve(&self.shared, name, body).await
    }

    /// Sets a member's state through the leader, from any node.
    pub async fn set_state(
        &self,
        id: &NodeId,
        state: MemberState,
    ) -> Result<Membership, ConsensusError> {
        let shared = &self.shared;
        shared
            .retrying(|| {
                shared.set_state(ProposeRequest {
                    id: id.clone(),
                    state,
                    forwarded: false,
                })
            })
            .await
    }

    /// Leaves the cluster for good: the member is removed from the membership and from Raft
    /// (a voter is replaced by the next lowest ordinal).
    pub async fn leave(&self) -> Result<(), ConsensusError> {
        if let Some(join) = lock(&self.join).take() {
            join.abort();
        }
        let shared = &self.shared;
        shared.leaving.store(true, Ordering::Relaxed);
        let req = LeaveRequest {
            id: shared.id.clone(),
            forwarded: false,
        };
        let membership = shared.retrying(|| shared.leave(req.clone())).await?;
        tracing::info!(id = %shared.id, epoch = membership.epoch, "left the cluster");
        Ok(())
    }

    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let metrics = shared.metrics.borrow();
        let raft = metrics.membership_config.membership();
        Status {
            id: shared.id.clone(),
            leader: metrics.current_leader.map(node_id),
            term: metrics.current_term,
            voters: raft.voter_ids().map(node_id).collect(),
            learners: raft.learner_ids().map(node_id).collect(),
            membership: shared.membership(),
            serving: shared.lease.serving(&metrics, shared.config.timing.lease),
        }
    }

    /// Whether Raft is between two voter sets (joint consensus, during a join or a leave). Both
    /// sets must then reach a quorum, so losing a node now can stall the group until it is back.
    pub fn changing_voters(&self) -> bool {
        let metrics = self.shared.metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            > 1
    }

    /// Whether this node has heard from a quorum within its lease; callers stop serving
    /// (fail closed) while it is false.
    pub fn serving(&self) -> bool {
        let shared = &self.shared;
        let metrics = shared.metrics.borrow();
        shared.lease.serving(&metrics, shared.config.timing.lease)
    }

    /// Stops the background loops and Raft. The data dir keeps everything a restart needs.
    pub async fn shutdown(&self) {
        self.stop_loops();
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }

    fn stop_loops(&self) {
        if let Some(join) = lock(&self.join).take() {
            join.abort();
        }
        self.detector.abort();
    }
}

impl Drop for Consensus {
    fn drop(&mut self) {
        self.stop_loops();
    }
}

impl Shared {
    fn membership(&self) -> Membership {
        self.membership.borrow().clone()
    }

    /// The term this node leads in, if it is the leader.
    fn leading_term(&self) -> Option<u64> {
        let m = self.metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.nid))
            .then_some(m.current_term)
    }

    fn probe_reply(&self) -> ProbeReply {
        let m = self.metrics.borrow();
        ProbeReply {
            id: self.id.clone(),
            in_cluster: m.membership_config.membership().nodes().next().is_some(),
        }
    }
}

fn raft_config(timing: &Timing) -> Result<openraft::Config, ConsensusError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    openraft::Config {
        cluster_name: "shardgate".to_owned(),
        heartbeat_interval: ms(timing.heartbeat),
        election_timeout_min: ms(timing.election_min),
        election_timeout_max: ms(timing.election_max),
        install_snapshot_timeout: ms(timing.lease),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: SNAPSHOT_EVERY / 2,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ConsensusError::Config(e.to_string()))
}

/// Locks a std mutex that guards plain data; a panic elsewhere does not make the data unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
