//! What happened during a run: every call and its outcome, every fault and change, with times
//! in milliseconds from the start of the run.

use crate::writers::Writers;
use serde::{Deserialize, Serialize};

/// The kinds of [`Fault`], as recorded and reported.
pub mod kind {
    /// SIGKILL of a node.
    pub const KILL: &str = "kill -9";
    /// SIGKILL of a gateway (behind the front).
    pub const GATEWAY_KILL: &str = "gateway kill -9";
    pub const FREEZE: &str = "freeze";
    pub const SCALE_UP: &str = "scale up";
    pub const SCALE_DOWN: &str = "scale down";
    pub const STORE_RESTART: &str = "store restart";
    /// SIGKILL of a Redis primary; its replica takes over, and it comes back as a replica.
    pub const REDIS_PRIMARY_KILL: &str = "redis primary kill -9";
    /// A node cut off from its peers, the gateways or the store (packets dropped).
    pub const PARTITION: &str = "partition";
    /// A node's links to one side losing a share of their packets.
    pub const SLOW_LINK: &str = "slow link";
    /// SIGKILL of a stdio upstream process.
    pub const UPSTREAM_KILL: &str = "stdio upstream kill -9";
}

/// How one call ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// `counter` answered with its new value (`echo`: the number it was given).
    Value { value: i64 },
    /// The explicit failover error: the call was in flight on a node that went away.
    Interrupted { message: String },
    /// Any other explicit error: an HTTP status with a JSON-RPC error, or a JSON-RPC error.
    Error { what: String, message: String },
    /// The connection to the endpoint could not be made or broke before the call had an
    /// event id to resume from: the client knows it has no answer (as for a reset), and the
    /// call may or may not have taken effect.
    ConnectionLost { message: String },
    /// No answer and no word why: the stream ended without one, or broke and could not be
    /// resumed.
    NoAnswer { message: String },
    /// No answer within the call timeout.
    Hung,
    /// An impatient caller gave it up; it may still take effect.
    Abandoned,
    /// More than one response to the request.
    Answered { times: usize },
}

impl Outcome {
    pub fn value(&self) -> Option<i64> {
        match self {
            Outcome::Value { value } => Some(*value),
            _ => None,
        }
    }

    /// A label for counting outcomes by kind.
    pub fn label(&self) -> String {
        match self {
            Outcome::Value { .. } => "value".into(),
            Outcome::Interrupted { .. } => "interrupted".into(),
            Outcome::Error { what, .. } => what.clone(),
            Outcome::ConnectionLost { .. } => "connection lost".into(),
            Outcome::NoAnswer { .. } => "no answer".into(),
            Outcome::Hung => "hung".into(),
            Outcome::Abandoned => "given up by the client".into(),
            Outcome::Answered { .. } => "answered more than once".into(),
        }
    }
}

/// One `tools/call counter` of one session (or, in [`History::upstream_calls`], one call of
/// the stdio upstream's `echo` with the call's id as its text).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    /// The session's index in [`History::sessions`].
    pub session: usize,
    pub id: i64,
    pub sent_ms: u64,
    pub done_ms: u64,
    pub outcome: Outcome,
    /// Made after the faults ended, to see that the session is usable again.
    pub healing: bool,
}

/// What the harness did to the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    /// One of [`kind`].
    pub kind: String,
    /// The node or gateway it hit, or the change made.
    pub target: String,
    pub at_ms: u64,
    /// When it was over: the node resumed, the killed gateway was gone, or the change
    /// completed.
    pub until_ms: u64,
    /// A planned change (drain, scale), during which no call may fail.
    pub planned: bool,
    /// For a change of membership: sessions whose owner changed, and the share the ring
    /// should move ideally (1/(N+1) for a join, the leaver's share for a leave).
    pub moved: Option<Moved>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Moved {
    pub sessions: usize,
    pub of: usize,
    pub ideal: f64,
}

/// A progress notification a GET holder heard on its session's standalone stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heard {
    pub session: usize,
    /// Its event id, `<stream>-<seq>`.
    pub event: String,
    /// The progress token of the call it belongs to.
    pub token: String,
    pub progress: i64,
    pub at_ms: u64,
}

/// A call whose notifications go on the standalone stream (`test_tool_with_progress`, with
/// a JSON answer), made by a GET holder's session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgressCall {
    pub session: usize,
    pub token: String,
    pub sent_ms: u64,
    pub done_ms: u64,
    /// The call's answer came, with its token: every notification it sent was stored first.
    pub answered: bool,
}

/// What the GET holders saw; absent from older histories.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Listened {
    /// The sessions that had a holder.
    pub sessions: Vec<usize>,
    pub heard: Vec<Heard>,
    pub calls: Vec<ProgressCall>,
    /// Times a holder's stream could not be opened again, and why.
    pub refused: Vec<String>,
    /// Times a holder's stream was opened again with `Last-Event-ID`.
    #[serde(default)]
    pub resumed: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub sessions: Vec<String>,
    pub calls: Vec<Call>,
    /// The calls through a stdio upstream (the `upstreams` scenario); absent from older
    /// histories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_calls: Vec<Call>,
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub listened: Listened,
    /// Who the store saw write each session (PostgreSQL only); absent from older histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<Writers>,
    /// The highest membership epoch the cluster reached (the gateway's view at the end): no
    /// session can be rightly written under a later one. Absent from older histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_reached: Option<u64>,
}
