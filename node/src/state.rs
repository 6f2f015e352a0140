//! What every handler of a node shares: its identity, its ring (the newest membership view it
//! knows), consensus, the session table, stateless affinity state, the upstream, the count
//! of calls in flight, the budgets that bound them, the store sessions are written to, the
//! audit of tool calls, and what its reports name.

use crate::budget::Budgets;
use crate::durable::{Durable, Lost};
use crate::metrics::{Ended, METRICS};
use crate::session::{Session, Sessions};
use crate::stateless_era::Affinity;
use crate::upstream::{Scope, Upstream};
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_raft::consensus::Consensus;
use shardgate_raft::{Membership, NodeId, Ring};
use shardgate_store::Auditor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a busy session this node no longer owns may finish its calls before it goes.
pub const LET_GO_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a busy session being let go is looked at.
const LET_GO_POLL: std::time::Duration = std::time::Duration::from_millis(20);

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
    /// Sessions being let go of (see [`NodeState::let_go_of_moved_sessions`]).
    letting_go: AtomicUsize,
    pub budgets: Arc<Budgets>,
    /// The store sessions are written through to; without one they live in memory only.
    pub durable: Option<Arc<Durable>>,
    /// Where tool calls are audited ([`crate::audit`]): the store's auditor, if it keeps one.
    pub auditor: Option<Auditor>,
    /// How this node asks the others to hand sessions over (`RELEASE_PATH`).
    pub peers: Option<ClusterClient>,
    /// What it was started with that its reports name ([`crate::report`]).
    pub setup: crate::report::Setup,
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
        durable: Option<Arc<Durable>>,
    ) -> Self {
        let auditor = durable.as_ref().and_then(|d| d.store.auditor());
        NodeState {
            id,
            ring: watch::Sender::new(Arc::new(Ring::new(membership))),
            consensus,
            drain: CancellationToken::new(),
            sessions: Sessions::new(budgets.limits.sessions),
            affinity: Affinity::default(),
            upstream,
            calls_in_flight: AtomicUsize::new(0),
            letting_go: AtomicUsize::new(0),
            budgets,
            durable,
            auditor,
            peers: None,
            setup: Default::default(),
        }
    }

    /// How this node asks the others to hand sessions over.
    pub fn with_peers(mut self, peers: ClusterClient) -> Self {
        self.peers = Some(peers);
        self
    }

    /// What it was started with, for its reports.
    pub fn with_setup(mut self, setup: crate::report::Setup) -> Self {
        self.setup = setup;
        self
    }

    /// Doubts every session held here: a view was adopted that skipped others, in which this
    /// node may have lost a session's key and got it back, another node claiming it meanwhile
    /// (this node, never having seen itself lose it, did not let go of it).
    pub fn doubt_held_sessions(&self) {
        for id in self.sessions.ids() {
            if let Some(s) = self.sessions.get(&id) {
                s.doubt();
            }
        }
    }

    /// Ends a session here and releases what its upstream holds for it; false if there was
    /// none. A stored session stays in the store (see [`NodeState::delete_session`]).
    pub fn end_session(&self, id: &str) -> bool {
        let ended = self.sessions.remove(id);
        if ended {
            self.upstream.close(&Scope::Session(id.to_owned()));
        }
        ended
    }

    /// Ends a session for good, in the store too: the client deleted it.
    pub async fn delete_session(
        &self,
        session: &crate::session::Session,
    ) -> Result<(), shardgate_store::StoreError> {
        if self.end_session(&session.id) {
            METRICS.sessions_ended(Ended::Deleted, 1);
        }
        match (&self.durable, session.link()) {
            (Some(durable), Some(link)) => durable.store.delete(&session.id, link.fence()).await,
            _ => Ok(()),
        }
    }

    /// Drops a session whose writes the store refused (another node claimed it) or could not
    /// take: it is served elsewhere, or taken over again from what the store has.
    pub fn drop_lost(&self, lost: &Lost) {
        let held = self
            .sessions
            .get(&lost.session)
            .is_some_and(|s| s.link().is_some_and(|l| *l.fence() == *lost.fence));
        if held && self.end_session(&lost.session) {
            METRICS.sessions_ended(Ended::Lost, 1);
            if let Some(durable) = &self.durable {
                crate::durable::Counts::add(&durable.counts.lost, 1);
            }
            tracing::warn!(error = %lost.error, "dropped a session this node may no longer write");
            tracing::debug!(session = %lost.session, "session dropped");
        }
    }

    /// Ends idle sessions and forgets idle affinity state, releasing their upstream resources.
    /// A session idle for `timeout` is over, in the store too; with a store, one idle for
    /// `passivate_after` only leaves memory, and its next request loads it again (the store
    /// forgets it once it has not been written for `timeout`).
    pub fn reap_idle(
        self: &Arc<Self>,
        timeout: std::time::Duration,
        passivate_after: std::time::Duration,
    ) -> (usize, usize) {
        let ended = self.sessions.reap(timeout);
        let mut reaped = ended.len();
        METRICS.sessions_ended(Ended::Expired, ended.len() as u64);
        for session in &ended {
            self.upstream.close(&Scope::Session(session.id.clone()));
        }
        if let Some(durable) = self.durable.clone()
            && !ended.is_empty()
        {
            tokio::spawn(async move {
                for session in ended {
                    let Some(link) = session.link() else { continue };
                    if let Err(e) = durable.store.delete(&session.id, link.fence()).await {
                        tracing::debug!(error = %e, "an ended session stays in the store until it expires");
                    }
                }
            });
        }
        if let Some(durable) = &self.durable {
            let passivated = self.sessions.reap(passivate_after);
            for session in &passivated {
                self.upstream.close(&Scope::Session(session.id.clone()));
            }
            crate::durable::Counts::add(&durable.counts.passivated, passivated.len() as u64);
            reaped += passivated.len();
        }
        let keys = self.affinity.reap(timeout);
        for key in &keys {
            self.upstream.close(&Scope::Affinity(key.clone()));
        }
        (reaped, keys.len())
    }

    /// Whether sessions are still being let go of.
    pub fn letting_go(&self) -> bool {
        self.letting_go.load(Ordering::Relaxed) > 0
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

    /// Lets go of the stored sessions whose keys the current view gives to other nodes, for the
    /// new owners to take over from the store; without a store they stay (a request that still
    /// reaches them is served). This node takes no new request for them (it answers 421); each
    /// goes once its calls have answered and everything it wrote is stored (so its listeners
    /// have every answer), or after [`LET_GO_GRACE`], cancelling what still runs. A new owner
    /// that claims it meanwhile wins: this node's later writes are refused. Stateless-era keys
    /// the view moves go the same way.
    pub fn let_go_of_moved_sessions(self: &Arc<Self>) -> usize {
        let Some(durable) = self.durable.clone() else {
            return 0;
        };
        let ring = self.ring();
        let moved: Vec<Arc<Session>> = self
            .sessions
            .ids()
            .into_iter()
            .filter(|id| !ring.owns(&self.id, id.as_bytes()))
            .filter_map(|id| self.sessions.get(&id))
            .collect();
        let keys = self
            .affinity
            .keys(|key| !ring.owns(&self.id, key.as_bytes()));
        for key in keys {
            let node = self.clone();
            self.letting_go.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                node.let_go_of_key(&key).await;
                node.letting_go.fetch_sub(1, Ordering::Relaxed);
            });
        }
        for session in &moved {
            let (node, session, durable) = (self.clone(), session.clone(), durable.clone());
            self.letting_go.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                node.let_go(session, &durable).await;
                node.letting_go.fetch_sub(1, Ordering::Relaxed);
            });
        }
        moved.len()
    }

    /// Hands session `id` over to `asker`, which owns it at `epoch` (`RELEASE_PATH`), if it is
    /// held here. Refused (false) when this node's view is newer than the asker's, or as new
    /// and naming another owner: a node that woke up with a stale view must not take a session
    /// from its rightful holder.
    pub async fn release(&self, id: &str, asker: &str, epoch: u64) -> bool {
        let ring = self.ring();
        let agreed = match epoch.cmp(&ring.epoch()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => ring.owner(id.as_bytes()).is_some_and(|m| m.id.0 == asker),
            std::cmp::Ordering::Less => false,
        };
        if !agreed {
            tracing::debug!(session = %id, %asker, epoch, ours = ring.epoch(), "refused to hand a session to a stale owner");
            return false;
        }
        if let Some(key) = crate::stateless_era::kept::key_of(id) {
            tracing::debug!(%asker, "handing a stateless-era key over");
            self.let_go_of_key(key).await;
        } else if let (Some(session), Some(durable)) = (self.sessions.get(id), &self.durable) {
            tracing::debug!(session = %id, %asker, "handing a session over");
            self.let_go(session, durable).await;
        }
        true
    }

    /// Lets go of a stateless-era key another node now owns, as [`Self::let_go`] does of a
    /// session: no new call is taken for it, its calls under way get [`LET_GO_GRACE`] to finish
    /// and store what they left behind, and then its state leaves memory.
    async fn let_go_of_key(&self, key: &str) {
        let Some(calls) = self.affinity.leave(key) else {
            return;
        };
        settle(|| calls.load(Ordering::Acquire), self.durable.as_deref()).await;
        if self.affinity.forget_leaving(key) {
            self.upstream.close(&Scope::Affinity(key.to_owned()));
        }
    }

    /// Lets go of a session another node now owns: no new request is taken for it, the calls
    /// in flight get [`LET_GO_GRACE`] to finish, everything written so far reaches the store,
    /// and then it leaves memory (the store keeps it for the new owner).
    async fn let_go(&self, session: Arc<Session>, durable: &Durable) {
        session.leave();
        settle(|| session.requests_in_flight(), Some(durable)).await;
        let still_here = self
            .sessions
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(&s, &session));
        if still_here && self.end_session(&session.id) {
            METRICS.sessions_ended(Ended::HandedOff, 1);
        }
    }

    /// Whether the store can be written, when there is one.
    pub fn store_healthy(&self) -> bool {
        self.durable.as_ref().is_none_or(|d| d.healthy())
    }

    /// Whether this node may serve sessions: always with a fixed membership; with Raft, only
    /// while it hears from a quorum (a node cut off from the cluster may have lost its keys
    /// to another without knowing it, so it fails closed).
    pub fn serving(&self) -> bool {
        self.consensus.as_ref().is_none_or(|c| c.serving())
    }
}

/// Waits for what is letting go to be done: its calls under way (`in_flight`) finish, for at
/// most [`LET_GO_GRACE`], and everything written so far reaches the store, if there is one.
async fn settle(in_flight: impl Fn() -> usize, durable: Option<&Durable>) {
    let deadline = tokio::time::Instant::now() + LET_GO_GRACE;
    while in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LET_GO_POLL).await;
    }
    if let Some(durable) = durable {
        durable.flushed().await;
    }
}
