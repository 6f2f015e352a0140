//! What gateways and nodes must agree on, in one small crate both depend on, so that the gateway
//! does not link the session engine and the two sides cannot drift apart.
//!
//! Layout, in the order a request meets it:
//! - [`listener`]: the HTTP/1.1 + HTTP/2 accept loop every listener of both roles runs.
//! - [`mcp`]: MCP facts — revisions, eras, headers, message shapes, JSON-RPC error codes.
//! - [`stateless_checks`]: the 2026-07-28 request checks, run by the gateway before routing and
//!   by the node before serving.
//! - [`session_id`]: minting session ids.
//! - [`internal`]: the trusted headers a gateway adds, and the nodes' internal endpoints.
//! - [`cluster_client`]: the authenticated client of a node's internal listener (Raft, membership,
//!   status, drain).
//! - [`reply`]: HTTP answers with JSON-RPC error bodies.
//! - [`metered`]: the bounded labels both sides' metrics use, and a response body that counts
//!   what it sends.
//! - [`traces`]: the trace context each hop takes from the one before it and hands to the next.

pub mod cluster_client;
pub mod internal;
pub mod listener;
pub mod mcp;
pub mod metered;
pub mod reply;
pub mod session_id;
pub mod sse;
pub mod stateless_checks;
pub mod traces;

/// An error and its causes, `outer: inner: innermost`: where hyper and reqwest say what
/// happened to a connection.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
