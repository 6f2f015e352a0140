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
/// The verified principal (JWT `sub` and tenant) of the request.
pub const PRINCIPAL: &str = "x-shardgate-principal";
/// Stateless era: the scope whose upstream state the call runs in, the client's correlation key
/// (`principal/…` or `client/…`). Absent when the call needs no client state.
pub const SCOPE: &str = "x-shardgate-scope";
/// On a node's stateless-era answers: where a call of that method and name must run
/// (`anywhere`, `shared` or `client`; `upstream::Placement`). Gateways learn routing from it.
pub const PLACEMENT: &str = "x-shardgate-placement";

/// The node's membership view, as JSON (`Membership`). With `?after=EPOCH&wait_ms=N` it is a
/// long poll: answered once the view is newer than `EPOCH`, or after `N` ms with the current.
pub const MEMBERSHIP_PATH: &str = "/internal/membership";
/// Raft and cluster RPCs between nodes: `POST /internal/raft/<name>`, JSON in and out.
pub const RAFT_PATH: &str = "/internal/raft/{name}";
/// What `shardgate status` shows: this node's view of consensus and membership.
pub const STATUS_PATH: &str = "/internal/status";
/// Asks the node to drain: mark itself `Draining`, hand its sessions off, leave, stop.
pub const DRAIN_PATH: &str = "/internal/drain";
