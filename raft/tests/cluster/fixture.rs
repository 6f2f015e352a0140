//! A cluster of in-process nodes over the [`Router`], with temp data dirs and `wait_for`.

use crate::router::Router;
use shardgate_raft::consensus::{Consensus, ConsensusConfig, ConsensusError, Status, Timing};
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
    /// Short, so that tests that start ordinal 0 before its peers do not wait long for them.
    pub found_wait: Duration,
    voters: usize,
    /// Addresses are `node-<n>.<domain>:7000`, so that clusters beside each other differ.
    domain: String,
    seeds: Vec<String>,
    dir: PathBuf,
    nodes: BTreeMap<u64, Arc<Consensus>>,
    /// Held by the first cluster of a test only.
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

const DOMAIN: &str = "test";

/// The address of node `n` of a cluster made by [`Cluster::new`].
pub fn addr(n: u64) -> String {
    addr_in(DOMAIN, n)
}

fn addr_in(domain: &str, n: u64) -> String {
    format!("node-{n}.{domain}:7000")
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
        // `RUST_LOG=openraft=info,shardgate_raft=debug` shows the nodes' logs with a failure.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let serial = SERIAL.lock().await;
        Cluster::on(Router::new(), DOMAIN, voters, Some(serial))
    }

    /// Another cluster on this one's network, with its own addresses (`node-<n>.<domain>`) and
    /// data dirs: what a node of the wrong cluster would reach.
    pub fn beside(&self, domain: &str, voters: usize) -> Cluster {
        Cluster::on(self.router.clone(), domain, voters, None)
    }

    fn on(
        router: Arc<Router>,
        domain: &str,
        voters: usize,
        serial: Option<tokio::sync::MutexGuard<'static, ()>>,
    ) -> Cluster {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardgate-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cluster {
            router,
            timing: Timing::default(),
            found_wait: Duration::from_millis(300),
            voters,
            domain: domain.to_owned(),
            seeds: (0..3).map(|n| addr_in(domain, n)).collect(),
            dir,
            nodes: BTreeMap::new(),
            _serial: serial,
        }
    }

    /// The address of node `n` of this cluster.
    pub fn addr(&self, n: u64) -> String {
        addr_in(&self.domain, n)
    }

    pub fn config(&self, n: u64) -> ConsensusConfig {
        ConsensusConfig {
            id: id(n),
            addr: self.addr(n),
            session_addr: format!("{}-session", self.addr(n)),
            weight: 1,
            data_dir: self.dir.join(format!("node-{n}")),
            seeds: self.seeds.clone(),
            voters: self.voters,
            timing: self.timing.clone(),
            found_wait: self.found_wait,
        }
    }

    /// Starts (or restarts, from the same data dir) node `n`.
    pub async fn start(&mut self, n: u64) -> Arc<Consensus> {
        self.try_start(n, self.config(n)).await.expect("start")
    }

    /// Starts node `n` with `config` (one from [`Cluster::config`], changed).
    pub async fn try_start(
        &mut self,
        n: u64,
        config: ConsensusConfig,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let transport = self.router.transport(&config.addr);
        let node = Consensus::start(config, transport).await?;
        self.register(n, node.clone());
        Ok(node)
    }

    /// Puts node `n`, started by hand, on the network and in this cluster.
    pub fn register(&mut self, n: u64, node: Arc<Consensus>) {
        self.router.register(&self.addr(n), node.clone());
        self.nodes.insert(n, node);
    }

    pub async fn start_all(&mut self, ns: &[u64]) {
        for n in ns {
            self.start(*n).await;
        }
    }

    /// Stops node `n` as its peers see a `kill -9`: it vanishes from the network at once. Its
    /// data dir is kept for a restart.
    pub async fn stop(&mut self, n: u64) {
        self.router.unregister(&self.addr(n));
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

    /// The cluster id, if every running node reports the same one, in `cluster_id()` and in its
    /// membership.
    pub fn cluster_id(&self) -> Option<String> {
        let first = self.nodes.values().next()?.cluster_id()?;
        self.nodes
            .values()
            .all(|c| {
                c.cluster_id().as_ref() == Some(&first)
                    && c.watch().borrow().cluster.as_ref() == Some(&first)
            })
            .then_some(first)
    }

    /// Wipes node `n`'s data dir, as a lost volume; the node must be stopped.
    pub fn wipe(&self, n: u64) {
        let _ = std::fs::remove_dir_all(self.config(n).data_dir);
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
