//! Following membership: a gateway long-polls one node at a time for a view newer than its
//! own, so a change reaches it as soon as that node has applied it (within a heartbeat or
//! two of the commit), not at the next 421.
//!
//! It asks the members it knows, then its seeds; a node that fails or is gone is skipped for
//! the next one. Views only ever move forward: the highest epoch wins (`RingView::adopt`).

use crate::Gateway;
use shardgate_raft::MemberState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one long poll is held by the node.
const POLL: Duration = Duration::from_secs(20);
/// Pause after a node failed to answer, before the next is asked.
const BACKOFF: Duration = Duration::from_millis(50);

pub async fn follow(gw: Arc<Gateway>, seeds: Vec<String>, shutdown: CancellationToken) {
    let mut next = 0usize;
    loop {
        let ring = gw.ring.current();
        let mut addrs: Vec<String> = ring
            .membership()
            .members
            .iter()
            .filter(|m| m.state != MemberState::Down)
            .map(|m| m.addr.clone())
            .collect();
        for seed in &seeds {
            if !addrs.contains(seed) {
                addrs.push(seed.clone());
            }
        }
        let Some(addr) = addrs.get(next % addrs.len().max(1)).cloned() else {
            return;
        };
        let poll = gw.forwarder.poll_membership(&addr, ring.epoch(), POLL);
        let view = tokio::select! {
            view = poll => view,
            _ = shutdown.cancelled() => return,
        };
        match view {
            // A newer view, or the same one after the poll timed out: ask the same node again.
            Some(view) => {
                gw.ring.adopt(view);
            }
            None => {
                tracing::debug!(node = %addr, "membership poll failed; asking the next node");
                next = next.wrapping_add(1);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}
