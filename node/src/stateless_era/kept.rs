//! A correlation key's state in the store: the stateless era's counterpart of a session record,
//! so that what a client's calls leave behind (the builtin `counter`, an upstream's session id)
//! outlives the node that holds it. The record is named `affinity/<key>`; only its upstream
//! state means anything.
//!
//! The first call of a key on a node claims the record under the node's membership epoch and
//! loads the state; a call that changed the state stores it before its answer goes out, at the
//! node's acknowledgement level. The key's owner is the only writer, as for sessions.

use crate::durable::{self, Durable, Link};
use crate::state::NodeState;
use crate::upstream::UpstreamState;
use serde_json::Value;
use shardgate_store::{Fence, SessionRecord, StoreError};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A key's hold on its record, taken by its first call on this node.
pub type Held = Arc<OnceCell<Link>>;

fn record_id(key: &str) -> String {
    format!("affinity/{key}")
}

/// The key's link to its record: claimed (and its state loaded into `state`) by the first call
/// that asks, on this node.
pub async fn hold(
    node: &NodeState,
    durable: &Durable,
    key: &str,
    state: &UpstreamState,
    held: &Held,
) -> Result<Link, StoreError> {
    held.get_or_try_init(|| async {
        let id = record_id(key);
        let fence = Fence::new(node.id.to_string(), node.ring().epoch());
        let claimed = durable.store.claim(&id, &fence).await?;
        if let Some(record) = claimed.record {
            state.with(|s| *s = record.upstream_state);
            durable::Counts::add(&durable.counts.takeovers, 1);
        }
        state.take_changed();
        Ok(durable.link(&id, fence))
    })
    .await
    .cloned()
}

/// Stores the key's state if a call changed it, and waits for the acknowledgement level.
pub async fn keep(link: &Link, key: &str, state: &UpstreamState) -> Result<(), StoreError> {
    if !state.take_changed() {
        return Ok(());
    }
    let record = SessionRecord {
        id: record_id(key),
        principal: String::new(),
        protocol_version: String::new(),
        initialize_params: Value::Null,
        upstream_state: state.snapshot(),
        next_stream: 0,
        next_request: 0,
        in_flight: Vec::new(),
    };
    durable::settled(link, link.save(record)).await
}
