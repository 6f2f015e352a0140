//! A correlation key's state in the store: the stateless era's counterpart of a session record,
//! so that what a client's calls leave behind (the builtin `counter`, an upstream's session id)
//! outlives the node that holds it. The record is named `affinity/<key>`; only its upstream
//! state means anything.
//!
//! The first call of a key on a node asks the node that held it, if it is alive, to hand it
//! over (its calls of the key finish and are stored first), then claims the record under the
//! node's membership epoch and loads the state; a call that changed the state stores it before its answer goes out, at the
//! node's acknowledgement level. The key's owner is the only writer, as for sessions.

use crate::durable::{self, Durable, Link};
use crate::state::NodeState;
use crate::upstream::UpstreamState;
use serde_json::Value;
use shardgate_store::{Fence, RawJson, SessionRecord, StoreError};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A key's hold on its record, taken by its first call on this node.
pub type Held = Arc<OnceCell<Link>>;

/// What names a key's record in the store.
const RECORD_PREFIX: &str = "affinity/";

fn record_id(key: &str) -> String {
    format!("{RECORD_PREFIX}{key}")
}

/// The key a record id names, if it names one.
pub fn key_of(record: &str) -> Option<&str> {
    record.strip_prefix(RECORD_PREFIX)
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
        let ring = node.ring();
        // A node that still runs calls of the key finishes and stores them first.
        crate::takeover::ask_holder_to_release(node, durable, &id, &ring).await;
        let fence = Fence::new(node.id.to_string(), ring.epoch());
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
        initialize_params: RawJson::new(&Value::Null),
        upstream_state: state.snapshot(),
        next_stream: 0,
        next_request: 0,
        in_flight: Vec::new(),
    };
    durable::settled(link, link.save(record, true)).await
}
