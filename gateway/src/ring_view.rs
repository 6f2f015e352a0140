//! The gateway's view of the ring: the highest-epoch membership it has seen.
//!
//! Nodes are the source of membership; a gateway starts from its configured view and adopts a
//! node's view whenever that view is newer and of the same cluster: from its long polls
//! (`follow.rs`) and from the node that refused a request with 421 (`forward.rs`). Requests
//! held for a dead owner wait on it for the view that names another ([`RingView::moved`]).

use shardgate_raft::{Membership, NodeId, Ring};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct RingView {
    current: watch::Sender<Arc<Ring>>,
}

impl RingView {
    pub fn new(membership: Membership) -> Self {
        RingView {
            current: watch::Sender::new(Arc::new(Ring::new(membership))),
        }
    }

    pub fn current(&self) -> Arc<Ring> {
        self.current.borrow().clone()
    }

    /// Adopts `membership` if it is newer than the current view; true when it was.
    pub fn adopt(&self, membership: Membership) -> bool {
        self.current.send_if_modified(|current| {
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
        })
    }

    /// The first view in which `key` belongs to a node other than `from`, within `within`.
    pub async fn moved(&self, key: &[u8], from: &NodeId, within: Duration) -> Option<Arc<Ring>> {
        let mut views = self.current.subscribe();
        let moved = |r: &Arc<Ring>| r.owner(key).is_some_and(|m| m.id != *from);
        let found = tokio::time::timeout(within, views.wait_for(moved)).await;
        match found {
            Ok(Ok(ring)) => Some(ring.clone()),
            _ => None,
        }
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
            ring: Default::default(),
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

    #[tokio::test(start_paused = true)]
    async fn a_held_request_learns_when_its_key_moves() {
        let v = Arc::new(RingView::new(view(2, 3)));
        let key = b"some-session";
        let owner = v.current().owner(key).expect("an owner").id.clone();
        assert!(
            v.moved(key, &owner, Duration::from_secs(3)).await.is_none(),
            "nothing moved"
        );
        let mut without = view(3, 3);
        without.members.retain(|m| m.id != owner);
        let later = v.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            later.adopt(without);
        });
        let moved = v
            .moved(key, &owner, Duration::from_secs(3))
            .await
            .expect("moved");
        assert_eq!(moved.epoch(), 3);
        assert_ne!(moved.owner(key).map(|m| m.id.clone()), Some(owner));
    }
}
