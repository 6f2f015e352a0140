//! The session era (2025-03-26 … 2025-11-25) on a node: `initialize` creates a session, every
//! later POST, GET and DELETE names it with `Mcp-Session-Id`.
//!
//! A POST that carries requests is answered with an SSE stream of its own (or one JSON body when
//! the client accepts only JSON); the calls run in tasks of their own, so a client that drops
//! the connection loses nothing: it resumes the stream with `Last-Event-ID` on a GET.
//!
//! Every request is admitted against the session's and the node's budgets before anything of
//! its POST is served; a batch takes at most a session's worth of places and runs its requests
//! through them, so a large batch is answered whole without ever holding more. Each place is
//! counted until its requests end, however they end ([`crate::budget`]).
//!
//! With a store, a session this node owns but does not hold is taken over on its next request
//! ([`crate::takeover`]); the requests of a POST are in the stored record before the POST is
//! answered, so a new owner can tell their clients they were interrupted.

use crate::audit::Audited;
use crate::budget::Admitted;
use crate::durable::Lost;
use crate::metrics::METRICS;
use crate::session::{self, InFlight, Opening, Session, StandalonePeer, StreamPeer, Unreserved};
use crate::sse;
use crate::state::NodeState;
use crate::stream::{Event, EventId, EventStream, ReplayError};
use crate::takeover::{self, Missing};
use crate::upstream::{Accepted, Call, Scope, UpstreamState};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use shardgate_protocol::internal;
use shardgate_protocol::mcp::{self, Accepts, Message, RequestId, RpcError};
use shardgate_protocol::reply;
use shardgate_protocol::traces;
use shardgate_store::{Fence, RawJson, StoreError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The session a request names, if it is the requester's: a session is bound to the
/// principal that initialized it, and to any other it does not exist (404, as an unknown id),
/// so that a session id learnt by someone else opens nothing. The same principal with a
/// refreshed token is the same principal.
async fn session_of(node: &NodeState, headers: &HeaderMap) -> Result<Arc<Session>, Missing> {
    let id = header(headers, mcp::HEADER_SESSION_ID).ok_or(Missing::NoId)?;
    let session = takeover::find(node, id).await?;
    let principal = header(headers, internal::PRINCIPAL).unwrap_or(internal::ANONYMOUS);
    if *session.principal != *principal {
        tracing::warn!("refused a request for a session of another principal");
        return Err(Missing::Unknown);
    }
    Ok(session)
}

/// A write of `session` that did not reach its acknowledgement level: refused (another node
/// holds the session now) or the store is unavailable. Either way the session leaves this
/// node's memory.
fn unwritten(node: &NodeState, session: &Session, e: StoreError) -> Missing {
    // What the session did here since its last stored write is not in the store: it leaves
    // memory now, before another request can build on it (the next one loads it again).
    if let Some(link) = session.link() {
        node.drop_lost(&Lost {
            session: session.id.as_str().into(),
            fence: Arc::new(link.fence().clone()),
            error: e.clone(),
        });
    }
    Missing::from(e)
}

pub async fn post(node: &Arc<NodeState>, headers: &HeaderMap, body: mcp::Body) -> Response {
    if let Some((id, init)) = body.initialize() {
        return initialize(node, headers, id, init).await;
    }
    let session = match session_of(node, headers).await {
        Ok(s) => s,
        Err(no) => return no.reply(node, None),
    };
    if let Some(v) = header(headers, mcp::HEADER_PROTOCOL_VERSION)
        && !mcp::is_session_version(v)
    {
        return reply::rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(
                mcp::code::INVALID_REQUEST,
                format!("unsupported MCP-Protocol-Version '{}'", mcp::excerpt(v)),
            )
            .with_data(serde_json::json!({ "supported": mcp::SESSION_ERA_VERSIONS })),
        );
    }
    // Refused whole, before any of it is acted on: under these revisions it is not a message.
    if body.batch && !mcp::batches_allowed(&session.protocol_version) {
        return reply::rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &mcp::batch_refused(&session.protocol_version),
        );
    }
    let mut requests = Vec::new();
    for (msg, value) in body.messages {
        match msg {
            Message::Response { .. } => {
                if !session.deliver_response(&value) {
                    tracing::debug!(session = %session.id, "response to no pending request");
                }
            }
            Message::Notification { method } => notification(node, &session, &method, &value),
            Message::Request { id, method } => requests.push((id, method, value)),
        }
    }
    if requests.is_empty() {
        return reply::accepted();
    }
    let places = requests.len().min(node.budgets.limits.requests_per_session);
    let admitted = match node.budgets.admit(Some(&session.requests), places) {
        Ok(a) => a,
        Err(limit) => {
            let id = (requests.len() == 1).then(|| &requests[0].0);
            return limit.reply(id);
        }
    };
    let accepts = Accepts::from_headers(headers);
    // JSON only: related notifications and requests go on the standalone stream.
    let stream = if accepts.sse {
        session.open_stream()
    } else {
        session.standalone()
    };
    let requests: Vec<(Request, InFlight)> = requests
        .into_iter()
        .map(|r| {
            let serving = session.begin_request(&r.0, stream.id());
            (r, serving)
        })
        .collect();
    // The stream and its requests are stored before the client hears of them. The calls run
    // meanwhile: one the node answers at once has its answer in the same store write (the
    // writer starts a round once the tasks ready have run); a call to an upstream waits for
    // the acceptance. Should the store not take it, what the calls did here goes with the
    // session from memory, so the client may try again.
    let accepted = session.accept();
    let single = (requests.len() == 1).then(|| requests[0].0.0.clone());
    if accepts.sse {
        // Every answer of a batch goes out at once, and each must reach the client here.
        let (resume, rx) = stream.attach_now_with_room(requests.len());
        let calls: Vec<_> = requests.iter().map(|(_, s)| s.token().clone()).collect();
        tokio::spawn(
            serve_on_stream(
                node.clone(),
                session.clone(),
                stream,
                requests,
                admitted,
                accepted.clone(),
            )
            .instrument(traces::current()),
        );
        if let Err(e) = accepted.wait().await {
            calls.iter().for_each(CancellationToken::cancel);
            return unwritten(node, &session, e).reply(node, single.as_ref());
        }
        sse::response(priming(&session, resume), rx, ())
    } else {
        // A client that goes away drops these calls with this handler; their guards end them.
        let answers: Vec<Option<String>> = stream::iter(requests)
            .map(|(r, serving)| {
                let (session, stream, accepted) = (&session, &stream, &accepted);
                async move {
                    serve_one(node, session, stream, r, serving, accepted.clone())
                        .await
                        .0
                }
            })
            .buffered(places)
            .collect()
            .await;
        drop(admitted);
        // As on a stream, the answers reach the client only once what the calls did is
        // stored. Calls whose effect could not be stored did run: not known to have completed.
        let answered = session.stored(session.checkpoint());
        if let Err(e) = accepted.wait().await {
            return unwritten(node, &session, e).reply(node, single.as_ref());
        }
        if let Err(e) = answered.wait().await {
            let _ = unwritten(node, &session, e);
            let err = RpcError::new(mcp::code::INTERNAL_ERROR, mcp::INTERRUPTED)
                .with_data(serde_json::json!({ "reason": "unstored" }));
            return reply::rpc_error(StatusCode::SERVICE_UNAVAILABLE, single.as_ref(), &err);
        }
        let answers: Vec<String> = answers.into_iter().flatten().collect();
        match (body.batch, answers.as_slice()) {
            (_, []) => reply::accepted(),
            (false, [_]) => reply::json_text(StatusCode::OK, answers.concat()),
            _ => reply::json_text(StatusCode::OK, format!("[{}]", answers.join(","))),
        }
    }
}

/// Runs the requests of one POST and writes each answer to its stream, then ends the stream.
async fn serve_on_stream(
    node: Arc<NodeState>,
    session: Arc<Session>,
    stream: Arc<EventStream>,
    requests: Vec<(Request, InFlight)>,
    admitted: Vec<Admitted>,
    accepted: Accepted,
) {
    let places = admitted.len();
    let unanswered = std::sync::atomic::AtomicBool::new(false);
    stream::iter(requests)
        .for_each_concurrent(places, |(r, serving)| {
            let (node, session, stream, unanswered) = (&node, &session, &stream, &unanswered);
            let accepted = accepted.clone();
            async move {
                match serve_one(node, session, stream, r, serving, accepted).await {
                    // In flight until its answer is on the stream: a new owner either finds
                    // the answer or tells the client the request was interrupted.
                    (Some(answer), serving) => serving.answer(stream, answer.into()),
                    (None, _) => unanswered.store(true, std::sync::atomic::Ordering::Relaxed),
                }
            }
        })
        .await;
    drop(admitted);
    // A request that got no answer (cancelled) leaves the record through a write of its own.
    if unanswered.into_inner() {
        let _ = session.checkpoint();
    }
    session.finish_stream(&stream);
}

/// One request of a POST: its id, method and whole message.
type Request = (RequestId, String, Value);

/// Serves one request, answering it as JSON text; `None` when the client cancelled it (a
/// cancelled request gets no answer). Hands back the request's guard, for the caller to hold
/// until the answer is where the client will find it.
async fn serve_one(
    node: &NodeState,
    session: &Arc<Session>,
    stream: &Arc<EventStream>,
    (id, method, value): Request,
    serving: InFlight,
    accepted: Accepted,
) -> (Option<String>, InFlight) {
    if method == "initialize" {
        let err = RpcError::new(mcp::code::INVALID_REQUEST, "session is already initialized");
        return (Some(mcp::answer(Some(&id), Err(&err))), serving);
    }
    let cancel = serving.token().clone();
    let call = Call {
        method,
        request_id: (*id).clone(),
        params: value.get("params").cloned().unwrap_or(Value::Null),
        peer: Arc::new(StreamPeer {
            session: session.clone(),
            stream: stream.clone(),
        }),
        session_peer: Arc::new(StandalonePeer {
            session: session.clone(),
        }),
        scope: Scope::Session(session.id.clone()),
        principal: session.principal.to_string(),
        initialize: Some(session.initialize_params.clone()),
        state: session.upstream_state.clone(),
        cancel: cancel.clone(),
        protocol_version: session.protocol_version.to_string(),
        client_capabilities: session.client_capabilities(),
        param_headers: Vec::new(),
        accepted,
    };
    let audited = Audited::begin(node.auditor.as_ref(), &call);
    let _counted = node.call_started();
    let outcome = tokio::select! {
        r = node.upstream.call(call) => Some(r),
        _ = cancel.cancelled() => None,
    };
    if let Some(audited) = audited {
        audited.end(outcome.as_ref(), &cancel, session.has_ended());
    }
    // What the call changed is stored with its answer ([`InFlight::answer`]), or, answered in
    // JSON, before the answer leaves (the POST's last write).
    (outcome.map(|r| mcp::answer(Some(&id), r.as_ref())), serving)
}

/// The priming event, for clients of 2025-11-25 and later: older clients may try to parse its
/// empty `data` as JSON, so they get none (they cannot resume from it anyway).
fn priming(session: &Session, resume: EventId) -> sse::Start {
    if *session.protocol_version >= *"2025-11-25" {
        sse::Start::Priming(sse::priming(resume))
    } else {
        sse::Start::Nothing
    }
}

fn notification(node: &NodeState, session: &Session, method: &str, value: &Value) {
    let params = value.get("params").cloned().unwrap_or(Value::Null);
    if method == "notifications/cancelled"
        && let Some(id) = params.get("requestId")
    {
        session.cancel_request(id);
    }
    node.upstream.notification(
        method,
        &params,
        &Scope::Session(session.id.clone()),
        &session.upstream_state,
    );
}

async fn initialize(
    node: &Arc<NodeState>,
    headers: &HeaderMap,
    id: &RequestId,
    init: &Value,
) -> Response {
    let params = init.get("params").cloned().unwrap_or(Value::Null);
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        let err = RpcError::new(
            mcp::code::INVALID_PARAMS,
            "initialize needs params.protocolVersion",
        );
        return reply::rpc_error(StatusCode::BAD_REQUEST, Some(id), &err);
    };
    let session_id = header(headers, internal::NEW_SESSION)
        .map(str::to_owned)
        .unwrap_or_else(shardgate_protocol::session_id::mint);
    let principal = header(headers, internal::PRINCIPAL)
        .unwrap_or(internal::ANONYMOUS)
        .to_owned();
    let _admitted = match node.budgets.admit(None, 1) {
        Ok(a) => a,
        Err(limit) => return limit.reply(Some(id)),
    };
    let counted = match node.budgets.session_for(&principal) {
        Ok(c) => c,
        Err(limit) => return limit.reply(Some(id)),
    };
    // Held before the upstream sees the scope: a second `initialize` naming a live id must
    // neither replace that session nor touch its upstream state.
    let reservation = match node.sessions.reserve(session_id.clone()) {
        Ok(r) => r,
        Err(Unreserved::Full) => return node.budgets.sessions_exhausted().reply(Some(id)),
        Err(Unreserved::Taken) => {
            // The id itself only at debug: a session id is a bearer credential.
            tracing::warn!("refused an initialize for a session id in use");
            tracing::debug!(session = %session_id, "session id in use");
            return reply::rpc_error(
                StatusCode::CONFLICT,
                Some(id),
                &RpcError::new(
                    mcp::code::INVALID_REQUEST,
                    "the session id is already in use",
                ),
            );
        }
    };
    let state = UpstreamState::default();
    let scope = Scope::Session(session_id.clone());
    let raw = RawJson::new(&params);
    // The id is claimed in the store before anything is done with it.
    let link = match &node.durable {
        Some(durable) => {
            let fence = Fence::new(node.id.to_string(), node.ring().epoch());
            match durable.store.claim(&session_id, &fence).await {
                Ok(_) => Some(durable.link(&session_id, fence)),
                Err(StoreError::Fenced { .. }) => {
                    return reply::rpc_error(
                        StatusCode::CONFLICT,
                        Some(id),
                        &RpcError::new(
                            mcp::code::INVALID_REQUEST,
                            "the session id is already in use",
                        ),
                    );
                }
                Err(e) => return takeover::store_unavailable(Some(id), &e.to_string()),
            }
        }
        None => None,
    };
    let call = Call {
        method: "initialize".into(),
        request_id: (**id).clone(),
        params: params.clone(),
        peer: Arc::new(session::NoPeer),
        session_peer: Arc::new(session::NoPeer),
        scope: scope.clone(),
        principal: principal.clone(),
        initialize: Some(raw.clone()),
        state: state.clone(),
        cancel: Default::default(),
        protocol_version: requested.to_owned(),
        client_capabilities: params.get("capabilities").cloned().unwrap_or_default(),
        param_headers: Vec::new(),
        accepted: Accepted::now(),
    };
    let result = match node.upstream.call(call).await {
        Ok(r) => r,
        Err(e) => {
            node.upstream.close(&scope);
            return reply::rpc_error(StatusCode::OK, Some(id), &e);
        }
    };
    let negotiated = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(requested)
        .to_owned();
    let opening = Opening {
        id: session_id.clone(),
        principal,
        protocol_version: negotiated,
        initialize_params: raw,
        upstream_state: state,
        counted,
    };
    let session = Arc::new(Session::new(opening, &node.budgets, link));
    session.upstream_state.take_changed();
    if let Err(e) = session.persist().await {
        node.upstream.close(&scope);
        return Missing::from(e).reply(node, Some(id));
    }
    reservation.fulfil(session);
    METRICS.sessions_created.inc();
    tracing::debug!(session = %session_id, "session initialized");
    let mut resp = reply::json_text(StatusCode::OK, mcp::answer(Some(id), Ok(&result)));
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        resp.headers_mut().insert(mcp::HEADER_SESSION_ID, v);
    }
    resp
}

pub async fn get(node: &NodeState, headers: &HeaderMap) -> Response {
    let session = match session_of(node, headers).await {
        Ok(s) => s,
        Err(no) => return no.reply(node, None),
    };
    if !Accepts::from_headers(headers).sse {
        return reply::refuse(
            StatusCode::NOT_ACCEPTABLE,
            "GET needs Accept: text/event-stream",
        );
    }
    // Held while the stream is open: one of the principal's places for GET streams here.
    let place = match node.budgets.stream_for(&session.principal) {
        Ok(place) => place,
        Err(limit) => return limit.reply(None),
    };
    let Some(last) = header(headers, mcp::HEADER_LAST_EVENT_ID) else {
        let (resume, rx) = session.standalone().attach_now();
        return sse::response(priming(&session, resume), rx, place);
    };
    let Some(event) = EventId::parse(last) else {
        return reply::refuse(StatusCode::BAD_REQUEST, "malformed Last-Event-ID");
    };
    let Some(stream) = session.stream(event.stream) else {
        let kept = match session.kept_streams() {
            Some((first, last)) => format!("it keeps streams {first} to {last}"),
            None => "it keeps no request stream".to_owned(),
        };
        return reply::refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "Last-Event-ID names stream {}, which this session no longer keeps ({kept})",
                event.stream
            ),
        );
    };
    let stored = match stored_events(node, &session, &stream, event).await {
        Ok(events) => events,
        Err(refusal) => return refusal,
    };
    match stream.attach_after_stored(event.seq, stored) {
        Ok(rx) => sse::response(sse::Start::Nothing, rx, place),
        Err(ReplayError::Gap { oldest }) => reply::refuse(
            StatusCode::BAD_REQUEST,
            &format!("events after {event} are no longer kept (oldest is {oldest})"),
        ),
        Err(ReplayError::Unknown) => {
            reply::refuse(StatusCode::BAD_REQUEST, "Last-Event-ID was never sent")
        }
    }
}

/// The events after `after` that a stream continued from the store has only there.
async fn stored_events(
    node: &NodeState,
    session: &Session,
    stream: &EventStream,
    after: EventId,
) -> Result<Vec<Event>, Response> {
    let (Some(durable), true) = (&node.durable, after.seq < stream.stored_through()) else {
        return Ok(Vec::new());
    };
    let replay = durable
        .store
        .events(&session.id, after.stream, after.seq)
        .await
        .map_err(|e| Missing::from(e).reply(node, None))?;
    if replay.has_gap(after.seq) {
        return Err(reply::refuse(
            StatusCode::BAD_REQUEST,
            &format!("events after {after} are no longer kept"),
        ));
    }
    Ok(replay
        .events
        .into_iter()
        .map(|e| Event {
            id: EventId {
                stream: e.stream,
                seq: e.seq,
            },
            data: e.data.into(),
        })
        .collect())
}

pub async fn delete(node: &NodeState, headers: &HeaderMap) -> Response {
    let session = match session_of(node, headers).await {
        Ok(s) => s,
        Err(no) => return no.reply(node, None),
    };
    match node.delete_session(&session).await {
        Ok(()) => {
            tracing::debug!(session = %session.id, "session deleted");
            StatusCode::OK.into_response()
        }
        Err(e) => Missing::from(e).reply(node, None),
    }
}
