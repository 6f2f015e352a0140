//! The stateless era (2026-07-28) on a node: every POST is a self-contained request.
//!
//! The answer is one JSON body when the call finishes without saying anything on the way, and
//! an SSE stream as soon as it sends a notification (progress, a log message, a subscription
//! acknowledgement) — so a plain error still gets its own HTTP status. Closing the response
//! cancels the call: the call's token is cancelled when the answer (body or stream) is dropped.
//!
//! Upstream state is kept per correlation key, the scope the gateway names
//! ([`internal::SCOPE`]: the client's principal, or the key the gateway issued it), on the node
//! that owns that key. A call with no scope needs no client state; it runs in a scope of its
//! own, released when it ends, so nothing it leaves behind reaches another client. Every answer
//! says where such a call must run ([`internal::PLACEMENT`]), which is how gateways learn it.
//! With a store, a key's state is written through to it ([`kept`]) and continued by the key's
//! next owner.

pub mod kept;

use crate::audit::Audited;
use crate::session::NoPeer;
use crate::session::encode;
use crate::sse;
use crate::state::NodeState;
use crate::upstream::{Accepted, BoxFuture, Call, Peer, Scope, UpstreamState};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use shardgate_protocol::internal::{self, CLIENT_SCOPE, KEYED_STATE, Placement};
use shardgate_protocol::mcp::{self, Message, RequestId, RpcError, code};
use shardgate_protocol::reply;
use shardgate_protocol::stateless_checks;
use shardgate_protocol::traces;
use shardgate_store::Fence;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Messages a call may send ahead of its result before the client counts as not reading.
const NOTE_BUFFER: usize = 256;

/// How long the state of a correlation key used only once waits for its client to come back.
/// A client that never sends back the key it was issued gets a new scope per call; without
/// this, each would hold its upstream resources (a stdio process) for the whole idle timeout.
const FIRST_USE_TTL: Duration = Duration::from_secs(120);

struct Entry {
    state: UpstreamState,
    /// Its record in the store, once a call has claimed it.
    held: kept::Held,
    used: Instant,
    /// The key came back at least once after its first call.
    returned: bool,
    /// Its calls under way here, until what each left behind is stored.
    calls: Arc<AtomicUsize>,
    /// Being handed to another node: no new call is taken for it.
    leaving: bool,
}

/// Counts one call of a key as under way until dropped.
pub struct KeyCall(Arc<AtomicUsize>);

impl KeyCall {
    fn start(calls: &Arc<AtomicUsize>) -> KeyCall {
        calls.fetch_add(1, Ordering::AcqRel);
        KeyCall(calls.clone())
    }
}

impl Drop for KeyCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a call of a key runs with: the key's state, whether this call created it, the key's
/// hold on its record, and the call counted as under way.
struct KeyState {
    state: UpstreamState,
    first: bool,
    held: kept::Held,
    call: KeyCall,
}

/// Upstream state per correlation key: the stateless era's counterpart of a session's state,
/// forgotten after the key has been idle for a while.
#[derive(Default)]
pub struct Affinity {
    states: Mutex<HashMap<String, Entry>>,
    /// Stateless-era calls served since start.
    served: AtomicU64,
    /// Numbers the scopes of calls that need no client state.
    next_call: AtomicU64,
}

impl Affinity {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of `key`, and whether this call created it; `None` while the key is being
    /// handed to another node.
    pub fn state(&self, key: &str) -> Option<(UpstreamState, bool)> {
        self.held_state(key).map(|k| (k.state, k.first))
    }

    /// [`Affinity::state`], the key's hold on its record in the store, and the call counted.
    fn held_state(&self, key: &str) -> Option<KeyState> {
        let mut states = self.lock();
        let now = Instant::now();
        let first = !states.contains_key(key);
        let entry = states.entry(key.to_owned()).or_insert_with(|| Entry {
            state: UpstreamState::default(),
            held: kept::Held::default(),
            used: now,
            returned: false,
            calls: Arc::default(),
            leaving: false,
        });
        if entry.leaving {
            return None;
        }
        if !first {
            entry.used = now;
            entry.returned = true;
        }
        Some(KeyState {
            state: entry.state.clone(),
            first,
            held: entry.held.clone(),
            call: KeyCall::start(&entry.calls),
        })
    }

    /// The keys `gone` says this node no longer serves.
    pub fn keys(&self, gone: impl Fn(&str) -> bool) -> Vec<String> {
        self.lock().keys().filter(|k| gone(k)).cloned().collect()
    }

    /// Marks `key` as leaving (no new call is taken for it); its calls under way, if it is
    /// held here.
    pub fn leave(&self, key: &str) -> Option<Arc<AtomicUsize>> {
        let mut states = self.lock();
        let entry = states.get_mut(key)?;
        entry.leaving = true;
        Some(entry.calls.clone())
    }

    /// Forgets `key` if it is leaving; true when it did.
    pub fn forget_leaving(&self, key: &str) -> bool {
        let mut states = self.lock();
        let leaving = states.get(key).is_some_and(|e| e.leaving);
        if leaving {
            states.remove(key);
        }
        leaving
    }

    /// Forgets the keys `gone` says this node no longer serves; returns them.
    pub fn forget(&self, gone: impl Fn(&str) -> bool) -> Vec<String> {
        let mut states = self.lock();
        let keys: Vec<String> = states.keys().filter(|k| gone(k)).cloned().collect();
        for k in &keys {
            states.remove(k);
        }
        keys
    }

    /// Forgets `key` if no call has used it since its first for `ttl`; true when it did.
    fn forget_unreturned(&self, key: &str, ttl: Duration) -> bool {
        let mut states = self.lock();
        let unreturned = states
            .get(key)
            .is_some_and(|e| !e.returned && e.used.elapsed() >= ttl);
        if unreturned {
            states.remove(key);
        }
        unreturned
    }

    /// Forgets the state of keys unused for `timeout`; returns those keys.
    pub fn reap(&self, timeout: Duration) -> Vec<String> {
        let mut states = self.lock();
        let idle: Vec<String> = states
            .iter()
            .filter(|(_, e)| e.used.elapsed() >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            states.remove(k);
        }
        idle
    }

    /// Stateless-era calls this node has served (handed to its upstream) since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// A scope for one call that needs no client state. Gateways name scopes `client/…` or
    /// `principal/…`, so this one is never anybody's.
    fn one_call(&self) -> Scope {
        Scope::Affinity(format!(
            "call/{}",
            self.next_call.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

/// The scope a call runs in, and what becomes of it when the call ends.
enum Scoped {
    /// A correlation key's scope, kept; `first` when this call created it.
    Key { key: String, first: bool },
    /// A scope for this call alone, released when it ends.
    Call,
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
    if crate::takeover::is_unstored(err) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
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

/// The upstream's `requestState` in a result, prefixed with `key`.
fn with_key(mut result: Value, key: &str) -> Value {
    if let Some(state) = result.get_mut("requestState")
        && let Some(inner) = state.as_str()
    {
        *state = Value::String(format!("{KEYED_STATE}{key}.{inner}"));
    }
    result
}

/// The upstream's own `requestState` back in the params of a retry: if the key in it is
/// `key`, the one this call is scoped by, or whatever it is when the call has no client scope.
/// One naming another client's key is left as it is, and so unknown to the upstream.
fn without_key(params: &mut Value, key: Option<&str>) {
    let Some(state) = params.get_mut("requestState") else {
        return;
    };
    let inner = state.as_str().and_then(|s| {
        let rest = s.strip_prefix(KEYED_STATE)?;
        let (named, inner) = rest.split_once('.')?;
        key.is_none_or(|k| k == named).then_some(inner)
    });
    if let Some(inner) = inner {
        *state = Value::String(inner.to_owned());
    }
}

fn answer(id: &RequestId, outcome: Result<Value, RpcError>, key: Option<&str>) -> String {
    let outcome = outcome.map(|result| {
        complete(match key {
            Some(key) => with_key(result, key),
            None => result,
        })
    });
    mcp::answer(Some(id), outcome.as_ref())
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
    // Counted until the call's task ends, however the client goes.
    let admitted = match node.budgets.admit(None, 1) {
        Ok(a) => a,
        Err(limit) => return limit.reply(Some(&id)),
    };
    let name = stateless_checks::name_field(&checked.method)
        .and_then(|field| value.get("params")?.get(field)?.as_str());
    let placement = node.upstream.placement(&checked.method, name);
    let scope_key = headers.get(internal::SCOPE).and_then(|v| v.to_str().ok());
    let (scope, state, scoped, held, key_call) = match scope_key {
        Some(key) => {
            let Some(KeyState {
                state,
                first,
                held,
                call,
            }) = node.affinity.held_state(key)
            else {
                // Being handed over: the new owner takes the call once this node is done.
                let here = Fence::new(node.id.to_string(), node.ring().epoch());
                return crate::takeover::Missing::Moved(here).reply(node, Some(&id));
            };
            let scoped = Scoped::Key {
                key: key.to_owned(),
                first,
            };
            let scope = Scope::Affinity(key.to_owned());
            (scope, state, scoped, Some(held), Some(call))
        }
        None => (
            node.affinity.one_call(),
            UpstreamState::default(),
            Scoped::Call,
            None,
            None,
        ),
    };
    // A key's state continues from the store, on the first call of the key here.
    let kept = match (&node.durable, scope_key, &held) {
        (Some(durable), Some(key), Some(held)) => {
            match kept::hold(node, durable, key, &state, held).await {
                Ok(link) => Some((link, key.to_owned())),
                Err(e) => {
                    node.affinity.forget(|k| k == key);
                    return crate::takeover::Missing::from(e).reply(node, Some(&id));
                }
            }
        }
        _ => None,
    };
    node.affinity.served.fetch_add(1, Ordering::Relaxed);
    let client_key = scope_key
        .and_then(|k| k.strip_prefix(CLIENT_SCOPE))
        .map(str::to_owned);
    let mut params = value.get("params").cloned().unwrap_or(Value::Null);
    // A retry scoped by another client's key keeps the wrapped state, unknown upstream.
    match (scope_key, &client_key) {
        (Some(_), Some(key)) => without_key(&mut params, Some(key)),
        (Some(_), None) => {}
        (None, _) => without_key(&mut params, None),
    }
    // Only a call that runs in its client's state leaves something behind on this node for
    // its retry to find; anything else may retry anywhere, as it is.
    let wrap_key = client_key.filter(|_| placement == Placement::Client);
    let (tx, mut rx) = mpsc::channel(NOTE_BUFFER);
    let cancel = CancellationToken::new();
    let call = Call {
        method: checked.method,
        request_id: (*id).clone(),
        params,
        peer: Arc::new(ResponsePeer { tx: tx.clone() }),
        session_peer: Arc::new(NoPeer),
        scope: scope.clone(),
        principal: headers
            .get(internal::PRINCIPAL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(internal::ANONYMOUS)
            .to_owned(),
        initialize: None,
        state: state.clone(),
        cancel: cancel.clone(),
        protocol_version: checked.version,
        client_capabilities: checked.client_capabilities,
        param_headers: param_headers(headers),
        accepted: Accepted::now(),
    };
    let serving = node.clone();
    let token = cancel.clone();
    let audited = Audited::begin(node.auditor.as_ref(), &call);
    let work = async move {
        let _admitted = admitted;
        // Under way until what the call left behind is stored: a hand-off waits for it.
        let _key_call = key_call;
        let outcome = {
            let _counted = serving.call_started();
            tokio::select! {
                r = serving.upstream.call(call) => Some(r),
                _ = token.cancelled() => None,
            }
        };
        // What the call left behind is stored before its answer goes out.
        let unkept = match &kept {
            Some((link, key)) => kept::keep(link, key, &state).await.err().inspect(|_| {
                serving.affinity.forget(|k| k == key);
            }),
            None => None,
        };
        release(&serving, scope, scoped);
        let answer = outcome.map(|o| match unkept {
            Some(e) => Err(crate::takeover::unstored(&e)),
            None => o,
        });
        if let Some(audited) = audited {
            audited.end(answer.as_ref(), &token, false);
        }
        answer
    };
    let mut task = tokio::spawn(work.instrument(traces::current()));
    // Dropped with this handler (client gone before an answer) or with the SSE body.
    let on_close = cancel.drop_guard();
    let mut resp = tokio::select! {
        done = &mut task => match done {
            Ok(Some(outcome)) => {
                let status = outcome.as_ref().err().map_or(StatusCode::OK, status_of);
                reply::json_text(status, answer(&id, outcome, wrap_key.as_deref()))
            }
            _ => reply::refuse(StatusCode::INTERNAL_SERVER_ERROR, "the call was abandoned"),
        },
        Some(first) = rx.recv() => {
            tokio::spawn(async move {
                if let Ok(Some(outcome)) = task.await {
                    let answer = answer(&id, outcome, wrap_key.as_deref());
                    let _ = tx.send(answer.into()).await;
                }
            });
            sse::response(sse::Start::Message(sse::Frame::frame(&first)), rx, on_close)
        }
    };
    resp.headers_mut().insert(
        internal::PLACEMENT,
        HeaderValue::from_static(placement.as_str()),
    );
    resp
}

/// After a call: a scope of its own is released now; a correlation key's scope that this call
/// created is released later unless its client comes back with the key.
fn release(node: &Arc<NodeState>, scope: Scope, scoped: Scoped) {
    match scoped {
        Scoped::Call => node.upstream.close(&scope),
        Scoped::Key { first: false, .. } => {}
        Scoped::Key { key, first: true } => {
            let node = node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FIRST_USE_TTL).await;
                if node.affinity.forget_unreturned(&key, FIRST_USE_TTL) {
                    node.upstream.close(&scope);
                }
            });
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

    #[tokio::test(start_paused = true)]
    async fn a_key_used_once_is_forgotten_unless_its_client_comes_back() {
        let affinity = Affinity::default();
        let (state, first) = affinity.state("client/a").expect("served here");
        assert!(first);
        state.with(|s| s.insert("counter".into(), 1.into()));
        affinity.state("client/b");
        tokio::time::advance(Duration::from_secs(1)).await;
        let (again, first) = affinity.state("client/b").expect("served here");
        assert!(!first, "the same key finds the same state");
        assert!(again.with(|s| s.is_empty()), "each key its own state");
        tokio::time::advance(FIRST_USE_TTL).await;
        assert!(affinity.forget_unreturned("client/a", FIRST_USE_TTL));
        assert!(
            !affinity.forget_unreturned("client/b", FIRST_USE_TTL),
            "a key that came back is kept until idle"
        );
        let (fresh, first) = affinity.state("client/a").expect("served here");
        assert!(first && fresh.with(|s| s.is_empty()));
        assert_ne!(affinity.one_call(), affinity.one_call());
    }

    #[test]
    fn a_key_being_handed_over_takes_no_new_call_and_counts_those_under_way() {
        let affinity = Affinity::default();
        assert!(affinity.leave("client/a").is_none(), "not held here");
        let running = affinity.held_state("client/a").expect("served here");
        let calls = affinity.leave("client/a").expect("held here");
        assert_eq!(calls.load(Ordering::Acquire), 1);
        assert!(affinity.held_state("client/a").is_none(), "leaving");
        drop(running);
        assert_eq!(calls.load(Ordering::Acquire), 0);
        assert!(affinity.forget_leaving("client/a"));
        assert!(!affinity.forget_leaving("client/b"), "not leaving");
        let (_, first) = affinity.state("client/a").expect("back, as a new key");
        assert!(first);
    }

    #[test]
    fn the_builtin_says_which_calls_need_their_client_or_the_shared_node() {
        use crate::upstream::Upstream;
        use crate::upstream::builtin::Builtin;
        let b = Builtin::new([0; 32]);
        assert!(b.keeps_client_state());
        let at = |method, name| b.placement(method, name);
        assert_eq!(at("tools/call", Some("counter")), Placement::Client);
        assert_eq!(at("tools/call", Some("echo")), Placement::Anywhere);
        assert_eq!(
            at("tools/call", Some("test_trigger_tool_change")),
            Placement::Shared
        );
        assert_eq!(at("subscriptions/listen", None), Placement::Shared);
        assert_eq!(at("server/discover", None), Placement::Anywhere);
        for p in [Placement::Anywhere, Placement::Shared, Placement::Client] {
            assert_eq!(Placement::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn a_request_state_carries_its_clients_key_and_only_that_key_opens_it() {
        use shardgate_protocol::internal::key_in_request_state;
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let irr = json!({"resultType": "input_required", "requestState": "shardgate-x.y"});
        let keyed = with_key(irr, key);
        let state = keyed["requestState"].as_str().unwrap_or_default();
        assert_eq!(key_in_request_state(state), Some(key));
        let mut retry = json!({"requestState": state, "inputResponses": {}});
        without_key(&mut retry, Some("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"));
        assert_eq!(retry["requestState"], state, "another key opens nothing");
        let mut unscoped = retry.clone();
        without_key(&mut retry, Some(key));
        assert_eq!(retry["requestState"], "shardgate-x.y");
        without_key(&mut unscoped, None);
        assert_eq!(unscoped["requestState"], "shardgate-x.y");
        assert_eq!(key_in_request_state("shardgate-x.y"), None);
        assert_eq!(
            with_key(json!({"content": []}), key),
            json!({"content": []})
        );
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
