//! What a node tells its operators, on the internal listener (authenticated: session ids and
//! principals are for members of the cluster's trust domain only):
//! - [`internal::REPORT_PATH`]: what the node holds and where it stands (Raft, its ring, its
//!   store), for `shardgate status` and the gateway's status page;
//! - [`internal::SESSIONS_PATH`]: the sessions it holds, or one of them with its streams, for
//!   `shardgate sessions`.
//!
//! Everything here is read from what the node keeps anyway (a session keeps only its start time
//! for it): a report costs a lock per session, and the request path does nothing for reports.

use crate::StoreOptions;
use crate::config::NodeFile;
use crate::session::{Session, unix_now};
use crate::state::NodeState;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value};
use shardgate_protocol::internal::{
    self, NodeReport, RaftReport, SessionDetail, SessionList, SessionSummary, StoreReport,
    StreamReport,
};
use shardgate_protocol::reply;
use std::sync::Arc;

/// What the node was started with that its reports name.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The configured upstreams' names, in order; `builtin` when none is configured.
    pub upstreams: Vec<String>,
    /// The kind of its session store; `None` when sessions are kept in memory only.
    pub store: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            upstreams: vec![BUILTIN.to_owned()],
            store: None,
        }
    }
}

/// The name of the upstream a node serves when none is configured.
const BUILTIN: &str = "builtin";

/// Where a federation keeps its members' state in a session's `UpstreamState`
/// (`upstream/federation/state.rs`): `federation.members.<name>`.
const FEDERATION: &str = "federation";
const FEDERATION_MEMBERS: &str = "members";

impl Setup {
    pub fn new(file: &NodeFile, store: Option<&StoreOptions>) -> Setup {
        let mut upstreams: Vec<String> = file.upstreams.iter().map(|u| u.name.clone()).collect();
        if upstreams.is_empty() {
            upstreams.push(BUILTIN.to_owned());
        }
        Setup {
            upstreams,
            store: store.map(|s| store_kind(&s.url, s.durable.is_some())),
        }
    }
}

/// The kind of store a URL names, by its scheme alone: the rest of a store URL may carry a
/// password, and a path or host says nothing an operator needs here.
pub fn store_kind(url: &str, durable: bool) -> &'static str {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match (scheme.to_ascii_lowercase().as_str(), durable) {
        ("sqlite", _) if url.ends_with(":memory:") => "sqlite in memory",
        ("sqlite", _) => "sqlite",
        ("redis" | "rediss", false) => "redis cluster",
        ("redis" | "rediss", true) => "redis cluster, postgres behind it",
        ("postgres" | "postgresql", _) => "postgres",
        _ => "unknown",
    }
}

/// `GET REPORT_PATH`.
pub async fn node(State(node): State<Arc<NodeState>>) -> Json<NodeReport> {
    let raft = node.consensus.as_ref().map(|c| {
        let status = c.status();
        RaftReport {
            role: c.role(),
            term: status.term,
            leader: status.leader,
        }
    });
    let store = node
        .setup
        .store
        .zip(node.durable.as_ref())
        .map(|(kind, d)| StoreReport {
            kind: kind.to_owned(),
            healthy: d.healthy(),
        });
    Json(NodeReport {
        id: node.id.clone(),
        sessions: node.sessions.len(),
        stateless_calls: node.affinity.served(),
        epoch: node.ring().epoch(),
        serving: node.serving(),
        raft,
        store,
    })
}

#[derive(serde::Deserialize)]
pub struct SessionsQuery {
    id: Option<String>,
    limit: Option<usize>,
}

/// `GET SESSIONS_PATH`: the list, or with `id` one session in detail.
pub async fn sessions(
    State(node): State<Arc<NodeState>>,
    Query(q): Query<SessionsQuery>,
) -> Response {
    let now = unix_now();
    if let Some(id) = q.id {
        let Some(session) = node.sessions.get(&id) else {
            return reply::refuse(
                StatusCode::NOT_FOUND,
                &format!("node {} holds no session with this id", node.id),
            );
        };
        return Json(detail(&node, &session, now)).into_response();
    }
    let mut all: Vec<(std::time::Duration, Arc<Session>)> = node
        .sessions
        .all()
        .into_iter()
        .map(|s| (s.idle_for(), s))
        .collect();
    let total = all.len();
    all.sort_by_key(|(idle, _)| *idle);
    all.truncate(q.limit.unwrap_or(internal::SESSIONS_LIMIT));
    let sessions = all
        .iter()
        .map(|(idle, s)| summary(&node.setup, s, now, idle.as_secs()))
        .collect();
    Json(SessionList {
        node: node.id.clone(),
        total,
        sessions,
    })
    .into_response()
}

fn summary(setup: &Setup, s: &Session, now: u64, idle_secs: u64) -> SessionSummary {
    SessionSummary {
        id: s.id.clone(),
        protocol_version: s.protocol_version.to_string(),
        principal: s.principal.to_string(),
        upstreams: s
            .upstream_state
            .read(|state| holders(&setup.upstreams, state)),
        held_since: s.held_since(),
        last_active: now.saturating_sub(idle_secs),
    }
}

fn detail(node: &NodeState, s: &Session, now: u64) -> SessionDetail {
    let streams = s
        .streams()
        .iter()
        .map(|stream| StreamReport {
            id: stream.id(),
            last_event_id: stream.last_event_id().to_string(),
            finished: stream.is_finished(),
            listening: stream.has_listener(),
            replay_bytes: stream.log_bytes(),
        })
        .collect();
    SessionDetail {
        node: node.id.clone(),
        session: summary(&node.setup, s, now, s.idle_for().as_secs()),
        requests_in_flight: s.requests_in_flight(),
        pending_client_requests: s.pending_requests(),
        leaving: s.is_leaving(),
        streams,
    }
}

/// The upstreams (of `upstreams`, the configured ones) that keep state for a session whose
/// `UpstreamState` is `state`. A single upstream owns the whole state; a federation keeps
/// each member's under its name, and a member that has nothing there holds nothing.
fn holders(upstreams: &[String], state: &Map<String, Value>) -> Vec<String> {
    let [only] = upstreams else {
        let members = state
            .get(FEDERATION)
            .and_then(|f| f.get(FEDERATION_MEMBERS))
            .and_then(Value::as_object);
        let holds = |name: &&String| {
            members
                .and_then(|m| m.get(name.as_str()))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        };
        return upstreams.iter().filter(holds).cloned().collect();
    };
    if state.is_empty() {
        Vec::new()
    } else {
        vec![only.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_single_upstream_holds_whatever_state_there_is() {
        let one = names(&["builtin"]);
        assert!(holders(&one, &Map::new()).is_empty());
        assert_eq!(holders(&one, &map(json!({"counter": 2}))), one);
    }

    #[test]
    fn federated_members_hold_their_own_slices() {
        let three = names(&["ev", "files", "calc"]);
        let state = map(json!({"federation": {
            "members": {"calc": {"counter": 1}, "ev": {}, "gone": {"x": 1}},
            "resources": {"file:///a": "files"},
        }}));
        assert_eq!(holders(&three, &state), names(&["calc"]));
        assert!(holders(&three, &Map::new()).is_empty());
    }

    #[test]
    fn a_store_is_named_by_its_kind_never_its_url() {
        let cases = [
            ("sqlite:/var/lib/sg/sessions.db", false, "sqlite"),
            ("sqlite::memory:", false, "sqlite in memory"),
            ("redis://a:1,b:2", false, "redis cluster"),
            (
                "rediss://u:pw@a:1",
                true,
                "redis cluster, postgres behind it",
            ),
            ("postgres://u:secret@db/sg", false, "postgres"),
            ("POSTGRESQL://db/sg", false, "postgres"),
            ("u:secret@db", false, "unknown"),
        ];
        for (url, durable, kind) in cases {
            assert_eq!(store_kind(url, durable), kind, "{url}");
        }
    }
}
