//! The trusted headers a gateway adds when it forwards a request to a node, and the node's
//! internal endpoints. A node honours these headers only on authenticated requests
//! ([`crate::auth`]), and a gateway strips every header with their prefix that a client sends.

/// What every trusted header name starts with (and the request signature's, too).
pub const PREFIX: &str = "x-shardgate-";
/// The key the gateway routed by: the session id, or the stateless-era affinity key.
pub const ROUTE_KEY: &str = "x-shardgate-route-key";
/// The ring epoch the gateway routed under; a node answers 421 with its own.
pub const EPOCH: &str = "x-shardgate-epoch";
/// The session id the gateway minted for an `initialize`.
pub const NEW_SESSION: &str = "x-shardgate-new-session";
/// The principal the gateway attributes the request to (`anonymous` until the gateway verifies
/// tokens).
pub const PRINCIPAL: &str = "x-shardgate-principal";
/// The principal of requests no credential vouches for.
pub const ANONYMOUS: &str = "anonymous";
/// Stateless era: the scope whose upstream state the call runs in, the client's correlation key
/// (`principal/…` or `client/…`). Absent when the call needs no client state.
pub const SCOPE: &str = "x-shardgate-scope";
/// On a node's stateless-era answers: where a call of that method and name must run
/// (`anywhere`, `shared` or `client`; `upstream::Placement`). Gateways learn routing from it.
pub const PLACEMENT: &str = "x-shardgate-placement";
/// On a node's 503: it did nothing with the request (it is cut off from the quorum, or has not
/// caught up with the view), so a gateway may hold the request and send it again, as for a
/// refused connection.
pub const NOT_SERVING: &str = "x-shardgate-not-serving";

/// The node's membership view, as JSON (`Membership`). With `?after=EPOCH&wait_ms=N` it is a
/// long poll: answered once the view is newer than `EPOCH`, or after `N` ms with the current.
pub const MEMBERSHIP_PATH: &str = "/internal/membership";
/// Raft and cluster RPCs between nodes: `POST /internal/raft/<name>`, JSON in and out.
pub const RAFT_PATH: &str = "/internal/raft/{name}";
/// What `shardgate status` shows first: this node's view of consensus and membership.
pub const STATUS_PATH: &str = "/internal/status";
/// Asks the node to drain: mark itself `Draining` (its keys move), let its calls in flight
/// finish within a grace period, leave, stop.
pub const DRAIN_PATH: &str = "/internal/drain";
/// Asks the node holding a session to hand it over: `POST` with a [`Release`]. The node takes
/// no new request for it, lets the calls in flight finish (within a grace period), has
/// everything written to the store, and lets go of it; the answer (200) comes once it has. The
/// session's new owner asks before it claims the session, so that a planned move interrupts
/// no call. 409 when the holder's view does not give the session to the asker.
pub const RELEASE_PATH: &str = "/internal/release";

/// What a node reports of itself: a [`NodeReport`]. `shardgate status` asks every member, and
/// so does the gateway's status page.
pub const REPORT_PATH: &str = "/internal/report";
/// The sessions a node holds in memory: a [`SessionList`], the most recently active first, at
/// most `?limit=N` of them (default [`SESSIONS_LIMIT`]); with `?id=ID`, that one session as a
/// [`SessionDetail`], or 404 when the node does not hold it ([`session_path`]).
pub const SESSIONS_PATH: &str = "/internal/sessions";
/// How many sessions a [`SESSIONS_PATH`] answer lists unless asked for another number: a node
/// may hold a hundred thousand, and the list is for people to read.
pub const SESSIONS_LIMIT: usize = 1000;

/// The [`SESSIONS_PATH`] query for one session. The id is percent-encoded, so that whatever
/// an operator types reaches the node as typed (and the request is signed as it is sent).
pub fn session_path(id: &str) -> String {
    let mut path = format!("{SESSIONS_PATH}?id=");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// A node's [`REPORT_PATH`] answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub id: shardgate_raft::NodeId,
    /// Session-era sessions held in memory (with a store, passivated ones are not counted).
    pub sessions: usize,
    /// Stateless-era calls served since the node started.
    pub stateless_calls: u64,
    /// The epoch of the membership view the node decides ownership by.
    pub epoch: u64,
    /// Whether the node serves: it hears from a quorum (always, with a fixed membership).
    pub serving: bool,
    /// Its place in Raft; `None` with a fixed membership.
    pub raft: Option<RaftReport>,
    /// The session store it writes through to; `None` keeps sessions in memory only.
    pub store: Option<StoreReport>,
}

/// A node's place in Raft, as it sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftReport {
    pub role: shardgate_raft::consensus::Role,
    pub term: u64,
    pub leader: Option<shardgate_raft::NodeId>,
}

/// A node's session store: its kind (`sqlite`, `postgres`, `redis cluster`, …, never its URL,
/// which may carry credentials) and whether it takes the node's writes now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreReport {
    pub kind: String,
    pub healthy: bool,
}

/// A node's [`SESSIONS_PATH`] answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionList {
    pub node: shardgate_raft::NodeId,
    /// Every session the node holds; `sessions` may list fewer (the limit).
    pub total: usize,
    pub sessions: Vec<SessionSummary>,
}

/// One session a node holds. Every session is of the session era (the stateless era has
/// none), so its era is told by its negotiated revision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub protocol_version: String,
    pub principal: String,
    /// The upstreams that keep state for it (an upstream session, a process's `initialize`,
    /// the builtin's counter …), by their configured names.
    pub upstreams: Vec<String>,
    /// When this node began to hold it (Unix seconds): created here, or taken over from the
    /// store (which does not keep when a session was first created).
    pub held_since: u64,
    /// When its client last sent anything in it (Unix seconds, this node's clock).
    pub last_active: u64,
}

/// One session in detail: a [`SESSIONS_PATH`]`?id=` answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionDetail {
    pub node: shardgate_raft::NodeId,
    #[serde(flatten)]
    pub session: SessionSummary,
    /// Client requests being served now.
    pub requests_in_flight: usize,
    /// Server-to-client requests waiting for the client's answer.
    pub pending_client_requests: usize,
    /// Being handed to another node: new requests are sent there.
    pub leaving: bool,
    /// Its streams, by id; `0` is the standalone (GET) stream.
    pub streams: Vec<StreamReport>,
}

/// One SSE stream of a session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamReport {
    pub id: u64,
    /// The id of the newest event it sent (`<stream>-<seq>`): what a client resumes after.
    pub last_event_id: String,
    /// Its request was answered (the standalone stream never finishes).
    pub finished: bool,
    /// A client is connected to it now.
    pub listening: bool,
    /// Bytes of events it keeps for replay.
    pub replay_bytes: usize,
}

/// The body of a [`RELEASE_PATH`] request: the session, and who asks at which epoch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    pub session: String,
    pub owner: String,
    pub epoch: u64,
}

/// Where a stateless-era call must run for its answer to be right. A node says it on every
/// answer ([`Placement::as_str`] in `x-shardgate-placement`); gateways remember it per method
/// and name and route by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    /// Needs nothing an earlier call left on some node: any node, spread evenly.
    Anywhere,
    /// Needs what this node's upstream shares between all its clients (the builtin's change
    /// feed): one agreed node for everyone.
    Shared,
    /// Needs this client's upstream state (a stdio process, an upstream session, the builtin
    /// `counter`): the node that owns the client's correlation key.
    Client,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Anywhere => "anywhere",
            Placement::Shared => "shared",
            Placement::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Placement> {
        match s {
            "anywhere" => Some(Placement::Anywhere),
            "shared" => Some(Placement::Shared),
            "client" => Some(Placement::Client),
            _ => None,
        }
    }
}

/// How gateways name the scope of a client known by an issued key: `client/<key>`.
pub const CLIENT_SCOPE: &str = "client/";
/// What a `requestState` carrying its client's key starts with: `sgk.<key>.<upstream's>`.
pub const KEYED_STATE: &str = "sgk.";

/// The client key a `requestState` carries, if we put one in it. A retry of an
/// `input_required` call must reach the node where the call waits (a session-era upstream's
/// call parks there), and a client that does not send its key back still sends its
/// `requestState`: gateways route such a retry by the key in it.
pub fn key_in_request_state(state: &str) -> Option<&str> {
    let (key, _) = state.strip_prefix(KEYED_STATE)?.split_once('.')?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_query_carries_any_id_as_typed() {
        assert_eq!(
            session_path("AbC-_9"),
            "/internal/sessions?id=AbC-_9",
            "minted ids pass unchanged"
        );
        assert_eq!(
            session_path("a b&id=c/é"),
            "/internal/sessions?id=a%20b%26id%3Dc%2F%C3%A9"
        );
    }
}
