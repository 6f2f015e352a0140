//! [`Connector`]: a real MCP server as an upstream, reached over stdio ([`stdio`]: a process
//! per scope) or Streamable HTTP ([`http`]: an upstream session per scope).
//!
//! The connector is an MCP client of its own towards the upstream: requests go out under our
//! ids (clients of one scope may reuse ids; so may the clients of one affinity key), progress
//! tokens are swapped for ours and restored on the way back, and what the upstream says during a
//! call reaches that call's client — progress, log messages, and its requests for sampling,
//! elicitation or roots, whose answers are sent back under the upstream's own id. Everything
//! else in a message passes unchanged: unknown methods, fields and `_meta`.
//!
//! Where the client's era and the upstream's differ, [`bridge`] rewrites between them: the
//! connector then initializes a session-era upstream for stateless-era clients, or drives a
//! stateless-era upstream's `input_required` rounds by asking a session-era client.
//!
//! What outlives a process or a node is kept in the scope's [`UpstreamState`] (the upstream's
//! `InitializeResult`, its session id, a bridged log level), so that a respawned process or
//! another node can continue: a stdio process is re-initialized with the stored `initialize`
//! params, an HTTP upstream session is reused.

mod bridge;
mod http;
mod sse;
mod stdio;

use super::{BoxFuture, Call, Peer, Scope, Upstream, UpstreamState};
use crate::config::{HttpConfig, StdioConfig};
use crate::protocol::{self, RpcError, code};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// The upstream's `InitializeResult` (session-era upstreams), in the scope's state.
const STATE_INITIALIZE_RESULT: &str = "initializeResult";
/// A session-era client's `logging/setLevel`, kept for a stateless-era upstream.
const STATE_LOG_LEVEL: &str = "logLevel";
/// `input_required` rounds a bridged request may take before we give up on it.
const MAX_INPUT_ROUNDS: usize = 8;

/// Our ids for requests to upstreams: unique within the node, so that no two calls of any
/// scope share one.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A stdio or HTTP MCP server as an upstream; see the module documentation.
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    transport: Transport,
}

enum Transport {
    Stdio(stdio::Stdio),
    Http(http::Http),
}

impl Connector {
    /// A command spawned per scope; `processes` is the node's budget of stdio processes.
    pub fn stdio(name: &str, config: &StdioConfig, processes: Arc<Semaphore>) -> Self {
        Connector::with(
            name,
            Transport::Stdio(stdio::Stdio::new(name, config.clone(), processes)),
        )
    }

    /// A remote Streamable HTTP server; fails on a URL or header the client cannot use.
    pub fn http(name: &str, config: &HttpConfig) -> Result<Self, String> {
        Ok(Connector::with(
            name,
            Transport::Http(http::Http::new(name, config)?),
        ))
    }

    fn with(name: &str, transport: Transport) -> Self {
        Connector {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                transport,
            }),
        }
    }
}

impl Upstream for Connector {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let cancel = call.cancel.clone();
            tokio::select! {
                r = inner.serve(call) => r,
                _ = cancel.cancelled() => Err(RpcError::new(code::INTERNAL_ERROR, "cancelled")),
            }
        })
    }

    fn notification(&self, method: &str, params: &Value, scope: &Scope, state: &UpstreamState) {
        // We send our own `initialized` after our `initialize`, and our own `cancelled` (under
        // our id) when a call's token is cancelled.
        if matches!(
            method,
            "notifications/initialized" | "notifications/cancelled"
        ) {
            return;
        }
        match &self.inner.transport {
            Transport::Stdio(s) => s.notify(scope, method, params.clone()),
            Transport::Http(h) => h.notify(state, method, params.clone()),
        }
    }

    fn close(&self, scope: &Scope) {
        match &self.inner.transport {
            Transport::Stdio(s) => s.close(scope),
            Transport::Http(h) => h.close(scope),
        }
    }
}

/// One call, as the transports see it.
pub(super) struct Exchange<'a> {
    pub scope: &'a Scope,
    pub state: &'a UpstreamState,
    /// The `initialize` params to (re)initialize a session-era upstream with.
    pub initialize: &'a Value,
    pub peer: &'a Arc<dyn Peer>,
    pub session_peer: &'a Arc<dyn Peer>,
    /// Whether the client can be asked while the call runs (session era).
    pub askable: bool,
}

impl Exchange<'_> {
    /// The JSON-RPC request for the upstream under a fresh id of ours, and where what the
    /// upstream says while answering it goes.
    fn outgoing(&self, method: &str, mut params: Value) -> (u64, Value, Arc<Caller>) {
        let id = next_id();
        let mut progress = None;
        if let Some(token) = params
            .get_mut("_meta")
            .and_then(|m| m.get_mut("progressToken"))
        {
            let ours = Value::String(format!("shardgate-{id}"));
            progress = Some((ours.clone(), std::mem::replace(token, ours)));
        }
        let caller = Arc::new(Caller {
            peer: self.peer.clone(),
            progress,
            askable: self.askable,
        });
        (id, request(id, method, params), caller)
    }

    /// Where messages related to no call go (stdio upstreams cannot say which call they mean).
    fn standalone(&self) -> Arc<Caller> {
        Arc::new(Caller {
            peer: self.session_peer.clone(),
            progress: None,
            askable: self.askable,
        })
    }

    fn initialize_result(&self) -> Option<Value> {
        self.state.with(|s| s.get(STATE_INITIALIZE_RESULT).cloned())
    }

    fn keep_initialize_result(&self, result: &Value) {
        self.state.with(|s| {
            s.insert(STATE_INITIALIZE_RESULT.into(), result.clone());
        });
    }
}

/// Where what the upstream says during one call goes.
pub(super) struct Caller {
    peer: Arc<dyn Peer>,
    /// The progress token the upstream was given, and the client's it stands for.
    progress: Option<(Value, Value)>,
    askable: bool,
}

impl Caller {
    /// Whether `params` (of a notification) are about this call's progress.
    fn owns_progress(&self, params: &Value) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|(ours, _)| params.get("progressToken") == Some(ours))
    }

    fn notify(&self, method: &str, mut params: Value) {
        if let Some((ours, theirs)) = &self.progress
            && params.get("progressToken") == Some(ours)
        {
            params["progressToken"] = theirs.clone();
        }
        self.peer.notify(method, params);
    }

    /// The client's answer to an upstream request, as the JSON-RPC response to send back.
    async fn answer(&self, id: &Value, method: &str, params: Value) -> Value {
        let outcome = if self.askable {
            self.peer.request(method, params).await
        } else {
            Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("{method}: the client cannot be asked during a stateless-era request"),
            ))
        };
        match outcome {
            Ok(result) => protocol::response(id, result),
            Err(e) => protocol::error_response(Some(id), &e),
        }
    }
}

/// A JSON-RPC request; `params` left out when there are none.
fn request(id: u64, method: &str, params: Value) -> Value {
    let mut msg = Map::new();
    msg.insert("jsonrpc".into(), "2.0".into());
    msg.insert("id".into(), id.into());
    msg.insert("method".into(), method.into());
    if !params.is_null() {
        msg.insert("params".into(), params);
    }
    Value::Object(msg)
}

/// A JSON-RPC notification; `params` left out when there are none.
fn notification(method: &str, params: Value) -> Value {
    let mut msg = Map::new();
    msg.insert("jsonrpc".into(), "2.0".into());
    msg.insert("method".into(), method.into());
    if !params.is_null() {
        msg.insert("params".into(), params);
    }
    Value::Object(msg)
}

/// The outcome a JSON-RPC response carries.
fn outcome(response: &Value) -> Result<Value, RpcError> {
    if let Some(result) = response.get("result") {
        return Ok(result.clone());
    }
    let error = response.get("error");
    let mut e = RpcError::new(
        error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(code::INTERNAL_ERROR),
        error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the upstream answered with neither result nor error"),
    );
    e.data = error.and_then(|e| e.get("data")).cloned();
    Err(e)
}

/// An upstream that cannot serve: named, so the client knows who failed.
fn unavailable(upstream: &str, problem: impl std::fmt::Display) -> RpcError {
    RpcError::new(code::UNAVAILABLE, format!("upstream {upstream}: {problem}"))
}

impl Inner {
    async fn serve(&self, call: Call) -> Result<Value, RpcError> {
        let client_stateless = protocol::is_stateless_version(&call.protocol_version);
        let bridged_initialize;
        let ex = Exchange {
            scope: &call.scope,
            state: &call.state,
            initialize: match &call.initialize {
                Some(params) => params,
                None => {
                    bridged_initialize = bridge::initialize_params();
                    &bridged_initialize
                }
            },
            peer: &call.peer,
            session_peer: &call.session_peer,
            askable: !client_stateless,
        };
        let method = call.method.as_str();
        match (&self.transport, client_stateless) {
            (Transport::Http(h), false) if h.stateless() => self.to_stateless(h, &ex, &call).await,
            (Transport::Http(h), true) if h.stateless() => {
                h.request(&ex, method, call.params.clone()).await
            }
            (transport, false) if method == "initialize" => match transport {
                Transport::Stdio(s) => s.initialize(&ex).await,
                Transport::Http(h) => h.initialize(&ex).await,
            },
            (transport, true) if method == "server/discover" => {
                let init = match transport {
                    Transport::Stdio(s) => s.initialized(&ex).await?,
                    Transport::Http(h) => h.initialized(&ex).await?,
                };
                Ok(bridge::with_cache_hints(
                    method,
                    bridge::discover_from(&init),
                ))
            }
            (transport, client_stateless) => {
                let mut params = call.params.clone();
                if client_stateless {
                    bridge::strip_stateless_meta(&mut params);
                }
                let result = match transport {
                    Transport::Stdio(s) => s.request(&ex, method, params).await?,
                    Transport::Http(h) => h.request(&ex, method, params).await?,
                };
                Ok(match client_stateless {
                    true => bridge::with_cache_hints(method, result),
                    false => result,
                })
            }
        }
    }

    /// A session-era client served by a stateless-era upstream.
    async fn to_stateless(
        &self,
        http: &http::Http,
        ex: &Exchange<'_>,
        call: &Call,
    ) -> Result<Value, RpcError> {
        let caps = &call.client_capabilities;
        match call.method.as_str() {
            "initialize" => {
                let params = bridge::with_stateless_meta(json!({}), caps, None);
                let discovered = http.request(ex, "server/discover", params).await?;
                let requested = call.params.get("protocolVersion").and_then(Value::as_str);
                Ok(bridge::initialize_from(&discovered, requested, &self.name))
            }
            // Liveness of the bridge itself: the stateless era has no ping.
            "ping" => Ok(json!({})),
            // The stateless era asks for log messages per request; keep the level for those.
            "logging/setLevel" => {
                let level = call.params.get("level").cloned().unwrap_or(Value::Null);
                if !level.is_string() {
                    return Err(RpcError::new(
                        code::INVALID_PARAMS,
                        "logging/setLevel needs params.level",
                    ));
                }
                call.state.with(|s| s.insert(STATE_LOG_LEVEL.into(), level));
                Ok(json!({}))
            }
            method => {
                let level = call.state.with(|s| {
                    s.get(STATE_LOG_LEVEL)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let mut params =
                    bridge::with_stateless_meta(call.params.clone(), caps, level.as_deref());
                for _ in 0..MAX_INPUT_ROUNDS {
                    let result = http.request(ex, method, params.clone()).await?;
                    let Some(asked) = bridge::input_requests(&result) else {
                        return Ok(bridge::session_result(result));
                    };
                    let mut answers = Map::new();
                    for (key, input) in asked {
                        let method =
                            input.get("method").and_then(Value::as_str).ok_or_else(|| {
                                unavailable(&self.name, "an input request without a method")
                            })?;
                        let params = input.get("params").cloned().unwrap_or_else(|| json!({}));
                        answers.insert(key.clone(), call.peer.request(method, params).await?);
                    }
                    params = bridge::retry_params(&params, answers, &result);
                }
                Err(unavailable(
                    &self.name,
                    format!("still asking for input after {MAX_INPUT_ROUNDS} rounds"),
                ))
            }
        }
    }
}
