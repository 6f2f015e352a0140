//! [`Builtin`]: shardgate's own in-process MCP server, serving both eras of the protocol.
//!
//! It carries every fixture the MCP conformance suite asks a server for (tools, resources,
//! prompts, completions, the stateless era's diagnostic hooks and input-required flows), plus a
//! few tools of our own for exercising the gateway (`echo`, `add`, `counter`, `slow`, `fail`).
//!
//! Nothing per session lives here: the counter, the log level and resource subscriptions are
//! kept in the call's [`UpstreamState`], so that a session can move to another node. What is
//! shared is process-wide by nature: the key that seals `requestState` and the feed of change
//! notifications.

mod asks;
mod catalogue;
mod completion;
mod fixtures;
mod listen;
mod mrtr;
mod prompts;
mod resources;
mod tools;

#[cfg(test)]
mod tests;

use super::{BoxFuture, Call, Scope, Upstream, UpstreamState};
use serde_json::{Map, Value, json};
use shardgate_protocol::internal::Placement;
use shardgate_protocol::mcp::{self, Era, RpcError, code};
use std::sync::Arc;
use std::time::Duration;

const SERVER_NAME: &str = "shardgate-builtin";
const INSTRUCTIONS: &str = "shardgate's built-in test server: the MCP conformance fixtures, \
     plus echo, add, counter (per session), slow (progress, cancellable) and fail.";

/// Lists and `server/discover` only change when a trigger tool announces it.
const LIST_TTL_MS: u64 = 300_000;
/// Resource contents are fixed, but per-client in principle.
const READ_TTL_MS: u64 = 60_000;

/// Where a session's `logging/setLevel` is kept in its state.
const LOG_LEVEL: &str = "logLevel";

/// Our MCP server; see the module documentation.
pub struct Builtin {
    shared: Arc<Shared>,
}

struct Shared {
    sealer: mrtr::Sealer,
    changes: listen::Changes,
}

impl Builtin {
    /// `state_secret` keys the HMAC of stateless-era `requestState`; every node of a cluster
    /// must use the same one, as a retry may land on any of them.
    pub fn new(state_secret: [u8; 32]) -> Self {
        Builtin {
            shared: Arc::new(Shared {
                sealer: mrtr::Sealer::new(&state_secret),
                changes: listen::Changes::new(),
            }),
        }
    }
}

impl Upstream for Builtin {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.serve(&call).await })
    }

    fn notification(&self, _method: &str, _params: &Value, _scope: &Scope, _state: &UpstreamState) {
        // Nothing a client tells us changes what we serve.
    }

    fn close(&self, _scope: &Scope) {
        // Everything per scope lives in its UpstreamState, which goes with the scope.
    }

    /// Only `counter` reads its client's state. The change feed is this process's, so a
    /// trigger reaches only the listen streams open on the same node: both must run where
    /// everyone's do. Everything else is the same on every node.
    fn placement(&self, method: &str, name: Option<&str>) -> Placement {
        match (method, name) {
            ("subscriptions/listen", _) => Placement::Shared,
            ("tools/call", Some("counter")) => Placement::Client,
            ("tools/call", Some(tool)) if tool.starts_with("test_trigger_") => Placement::Shared,
            _ => Placement::Anywhere,
        }
    }
}

impl Shared {
    async fn serve(&self, call: &Call) -> Result<Value, RpcError> {
        // `initialize` is session era whatever revision it asks for.
        if call.method == "initialize" {
            return Ok(initialize(&call.params));
        }
        let era = if mcp::is_stateless_version(&call.protocol_version) {
            Era::Stateless
        } else {
            Era::Session
        };
        let result = match (era, call.method.as_str()) {
            (Era::Session, "ping") => json!({}),
            (Era::Session, "logging/setLevel") => set_level(call)?,
            (Era::Session, "resources/subscribe") => resources::subscribe(call, true)?,
            (Era::Session, "resources/unsubscribe") => resources::subscribe(call, false)?,
            (Era::Stateless, "server/discover") => discover(),
            (Era::Stateless, "subscriptions/listen") => self.changes.listen(call).await?,
            (_, "tools/list") => catalogue::list(),
            (_, "tools/call") => tools::call(self, call, era).await?,
            (_, "prompts/list") => prompts::list(),
            (_, "prompts/get") => prompts::get(self, call, era).await?,
            (_, "resources/list") => resources::list(),
            (_, "resources/templates/list") => resources::templates(),
            (_, "resources/read") => resources::read(call, era)?,
            (_, "completion/complete") => completion::complete(&call.params)?,
            _ => return Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found")),
        };
        Ok(match era {
            Era::Stateless => stateless_result(&call.method, result),
            Era::Session => result,
        })
    }
}

fn server_info() -> Value {
    json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")})
}

/// The same in both eras: `logging` too, as stateless-era requests may opt in to log messages
/// and servers that send them must declare it.
fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "prompts": {"listChanged": true},
        "logging": {},
        "completions": {}
    })
}

fn initialize(params: &Value) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|v| mcp::is_session_version(v))
        .unwrap_or(mcp::LATEST_SESSION_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS
    })
}

fn discover() -> Value {
    json!({
        "supportedVersions": mcp::supported_versions(),
        "capabilities": capabilities(),
        "instructions": INSTRUCTIONS
    })
}

/// What the stateless era adds to every result: `resultType`, our identity in `_meta`, and the
/// caching hints of cacheable results (an `input_required` result is never cacheable).
fn stateless_result(method: &str, mut result: Value) -> Value {
    let Value::Object(map) = &mut result else {
        return result;
    };
    let complete = map.entry("resultType").or_insert_with(|| "complete".into()) == "complete";
    if let Value::Object(meta) = map.entry("_meta").or_insert_with(|| json!({})) {
        meta.entry(mcp::META_SERVER_INFO)
            .or_insert_with(server_info);
    }
    let hint = match method {
        "server/discover"
        | "tools/list"
        | "prompts/list"
        | "resources/list"
        | "resources/templates/list" => Some((LIST_TTL_MS, "public")),
        "resources/read" => Some((READ_TTL_MS, "private")),
        _ => None,
    };
    if let (true, Some((ttl, scope))) = (complete, hint) {
        map.entry("ttlMs").or_insert_with(|| ttl.into());
        map.entry("cacheScope").or_insert_with(|| scope.into());
    }
    result
}

fn set_level(call: &Call) -> Result<Value, RpcError> {
    let level = call
        .params
        .get("level")
        .and_then(Value::as_str)
        .filter(|l| mcp::log_level_rank(l).is_some())
        .ok_or_else(|| invalid_params("Invalid log level"))?;
    call.state
        .with(|state| state.insert(LOG_LEVEL.into(), level.into()));
    Ok(json!({}))
}

/// Sends a log message if the client wants this level: in the stateless era only when the
/// request named a level, in the session era unless `logging/setLevel` set a higher one.
fn log(call: &Call, era: Era, level: &str, data: &str) {
    let threshold = match era {
        Era::Stateless => call
            .params
            .get("_meta")
            .and_then(|m| m.get(mcp::META_LOG_LEVEL))
            .and_then(Value::as_str)
            .map(str::to_owned),
        Era::Session => Some(call.state.read(|state| {
            state
                .get(LOG_LEVEL)
                .and_then(Value::as_str)
                .unwrap_or("debug")
                .to_owned()
        })),
    };
    let wanted = threshold
        .and_then(|t| mcp::log_level_rank(&t))
        .is_some_and(|min| mcp::log_level_rank(level).is_some_and(|l| l >= min));
    if wanted {
        call.peer.notify(
            "notifications/message",
            json!({"level": level, "logger": SERVER_NAME, "data": data}),
        );
    }
}

/// Reports progress if the request asked for it, echoing its token as sent.
fn progress(call: &Call, progress: u64, total: Option<u64>, message: &str) {
    let Some(token) = call.progress_token() else {
        return;
    };
    let mut params = Map::new();
    params.insert("progressToken".into(), token.clone());
    params.insert("progress".into(), progress.into());
    if let Some(total) = total {
        params.insert("total".into(), total.into());
    }
    params.insert("message".into(), message.into());
    call.peer
        .notify("notifications/progress", Value::Object(params));
}

/// Waits, unless the call is cancelled first.
async fn sleep(call: &Call, duration: Duration) -> Result<(), RpcError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = call.cancel.cancelled() => Err(RpcError::new(code::INTERNAL_ERROR, "cancelled")),
    }
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, message)
}

/// A tool result of one text item.
fn text(s: &str) -> Value {
    json!({"content": [{"type": "text", "text": s}]})
}

/// A tool result reporting that the tool failed (a result, not a JSON-RPC error, so the model
/// sees why).
fn tool_error(s: &str) -> Value {
    json!({"isError": true, "content": [{"type": "text", "text": s}]})
}
