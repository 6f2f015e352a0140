//! How one node's request reaches another: a [`Transport`] carries a named JSON body to the
//! node at `addr` (over HTTP, `POST /internal/raft/{name}` on its internal listener) and brings
//! back the reply body.
//!
//! Consensus code only sees the trait, so tests swap in an in-process router with injected
//! faults, while production uses the authenticated HTTP client of `shardgate-node`.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future, as [`Transport::call`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries one cluster RPC to the node at `addr` and returns its reply body.
///
/// Implementations add no retries: Raft and the join loop retry at their own pace, and callers
/// bound each call with their own deadline.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: &str,
        name: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing answered at the address; openraft backs off instead of retrying at once.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The address refused the connection: no process listens there. The process that did has
    /// exited (or one is starting in its place); a network cut drops or delays, it does not
    /// refuse.
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
    /// The peer answered with an HTTP error (unknown RPC, malformed body, shutting down).
    #[error("status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Other(String),
}
