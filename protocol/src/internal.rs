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
/// What `shardgate status` shows: this node's view of consensus and membership.
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
