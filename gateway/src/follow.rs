//! Following membership: a gateway long-polls nodes for a view newer than its own, so a change
//! reaches it as soon as a node has applied it (within a heartbeat or two of the commit), not
//! at the next 421.
//!
//! It asks two nodes at once, from the members it knows and then its seeds, and takes the first
//! answer: a node that is alive but cut off (frozen, partitioned) holds its poll without news,
//! and the other one answers. A node that fails is replaced by the next at once, so a frozen
//! node's poll never stays the only one. Views only ever move
//! forward: the highest epoch wins (`RingView::adopt`).

use crate::Gateway;
use crate::forward::Forwarder;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use shardgate_raft::MemberState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one long poll is held by the node.
const POLL: Duration = Duration::from_secs(20);
/// Pause after the nodes asked failed to answer, before the next are asked.
const BACKOFF: Duration = Duration::from_millis(50);
/// Nodes asked at once.
const FAN_OUT: usize = 2;

pub async fn follow(
    gw: Arc<Gateway>,
    nodes: Forwarder,
    seeds: Vec<String>,
    shutdown: CancellationToken,
) {
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
        if addrs.is_empty() {
            return;
        }
        let asked: Vec<String> = (0..FAN_OUT.min(addrs.len()))
            .map(|i| addrs[(next + i) % addrs.len()].clone())
            .collect();
        let poll = |addr: String| {
            let nodes = &nodes;
            let epoch = ring.epoch();
            async move { nodes.poll_membership(&addr, epoch, POLL).await }
        };
        let mut polls: FuturesUnordered<_> = asked.iter().cloned().map(poll).collect();
        // The first view of our cluster that comes back; `None` when every node asked failed.
        // A node that answers with another cluster's view has failed too: asking it again
        // would never bring news. A poll that fails is replaced by one of the next node, so
        // that the one still held (by a frozen node, say) is never the only one left.
        let mut spare = (FAN_OUT..addrs.len()).map(|i| addrs[(next + i) % addrs.len()].clone());
        let first = async {
            while let Some(answer) = polls.next().await {
                match answer {
                    Some(view) if ring.admits(&view) => return Some(view),
                    Some(view) => tracing::warn!(
                        cluster = ?view.cluster,
                        "a node answered with a view of another cluster"
                    ),
                    None => {}
                }
                if let Some(addr) = spare.next() {
                    polls.push(poll(addr));
                }
            }
            None
        };
        let view = tokio::select! {
            view = first => view,
            _ = shutdown.cancelled() => return,
        };
        match view {
            // A newer view, or the same one after the poll timed out: ask the same nodes again.
            Some(view) => {
                gw.ring.adopt(view);
            }
            None => {
                tracing::debug!(nodes = ?asked, "membership polls failed; asking the next nodes");
                next = next.wrapping_add(FAN_OUT);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}
