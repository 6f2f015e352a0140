//! Membership changes: routing a request to the leader, and what the leader does for a join, a
//! leave and a state change, including keeping Raft's voters on the lowest ordinals.
//!
//! Raft's own membership (voters and learners, with their addresses) follows the cluster
//! [`Membership`]: a joining node is added as a learner and caught up before its `Join` is
//! applied; voters are the lowest `voters` ordinals among the members; nodes that are no longer
//! members are removed. [`plan`] decides, the leader executes, one change at a time.

use super::Shared;
use super::command::Command;
use super::error::ConsensusError;
use super::rpc::{self, JoinRequest, LeaveRequest, ProposeRequest};
use super::types::ordinal;
use crate::{Membership, NodeId, RingScheme};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

type WriteError = RaftError<u64, ClientWriteError<u64, BasicNode>>;
type RaftMembership = openraft::Membership<u64, BasicNode>;

/// Where a request that only the leader can carry out goes.
enum Route {
    Local,
    Leader(String),
    Unknown,
}

/// What to change in Raft's membership so that it matches the cluster membership.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The new voter set, when it differs from the current one.
    pub voters: Option<BTreeSet<u64>>,
    /// Raft nodes that are no longer members (and not voters once `voters` is applied).
    pub remove: BTreeSet<u64>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.voters.is_none() && self.remove.is_empty()
    }
}

/// Voters are the `cap` lowest ordinals among members that Raft already knows; members that left
/// are no longer in `membership`, so they drop out, and the next ordinal takes their place.
pub(crate) fn plan(
    membership: &Membership,
    voters: &BTreeSet<u64>,
    nodes: &BTreeSet<u64>,
    cap: usize,
) -> Plan {
    let members: BTreeSet<u64> = membership
        .members
        .iter()
        .filter_map(|m| ordinal(&m.id))
        .collect();
    let desired: BTreeSet<u64> = members.intersection(nodes).copied().take(cap).collect();
    // An empty voter set is not a Raft group; the last member leaving keeps its vote.
    let new_voters = (!desired.is_empty() && desired != *voters).then_some(desired);
    let final_voters = new_voters.as_ref().unwrap_or(voters);
    let remove = nodes
        .iter()
        .filter(|n| !members.contains(n) && !final_voters.contains(n))
        .copied()
        .collect();
    Plan {
        voters: new_voters,
        remove,
    }
}

impl Shared {
    fn route(&self) -> Route {
        let m = self.metrics.borrow();
        match m.current_leader {
            Some(l) if l == self.nid && m.state == ServerState::Leader => Route::Local,
            Some(l) if l != self.nid => match m.membership_config.membership().get_node(&l) {
                Some(node) => Route::Leader(node.addr.clone()),
                None => Route::Unknown,
            },
            _ => Route::Unknown,
        }
    }

    /// Passes a request on to the leader on behalf of `origin`, the cluster id of whoever sent
    /// it.
    async fn forward<Req: Serialize>(
        &self,
        addr: &str,
        name: &str,
        req: &Req,
        origin: Option<&str>,
    ) -> Result<Membership, ConsensusError> {
        let deadline = self.config.timing.admin_timeout();
        rpc::call(&*self.transport, origin, addr, name, req, deadline).await
    }

    /// `origin` is the joining node's cluster id, as its envelope named it (`None` for a
    /// pristine node); the leader judges it, so a follower passes it on unchanged.
    pub(crate) async fn join(
        &self,
        req: JoinRequest,
        origin: Option<&str>,
    ) -> Result<Membership, ConsensusError> {
        match self.route() {
            Route::Local => self.leader_join(&req).await,
            Route::Leader(addr) if !req.forwarded => {
                let req = JoinRequest {
                    forwarded: true,
                    ..req
                };
                self.forward(&addr, rpc::JOIN, &req, origin).await
            }
            _ => Err(ConsensusError::NoLeader),
        }
    }

    pub(crate) async fn leave(&self, req: LeaveRequest) -> Result<Membership, ConsensusError> {
        match self.route() {
            Route::Local => self.leader_leave(&req.id).await,
            Route::Leader(addr) if !req.forwarded => {
                let req = LeaveRequest {
                    forwarded: true,
                    ..req
                };
                self.forward(&addr, rpc::LEAVE, &req, self.cluster.get())
                    .await
            }
            _ => Err(ConsensusError::NoLeader),
        }
    }

    pub(crate) async fn set_state(
        &self,
        req: ProposeRequest,
    ) -> Result<Membership, ConsensusError> {
        match self.route() {
            Route::Local => {
                if self.membership().member(&req.id).is_none() {
                    return Err(ConsensusError::UnknownMember(req.id));
                }
                let command = Command::SetState {
                    id: req.id,
                    state: req.state,
                };
                self.commit(command).await
            }
            Route::Leader(addr) if !req.forwarded => {
                let req = ProposeRequest {
                    forwarded: true,
                    ..req
                };
                self.forward(&addr, rpc::PROPOSE, &req, self.cluster.get())
                    .await
            }
            _ => Err(ConsensusError::NoLeader),
        }
    }

    /// Retries `op` while it fails for a passing reason (an election, a change in progress), up
    /// to the admin timeout; what callers of the public API want.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, ConsensusError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ConsensusError>>,
    {
        let timing = &self.config.timing;
        let deadline = Instant::now() + timing.admin_timeout();
        loop {
            match op().await {
                Err(e) if e.is_retryable() && Instant::now() + timing.heartbeat < deadline => {
                    tracing::debug!(error = %e, "retrying a membership request");
                    tokio::time::sleep(timing.heartbeat * 2).await;
                }
                done => return done,
            }
        }
    }

    async fn leader_join(&self, req: &JoinRequest) -> Result<Membership, ConsensusError> {
        let nid = ordinal(&req.id).ok_or_else(|| ConsensusError::BadRequest {
            rpc: rpc::JOIN.to_owned(),
            reason: format!("{} is not a node-<ordinal> id", req.id),
        })?;
        let _one_change_at_a_time = self.changes.lock().await;
        // The founder names the cluster before anyone joins, itself included, so that every
        // view with members carries the id. A cluster founded before ids existed has none to
        // commit, and goes on without.
        if self.membership().cluster.is_none()
            && let Some(cluster) = self.cluster.get()
        {
            let cluster = cluster.to_owned();
            self.commit(Command::Found {
                cluster,
                ring: RingScheme::Rendezvous,
            })
            .await?;
        }
        // Voters are derived from the members, so the leader must be one before anyone else
        // joins: the founder's own join may still be in its retry loop.
        let leader_missing = self.membership().member(&self.id).is_none();
        if req.id != self.id && leader_missing && !self.leaving.load(Ordering::Relaxed) {
            self.commit(Command::Join {
                id: self.id.clone(),
                addr: self.config.addr.clone(),
                session_addr: self.config.session_addr.clone(),
                weight: self.config.weight,
            })
            .await?;
        }
        let node = BasicNode::new(&req.addr);
        let known = self.raft_membership().await?.get_node(&nid).cloned();
        match known {
            None => {
                tracing::info!(id = %req.id, addr = %req.addr, "adding a learner");
                // Blocks until the learner has caught up, so a member is never `Active` in the
                // ring before it holds the log.
                let adding = self.raft.add_learner(nid, node, true);
                self.within("adding a learner", adding).await?;
            }
            Some(old) if old.addr != req.addr => {
                tracing::info!(id = %req.id, addr = %req.addr, "updating a node's address");
                let nodes = BTreeMap::from([(nid, node)]);
                self.change_membership(ChangeMembers::SetNodes(nodes))
                    .await?;
            }
            Some(_) => {}
        }
        self.commit(Command::Join {
            id: req.id.clone(),
            addr: req.addr.clone(),
            session_addr: req.session_addr.clone(),
            weight: req.weight,
        })
        .await?;
        self.reconcile_locked().await?;
        Ok(self.membership())
    }

    async fn leader_leave(&self, id: &NodeId) -> Result<Membership, ConsensusError> {
        let _one_change_at_a_time = self.changes.lock().await;
        // The command first: once the Raft change removes a leaving leader, it can no longer
        // commit anything.
        self.commit(Command::Leave { id: id.clone() }).await?;
        self.reconcile_locked().await?;
        Ok(self.membership())
    }

    /// Applies [`plan`] unless another membership change is running (it reconciles at its end).
    pub(crate) async fn reconcile_if_idle(&self) -> Result<(), ConsensusError> {
        match self.changes.try_lock() {
            Ok(_one_change_at_a_time) => self.reconcile_locked().await,
            Err(_) => Ok(()),
        }
    }

    /// Brings Raft's voters and nodes in line with the membership; the caller holds `changes`.
    async fn reconcile_locked(&self) -> Result<(), ConsensusError> {
        let raft = self.raft_membership().await?;
        let voters: BTreeSet<u64> = raft.voter_ids().collect();
        let nodes: BTreeSet<u64> = raft.nodes().map(|(id, _)| *id).collect();
        let plan = plan(&self.membership(), &voters, &nodes, self.config.voters);
        if let Some(voters) = plan.voters {
            tracing::info!(?voters, "changing raft voters");
            let stays = voters.contains(&self.nid);
            self.change_membership(ChangeMembers::ReplaceAllVoters(voters))
                .await?;
            if !stays {
                // This leader voted itself out and is stepping down; openraft takes no further
                // membership change from it. The next leader's reconcile removes it.
                return Ok(());
            }
        }
        if !plan.remove.is_empty() {
            tracing::info!(nodes = ?plan.remove, "removing raft nodes that left");
            self.change_membership(ChangeMembers::RemoveNodes(plan.remove))
                .await?;
        }
        Ok(())
    }

    /// The Raft membership as the leader's core sees it (metrics may lag behind a change).
    async fn raft_membership(&self) -> Result<RaftMembership, ConsensusError> {
        self.raft
            .with_raft_state(|st| st.membership_state.effective().membership().clone())
            .await
            .map_err(|e| ConsensusError::Failed(e.to_string()))
    }

    /// Commits `command` and returns the membership it produced.
    pub(crate) async fn commit(&self, command: Command) -> Result<Membership, ConsensusError> {
        let write = self.raft.client_write(command);
        Ok(self.within("committing a command", write).await?.data)
    }

    async fn change_membership(
        &self,
        changes: ChangeMembers<u64, BasicNode>,
    ) -> Result<(), ConsensusError> {
        // `retain`: voters dropped by a `ReplaceAllVoters` stay learners until `plan` removes
        // them, so a member demoted because a lower ordinal joined keeps replicating.
        let change = self.raft.change_membership(changes, true);
        self.within("changing raft membership", change).await?;
        Ok(())
    }

    /// Bounds a leader-side write: openraft waits forever when the leader has lost its quorum.
    async fn within<T>(
        &self,
        what: &str,
        write: impl Future<Output = Result<T, WriteError>>,
    ) -> Result<T, ConsensusError> {
        match tokio::time::timeout(self.config.timing.admin_timeout(), write).await {
            Ok(result) => result.map_err(write_error),
            Err(_) => Err(ConsensusError::Unavailable(format!("{what} timed out"))),
        }
    }
}

fn write_error(e: WriteError) -> ConsensusError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ConsensusError::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(e),
        )) => ConsensusError::Unavailable(e.to_string()),
        other => ConsensusError::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Member, MemberState};

    fn membership(ordinals: &[u64]) -> Membership {
        Membership {
            cluster: None,
            ring: Default::default(),
            epoch: 1,
            members: ordinals
                .iter()
                .map(|n| Member {
                    id: super::super::types::node_id(*n),
                    addr: format!("h{n}:1"),
                    session_addr: format!("h{n}:2"),
                    state: MemberState::Active,
                    weight: 1,
                })
                .collect(),
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn joiners_become_voters_up_to_the_cap() {
        let p = plan(&membership(&[0, 1]), &set(&[0]), &set(&[0, 1]), 3);
        assert_eq!(p.voters, Some(set(&[0, 1])));
        let p = plan(
            &membership(&[0, 1, 2, 3]),
            &set(&[0, 1, 2]),
            &set(&[0, 1, 2, 3]),
            3,
        );
        assert!(p.is_empty(), "the fourth member stays a learner: {p:?}");
    }

    #[test]
    fn a_leaving_voter_is_replaced_by_the_next_ordinal_and_removed() {
        let p = plan(
            &membership(&[0, 2, 3]),
            &set(&[0, 1, 2]),
            &set(&[0, 1, 2, 3]),
            3,
        );
        assert_eq!(p.voters, Some(set(&[0, 2, 3])));
        assert_eq!(p.remove, set(&[1]));
    }

    #[test]
    fn a_leaving_learner_is_removed_without_touching_voters() {
        let p = plan(
            &membership(&[0, 1, 2]),
            &set(&[0, 1, 2]),
            &set(&[0, 1, 2, 4]),
            3,
        );
        assert_eq!(
            p,
            Plan {
                voters: None,
                remove: set(&[4])
            }
        );
    }

    #[test]
    fn a_lower_ordinal_rejoining_demotes_the_highest_voter_to_learner() {
        let p = plan(
            &membership(&[0, 1, 2, 3]),
            &set(&[0, 2, 3]),
            &set(&[0, 1, 2, 3]),
            3,
        );
        assert_eq!(
            p,
            Plan {
                voters: Some(set(&[0, 1, 2])),
                remove: set(&[])
            }
        );
    }

    #[test]
    fn members_raft_does_not_know_yet_are_not_promoted() {
        let p = plan(&membership(&[0, 1]), &set(&[0]), &set(&[0]), 3);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn the_founder_before_its_own_join_and_the_last_member_leaving_keep_their_vote() {
        assert!(plan(&membership(&[]), &set(&[0]), &set(&[0]), 3).is_empty());
        let p = plan(&membership(&[]), &set(&[2]), &set(&[2]), 3);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_learner_mid_join_is_removed_only_when_not_a_member() {
        // Between `add_learner` and the `Join` commit the leader holds the change lock, so a
        // plan never sees this state; if a join failed half-way, the learner is cleaned up.
        let p = plan(&membership(&[0]), &set(&[0]), &set(&[0, 5]), 3);
        assert_eq!(p.remove, set(&[5]));
    }
}
