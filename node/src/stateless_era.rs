//! The stateless era (2026-07-28) on a node: every POST is a self-contained request.
//!
//! The answer is one JSON body when the call finishes without saying anything on the way, and
//! an SSE stream as soon as it sends a notification (progress, a log message, a subscription
//! acknowledgement) — so a plain error still gets its own HTTP status. Closing the response
//! cancels the call: the call's token is cancelled when the answer (body or stream) is dropped.
//! Upstream state is kept per affinity key, the key the gateway routed by.

use crate::session::NoPeer;
use crate::session::encode;
use crate::sse;
use crate::state::NodeState;
use crate::upstream::{BoxFuture, Call, Peer, Scope, UpstreamState};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use shardgate_protocol::internal;
use shardgate_protocol::mcp::{self, Message, RequestId, RpcError, code};
use shardgate_protocol::reply;
use shardgate_protocol::stateless_checks;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages a call may send ahead of its result before the client counts as not reading.
const NOTE_BUFFER: usize = 256;

/// Upstream state per affinity key: the stateless era's counterpart of a session's state,
/// forgotten after the key has been idle for a while.
#[derive(Default)]
pub struct Affinity {
    states: Mutex<HashMap<String, (UpstreamState, Instant)>>,
}

impl Affinity {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (UpstreamState, Instant)>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self, key: &str) -> UpstreamState {
        let mut states = self.lock();
        let entry = states
            .entry(key.to_owned())
            .or_insert_with(|| (UpstreamState::default(), Instant::now()));
        entry.1 = Instant::now();
        entry.0.clone()
    }

    /// Forgets the state of keys unused for `timeout`; returns those keys.
    pub fn reap(&self, timeout: Duration) -> Vec<String> {
        let mut states = self.lock();
        let idle: Vec<String> = states
            .iter()
            .filter(|(_, (_, used))| used.elapsed() >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            states.remove(k);
        }
        idle
    }
}

/// The client of a stateless call: notifications go on the response stream; requests to the
/// client do not exist in this era (upstreams return `input_required` results instead).
struct ResponsePeer {
    tx: mpsc::Sender<Bytes>,
}

impl Peer for ResponsePeer {
    fn notify(&self, method: &str, params: Value) {
        // A client that stopped reading loses notifications, never the result.
        let _ = self.tx.try_send(encode(&mcp::notification(method, params)));
    }

    fn request(&self, method: &str, _params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        let err = RpcError::new(
            code::INTERNAL_ERROR,
            format!(
                "{method}: stateless-era servers ask the client through input_required results"
            ),
        );
        Box::pin(async move { Err(err) })
    }

    fn disconnect(&self) {}
}

/// The HTTP status that goes with an error result in this era.
fn status_of(err: &RpcError) -> StatusCode {
    match err.code {
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        code::MISSING_CAPABILITY | code::HEADER_MISMATCH | code::UNSUPPORTED_VERSION => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::OK,
    }
}

/// Every stateless-era result names its type; one from an upstream that predates the era is
/// complete by definition.
fn complete(mut result: Value) -> Value {
    if let Value::Object(map) = &mut result {
        map.entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
    } else {
        let mut map = Map::new();
        map.insert("resultType".into(), "complete".into());
        result = Value::Object(map);
    }
    result
}

/// The request's `Mcp-Param-*` headers, for the upstream.
fn param_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(mcp::HEADER_PARAM_PREFIX))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect()
}

fn answer(id: &RequestId, outcome: Result<Value, RpcError>) -> String {
    mcp::answer(Some(id), outcome.map(complete).as_ref())
}

pub async fn post(node: &Arc<NodeState>, headers: &HeaderMap, body: mcp::Body) -> Response {
    let Ok([(message, value)]) = <[_; 1]>::try_from(body.messages) else {
        return reply::refuse(
            StatusCode::BAD_REQUEST,
            "JSON-RPC batches are not part of the 2026-07-28 revision",
        );
    };
    let id = match message {
        Message::Notification { .. } => return reply::accepted(),
        Message::Response { .. } => {
            return reply::refuse(
                StatusCode::BAD_REQUEST,
                "clients do not send JSON-RPC responses in the 2026-07-28 revision",
            );
        }
        Message::Request { id, .. } => id,
    };
    let checked = match stateless_checks::check(headers, &value) {
        Ok(c) => c,
        Err(r) => return reply::rpc_error(r.status, Some(&id), &r.error),
    };
    let key = headers
        .get(internal::ROUTE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("direct");
    let (tx, mut rx) = mpsc::channel(NOTE_BUFFER);
    let cancel = CancellationToken::new();
    let call = Call {
        method: checked.method,
        request_id: (*id).clone(),
        params: value.get("params").cloned().unwrap_or(Value::Null),
        peer: Arc::new(ResponsePeer { tx: tx.clone() }),
        session_peer: Arc::new(NoPeer),
        scope: Scope::Affinity(key.to_owned()),
        initialize: None,
        state: node.affinity.state(key),
        cancel: cancel.clone(),
        protocol_version: checked.version,
        client_capabilities: checked.client_capabilities,
        param_headers: param_headers(headers),
    };
    let serving = node.clone();
    let token = cancel.clone();
    let mut task = tokio::spawn(async move {
        let _counted = serving.call_started();
        tokio::select! {
            r = serving.upstream.call(call) => Some(r),
            _ = token.cancelled() => None,
        }
    });
    // Dropped with this handler (client gone before an answer) or with the SSE body.
    let on_close = cancel.drop_guard();
    tokio::select! {
        done = &mut task => match done {
            Ok(Some(outcome)) => {
                let status = outcome.as_ref().err().map_or(StatusCode::OK, status_of);
                reply::json_text(status, answer(&id, outcome))
            }
            _ => reply::refuse(StatusCode::INTERNAL_SERVER_ERROR, "the call was abandoned"),
        },
        Some(first) = rx.recv() => {
            tokio::spawn(async move {
                if let Ok(Some(outcome)) = task.await {
                    let _ = tx.send(answer(&id, outcome).into()).await;
                }
            });
            sse::response(Some(sse::Frame::frame(&first)), rx, on_close)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_gain_a_result_type_unless_they_have_one() {
        assert_eq!(complete(json!({"tools": []}))["resultType"], "complete");
        let irr = json!({"resultType": "input_required", "requestState": "s"});
        assert_eq!(complete(irr)["resultType"], "input_required");
    }

    #[test]
    fn error_statuses_follow_the_revision() {
        assert_eq!(
            status_of(&RpcError::new(code::METHOD_NOT_FOUND, "x")),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&RpcError::new(code::MISSING_CAPABILITY, "x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&RpcError::new(code::INVALID_PARAMS, "x")),
            StatusCode::OK
        );
    }
}
