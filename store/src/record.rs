//! What a session is in the store: the durable part of a session ([`SessionRecord`]), one event
//! of a stream's replay log ([`StoredEvent`]) and the ownership every write is checked against
//! ([`Fence`]).
//!
//! Runtime handles (upstream connections, channels, timers) are not here: a record is what a new
//! owner needs to continue the session after the old owner is gone.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The durable part of one session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id (`Mcp-Session-Id`).
    pub id: String,
    /// Whom the session belongs to (JWT `sub` and tenant, or the anonymous principal).
    pub principal: String,
    /// The negotiated protocol revision.
    pub protocol_version: String,
    /// The client's `initialize` params, replayed to upstreams that must be initialized again.
    pub initialize_params: RawJson,
    /// What upstreams need to continue (their session ids, per upstream name).
    pub upstream_state: Map<String, Value>,
    /// The next stream number this session hands out.
    pub next_stream: u64,
    /// The next upstream request id this session hands out.
    pub next_request: u64,
    /// Requests accepted but not answered when the record was written: a new owner answers each
    /// with an explicit error on its stream.
    pub in_flight: Vec<InFlightRecord>,
}

/// JSON kept as the text it came as, shared rather than copied. A session's `initialize` params
/// go into the record of every write and are read only when an upstream connects; held parsed,
/// a tree of maps (about 640 bytes for each object), they took half of a node's memory per
/// session, and every write made a deep copy of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Arc<RawValue>);

impl RawJson {
    pub fn new(value: &Value) -> RawJson {
        // A `Value` always serializes; `null` keeps this total.
        let raw =
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        RawJson(Arc::from(raw))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed anew (`null` if the text were not JSON, which it always is).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

/// Equal when the JSON is: a store may give the text back with its keys reordered.
impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get() || self.value() == other.value()
    }
}

/// A request in flight when the record was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightRecord {
    /// The client's JSON-RPC id as JSON text, exactly as the client sent it (`7`, `"7"`).
    pub request_id: String,
    /// The stream its answer belongs on.
    pub stream: u64,
}

/// One event of a stream's log: the SSE event `<stream>-<seq>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub stream: u64,
    pub seq: u64,
    /// The serialized JSON-RPC message; empty for a priming event.
    pub data: String,
}

/// Who may write a session: the node that claimed it, under the membership epoch it claimed it
/// in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The owning node's id.
    pub owner: String,
    /// The Raft membership epoch the owner claimed the session under.
    pub epoch: u64,
}

impl Fence {
    pub fn new(owner: impl Into<String>, epoch: u64) -> Fence {
        Fence {
            owner: owner.into(),
            epoch,
        }
    }

    /// Whether a claim with this fence takes a session that `held` holds: a later epoch always
    /// does; within one epoch only the holder itself (a repeated claim). Two nodes that both
    /// believe they own a key in the same epoch cannot both win.
    pub fn may_take(&self, held: &Fence) -> bool {
        held.epoch < self.epoch || (held.owner == self.owner && held.epoch <= self.epoch)
    }
}

/// What a successful claim finds in the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claimed {
    /// The session's record, when one was saved (none for a session claimed for the first time).
    pub record: Option<SessionRecord>,
    /// The last stored seq of each stream that has events: where each stream continues.
    pub tails: BTreeMap<u64, u64>,
}

/// The part of one stream's log a resume asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The oldest seq the store still holds for the stream (none when it holds nothing). A
    /// resume after `after_seq` has lost events when `oldest > after_seq + 1`.
    pub oldest: Option<u64>,
    /// The stored events with a seq above `after_seq`, in seq order.
    pub events: Vec<StoredEvent>,
}

impl Replay {
    /// Whether events between `after_seq` and what the store holds were trimmed.
    pub fn has_gap(&self, after_seq: u64) -> bool {
        self.oldest
            .is_some_and(|oldest| oldest > after_seq.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_epoch_takes_over() {
        let held = Fence::new("node-1", 3);
        assert!(Fence::new("node-2", 4).may_take(&held));
        assert!(!Fence::new("node-2", 2).may_take(&held));
    }

    #[test]
    fn within_an_epoch_only_the_holder_claims_again() {
        let held = Fence::new("node-1", 3);
        assert!(Fence::new("node-1", 3).may_take(&held));
        assert!(!Fence::new("node-2", 3).may_take(&held));
        assert!(!Fence::new("node-1", 2).may_take(&held));
    }

    #[test]
    fn a_gap_is_a_hole_between_the_resume_point_and_the_oldest_event() {
        let replay = |oldest| Replay {
            oldest,
            events: Vec::new(),
        };
        assert!(!replay(None).has_gap(5));
        assert!(!replay(Some(6)).has_gap(5));
        assert!(!replay(Some(2)).has_gap(5));
        assert!(replay(Some(7)).has_gap(5));
        assert!(!replay(Some(u64::MAX)).has_gap(u64::MAX));
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let record = SessionRecord {
            id: "s".into(),
            principal: "p".into(),
            protocol_version: "2025-11-25".into(),
            initialize_params: RawJson::new(&serde_json::json!({"capabilities": {}})),
            upstream_state: Map::new(),
            next_stream: 2,
            next_request: 9,
            in_flight: vec![InFlightRecord {
                request_id: "\"7\"".into(),
                stream: 1,
            }],
        };
        let text = serde_json::to_string(&record).expect("serializes");
        assert_eq!(
            serde_json::from_str::<SessionRecord>(&text).expect("parses"),
            record
        );
    }
}
