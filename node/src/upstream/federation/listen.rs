//! `subscriptions/listen` (stateless era): one stream for the client, one per member behind it.
//!
//! Every member is asked with the client's filter. Each acknowledges on its own, but the client
//! must get one acknowledgement, first on its stream, naming everything that is honoured: so
//! the members' acknowledgements are held back until every member has either acknowledged or
//! given up, and then one goes out with the union of what they honour. Anything a member sends
//! before that waits behind it. Whatever subscription id a member's stream carries (a remote
//! member's is the id the connector gave its request), what it sends is re-tagged with the one
//! the client knows: the id of the client's listen request.

use super::{Inner, merge};
use crate::upstream::{BoxFuture, Call, Peer};
use futures_util::future::join_all;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{META_SUBSCRIPTION_ID, RpcError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";
/// Notifications held back while waiting for the last acknowledgement; past this, changes are
/// dropped (they are hints to refetch, and the ones kept already say so).
const MAX_HELD: usize = 256;

pub(super) async fn listen(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    // The client's listen request id: the one subscription id it knows.
    let id = call.request_id.clone();
    let active = inner.active(&call.state);
    let hub = Arc::new(Hub {
        client: call.peer.clone(),
        id: id.clone(),
        inner: Mutex::new(HubState {
            waiting: active.len(),
            honoured: None,
            sent: false,
            held: Vec::new(),
        }),
    });
    let streams = active.iter().map(|&i| {
        let peer = Arc::new(MemberPeer {
            hub: hub.clone(),
            acknowledged: AtomicBool::new(false),
        });
        let running = inner.forward_via(call, i, &call.method, call.params.clone(), peer.clone());
        async move {
            let result = running.await;
            // A member that ends without acknowledging (it cannot listen, say) must not keep
            // the client waiting for it.
            peer.settle(None);
            result
        }
    });
    let results = join_all(streams).await;
    inner.any_took(call, &active, results)?;
    Ok(json!({ "_meta": { META_SUBSCRIPTION_ID: id } }))
}

/// Where the members' streams meet the client's.
struct Hub {
    client: Arc<dyn Peer>,
    id: Value,
    inner: Mutex<HubState>,
}

struct HubState {
    /// Members that have neither acknowledged nor ended.
    waiting: usize,
    /// The union of what acknowledging members honour; `None` while nobody has.
    honoured: Option<Map<String, Value>>,
    /// Whether our acknowledgement has gone out (or never will: nobody acknowledged).
    sent: bool,
    held: Vec<(String, Value)>,
}

impl Hub {
    // The client is told things while the lock is held, so that nothing overtakes the
    // acknowledgement or the held notifications; telling it never blocks.
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One member acknowledged (with what it honours) or ended without doing so.
    fn settle(&self, honoured: Option<&Value>) {
        let mut state = self.lock();
        if let Some(theirs) = honoured {
            let united = state.honoured.get_or_insert_with(Map::new);
            if let Value::Object(theirs) = theirs {
                merge::unite(united, theirs);
            }
        }
        state.waiting = state.waiting.saturating_sub(1);
        if state.waiting > 0 || state.sent {
            return;
        }
        state.sent = true;
        if let Some(honoured) = state.honoured.take() {
            self.client.notify(
                ACKNOWLEDGED,
                json!({"_meta": {META_SUBSCRIPTION_ID: self.id.clone()}, "notifications": honoured}),
            );
        }
        for (method, params) in std::mem::take(&mut state.held) {
            self.client.notify(&method, params);
        }
    }

    fn forward(&self, method: &str, mut params: Value) {
        if let Some(tag) = params
            .get_mut("_meta")
            .and_then(|m| m.get_mut(META_SUBSCRIPTION_ID))
        {
            *tag = self.id.clone();
        }
        let mut state = self.lock();
        if state.sent {
            self.client.notify(method, params);
        } else if state.held.len() < MAX_HELD {
            state.held.push((method.to_owned(), params));
        }
    }
}

/// The client as one member sees it: its acknowledgement is kept for the [`Hub`], everything
/// else goes on to the client.
struct MemberPeer {
    hub: Arc<Hub>,
    acknowledged: AtomicBool,
}

impl MemberPeer {
    fn settle(&self, honoured: Option<&Value>) {
        // Once per member: a second acknowledgement (or the end after the first) is not news.
        if !self.acknowledged.swap(true, Ordering::AcqRel) {
            self.hub.settle(honoured);
        }
    }
}

impl Peer for MemberPeer {
    fn notify(&self, method: &str, params: Value) {
        if method == ACKNOWLEDGED {
            self.settle(Some(params.get("notifications").unwrap_or(&Value::Null)));
        } else {
            self.hub.forward(method, params);
        }
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        self.hub.client.request(method, params)
    }

    fn disconnect(&self) {
        self.hub.client.disconnect();
    }
}
