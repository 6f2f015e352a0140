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
mod listen;
mod park;
mod sse;
mod stdio;

use super::{BoxFuture, Call, Peer, Scope, Upstream, UpstreamState};
use crate::budget::Budgets;
use crate::config::{HttpConfig, StdioConfig};
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{self, RpcError, code};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The upstream's `InitializeResult` (session-era upstreams), in the scope's state.
const STATE_INITIALIZE_RESULT: &str = "initializeResult";
/// A session-era client's `logging/setLevel`, kept for a stateless-era upstream.
const STATE_LOG_LEVEL: &str = "logLevel";
/// `input_required` rounds a bridged request may take before we give up on it.
const MAX_INPUT_ROUNDS: usize = 8;

/// Our ids for requests to upstreams: unique within the node, so that no two calls of any
/// scope share one, and counted from a random start, so that a node that takes over a session
/// (and its upstream session) does not reuse the ids the old owner had in flight there. Below
/// 2^53, so that every JSON reader holds them exactly.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static FIRST_ID: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    let mut bytes = [0u8; 4];
    // Without randomness ids still count from 1: unique on this node, as before.
    let _ = getrandom::fill(&mut bytes);
    (u64::from(u32::from_le_bytes(bytes)) << 20) + 1
});

fn next_id() -> u64 {
    *FIRST_ID + NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A stdio or HTTP MCP server as an upstream; see the module documentation.
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    transport: Transport,
    /// Stateless-era calls waiting for the client's answers.
    parking: park::Parking,
    /// The upstream's announcements, by scope, for stateless-era listen streams.
    feeds: std::sync::Mutex<std::collections::HashMap<Scope, listen::Feed>>,
}

enum Transport {
    Stdio(stdio::Stdio),
    Http(http::Http),
}

impl Connector {
    /// A command spawned per scope, within the node's budgets of stdio processes.
    pub fn stdio(name: &str, config: &StdioConfig, budgets: Arc<Budgets>) -> Self {
        let stdio = stdio::Stdio::new(name, config.clone(), &budgets);
        Connector::with(name, Transport::Stdio(stdio), &budgets)
    }

    /// A remote Streamable HTTP server; fails on a URL or header the client cannot use.
    pub fn http(name: &str, config: &HttpConfig, budgets: Arc<Budgets>) -> Result<Self, String> {
        let http = http::Http::new(name, config, budgets.limits.upstream_message_bytes)?;
        Ok(Connector::with(name, Transport::Http(http), &budgets))
    }

    fn with(name: &str, transport: Transport, budgets: &Budgets) -> Self {
        Connector {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                transport,
                parking: park::Parking::new(budgets.parked.clone()),
                feeds: Default::default(),
            }),
        }
    }
}

impl Upstream for Connector {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let cancel = call.cancel.clone();
            let accepted = call.accepted.clone();
            let served = async move {
                // Nothing reaches the upstream before the request is stored as accepted.
                if let Err(e) = accepted.wait().await {
                    return Err(RpcError::new(
                        code::INTERNAL_ERROR,
                        format!("the request was not stored, so not sent on: {e}"),
                    ));
                }
                inner.serve(call).await
            };
            tokio::select! {
                r = served => r,
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
        self.inner
            .feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(scope);
        match &self.inner.transport {
            Transport::Stdio(s) => s.close(scope),
            Transport::Http(h) => h.close(scope),
        }
    }

    /// A stdio process and a session-era upstream session belong to one scope; a
    /// stateless-era HTTP upstream serves every request on its own.
    fn keeps_client_state(&self) -> bool {
        match &self.inner.transport {
            Transport::Stdio(_) => true,
            Transport::Http(h) => !h.stateless(),
        }
    }
}

/// One call, as the transports see it.
#[derive(Clone)]
struct Exchange {
    pub scope: Scope,
    /// Whose call it is, for per-principal budgets.
    pub principal: String,
    pub state: UpstreamState,
    /// The `initialize` params to (re)initialize a session-era upstream with.
    pub initialize: Value,
    pub peer: Arc<dyn Peer>,
    pub session_peer: Arc<dyn Peer>,
    /// A session-era client: it has a standalone stream, and can be asked mid-call.
    pub session_era: bool,
    /// How the upstream's questions reach the client.
    pub asks: Asks,
    /// Which log messages the client wants.
    pub logs: Logs,
    /// Stateless-era clients of a session-era upstream: where change announcements go.
    pub feed: Option<listen::Feed>,
    /// The client's `Mcp-Param-*` headers, for a stateless-era upstream.
    pub param_headers: Vec<(String, String)>,
    /// The client's id for its request: what a listen stream's subscription id must be.
    pub request_id: Value,
}

/// How an upstream's requests to the client (sampling, elicitation, roots) are answered.
#[derive(Clone)]
enum Asks {
    /// Asked over the client's session.
    Client,
    /// Parked until a stateless-era client answers an `input_required` result ([`park`]).
    Park(mpsc::UnboundedSender<park::Ask>),
    /// Not at all: nobody can answer.
    Refuse,
}

/// Which `notifications/message` reach the client.
#[derive(Clone, Copy)]
enum Logs {
    All,
    /// At or above this severity (a stateless-era request's `logLevel`).
    From(usize),
    /// None: a stateless-era request that named no log level.
    Off,
}

impl Logs {
    /// What a stateless-era request asked for in its `_meta`.
    fn requested(params: &Value) -> Logs {
        params
            .get("_meta")
            .and_then(|m| m.get(mcp::META_LOG_LEVEL))
            .and_then(Value::as_str)
            .and_then(mcp::log_level_rank)
            .map_or(Logs::Off, Logs::From)
    }

    fn allow(self, params: &Value) -> bool {
        match self {
            Logs::All => true,
            Logs::Off => false,
            // A message without a known level is shown rather than lost.
            Logs::From(floor) => params
                .get("level")
                .and_then(Value::as_str)
                .and_then(mcp::log_level_rank)
                .is_none_or(|rank| rank >= floor),
        }
    }
}

impl Exchange {
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
        // A stateless-era upstream tags its listen stream with our id for the request.
        let subscription =
            (method == "subscriptions/listen").then(|| (Value::from(id), self.request_id.clone()));
        let caller = Arc::new(Caller {
            peer: self.peer.clone(),
            progress,
            subscription,
            asks: self.asks.clone(),
            logs: self.logs,
            feed: self.feed.clone(),
        });
        (id, request(id, method, params), caller)
    }

    /// Where messages related to no call go (stdio upstreams cannot say which call they mean).
    fn standalone(&self) -> Arc<Caller> {
        Arc::new(Caller {
            peer: self.session_peer.clone(),
            progress: None,
            subscription: None,
            asks: match self.session_era {
                true => Asks::Client,
                false => Asks::Refuse,
            },
            logs: Logs::All,
            feed: self.feed.clone(),
        })
    }

    fn initialize_result(&self) -> Option<Value> {
        self.state.read(|s| s.get(STATE_INITIALIZE_RESULT).cloned())
    }

    fn keep_initialize_result(&self, result: &Value) {
        self.state.with(|s| {
            s.insert(STATE_INITIALIZE_RESULT.into(), result.clone());
        });
    }
}

/// Where what the upstream says during one call goes.
struct Caller {
    peer: Arc<dyn Peer>,
    /// The progress token the upstream was given, and the client's it stands for.
    progress: Option<(Value, Value)>,
    /// A listen stream's subscription id as the upstream knows it (our request id), and the
    /// client's (its request id).
    subscription: Option<(Value, Value)>,
    asks: Asks,
    logs: Logs,
    feed: Option<listen::Feed>,
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
        if let Some((ours, theirs)) = &self.subscription
            && listen::subscription_of(&params) == Some(ours)
        {
            params = listen::tagged(params, theirs);
        }
        if method == "notifications/message" && !self.logs.allow(&params) {
            return;
        }
        if let Some(feed) = &self.feed
            && listen::is_change(method)
        {
            // Nobody listening is not a failure: the change is news to no one.
            let _ = feed.send((method.to_owned(), params));
            return;
        }
        self.peer.notify(method, params);
    }

    fn disconnect(&self) {
        self.peer.disconnect();
    }

    /// The client's answer to an upstream request, as the JSON-RPC response to send back.
    async fn answer(&self, id: &Value, method: &str, params: Value) -> Value {
        let outcome = match &self.asks {
            Asks::Client => self.peer.request(method, params).await,
            Asks::Park(questions) => {
                let (reply, answered) = oneshot::channel();
                let ask = park::Ask {
                    method: method.to_owned(),
                    params,
                    reply,
                };
                let gone = || RpcError::new(code::INTERNAL_ERROR, "the client went away");
                match questions.send(ask) {
                    Ok(()) => answered.await.unwrap_or_else(|_| Err(gone())),
                    Err(_) => Err(gone()),
                }
            }
            Asks::Refuse => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("{method}: there is no client to ask"),
            )),
        };
        match outcome {
            Ok(result) => mcp::response(id, result),
            Err(e) => mcp::error_response(Some(id), &e),
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

/// Tells the upstream that our request `id` is no longer wanted.
fn cancelled(id: u64) -> Value {
    notification(
        "notifications/cancelled",
        json!({"requestId": id, "reason": "the client's request ended"}),
    )
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
    async fn serve(self: &Arc<Self>, mut call: Call) -> Result<Value, RpcError> {
        let client_stateless = mcp::is_stateless_version(&call.protocol_version);
        let upstream_stateless = matches!(&self.transport, Transport::Http(h) if h.stateless());
        // Moved, not copied: the call is served from here on.
        let params = std::mem::take(&mut call.params);
        let ex = Exchange {
            scope: call.scope.clone(),
            principal: call.principal.clone(),
            state: call.state.clone(),
            initialize: call
                .initialize
                .take()
                .map_or_else(bridge::initialize_params, |raw| raw.value()),
            peer: call.peer.clone(),
            session_peer: call.session_peer.clone(),
            session_era: !client_stateless,
            asks: match client_stateless {
                true => Asks::Refuse,
                false => Asks::Client,
            },
            logs: match client_stateless {
                true => Logs::requested(&params),
                false => Logs::All,
            },
            feed: (client_stateless && !upstream_stateless).then(|| self.feed(&call.scope)),
            param_headers: std::mem::take(&mut call.param_headers),
            request_id: call.request_id.clone(),
        };
        let method = call.method.as_str();
        match (client_stateless, upstream_stateless) {
            (false, true) => self.to_stateless(&ex, &call, params).await,
            (true, true) if method == "subscriptions/listen" => {
                let ended = self.request(&ex, method, params).await?;
                Ok(listen::retagged_result(ended, &call.request_id))
            }
            (true, true) => self.request(&ex, method, params).await,
            (false, false) if method == "initialize" => match &self.transport {
                Transport::Stdio(s) => s.initialize(&ex).await,
                Transport::Http(h) => h.initialize(&ex).await,
            },
            (false, false) => self.request(&ex, method, params).await,
            (true, false) if method == "subscriptions/listen" => {
                self.listen(&ex, &call, &params, &self.feed(&call.scope))
                    .await
            }
            (true, false) if method == "server/discover" => {
                let init = self.initialized(&ex).await?;
                Ok(bridge::with_cache_hints(
                    method,
                    bridge::discover_from(&init),
                ))
            }
            (true, false) => {
                let result = self
                    .from_stateless(ex, &call, params)
                    .await
                    .map_err(bridge::stateless_error)?;
                Ok(bridge::with_cache_hints(method, result))
            }
        }
    }

    /// The upstream's `InitializeResult`, initializing it for the scope if need be.
    async fn initialized(&self, ex: &Exchange) -> Result<Value, RpcError> {
        match &self.transport {
            Transport::Stdio(s) => s.initialized(ex).await,
            Transport::Http(h) => h.initialized(ex).await,
        }
    }

    fn feed(&self, scope: &Scope) -> listen::Feed {
        self.feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(scope.clone())
            .or_insert_with(listen::feed)
            .clone()
    }

    async fn request(&self, ex: &Exchange, method: &str, params: Value) -> Result<Value, RpcError> {
        match &self.transport {
            Transport::Stdio(s) => s.request(ex, method, params).await,
            Transport::Http(h) => h.request(ex, method, params).await,
        }
    }

    /// A stateless-era client served by a session-era upstream. The upstream call runs as a
    /// task of its own, so that when it asks the client something it can wait, parked, for
    /// the client's retry ([`park`]).
    async fn from_stateless(
        self: &Arc<Self>,
        mut ex: Exchange,
        call: &Call,
        mut params: Value,
    ) -> Result<Value, RpcError> {
        let running = match params.get("requestState") {
            // A session-era upstream gives no requestState: this one is ours.
            Some(token) => {
                let mut running = token
                    .as_str()
                    .and_then(|t| self.parking.take(t))
                    .ok_or_else(park::unknown_state)?;
                let empty = Map::new();
                let answers = params
                    .get("inputResponses")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                running.resume(call.peer.clone(), answers);
                running
            }
            None => {
                bridge::strip_stateless_meta(&mut params);
                let (questions, asked) = mpsc::unbounded_channel();
                let relay = Arc::new(park::Relay::new(call.peer.clone()));
                ex.peer = relay.clone();
                ex.asks = Asks::Park(questions);
                let inner = self.clone();
                let method = call.method.clone();
                let task = tokio::spawn(async move { inner.request(&ex, &method, params).await });
                park::Running::new(task, asked, relay)
            }
        };
        match running.next(&self.parking, &call.client_capabilities).await {
            park::Turn::Done(outcome) => outcome,
            park::Turn::Asking(input_required) => Ok(input_required),
        }
    }

    /// A session-era client served by a stateless-era upstream.
    async fn to_stateless(
        &self,
        ex: &Exchange,
        call: &Call,
        params: Value,
    ) -> Result<Value, RpcError> {
        let caps = &call.client_capabilities;
        match call.method.as_str() {
            "initialize" => {
                let discover = bridge::with_stateless_meta(json!({}), caps, None);
                let discovered = self.request(ex, "server/discover", discover).await?;
                let requested = params.get("protocolVersion").and_then(Value::as_str);
                Ok(bridge::initialize_from(&discovered, requested, &self.name))
            }
            // Liveness of the bridge itself: the stateless era has no ping.
            "ping" => Ok(json!({})),
            // The stateless era asks for log messages per request; keep the level for those.
            "logging/setLevel" => {
                let level = params.get("level").cloned().unwrap_or(Value::Null);
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
                let level = call.state.read(|s| {
                    s.get(STATE_LOG_LEVEL)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let mut params = bridge::with_stateless_meta(params, caps, level.as_deref());
                for _ in 0..MAX_INPUT_ROUNDS {
                    let result = self.request(ex, method, params.clone()).await?;
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
