//! What every handler of a node shares: its identity, its ring (the newest membership view it
//! knows), consensus, the session table, stateless affinity state, the upstream, the count
//! of calls in flight, and the budgets that bound them.

use crate::budget::Budgets;
use crate::session::Sessions;
use crate::stateless_era::Affinity;
use crate::upstream::{Scope, Upstream};
use shardgate_raft::consensus::Consensus;
use shardgate_raft::{Membership, NodeId, Ring};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct NodeState {
    pub id: NodeId,
    /// The ring of the newest membership this node knows; watched by membership long polls.
    pub(crate) ring: watch::Sender<Arc<Ring>>,
    /// Raft, when membership is agreed on rather than fixed.
    pub consensus: Option<Arc<Consensus>>,
    /// Cancelled when someone asks this node to drain (`POST /internal/drain`).
    pub drain: CancellationToken,
    pub sessions: Sessions,
    pub affinity: Affinity,
    pub upstream: Arc<dyn Upstream>,
    /// Upstream calls running now, both eras.
    pub(crate) calls_in_flight: AtomicUsize,
    pub budgets: Arc<Budgets>,
}

/// Counts one upstream call for as long as it lives.
pub struct CallCount<'a>(&'a AtomicUsize);

impl Drop for CallCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeState {
    pub fn new(
        id: NodeId,
        membership: Membership,
        consensus: Option<Arc<Consensus>>,
        upstream: Arc<dyn Upstream>,
        budgets: Arc<Budgets>,
    ) -> Self {
        NodeState {
            id,
            ring: watch::Sender::new(Arc::new(Ring::new(membership))),
            consensus,
            drain: CancellationToken::new(),
            sessions: Sessions::new(budgets.limits.sessions),
            affinity: Affinity::default(),
            upstream,
            calls_in_flight: AtomicUsize::new(0),
            budgets,
        }
    }

    /// Ends a session and releases what its upstream holds for it; false if there was none.
    pub fn end_session(&self, id: &str) -> bool {
        let ended = self.sessions.remove(id);
        if ended {
            self.upstream.close(&Scope::Session(id.to_owned()));
        }
        ended
    }

    /// Ends idle sessions and forgets idle affinity state, releasing their upstream resources.
    pub fn reap_idle(&self, timeout: std::time::Duration) -> (usize, usize) {
        let sessions = self.sessions.reap(timeout);
        for id in &sessions {
            self.upstream.close(&Scope::Session(id.clone()));
        }
        let keys = self.affinity.reap(timeout);
        for key in &keys {
            self.upstream.close(&Scope::Affinity(key.clone()));
        }
        (sessions.len(), keys.len())
    }

    pub fn calls_in_flight(&self) -> usize {
        self.calls_in_flight.load(Ordering::Relaxed)
    }

    /// Marks an upstream call as running until the returned guard is dropped.
    pub fn call_started(&self) -> CallCount<'_> {
        self.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        CallCount(&self.calls_in_flight)
    }

    pub fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Takes `membership` if it is newer than the current view; true when it was.
    pub fn adopt(&self, membership: Membership) -> bool {
        self.ring.send_if_modified(|ring| {
            if !ring.superseded_by(&membership) {
                return false;
            }
            tracing::info!(
                from = ring.epoch(),
                to = membership.epoch,
                "membership changed"
            );
            *ring = Arc::new(Ring::new(membership));
            true
        })
    }

    /// Whether this node may serve sessions: always with a fixed membership; with Raft, only
    /// while it hears from a quorum (a node cut off from the cluster may have lost its keys
    /// to another without knowing it, so it fails closed).
    pub fn serving(&self) -> bool {
        self.consensus.as_ref().is_none_or(|c| c.serving())
    }
}
