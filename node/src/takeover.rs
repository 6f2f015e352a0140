//! Finding a request's session: in memory, or in the store when this node owns it but does not
//! hold it (its owner died or left, a node joined, or it was passivated here).
//!
//! A takeover claims the session under this node's current membership epoch (a compare-and-set
//! in the store: of two nodes, one wins), rebuilds it from its record and streams
//! ([`Session::continued`]) and answers each request the old owner had accepted and not
//! answered with an explicit error on its stream: it was interrupted, and may or may not have
//! taken effect. Upstreams continue from the stored state: a stdio upstream is started again
//! with the stored `initialize` params, an HTTP upstream's session is reused by its id.

use crate::durable::Durable;
use crate::metrics::{Ended, METRICS};
use crate::session::Session;
use crate::state::LET_GO_GRACE;
use crate::state::NodeState;
use axum::response::Response;
use http::Method;
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use shardgate_protocol::internal;
use shardgate_protocol::mcp::{self, RequestId, RpcError};
use shardgate_protocol::reply;
use shardgate_raft::{MemberState, NodeId, Ring};
use shardgate_store::{Fence, InFlightRecord, SessionStore, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use tracing::field::Empty;

/// The JSON-RPC error code of a store that cannot be reached (as budgets' refusals, a
/// server-defined code the client may retry on).
const STORE_UNAVAILABLE: i64 = -32001;

/// Why a request has no session to be served in.
#[derive(Debug)]
pub enum Missing {
    /// 400: it names none.
    NoId,
    /// 404: it names one that is unknown or ended, so the client starts a new one.
    Unknown,
    /// 421: another node holds it; the gateway sends the request there.
    Moved(Fence),
    /// 503: the node holds as many sessions as it may.
    Full,
    /// 503: the store cannot be reached; the request may be retried.
    Unavailable(String),
}

impl From<StoreError> for Missing {
    fn from(e: StoreError) -> Missing {
        match e {
            StoreError::Fenced { owner, epoch } => Missing::Moved(Fence::new(owner, epoch)),
            StoreError::Gone => Missing::Unknown,
            StoreError::Unavailable(why) | StoreError::Corrupt(why) | StoreError::Config(why) => {
                Missing::Unavailable(why)
            }
        }
    }
}

impl Missing {
    pub fn reply(self, node: &NodeState, id: Option<&RequestId>) -> Response {
        match self {
            Missing::NoId => {
                reply::refuse(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header")
            }
            Missing::Unknown => reply::refuse(StatusCode::NOT_FOUND, "session not found"),
            Missing::Moved(held) => {
                tracing::debug!(owner = %held.owner, epoch = held.epoch, "session held elsewhere");
                let mut resp = reply::refuse(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!(
                        "node {} no longer holds this session (held at epoch {})",
                        node.id, held.epoch
                    ),
                );
                resp.headers_mut().insert(
                    shardgate_protocol::internal::EPOCH,
                    HeaderValue::from(node.ring().epoch()),
                );
                resp
            }
            Missing::Full => node.budgets.sessions_exhausted().reply(id),
            Missing::Unavailable(why) => store_unavailable(id, &why),
        }
    }
}

/// What the client is told when the store cannot take or give what its request needs.
const UNSTORED: &str = "the session store is unavailable; the request may be retried";

/// The JSON-RPC error for a request whose effect could not be stored (`store` names why, for
/// the log only).
pub fn unstored(store: &StoreError) -> RpcError {
    tracing::warn!(error = %store, "session store unavailable");
    RpcError::new(STORE_UNAVAILABLE, UNSTORED)
}

/// Whether `err` is [`unstored`]'s.
pub fn is_unstored(err: &RpcError) -> bool {
    err.code == STORE_UNAVAILABLE && err.message == UNSTORED
}

/// 503 with a JSON-RPC error: the store cannot take or give what this request needs now.
pub fn store_unavailable(id: Option<&RequestId>, why: &str) -> Response {
    tracing::warn!(error = why, "session store unavailable");
    let err = RpcError::new(STORE_UNAVAILABLE, UNSTORED);
    let mut resp = reply::rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, &err);
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// How long a takeover waits for the session's holder to hand it over: the holder's grace for
/// the calls in flight, and a little more.
pub const RELEASE_WAIT: Duration = Duration::from_secs(LET_GO_GRACE.as_secs() + 2);

/// The session, if this node holds it: served here, or, while it is being handed to another
/// node, sent there.
fn held(node: &NodeState, id: &str) -> Option<Result<Arc<Session>, Missing>> {
    let s = node.sessions.get(id)?;
    if s.is_leaving() {
        let here = Fence::new(node.id.to_string(), node.ring().epoch());
        return Some(Err(Missing::Moved(here)));
    }
    // Ended here just now (passivated): looked up again, from the store.
    s.touch().then_some(Ok(s))
}

/// A planned move (a drain, a join): the node that holds the session (or a stateless-era key's
/// record) is alive. It is asked to hand it over first, so that the calls it is serving finish and are stored before
/// this node's claim fences it off. A holder that is `Down`, gone, or does not answer in time
/// is not waited for: the claim fences it.
pub(crate) async fn ask_holder_to_release(
    node: &NodeState,
    durable: &Durable,
    id: &str,
    ring: &Ring,
) {
    let Some(peers) = &node.peers else {
        return;
    };
    let Ok(Some((_, holder))) = durable.store.load(id).await else {
        return;
    };
    if holder.owner == node.id.0 {
        return;
    }
    let Some(member) = ring
        .membership()
        .member(&NodeId(holder.owner.clone()))
        .filter(|m| m.state != MemberState::Down)
    else {
        return;
    };
    let release = internal::Release {
        session: id.to_owned(),
        owner: node.id.to_string(),
        epoch: ring.epoch(),
    };
    let Ok(body) = serde_json::to_vec(&release) else {
        return;
    };
    let asked = peers
        .call(
            Method::POST,
            &member.addr,
            internal::RELEASE_PATH,
            body,
            RELEASE_WAIT,
        )
        .await;
    if let Err(e) = asked {
        tracing::debug!(holder = %holder.owner, error = %e, "the holder did not hand the session over; claiming it");
    }
}

/// The session `id` names: held here, or taken over from the store.
pub async fn find(node: &NodeState, id: &str) -> Result<Arc<Session>, Missing> {
    match held(node, id) {
        Some(Ok(s)) if s.is_doubted() => {
            if let Some(confirmed) = confirm(node, s).await {
                return confirmed;
            }
        }
        Some(found) => return found,
        None => {}
    }
    let Some(durable) = &node.durable else {
        return Err(Missing::Unknown);
    };
    let span = shardgate_protocol::exported_span!(
        "node.takeover",
        shardgate.outcome = Empty,
        shardgate.interrupted = Empty,
    );
    let found = take_over(node, durable, id).instrument(span.clone()).await;
    span.record("shardgate.outcome", outcome(&found));
    found
}

/// A held session this node doubts ([`Session::doubt`]): served if the store still names
/// this node's claim; dropped from memory if another node claimed it since (then none: the
/// caller takes it over afresh, with what that node stored). Without a store nothing can have
/// claimed it.
async fn confirm(node: &NodeState, s: Arc<Session>) -> Option<Result<Arc<Session>, Missing>> {
    let (Some(durable), Some(link)) = (&node.durable, s.link()) else {
        s.confirmed();
        return Some(Ok(s));
    };
    match durable.store.load(&s.id).await {
        Ok(Some((_, holder))) if holder != *link.fence() => {
            tracing::info!(
                session = %s.id,
                holder = %holder.owner,
                epoch = holder.epoch,
                "a session held here was claimed by another node since: taking it over afresh"
            );
            if node.end_session(&s.id) {
                METRICS.sessions_ended(Ended::Lost, 1);
            }
            None
        }
        Ok(_) => {
            s.confirmed();
            Some(Ok(s))
        }
        Err(e) => Some(Err(Missing::from(e))),
    }
}

/// What a takeover came to, as a trace attribute.
fn outcome(found: &Result<Arc<Session>, Missing>) -> &'static str {
    match found {
        Ok(_) => "held",
        Err(Missing::NoId) => "no_id",
        Err(Missing::Unknown) => "unknown",
        Err(Missing::Moved(_)) => "moved",
        Err(Missing::Full) => "full",
        Err(Missing::Unavailable(_)) => "unavailable",
    }
}

/// Claims the session `id` from the store and rebuilds it here, one takeover per session at a
/// time (the second finds the first's).
async fn take_over(node: &NodeState, durable: &Durable, id: &str) -> Result<Arc<Session>, Missing> {
    let _one_at_a_time = durable.takeover_lock(id).await;
    if let Some(s) = held(node, id) {
        return s;
    }
    let started = std::time::Instant::now();
    // What this node wrote while it held the session before is in the store first, so the
    // streams continue after it.
    durable.flushed().await;
    // Ownership was checked when the request came in; the view may have moved on since. The
    // claim is made under the view in which this node owns the session, or not at all.
    let ring = node.ring();
    if !ring.owns(&node.id, id.as_bytes()) {
        return Err(Missing::Moved(Fence::new(
            node.id.to_string(),
            ring.epoch(),
        )));
    }
    ask_holder_to_release(node, durable, id, &ring).await;
    let fence = Fence::new(node.id.to_string(), ring.epoch());
    let claimed = durable.store.claim(id, &fence).await?;
    let Some(record) = claimed.record else {
        // Never saved: nothing to continue. The claim just made goes again.
        if let Err(e) = durable.store.delete(id, &fence).await {
            tracing::debug!(error = %e, "could not undo the claim of an unknown session");
        }
        return Err(Missing::Unknown);
    };
    let interrupted = record.in_flight.clone();
    let session = Arc::new(Session::continued(
        record,
        &claimed.tails,
        &node.budgets,
        durable.link(id, fence),
    ));
    for request in &interrupted {
        if answered(&*durable.store, id, request).await? {
            continue;
        }
        let (Some(stream), Ok(request_id)) = (
            session.stream(request.stream),
            serde_json::from_str::<Value>(&request.request_id),
        ) else {
            continue;
        };
        let err = RpcError::new(mcp::code::INTERNAL_ERROR, mcp::INTERRUPTED)
            .with_data(serde_json::json!({ "reason": "failover" }));
        let answer = mcp::answer(Some(&RequestId::new(request_id)), Err(&err));
        stream.push(answer.into());
    }
    session.persist().await?;
    if !node.sessions.insert(session.clone()) {
        session.end();
        return Err(Missing::Full);
    }
    crate::durable::Counts::add(&durable.counts.takeovers, 1);
    tracing::Span::current().record("shardgate.interrupted", interrupted.len());
    crate::metrics::METRICS
        .takeover_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        interrupted = interrupted.len(),
        "took over a session from the store"
    );
    tracing::debug!(session = %id, "session taken over");
    Ok(session)
}

/// Whether the stream of a request the record lists as in flight holds its answer already (the
/// old owner wrote the answer and died before the record said so).
async fn answered(
    store: &dyn SessionStore,
    session: &str,
    request: &InFlightRecord,
) -> Result<bool, StoreError> {
    let Ok(id) = serde_json::from_str::<Value>(&request.request_id) else {
        return Ok(false);
    };
    let replay = store.events(session, request.stream, 0).await?;
    Ok(replay.events.iter().any(|e| {
        serde_json::from_str::<Value>(&e.data).is_ok_and(|msg| {
            msg.get("id") == Some(&id)
                && (msg.get("result").is_some() || msg.get("error").is_some())
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budgets;
    use crate::config::Limits;
    use crate::durable::Ack;
    use crate::session::Opening;
    use crate::upstream::UpstreamState;
    use crate::upstream::builtin::Builtin;
    use shardgate_raft::{Member, Membership};
    use shardgate_store::sqlite::SqliteStore;
    use shardgate_store::{Changes, RawJson, StoredEvent};

    /// A view in which `node-0` owns every key.
    fn alone(epoch: u64) -> Membership {
        Membership {
            cluster: None,
            ring: Default::default(),
            epoch,
            members: vec![Member {
                id: NodeId("node-0".into()),
                addr: "h0:1".into(),
                session_addr: "h0:2".into(),
                state: MemberState::Active,
                weight: 1,
            }],
        }
    }

    #[tokio::test]
    async fn a_doubted_session_that_another_node_claimed_is_taken_over_afresh() {
        let store: Arc<dyn SessionStore> = Arc::new(
            SqliteStore::memory(Duration::from_secs(300))
                .await
                .expect("store"),
        );
        let (lost, _lost) = tokio::sync::mpsc::unbounded_channel();
        let durable = Arc::new(Durable::start(store.clone(), Ack::Store, 100, lost));
        let budgets = Arc::new(Budgets::new(&Limits::default()));
        let node = NodeState::new(
            NodeId("node-0".into()),
            alone(1),
            None,
            Arc::new(Builtin::new([0; 32])),
            budgets.clone(),
            Some(durable.clone()),
        );
        // Held here, claimed under epoch 1.
        let fence = Fence::new("node-0", 1);
        store.claim("s", &fence).await.expect("claimed");
        let opening = Opening {
            id: "s".into(),
            principal: internal::ANONYMOUS.into(),
            protocol_version: "2025-11-25".into(),
            initialize_params: RawJson::new(&serde_json::json!({"capabilities": {}})),
            upstream_state: UpstreamState::default(),
            counted: None,
        };
        let stale = Arc::new(Session::new(
            opening,
            &budgets,
            Some(durable.link("s", fence)),
        ));
        stale.persist().await.expect("saved");
        assert!(node.sessions.insert(stale.clone()));
        // In views this node never saw, node-1 owned the session, claimed it and answered a
        // call on stream 5.
        let theirs = Fence::new("node-1", 2);
        let claimed = store.claim("s", &theirs).await.expect("taken");
        let mut record = claimed.record.expect("a record");
        record.next_stream = 6;
        let events = [StoredEvent {
            stream: 5,
            seq: 1,
            data: "{}".into(),
        }];
        let changes = Changes {
            record: Some(&record),
            events: &events,
            keep: 100,
            forget: &[],
        };
        store.write("s", &theirs, changes).await.expect("written");
        // The view this node adopts next gives it the key again.
        assert!(node.adopt(alone(3)));
        let found = find(&node, "s").await.expect("held");
        assert!(
            Arc::ptr_eq(&found, &stale),
            "undoubted, the copy in memory is served"
        );
        assert!(found.stream(5).is_none(), "and it does not know stream 5");

        node.doubt_held_sessions();
        let found = find(&node, "s").await.expect("taken over");
        assert!(!Arc::ptr_eq(&found, &stale), "the stale copy went");
        assert!(
            found.stream(5).is_some(),
            "the stream node-1 served is there"
        );
        let (_, holder) = store.load("s").await.expect("loaded").expect("a record");
        assert_eq!(holder, Fence::new("node-0", 3));

        // A doubt the store answers with this node's own claim costs nothing more.
        found.doubt();
        let again = find(&node, "s").await.expect("confirmed");
        assert!(Arc::ptr_eq(&again, &found));
        assert!(!again.is_doubted());
    }
}
