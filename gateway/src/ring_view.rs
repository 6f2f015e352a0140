//! The gateway's view of the ring: the highest-epoch membership it has seen.
//!
//! Nodes are the source of membership; a gateway starts from its configured view and adopts a
//! node's view whenever that view is newer and of the same cluster: from its long polls
//! (`follow.rs`) and from the node that refused a request with 421 (`forward.rs`).

use shardgate_raft::{Membership, Ring};
use std::sync::{Arc, RwLock};

pub struct RingView {
    current: RwLock<Arc<Ring>>,
}

impl RingView {
    pub fn new(membership: Membership) -> Self {
        RingView {
            current: RwLock::new(Arc::new(Ring::new(membership))),
        }
    }

    pub fn current(&self) -> Arc<Ring> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adopts `membership` if it is newer than the current view; true when it was.
    pub fn adopt(&self, membership: Membership) -> bool {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !current.superseded_by(&membership) {
            return false;
        }
        tracing::info!(
            from = current.epoch(),
            to = membership.epoch,
            "adopted a newer ring"
        );
        *current = Arc::new(Ring::new(membership));
        true
    }

    /// Ready to route: at least one member owns keys.
    pub fn is_ready(&self) -> bool {
        self.current().owner(b"readiness").is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_raft::{Member, NodeId};

    fn view(epoch: u64, n: usize) -> Membership {
        Membership {
            cluster: None,
            epoch,
            members: (0..n)
                .map(|i| Member {
                    id: NodeId(format!("node-{i}")),
                    addr: format!("127.0.0.1:{}", 9000 + i),
                    session_addr: format!("127.0.0.1:{}", 9100 + i),
                    state: Default::default(),
                    weight: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn keeps_the_highest_epoch() {
        let v = RingView::new(view(2, 3));
        assert!(!v.adopt(view(1, 4)));
        assert!(!v.adopt(view(2, 4)));
        assert!(v.adopt(view(3, 4)));
        assert_eq!(v.current().epoch(), 3);
        assert!(v.is_ready());
        assert!(!RingView::new(Membership::default()).is_ready());
    }
}
