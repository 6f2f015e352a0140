//! Session-era state: one [`Session`] per `Mcp-Session-Id`, held in the [`Sessions`] table.
//!
//! Everything a session is lives here, in one place: its negotiated revision and the client's
//! `initialize` params, its SSE streams with their event logs, the requests it has in flight and
//! the server-to-client requests it is waiting on, and the upstream's per-session state. Later
//! steps persist exactly this and rebuild it on another node.

use crate::stream::EventStream;
use crate::upstream::{BoxFuture, Peer, UpstreamState};
use bytes::Bytes;
use serde_json::Value;
use shardgate_protocol::mcp::{self, RpcError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Finished request streams a session keeps for replay, beyond which the oldest go.
const RETAINED_STREAMS: usize = 64;
/// The standalone (GET) stream's id; request streams count up from 1.
pub const STANDALONE_STREAM: u64 = 0;

type Pending = oneshot::Sender<Result<Value, RpcError>>;

struct Inner {
    streams: BTreeMap<u64, Arc<EventStream>>,
    next_stream: u64,
    /// Server-to-client requests awaiting the client's answer, by request id.
    pending: HashMap<String, Pending>,
    next_request: u64,
    /// Client requests being served, by request id, for `notifications/cancelled`.
    in_flight: HashMap<String, CancellationToken>,
    /// When the client last sent anything in this session.
    last_active: Instant,
}

pub struct Session {
    pub id: String,
    pub protocol_version: String,
    /// The client's `initialize` params, kept to re-initialize an upstream later.
    pub initialize_params: Value,
    pub upstream_state: UpstreamState,
    inner: Mutex<Inner>,
    /// Cancelled when the session ends: every call in flight stops.
    ended: CancellationToken,
}

/// A request id as a map key: its JSON text, so `1` and `"1"` stay distinct.
fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Session {
    pub fn new(
        id: String,
        protocol_version: String,
        initialize_params: Value,
        upstream_state: UpstreamState,
    ) -> Self {
        let mut streams = BTreeMap::new();
        streams.insert(
            STANDALONE_STREAM,
            Arc::new(EventStream::new(STANDALONE_STREAM)),
        );
        Session {
            id,
            protocol_version,
            initialize_params,
            upstream_state,
            inner: Mutex::new(Inner {
                streams,
                next_stream: STANDALONE_STREAM + 1,
                pending: HashMap::new(),
                next_request: 0,
                in_flight: HashMap::new(),
                last_active: Instant::now(),
            }),
            ended: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn client_capabilities(&self) -> Value {
        self.initialize_params
            .get("capabilities")
            .cloned()
            .unwrap_or(Value::Object(Default::default()))
    }

    /// Records client activity: an idle session is ended after a while.
    pub fn touch(&self) {
        self.lock().last_active = Instant::now();
    }

    /// Idle: nothing from the client for `timeout`, no call in flight and no client listening
    /// on the standalone stream (a client waiting there for notifications is not idle).
    pub fn is_idle(&self, timeout: Duration) -> bool {
        let inner = self.lock();
        inner.last_active.elapsed() >= timeout
            && inner.in_flight.is_empty()
            && !inner
                .streams
                .get(&STANDALONE_STREAM)
                .is_some_and(|s| s.has_listener())
    }

    /// Opens the stream that carries one POST's responses and related messages.
    pub fn open_stream(&self) -> Arc<EventStream> {
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        let stream = Arc::new(EventStream::new(id));
        inner.streams.insert(id, stream.clone());
        let finished: Vec<u64> = inner
            .streams
            .iter()
            .filter(|(id, s)| **id != STANDALONE_STREAM && s.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for old in finished
            .iter()
            .take(finished.len().saturating_sub(RETAINED_STREAMS))
        {
            inner.streams.remove(old);
        }
        stream
    }

    pub fn stream(&self, id: u64) -> Option<Arc<EventStream>> {
        self.lock().streams.get(&id).cloned()
    }

    pub fn standalone(&self) -> Arc<EventStream> {
        self.lock()
            .streams
            .get(&STANDALONE_STREAM)
            .cloned()
            .unwrap_or_else(|| Arc::new(EventStream::new(STANDALONE_STREAM)))
    }

    /// Records a client request as in flight; its token is cancelled by
    /// `notifications/cancelled` or the end of the session.
    pub fn begin_request(&self, id: &Value) -> CancellationToken {
        let token = self.ended.child_token();
        self.lock().in_flight.insert(id_key(id), token.clone());
        token
    }

    pub fn end_request(&self, id: &Value) {
        self.lock().in_flight.remove(&id_key(id));
    }

    pub fn cancel_request(&self, id: &Value) {
        if let Some(token) = self.lock().in_flight.remove(&id_key(id)) {
            token.cancel();
        }
    }

    /// Hands a client's answer to the server-to-client request waiting for it; false when no
    /// request of this session waits for that id.
    pub fn deliver_response(&self, msg: &Value) -> bool {
        let Some(id) = msg.get("id") else {
            return false;
        };
        let Some(waiter) = self.lock().pending.remove(&id_key(id)) else {
            return false;
        };
        let answer = match (msg.get("result"), msg.get("error")) {
            (Some(result), _) => Ok(result.clone()),
            (None, Some(err)) => Err(RpcError::new(
                err.get("code").and_then(Value::as_i64).unwrap_or(0),
                err.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("client error"),
            )
            .with_data(err.get("data").cloned().unwrap_or(Value::Null))),
            (None, None) => return false,
        };
        let _ = waiter.send(answer);
        true
    }

    /// Sends a request to the client on `stream` and waits for the answer, the call's
    /// cancellation, or the end of the session.
    pub async fn request_client(
        &self,
        stream: &EventStream,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = self.lock();
            inner.next_request += 1;
            let id = Value::String(format!("sg-{}", inner.next_request));
            inner.pending.insert(id_key(&id), tx);
            id
        };
        stream.push(encode(&mcp::request(&id, method, params)));
        tokio::select! {
            answer = rx => answer.unwrap_or_else(|_| Err(RpcError::new(
                mcp::code::INTERNAL_ERROR,
                "session ended while waiting for the client",
            ))),
            _ = self.ended.cancelled() => {
                self.lock().pending.remove(&id_key(&id));
                Err(RpcError::new(mcp::code::INTERNAL_ERROR, "session ended"))
            }
        }
    }

    /// Ends the session: calls in flight are cancelled and every stream closes.
    pub fn end(&self) {
        self.ended.cancel();
        let mut inner = self.lock();
        inner.pending.clear();
        for s in inner.streams.values() {
            s.finish();
        }
    }
}

pub fn encode(msg: &Value) -> Bytes {
    Bytes::from(msg.to_string())
}

/// The client, as an upstream call of a session sees it: messages go on `stream`.
pub struct StreamPeer {
    pub session: Arc<Session>,
    pub stream: Arc<EventStream>,
}

impl Peer for StreamPeer {
    fn notify(&self, method: &str, params: Value) {
        self.stream.push(encode(&mcp::notification(method, params)));
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        let method = method.to_owned();
        Box::pin(async move {
            self.session
                .request_client(&self.stream, &method, params)
                .await
        })
    }

    fn disconnect(&self) {
        self.stream.detach();
    }
}

/// The client during `initialize`, before a session exists: it can be told nothing yet.
pub struct NoPeer;

impl Peer for NoPeer {
    fn notify(&self, _method: &str, _params: Value) {}

    fn request(&self, method: &str, _params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        let err = RpcError::new(
            mcp::code::INVALID_REQUEST,
            format!("{method} cannot be sent before the session is initialized"),
        );
        Box::pin(async move { Err(err) })
    }

    fn disconnect(&self) {}
}

/// The table of live sessions on this node.
#[derive(Default)]
pub struct Sessions {
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, Arc<Session>>,
    /// Ids being initialized: taken, though not live yet.
    reserved: HashSet<String>,
}

/// An id held for a session being initialized; released on drop unless fulfilled.
pub struct Reservation<'a> {
    sessions: &'a Sessions,
    id: String,
}

impl Reservation<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Makes the session live under the reserved id.
    pub fn fulfil(self, session: Arc<Session>) {
        debug_assert_eq!(session.id, self.id);
        let mut table = self.sessions.write();
        table.reserved.remove(&self.id);
        table.live.insert(self.id.clone(), session);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.sessions.write().reserved.remove(&self.id);
    }
}

impl Sessions {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `id` for a new session, or `None` when a session has it or is being created with
    /// it: an id is never given to a second session, so one client's session can never be
    /// replaced by another's.
    pub fn reserve(&self, id: String) -> Option<Reservation<'_>> {
        let mut table = self.write();
        if table.live.contains_key(&id) || !table.reserved.insert(id.clone()) {
            return None;
        }
        Some(Reservation { sessions: self, id })
    }

    /// Makes `session` live; false (and nothing changes) when its id is taken.
    pub fn insert(&self, session: Arc<Session>) -> bool {
        match self.reserve(session.id.clone()) {
            Some(r) => {
                r.fulfil(session);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.read().live.get(id).cloned()
    }

    /// Removes and ends a session; false when there was none.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.write().live.remove(id);
        match removed {
            Some(s) => {
                s.end();
                true
            }
            None => false,
        }
    }

    /// Ends every idle session (see [`Session::is_idle`]); returns their ids.
    pub fn reap(&self, timeout: Duration) -> Vec<String> {
        let idle: Vec<String> = self
            .read()
            .live
            .values()
            .filter(|s| s.is_idle(timeout))
            .map(|s| s.id.clone())
            .collect();
        idle.into_iter().filter(|id| self.remove(id)).collect()
    }

    pub fn len(&self) -> usize {
        self.read().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            id.into(),
            "2025-11-25".into(),
            json!({}),
            UpstreamState::default(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_reaped_busy_ones_kept() {
        let sessions = Sessions::default();
        let (idle, busy, listening) = (session("idle"), session("busy"), session("listening"));
        for s in [&idle, &busy, &listening] {
            assert!(sessions.insert(s.clone()));
        }
        let _token = busy.begin_request(&json!(1));
        let (_, _rx) = listening.standalone().attach_now();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            sessions.reap(Duration::from_secs(30)),
            vec!["idle".to_string()]
        );
        assert!(sessions.get("idle").is_none());
        assert!(sessions.get("busy").is_some() && sessions.get("listening").is_some());
        busy.touch();
        assert!(sessions.reap(Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn an_id_is_never_given_to_a_second_session() {
        let sessions = Sessions::default();
        let first = session("a");
        assert!(sessions.insert(first.clone()));
        assert!(!sessions.insert(session("a")), "a live id is taken");
        assert!(Arc::ptr_eq(&sessions.get("a").expect("live"), &first));
        assert!(sessions.reserve("a".into()).is_none());

        let held = sessions.reserve("b".into()).expect("free");
        assert!(
            sessions.reserve("b".into()).is_none(),
            "reserved ids are taken"
        );
        drop(held);
        let again = sessions.reserve("b".into()).expect("released on drop");
        again.fulfil(session("b"));
        assert!(sessions.get("b").is_some());
        assert_eq!(sessions.len(), 2);
    }

    #[tokio::test]
    async fn a_client_answer_reaches_the_request_waiting_for_it() {
        let s = session("s");
        let stream = s.open_stream();
        let (_, mut rx) = stream.attach_now();
        let waiter = {
            let s = s.clone();
            let stream = stream.clone();
            tokio::spawn(async move { s.request_client(&stream, "roots/list", json!({})).await })
        };
        let sent = rx.recv().await.expect("the request goes out on the stream");
        let request: Value = serde_json::from_slice(&sent.data).expect("json");
        assert!(!s.deliver_response(&json!({"jsonrpc": "2.0", "id": "other", "result": {}})));
        let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"roots": []}});
        assert!(s.deliver_response(&answer));
        let got = waiter.await.expect("joined").expect("answered");
        assert_eq!(got, json!({"roots": []}));
    }
}
