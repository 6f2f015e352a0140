//! An in-process network of `Consensus` nodes keyed by address, with faults: unreachable nodes,
//! added delay, and partitions between groups of nodes.

use shardgate_raft::consensus::{BoxFuture, Consensus, ConsensusError, Transport, TransportError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
pub struct Router {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Arc<Consensus>>,
    unreachable: HashSet<String>,
    delay: HashMap<String, Duration>,
    /// Group of each address while partitioned; addresses in no group reach everyone.
    groups: HashMap<String, usize>,
    /// RPC names whose calls are kept in `recorded`.
    recording: HashSet<String>,
    recorded: Vec<Call>,
}

/// One call through the router, as [`Router::record`] keeps it.
#[derive(Clone, Debug)]
pub struct Call {
    pub from: String,
    pub to: String,
    pub name: String,
    pub body: Vec<u8>,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("router lock")
    }

    /// The transport a node at `from` sends through.
    pub fn transport(self: &Arc<Self>, from: &str) -> Arc<dyn Transport> {
        Arc::new(RouterTransport {
            router: self.clone(),
            from: from.to_owned(),
        })
    }

    pub fn register(&self, addr: &str, node: Arc<Consensus>) {
        self.state().nodes.insert(addr.to_owned(), node);
    }

    pub fn unregister(&self, addr: &str) -> Option<Arc<Consensus>> {
        self.state().nodes.remove(addr)
    }

    /// Cuts `addr` off in both directions (a dead pod or a pulled cable), or reconnects it.
    pub fn set_unreachable(&self, addr: &str, unreachable: bool) {
        let mut state = self.state();
        if unreachable {
            state.unreachable.insert(addr.to_owned());
        } else {
            state.unreachable.remove(addr);
        }
    }

    /// Adds `delay` to every call to or from `addr`.
    pub fn set_delay(&self, addr: &str, delay: Duration) {
        self.state().delay.insert(addr.to_owned(), delay);
    }

    /// Only nodes in the same group reach each other until [`Router::heal`].
    pub fn partition(&self, groups: &[Vec<String>]) {
        let mut state = self.state();
        state.groups = groups
            .iter()
            .enumerate()
            .flat_map(|(g, addrs)| addrs.iter().map(move |a| (a.clone(), g)))
            .collect();
    }

    pub fn heal(&self) {
        self.state().groups.clear();
    }

    /// Keeps every call of RPC `name` from now on, delivered or not.
    pub fn record(&self, name: &str) {
        self.state().recording.insert(name.to_owned());
    }

    pub fn recorded(&self) -> Vec<Call> {
        self.state().recorded.clone()
    }

    /// The node `to` as seen from `from`, with the delay of the link.
    fn route(&self, from: &str, to: &str) -> Result<(Arc<Consensus>, Duration), TransportError> {
        let state = self.state();
        let cut = |a: &str| state.unreachable.contains(a);
        let split = match (state.groups.get(from), state.groups.get(to)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        let node = state
            .nodes
            .get(to)
            .filter(|_| !cut(from) && !cut(to) && !split);
        let Some(node) = node else {
            return Err(TransportError::Unreachable(format!("{from} -> {to}")));
        };
        let delay = |a: &str| state.delay.get(a).copied().unwrap_or_default();
        Ok((node.clone(), delay(from) + delay(to)))
    }
}

struct RouterTransport {
    router: Arc<Router>,
    from: String,
}

impl Transport for RouterTransport {
    fn call(
        &self,
        addr: &str,
        name: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let (router, from) = (self.router.clone(), self.from.clone());
        let (to, name) = (addr.to_owned(), name.to_owned());
        {
            let mut state = router.state();
            if state.recording.contains(&name) {
                state.recorded.push(Call {
                    from: from.clone(),
                    to: to.clone(),
                    name: name.clone(),
                    body: body.clone(),
                });
            }
        }
        Box::pin(async move {
            let (node, delay) = router.route(&from, &to)?;
            tokio::time::sleep(delay).await;
            let reply = node.rpc(&name, &body).await;
            // A link cut while the request was in flight loses the reply too.
            router.route(&from, &to)?;
            // The statuses the node's HTTP route answers with.
            reply.map_err(|e| TransportError::Status {
                status: match e {
                    ConsensusError::ForeignCluster { .. } => 403,
                    _ if e.is_retryable() => 503,
                    _ => 400,
                },
                body: e.to_string(),
            })
        })
    }
}
