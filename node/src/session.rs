//! Session-era state: one [`Session`] per `Mcp-Session-Id`, held in the [`Sessions`] table.
//!
//! Everything a session is lives here, in one place: its negotiated revision and the client's
//! `initialize` params, its SSE streams with their event logs, the requests it has in flight and
//! the server-to-client requests it is waiting on, and the upstream's per-session state.
//!
//! What another node needs to continue a session is its [`SessionRecord`] ([`Session::record`])
//! and its streams' events; a session with a store [`Link`] writes both through
//! ([`Session::checkpoint`], [`EventStream::push`]) and is rebuilt from them by
//! [`Session::continued`]. Channels, tokens and listeners are this node's alone.

use crate::budget::{Budgets, Gauge, Tallied};
use crate::durable::{self, Link};
use crate::replay::SessionReplay;
use crate::stream::EventStream;
use crate::upstream::{Accepted, BoxFuture, Peer, UpstreamState};
use bytes::Bytes;
use serde_json::Value;
use shardgate_protocol::internal;
use shardgate_protocol::mcp::{self, RpcError};
use shardgate_store::{InFlightRecord, RawJson, SessionRecord, StoreError};
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
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
    /// Client requests being served, by request id, for `notifications/cancelled`; the
    /// number tells a request from a later one that reuses its id.
    in_flight: HashMap<String, Serving>,
    next_in_flight: u64,
    /// When the client last sent anything in this session.
    last_active: Instant,
}

impl Inner {
    /// How many request streams are finished, and the first of them to leave when too many
    /// are kept: those whose client had the whole stream go first, oldest first, then those it
    /// may still resume (it lost its connection before the end, or the stream was continued
    /// from the store after a takeover), oldest first.
    fn evictable(&self) -> (usize, Option<u64>) {
        // Once per request stream opened: one pass, one lock per stream, nothing allocated.
        let mut finished = 0;
        let mut first: Option<(bool, u64)> = None;
        for (id, s) in &self.streams {
            if *id == STANDALONE_STREAM {
                continue;
            }
            if let Some(delivered) = s.finished_and_delivered() {
                finished += 1;
                let rank = (!delivered, *id);
                if first.is_none_or(|f| rank < f) {
                    first = Some(rank);
                }
            }
        }
        (finished, first.map(|(_, id)| id))
    }
}

fn idle(inner: &Inner, timeout: Duration) -> bool {
    inner.last_active.elapsed() >= timeout
        && inner.in_flight.is_empty()
        && !inner
            .streams
            .get(&STANDALONE_STREAM)
            .is_some_and(|s| s.has_listener())
}

/// A client request being served.
struct Serving {
    serial: u64,
    token: CancellationToken,
    /// The stream its answer goes on.
    stream: u64,
}

pub struct Session {
    pub id: String,
    /// Who the gateway attributed the `initialize` to: the session's owner.
    pub principal: Cow<'static, str>,
    pub protocol_version: Cow<'static, str>,
    /// The client's `initialize` params, kept to re-initialize an upstream later.
    pub initialize_params: RawJson,
    pub upstream_state: UpstreamState,
    inner: Mutex<Inner>,
    /// Cancelled when the session ends: every call in flight stops.
    ended: CancellationToken,
    /// Client requests in flight (`limits.requests_per_session`).
    pub requests: Arc<Gauge>,
    /// Bytes its streams keep for replay (`limits.replay_bytes_per_session`).
    replay: Arc<SessionReplay>,
    /// Where it is written through to, if anywhere.
    link: Option<Link>,
    /// Being handed to another node: no new request is taken here.
    leaving: std::sync::atomic::AtomicBool,
    /// Set when this node adopted a view that skipped others: in those, another node may have
    /// owned the session and claimed it, so it is checked against the store before it serves
    /// again ([`crate::takeover::find`]).
    doubted: std::sync::atomic::AtomicBool,
    /// Its place among its principal's sessions on this node (`limits.sessions_per_principal`).
    _counted: Option<Tallied>,
    /// When this node began to hold it, in Unix seconds (operators' reports only).
    held_since: u64,
}

/// Who a new session belongs to and what it was opened with.
pub struct Opening {
    pub id: String,
    pub principal: String,
    pub protocol_version: String,
    pub initialize_params: RawJson,
    pub upstream_state: UpstreamState,
    /// Its place among its principal's sessions, taken when it was initialized here; counted
    /// anew for a session continued from the store.
    pub counted: Option<Tallied>,
}

/// A client request of a session in flight: ended, however its handler exits, on drop.
pub struct InFlight {
    session: Arc<Session>,
    key: String,
    serial: u64,
    token: CancellationToken,
}

impl InFlight {
    /// Cancelled by `notifications/cancelled` or the end of the session.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Puts the request's answer on its stream and ends the request. With a store, the answer
    /// goes in one write with the record that no longer lists the request and holds what its
    /// call changed, so a new owner finds the answer and its effect, or neither (and tells the
    /// client the request was interrupted).
    pub fn answer(self, stream: &EventStream, data: Bytes) {
        let session = &self.session;
        let mut guard = session.lock();
        let inner = &mut *guard;
        self.end_in(inner);
        // Taken and sent under the session's lock, so records reach the writer in the order
        // they were taken.
        let record = session.link.is_some().then(|| session.record_of(inner));
        stream.push_recorded(data, record);
        // Before `self` goes, whose drop takes the lock.
        drop(guard);
    }

    /// Takes the request out of the session's requests in flight, unless a later request
    /// reusing its id took its place.
    fn end_in(&self, inner: &mut Inner) {
        if inner
            .in_flight
            .get(&self.key)
            .is_some_and(|s| s.serial == self.serial)
        {
            inner.in_flight.remove(&self.key);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let session = self.session.clone();
        self.end_in(&mut session.lock());
    }
}

/// A server-to-client request waiting for its answer; forgotten if the wait is abandoned.
struct Waiting<'a> {
    session: &'a Session,
    key: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.session.lock().pending.remove(&self.key);
    }
}

/// `text` as one of the `common` strings every session shares, where it is one: a session
/// keeps no copy of its own of `anonymous` or of its protocol revision.
fn shared(text: String, common: &[&'static str]) -> Cow<'static, str> {
    match common.iter().find(|c| **c == text) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(text),
    }
}

/// A request id as a map key: its JSON text, so `1` and `"1"` stay distinct.
fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Session {
    pub fn new(opening: Opening, budgets: &Budgets, link: Option<Link>) -> Self {
        let counted = opening.counted.or_else(|| {
            (opening.principal != internal::ANONYMOUS)
                .then(|| budgets.sessions_per_principal.count(&opening.principal))
        });
        let replay = SessionReplay::new(
            budgets.limits.replay_bytes_per_session,
            budgets.replay.clone(),
        );
        Session {
            id: opening.id,
            principal: shared(opening.principal, &[internal::ANONYMOUS]),
            protocol_version: shared(opening.protocol_version, &mcp::SESSION_ERA_VERSIONS),
            initialize_params: opening.initialize_params,
            upstream_state: opening.upstream_state,
            inner: Mutex::new(Inner {
                streams: BTreeMap::new(),
                next_stream: STANDALONE_STREAM + 1,
                pending: HashMap::new(),
                next_request: 0,
                in_flight: HashMap::new(),
                next_in_flight: 0,
                last_active: Instant::now(),
            }),
            ended: CancellationToken::new(),
            leaving: Default::default(),
            doubted: Default::default(),
            requests: Gauge::new(budgets.limits.requests_per_session),
            replay,
            link,
            _counted: counted,
            held_since: unix_now(),
        }
    }

    /// A session continued from its stored record, its streams from the last seq the store
    /// holds of each (`tails`). Streams other than the standalone one are finished: the
    /// requests they carried ran on another node. A stream number or request id is never
    /// handed out twice.
    pub fn continued(
        record: SessionRecord,
        tails: &BTreeMap<u64, u64>,
        budgets: &Budgets,
        link: Link,
    ) -> Self {
        let opening = Opening {
            id: record.id,
            principal: record.principal,
            protocol_version: record.protocol_version,
            initialize_params: record.initialize_params,
            upstream_state: UpstreamState::from_map(record.upstream_state),
            counted: None,
        };
        let session = Session::new(opening, budgets, Some(link.clone()));
        {
            let mut inner = session.lock();
            let known = tails
                .iter()
                .map(|(s, t)| (*s, *t))
                .chain(record.in_flight.iter().map(|r| (r.stream, 0)));
            for (id, tail) in known {
                let tail = tail.max(tails.get(&id).copied().unwrap_or(0));
                let stream =
                    EventStream::continued(id, tail, session.replay.clone(), Some(link.clone()));
                if id != STANDALONE_STREAM {
                    stream.finish();
                }
                inner.streams.insert(id, stream);
                inner.next_stream = inner.next_stream.max(id + 1);
            }
            inner.next_stream = inner.next_stream.max(record.next_stream);
            inner.next_request = record.next_request;
        }
        session
    }

    /// What a store keeps of the session now, for a write, and whether its upstream state
    /// changed since the last write.
    fn record_of(&self, inner: &Inner) -> (SessionRecord, bool) {
        let mut in_flight: Vec<InFlightRecord> = inner
            .in_flight
            .iter()
            .map(|(id, s)| InFlightRecord {
                request_id: id.clone(),
                stream: s.stream,
            })
            .collect();
        in_flight.sort_by(|a, b| (a.stream, &a.request_id).cmp(&(b.stream, &b.request_id)));
        let (upstream_state, changed) = self.upstream_state.snapshot_for_write();
        let record = SessionRecord {
            id: self.id.clone(),
            principal: self.principal.to_string(),
            protocol_version: self.protocol_version.to_string(),
            initialize_params: self.initialize_params.clone(),
            upstream_state,
            next_stream: inner.next_stream,
            next_request: inner.next_request,
            in_flight,
        };
        (record, changed)
    }

    /// Where the session is written through to, if anywhere.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// Hands the record to the writer (after every write made before); a session that is not
    /// written through does nothing.
    pub fn checkpoint(&self) -> Option<durable::Written> {
        let link = self.link.as_ref()?;
        let (record, changed) = self.record_of(&self.lock());
        Some(link.save(record, changed))
    }

    /// Checkpoints and waits for the acknowledgement level to hold for it.
    pub async fn persist(&self) -> Result<(), StoreError> {
        match (&self.link, self.checkpoint()) {
            (Some(link), Some(written)) => durable::settled(link, written).await,
            _ => Ok(()),
        }
    }

    /// Checkpoints the requests just accepted: resolved once the acknowledgement level holds
    /// for them. What the session writes next may go in the same store write, but for a
    /// change of its upstream state, which waits for this one to be stored
    /// ([`durable::Link::accept`]).
    pub fn accept(&self) -> Accepted {
        let written = self.link.as_ref().map(|link| {
            let (record, changed) = self.record_of(&self.lock());
            link.accept(record, changed)
        });
        self.stored(written)
    }

    /// Resolved once the acknowledgement level holds for `written`.
    pub fn stored(&self, written: Option<durable::Written>) -> Accepted {
        match (&self.link, written) {
            (Some(link), Some(written)) => {
                let link = link.clone();
                Accepted::after(async move { durable::settled(&link, written).await })
            }
            _ => Accepted::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn client_capabilities(&self) -> Value {
        self.initialize_params
            .value()
            .get_mut("capabilities")
            .map(Value::take)
            .unwrap_or(Value::Object(Default::default()))
    }

    /// When this node began to hold the session: created here, or taken over from the store.
    pub fn held_since(&self) -> u64 {
        self.held_since
    }

    /// How long ago the client last sent anything in this session.
    pub fn idle_for(&self) -> Duration {
        self.lock().last_active.elapsed()
    }

    /// The streams the session keeps now, by id.
    pub fn streams(&self) -> Vec<Arc<EventStream>> {
        self.lock().streams.values().cloned().collect()
    }

    /// Records client activity: an idle session is ended after a while. False when the session
    /// has just been ended here (passivated, say) and takes no more requests: the caller looks
    /// it up again. One lock with [`Session::end_if_idle`], so a request either finds the
    /// session live and keeps it so, or finds it ended.
    pub fn touch(&self) -> bool {
        let mut inner = self.lock();
        if self.ended.is_cancelled() {
            return false;
        }
        inner.last_active = Instant::now();
        true
    }

    /// Idle: nothing from the client for `timeout`, no call in flight and no client listening
    /// on the standalone stream (a client waiting there for notifications is not idle).
    pub fn is_idle(&self, timeout: Duration) -> bool {
        idle(&self.lock(), timeout)
    }

    /// Marks the session ended if it is idle, in the same lock that [`Session::touch`] takes;
    /// true when it is. [`Session::end`] then lets go of its streams.
    fn retire_if_idle(&self, timeout: Duration) -> bool {
        let inner = self.lock();
        if !idle(&inner, timeout) {
            return false;
        }
        self.ended.cancel();
        true
    }

    /// Opens the stream that carries one POST's responses and related messages.
    pub fn open_stream(&self) -> Arc<EventStream> {
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        let stream = EventStream::new(id, self.replay.clone(), self.link.clone());
        inner.streams.insert(id, stream.clone());
        while let (finished, Some(first)) = inner.evictable() {
            if finished <= RETAINED_STREAMS {
                break;
            }
            if let Some(old) = inner.streams.remove(&first) {
                old.forget();
            }
            if finished - 1 <= RETAINED_STREAMS {
                break;
            }
        }
        stream
    }

    /// A stream the session keeps; the standalone one always (it is opened when first used).
    pub fn stream(&self, id: u64) -> Option<Arc<EventStream>> {
        if id == STANDALONE_STREAM {
            return Some(self.standalone());
        }
        self.lock().streams.get(&id).cloned()
    }

    /// The lowest and the highest of the request streams the session keeps, if it keeps any.
    pub fn kept_streams(&self) -> Option<(u64, u64)> {
        let inner = self.lock();
        let mut kept = inner
            .streams
            .range(STANDALONE_STREAM + 1..)
            .map(|(id, _)| *id);
        let first = kept.next()?;
        Some((first, kept.next_back().unwrap_or(first)))
    }

    /// Ends a request stream, then holds the replay budgets: while this session is over its
    /// own, its oldest finished streams go; then the node drops its oldest while it is over.
    pub fn finish_stream(&self, stream: &Arc<EventStream>) {
        stream.finish();
        while self.replay.over() {
            let oldest = {
                let mut inner = self.lock();
                let id = inner.evictable().1;
                id.and_then(|id| inner.streams.remove(&id))
            };
            match oldest {
                Some(s) => {
                    s.evict();
                    s.forget();
                }
                None => break,
            }
        }
        self.replay.node().finished(stream);
    }

    /// Server-to-client requests waiting for the client's answer.
    pub fn pending_requests(&self) -> usize {
        self.lock().pending.len()
    }

    /// The standalone (GET) stream, opened when first used: a session that never sends on it
    /// and is never listened to on it holds no stream at all.
    pub fn standalone(&self) -> Arc<EventStream> {
        self.lock()
            .streams
            .entry(STANDALONE_STREAM)
            .or_insert_with(|| {
                EventStream::new(STANDALONE_STREAM, self.replay.clone(), self.link.clone())
            })
            .clone()
    }

    /// Records a client request, answered on `stream`, as in flight until the returned guard
    /// is dropped.
    pub fn begin_request(self: &Arc<Self>, id: &Value, stream: u64) -> InFlight {
        let token = self.ended.child_token();
        let key = id_key(id);
        let serial = {
            let mut inner = self.lock();
            inner.next_in_flight += 1;
            let serial = inner.next_in_flight;
            let serving = Serving {
                serial,
                token: token.clone(),
                stream,
            };
            inner.in_flight.insert(key.clone(), serving);
            serial
        };
        InFlight {
            session: self.clone(),
            key,
            serial,
            token,
        }
    }

    pub fn cancel_request(&self, id: &Value) {
        if let Some(serving) = self.lock().in_flight.remove(&id_key(id)) {
            serving.token.cancel();
        }
    }

    /// Client requests being served now.
    /// Marks the session as being handed to another node: requests that find it here from
    /// now on are sent there (421); those in flight finish.
    pub fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the session as possibly claimed by another node since this one last knew it
    /// owned it.
    pub fn doubt(&self) {
        self.doubted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_doubted(&self) -> bool {
        self.doubted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store confirmed this node's claim.
    pub fn confirmed(&self) {
        self.doubted
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn requests_in_flight(&self) -> usize {
        self.lock().in_flight.len()
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
        // The id counter is stored before the request is: a new owner never reuses the id.
        let _ = self.checkpoint();
        // However this wait ends (answered, the call cancelled, the session over), the
        // request stops waiting.
        let _waiting = Waiting {
            session: self,
            key: id_key(&id),
        };
        stream.push(encode(&mcp::request(&id, method, params)));
        tokio::select! {
            answer = rx => answer.unwrap_or_else(|_| Err(RpcError::new(
                mcp::code::INTERNAL_ERROR,
                "session ended while waiting for the client",
            ))),
            _ = self.ended.cancelled() => {
                Err(RpcError::new(mcp::code::INTERNAL_ERROR, "session ended"))
            }
        }
    }

    /// Whether the session has ended here ([`Session::end`]).
    pub fn has_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Ends the session here: calls in flight are cancelled and every stream closes.
    pub fn end(&self) {
        self.ended.cancel();
        let mut inner = self.lock();
        inner.pending.clear();
        for s in inner.streams.values() {
            s.close();
        }
    }
}

/// Seconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// The client, as its session's standalone stream reaches it: the stream is opened only when
/// something is sent on it.
pub struct StandalonePeer {
    pub session: Arc<Session>,
}

impl Peer for StandalonePeer {
    fn notify(&self, method: &str, params: Value) {
        self.session
            .standalone()
            .push(encode(&mcp::notification(method, params)));
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        let method = method.to_owned();
        Box::pin(async move {
            let stream = self.session.standalone();
            self.session.request_client(&stream, &method, params).await
        })
    }

    fn disconnect(&self) {
        let open = self.session.lock().streams.get(&STANDALONE_STREAM).cloned();
        if let Some(stream) = open {
            stream.detach();
        }
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

/// The table of live sessions on this node, at most `limit` of them (live and reserved).
pub struct Sessions {
    table: RwLock<Table>,
    limit: usize,
}

/// Why an id cannot be reserved.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreserved {
    /// A session has the id, or is being created with it.
    Taken,
    /// The node holds as many sessions as it may.
    Full,
}

#[derive(Default)]
struct Table {
    live: HashSet<Live>,
    /// Ids being initialized: taken, though not live yet.
    reserved: HashSet<String>,
}

/// A live session in the table, found by its id: the id is not kept a second time as a key.
struct Live(Arc<Session>);

impl Borrow<str> for Live {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl Hash for Live {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.as_str().hash(state);
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Live) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Live {}

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
        table.live.insert(Live(session));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.sessions.write().reserved.remove(&self.id);
    }
}

impl Sessions {
    pub fn new(limit: usize) -> Self {
        Sessions {
            table: RwLock::default(),
            limit,
        }
    }

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

    /// Takes `id` for a new session. Refused when a session has it or is being created with
    /// it (an id is never given to a second session, so one client's session can never be
    /// replaced by another's), or when the node holds its limit of sessions.
    pub fn reserve(&self, id: String) -> Result<Reservation<'_>, Unreserved> {
        let mut table = self.write();
        if table.live.contains(id.as_str()) || table.reserved.contains(&id) {
            return Err(Unreserved::Taken);
        }
        if table.live.len() + table.reserved.len() >= self.limit {
            return Err(Unreserved::Full);
        }
        table.reserved.insert(id.clone());
        Ok(Reservation { sessions: self, id })
    }

    /// Makes `session` live; false (and nothing changes) when it cannot have its id.
    pub fn insert(&self, session: Arc<Session>) -> bool {
        match self.reserve(session.id.clone()) {
            Ok(r) => {
                r.fulfil(session);
                true
            }
            Err(_) => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.read().live.get(id).map(|l| l.0.clone())
    }

    /// Removes and ends a session; false when there was none.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.write().live.take(id);
        match removed {
            Some(Live(s)) => {
                s.end();
                true
            }
            None => false,
        }
    }

    /// Ends every idle session here (see [`Session::is_idle`]); returns them. A session that a
    /// request touches meanwhile stays.
    pub fn reap(&self, timeout: Duration) -> Vec<Arc<Session>> {
        let idle: Vec<Arc<Session>> = self
            .read()
            .live
            .iter()
            .filter(|l| l.0.is_idle(timeout))
            .map(|l| l.0.clone())
            .collect();
        let gone: Vec<Arc<Session>> = idle
            .into_iter()
            .filter(|s| {
                // Under the table's lock, so that a request that finds the session ended then
                // finds it gone from the table too, and loads it again.
                let mut table = self.write();
                let live = table
                    .live
                    .get(s.id.as_str())
                    .is_some_and(|l| Arc::ptr_eq(&l.0, s));
                live && s.retire_if_idle(timeout) && table.live.remove(s.id.as_str())
            })
            .collect();
        for s in &gone {
            s.end();
        }
        gone
    }

    pub fn len(&self) -> usize {
        self.read().live.len()
    }

    /// The live sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.read().live.iter().map(|l| l.0.clone()).collect()
    }

    /// The ids of the live sessions.
    pub fn ids(&self) -> Vec<String> {
        self.read().live.iter().map(|l| l.0.id.clone()).collect()
    }

    /// Server-to-client requests waiting for an answer, all sessions together.
    pub fn pending_requests(&self) -> usize {
        self.read()
            .live
            .iter()
            .map(|l| l.0.pending_requests())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
