//! What a session talks to: the [`Upstream`] trait and the context a call runs in.
//!
//! The engine hands an upstream one client request at a time as a [`Call`]; the upstream answers
//! with a result or a JSON-RPC error, and meanwhile may talk back to the client through the
//! call's [`Peer`] (progress, log messages, sampling/elicitation/roots requests). Upstream state
//! that must outlive the process (the builtin counter, for one) lives in [`UpstreamState`],
//! which belongs to the session, not to the upstream.

pub mod builtin;
pub mod connector;
pub mod federation;
#[cfg(test)]
mod testing;

use futures_util::FutureExt;
use futures_util::future::Shared;
use serde_json::{Map, Value};
use shardgate_protocol::internal::Placement;
use shardgate_protocol::mcp::RpcError;
use shardgate_store::{RawJson, StoreError};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The client side of a call, as the upstream sees it.
pub trait Peer: Send + Sync {
    /// Sends a notification related to the call (progress, log message, …).
    fn notify(&self, method: &str, params: Value);
    /// Sends a request to the client and waits for its answer (session era only; in the
    /// stateless era an upstream returns an `input_required` result instead).
    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>>;
    /// Closes the client's connection without ending the stream (SSE polling): the client
    /// reconnects with `Last-Event-ID` and gets what was sent meanwhile. A no-op where streams
    /// are not resumable.
    fn disconnect(&self);
}

/// Per-session (or, in the stateless era, per-affinity-key) state an upstream keeps between
/// calls. JSON so that stores can persist it and another node can continue from it.
///
/// [`UpstreamState::with`] may change the state and marks it changed; [`UpstreamState::read`]
/// only looks. A session checkpoints its state after a call that changed it
/// ([`UpstreamState::take_changed`]), not after every read.
#[derive(Clone, Default)]
pub struct UpstreamState(Arc<StateCell>);

#[derive(Default)]
struct StateCell {
    map: Mutex<Map<String, Value>>,
    changed: AtomicBool,
}

impl UpstreamState {
    /// State continued from a stored record.
    pub fn from_map(map: Map<String, Value>) -> Self {
        UpstreamState(Arc::new(StateCell {
            map: Mutex::new(map),
            changed: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<String, Value>> {
        self.0
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the state, which counts as changed; never hold it across an `.await`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Map<String, Value>) -> R) -> R {
        let mut guard = self.lock();
        self.0.changed.store(true, Ordering::Release);
        f(&mut guard)
    }

    /// Runs `f` on the state without changing it.
    pub fn read<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        f(&self.lock())
    }

    /// A copy of the state, as a store keeps it.
    pub fn snapshot(&self) -> Map<String, Value> {
        self.lock().clone()
    }

    /// A copy of the state for a write, and whether it changed since the last write took one
    /// (both under the lock that changes take, so no change falls between them).
    pub fn snapshot_for_write(&self) -> (Map<String, Value>, bool) {
        let guard = self.lock();
        let changed = self.0.changed.swap(false, Ordering::AcqRel);
        (guard.clone(), changed)
    }

    /// Whether the state may have changed since the last time this was asked.
    pub fn take_changed(&self) -> bool {
        self.0.changed.swap(false, Ordering::AcqRel)
    }
}

/// Whose call it is: the unit an upstream keeps live resources for (a stdio process, an
/// upstream session), released by [`Upstream::close`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A session-era session, by its id.
    Session(String),
    /// Stateless-era traffic of one correlation key (the client's principal, or the key a
    /// gateway issued it), or of one call that needs no client state.
    Affinity(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Session(id) => write!(f, "session {id}"),
            Scope::Affinity(key) => write!(f, "affinity {key}"),
        }
    }
}

/// One client request handed to an upstream.
pub struct Call {
    pub method: String,
    /// The request's JSON-RPC id, for what must name the request (a listen stream's
    /// subscription id). A number beyond f64 precision is approximated here; the answer to the
    /// client echoes its exact text all the same (`mcp::RequestId`).
    pub request_id: Value,
    /// The request's `params`, `_meta` included, exactly as the client sent them.
    pub params: Value,
    /// The client, for messages related to this request (they go on its response stream).
    pub peer: Arc<dyn Peer>,
    /// The client, for messages related to no request (list changes, unrelated server
    /// requests): the session's standalone stream. A no-op in the stateless era.
    pub session_peer: Arc<dyn Peer>,
    pub scope: Scope,
    /// Who the call is for (a session's owner; the gateway's word for a stateless call):
    /// what per-principal budgets count against.
    pub principal: String,
    /// Session era: the client's `initialize` params, to initialize (or re-initialize) an
    /// upstream on its behalf. `None` in the stateless era, where each request carries `_meta`.
    pub initialize: Option<RawJson>,
    pub state: UpstreamState,
    /// Cancelled when the client cancels the request or the session ends.
    pub cancel: CancellationToken,
    /// The protocol revision this call is served under.
    pub protocol_version: String,
    /// What the client said it can do (from `initialize`, or from the request's `_meta`).
    pub client_capabilities: Value,
    /// The request's `Mcp-Param-*` headers (stateless era), name and value as sent: they
    /// mirror arguments for the upstream's own use, so they pass to it unchanged. No other
    /// client header ever reaches an upstream.
    pub param_headers: Vec<(String, String)>,
    /// Whether the request is stored as accepted. What leaves the node for an upstream waits
    /// for it, so that a request the store never took has done nothing outside the node.
    pub accepted: Accepted,
}

/// Resolves once a request is stored as accepted (a new owner of its session would know of
/// it), or fails with why it could not be. The node answers a request it can at once (a
/// builtin tool, a list it holds) while the store takes the acceptance, so that the acceptance
/// and the answer go in one write; a call to an upstream waits for it first.
#[derive(Clone)]
pub struct Accepted(Option<Shared<BoxFuture<'static, Result<(), StoreError>>>>);

impl Accepted {
    /// Accepted already: nothing is stored for the request.
    pub fn now() -> Accepted {
        Accepted(None)
    }

    /// Accepted once `stored` resolves.
    pub fn after(
        stored: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Accepted {
        let stored: BoxFuture<'static, Result<(), StoreError>> = Box::pin(stored);
        Accepted(Some(stored.shared()))
    }

    pub async fn wait(&self) -> Result<(), StoreError> {
        match &self.0 {
            Some(stored) => stored.clone().await,
            None => Ok(()),
        }
    }
}

impl Call {
    /// The `_meta.progressToken` of the request, if the client asked for progress.
    pub fn progress_token(&self) -> Option<&Value> {
        self.params.get("_meta")?.get("progressToken")
    }
}

pub trait Upstream: Send + Sync {
    /// Serves one client request.
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>>;

    /// Takes a client notification (`notifications/initialized`, `…/roots/list_changed`, …).
    fn notification(&self, method: &str, params: &Value, scope: &Scope, state: &UpstreamState);

    /// The scope has ended (session deleted or idle, affinity state forgotten, node draining):
    /// release what is held for it.
    fn close(&self, scope: &Scope);

    /// Whether a stateless-era client's calls depend on what earlier calls of the same client
    /// left behind here: a stdio process, an upstream session, per-scope [`UpstreamState`]
    /// (the builtin's `counter`). Such a client must be routed by its correlation key, and two
    /// clients must never share a scope. An upstream that does not say is assumed to keep
    /// state: the safe answer.
    fn keeps_client_state(&self) -> bool {
        true
    }

    /// Where one stateless-era call (`method`, and the name `Mcp-Name` mirrors, if it has one)
    /// must run; see [`Placement`]. By default every call of an upstream that keeps client
    /// state goes with its client, and every call of one that does not goes anywhere.
    fn placement(&self, _method: &str, _name: Option<&str>) -> Placement {
        if self.keeps_client_state() {
            Placement::Client
        } else {
            Placement::Anywhere
        }
    }
}
