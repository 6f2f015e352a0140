//! A cluster of in-process nodes over the [`Router`], with temp data dirs and `wait_for`.

use crate::router::Router;
use shardgate_raft::consensus::{Consensus, ConsensusConfig, Status, Timing};
use shardgate_raft::{MemberState, Membership, NodeId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Cluster tests share two cores with everything else: running them one at a time keeps
/// elections and failure detection on their nominal timings.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Cluster {
    pub router: Arc<Router>,
    pub timing: Timing,
    voters: usize,
    seeds: Vec<String>,
    dir: PathBuf,
    nodes: BTreeMap<u64, Arc<Consensus>>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

pub fn addr(n: u64) -> String {
    format!("node-{n}.test:7000")
}

pub fn id(n: u64) -> NodeId {
    NodeId(format!("node-{n}"))
}

pub fn ids(ns: &[u64]) -> Vec<NodeId> {
    ns.iter().map(|n| id(*n)).collect()
}

impl Cluster {
    /// An empty cluster whose nodes allow `voters` voters and seed through ordinals 0..3.
    pub async fn new(voters: usize) -> Cluster {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // `RUST_LOG=openraft=info,shardgate_raft=debug` shows the nodes' logs with a failure.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let serial = SERIAL.lock().await;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardgate-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cluster {
            router: Router::new(),
            timing: Timing::default(),
            voters,
            seeds: (0..3).map(addr).collect(),
            dir,
            nodes: BTreeMap::new(),
            _serial: serial,
        }
    }

    pub fn config(&self, n: u64) -> ConsensusConfig {
        ConsensusConfig {
            id: id(n),
            addr: addr(n),
            session_addr: format!("{}-session", addr(n)),
            weight: 1,
            data_dir: self.dir.join(format!("node-{n}")),
            seeds: self.seeds.clone(),
            voters: self.voters,
            timing: self.timing.clone(),
        }
    }

    /// Starts (or restarts, from the same data dir) node `n`.
    pub async fn start(&mut self, n: u64) -> Arc<Consensus> {
        let transport = self.router.transport(&addr(n));
        let node = Consensus::start_with(self.config(n), transport)
            .await
            .expect("start");
        self.router.register(&addr(n), node.clone());
        self.nodes.insert(n, node.clone());
        node
    }

    pub async fn start_all(&mut self, ns: &[u64]) {
        for n in ns {
            self.start(*n).await;
        }
    }

    /// Stops node `n` as its peers see a `kill -9`: it vanishes from the network at once. Its
    /// data dir is kept for a restart.
    pub async fn stop(&mut self, n: u64) {
        self.router.unregister(&addr(n));
        if let Some(node) = self.nodes.remove(&n) {
            node.shutdown().await;
        }
    }

    pub fn node(&self, n: u64) -> &Arc<Consensus> {
        self.nodes.get(&n).expect("running node")
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn statuses(&self) -> BTreeMap<u64, Status> {
        self.nodes.iter().map(|(n, c)| (*n, c.status())).collect()
    }

    /// The leader, if every running node in `among` agrees on one that is among them.
    pub fn leader_of(&self, among: &[u64]) -> Option<u64> {
        let leaders: Vec<Option<NodeId>> = among
            .iter()
            .map(|n| self.node(*n).status().leader)
            .collect();
        let first = leaders.first()?.clone()?;
        let n = among.iter().copied().find(|n| id(*n) == first)?;
        leaders
            .iter()
            .all(|l| l.as_ref() == Some(&first))
            .then_some(n)
    }

    pub fn leader(&self) -> Option<u64> {
        self.leader_of(&self.running())
    }

    /// Whether all running nodes hold the same view with exactly `members`, all `Active`, led by
    /// one leader with the expected voters and learners (no voter change half-way), and serving.
    pub fn agreed(&self, members: &[u64], voters: &[u64], learners: &[u64]) -> bool {
        let statuses = self.statuses();
        let Some(first) = statuses.values().next() else {
            return false;
        };
        let view = &first.membership;
        let member_ids: Vec<&NodeId> = view.members.iter().map(|m| &m.id).collect();
        self.leader().is_some()
            && member_ids == ids(members).iter().collect::<Vec<_>>()
            && view.members.iter().all(|m| m.state == MemberState::Active)
            && self.nodes.values().all(|c| !c.changing_voters())
            && statuses.values().all(|s| {
                s.membership == *view
                    && s.voters == ids(voters)
                    && s.learners == ids(learners)
                    && s.serving
            })
    }

    pub fn membership(&self, n: u64) -> Membership {
        self.node(n).watch().borrow().clone()
    }

    pub fn state_of(&self, viewer: u64, member: u64) -> Option<MemberState> {
        self.membership(viewer).member(&id(member)).map(|m| m.state)
    }

    /// Polls `cond` until it holds, or fails the test with every node's status.
    pub async fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + within;
        while !cond(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {within:?} waiting for {what}: {:#?}",
                    self.statuses()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for n in self.running() {
            self.stop(n).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
