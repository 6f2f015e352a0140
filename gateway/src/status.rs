//! The status page on the admin listener: `/` is a self-contained HTML page (`status.html`,
//! inline CSS and script, nothing fetched from elsewhere) that reads `/status.json` every 2 s.
//!
//! `/status.json` is this gateway's view (members, states, weights, each member's share of the
//! ring, the epoch) beside what each member reports of itself over the authenticated internal
//! hop (`REPORT_PATH`: sessions, Raft role, term and leader, store). A member that does not
//! answer in time is shown with its state from the view and why it did not answer. The admin
//! listener takes no credentials, so nothing here names a session or a principal: the reports
//! carry counts only.

use crate::Gateway;
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::header;
use serde::Serialize;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::internal::{self, NodeReport};
use shardgate_raft::{MemberState, NodeId, Ring, RingScheme};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The page: the HTML, its style and its script in one file.
const PAGE: &str = include_str!("status.html");
/// How long a member gets to answer for its report; the page asks again 2 s later.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys sampled to measure each member's share of the ring: a standard error of 0.2 % for a
/// share of a third, measured once per epoch (a few milliseconds).
const SHARE_SAMPLES: u32 = 65_536;
/// What the page may do: run its own inline script and style, and fetch from this listener.
const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

pub struct StatusPage {
    gw: Arc<Gateway>,
    nodes: ClusterClient,
    /// The shares of the newest epoch measured: a ring is immutable, so once per epoch will do.
    shares: Mutex<Option<(u64, Arc<[f64]>)>>,
}

/// `/status.json`.
#[derive(Debug, Serialize)]
struct Cluster {
    cluster: Option<String>,
    epoch: u64,
    ring: RingScheme,
    /// Keys the shares were measured over.
    samples: u32,
    /// The leader named under the highest term any member reported.
    leader: Option<NodeId>,
    term: Option<u64>,
    members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize)]
struct MemberStatus {
    id: NodeId,
    state: MemberState,
    weight: u32,
    /// Its share of the ring's keys, 0 to 1.
    share: f64,
    session_addr: String,
    addr: String,
    /// What it says of itself; `None` when it did not answer (`unreachable` says why).
    report: Option<NodeReport>,
    unreachable: Option<String>,
}

pub fn router(gw: Arc<Gateway>, nodes: ClusterClient) -> Router {
    let page = Arc::new(StatusPage {
        gw,
        nodes,
        shares: Mutex::new(None),
    });
    Router::new()
        .route("/", get(page_html))
        .route("/status.json", get(status))
        .with_state(page)
}

async fn page_html() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn status(State(page): State<Arc<StatusPage>>) -> Response {
    let ring = page.gw.ring.current();
    let shares = page.shares(&ring);
    let view = ring.membership();
    let asks = view.members.iter().map(|m| {
        let nodes = &page.nodes;
        async move {
            nodes
                .get_json::<NodeReport>(&m.addr, internal::REPORT_PATH, REPORT_TIMEOUT)
                .await
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let members: Vec<MemberStatus> = view
        .members
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (m, answer))| {
            let (report, unreachable) = match answer {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            MemberStatus {
                id: m.id.clone(),
                state: m.state,
                weight: m.weight,
                share: shares.get(i).copied().unwrap_or(0.0),
                session_addr: m.session_addr.clone(),
                addr: m.addr.clone(),
                report,
                unreachable,
            }
        })
        .collect();
    let (leader, term) = leader_of(&members);
    let cluster = Cluster {
        cluster: view.cluster.clone(),
        epoch: view.epoch,
        ring: view.ring,
        samples: SHARE_SAMPLES,
        leader,
        term,
        members,
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(cluster)).into_response()
}

impl StatusPage {
    /// The members' shares of `ring`, measured once per epoch.
    fn shares(&self, ring: &Ring) -> Arc<[f64]> {
        let mut cached = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cached {
            Some((epoch, shares)) if *epoch == ring.epoch() => shares.clone(),
            _ => {
                let shares: Arc<[f64]> = ring.shares(SHARE_SAMPLES).into();
                *cached = Some((ring.epoch(), shares.clone()));
                shares
            }
        }
    }
}

/// The leader as the members that answered see it: the one named under the highest term
/// (a member that has not heard of the latest election names an older leader, or none).
fn leader_of(members: &[MemberStatus]) -> (Option<NodeId>, Option<u64>) {
    let newest = members
        .iter()
        .filter_map(|m| m.report.as_ref()?.raft.as_ref())
        .max_by_key(|raft| (raft.term, raft.leader.is_some()));
    match newest {
        Some(raft) => (raft.leader.clone(), Some(raft.term)),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_protocol::internal::RaftReport;
    use shardgate_raft::consensus::Role;

    fn member(id: &str, raft: Option<(u64, Option<&str>)>) -> MemberStatus {
        MemberStatus {
            id: NodeId::from(id),
            state: MemberState::Active,
            weight: 1,
            share: 0.5,
            session_addr: String::new(),
            addr: String::new(),
            report: raft.map(|(term, leader)| NodeReport {
                id: NodeId::from(id),
                sessions: 0,
                stateless_calls: 0,
                epoch: 1,
                serving: true,
                raft: Some(RaftReport {
                    role: Role::Follower,
                    term,
                    leader: leader.map(NodeId::from),
                }),
                store: None,
            }),
            unreachable: None,
        }
    }

    #[test]
    fn the_leader_is_the_one_named_under_the_highest_term() {
        let members = [
            member("node-0", Some((4, Some("node-0")))),
            member("node-1", Some((5, Some("node-2")))),
            member("node-2", Some((5, None))),
            member("node-3", None),
        ];
        assert_eq!(leader_of(&members), (Some(NodeId::from("node-2")), Some(5)));
        assert_eq!(leader_of(&members[3..]), (None, None));
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!PAGE.contains(outside), "the page names {outside}");
        }
        assert!(PAGE.contains("/status.json"));
    }
}
