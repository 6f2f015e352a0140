//! Starting a node, StatefulSet style: ordinal 0 founds the cluster on an empty volume, and every
//! node (a founder included) then asks to join until the leader has it as an `Active` member.
//!
//! Joining again after a restart is harmless: the leader skips the Raft steps for a node it
//! already has, and the `Join` command is a no-op unless the node was `Down` or moved.

use super::Shared;
use super::error::ConsensusError;
use super::rpc::{self, JoinRequest, ProbeReply, ProbeRequest};
use crate::Membership;
use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Founds a single-voter cluster if this is ordinal 0 on an empty data dir.
///
/// If a seed already belongs to a cluster, ordinal 0 lost its volume while the others kept
/// theirs: founding a second cluster would split the brain, so it joins the existing one.
pub(crate) async fn found_if_first(shared: &Shared, pristine: bool) -> Result<(), ConsensusError> {
    if shared.nid != 0 || !pristine {
        return Ok(());
    }
    if cluster_exists(shared).await {
        tracing::warn!("empty data dir but a seed is in a cluster: joining it instead of founding");
        return Ok(());
    }
    let founders = BTreeMap::from([(shared.nid, BasicNode::new(&shared.config.addr))]);
    match shared.raft.initialize(founders).await {
        Ok(()) => {
            tracing::info!(id = %shared.id, "founded a new cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(ConsensusError::Failed(e.to_string())),
    }
}

async fn cluster_exists(shared: &Shared) -> bool {
    let req = ProbeRequest {
        from: shared.id.clone(),
    };
    let deadline = shared.config.timing.election_max;
    for seed in other_seeds(shared) {
        let reply: Result<ProbeReply, _> =
            rpc::call(&*shared.transport, seed, rpc::PROBE, &req, deadline).await;
        if reply.is_ok_and(|r| r.in_cluster) {
            return true;
        }
    }
    false
}

/// Asks to join until it works; runs in the background from start until `leave`.
pub(crate) async fn join_loop(shared: Arc<Shared>) {
    let req = JoinRequest {
        id: shared.id.clone(),
        addr: shared.config.addr.clone(),
        session_addr: shared.config.session_addr.clone(),
        weight: shared.config.weight,
        forwarded: false,
    };
    loop {
        match join_once(&shared, &req).await {
            Ok(m) => {
                tracing::info!(id = %shared.id, epoch = m.epoch, "joined the cluster");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "join attempt failed, retrying"),
        }
        tokio::time::sleep(shared.config.timing.election_max).await;
    }
}

/// Through this node's own leader hint first (a restarted member learns it from the first
/// heartbeat), then through each seed, which forwards to the leader it knows.
async fn join_once(shared: &Shared, req: &JoinRequest) -> Result<Membership, ConsensusError> {
    let mut result = shared.join(req.clone()).await;
    for seed in other_seeds(shared) {
        if result.is_ok() {
            break;
        }
        let deadline = shared.config.timing.admin_timeout();
        result = rpc::call(&*shared.transport, seed, rpc::JOIN, req, deadline).await;
    }
    result
}

fn other_seeds(shared: &Shared) -> impl Iterator<Item = &String> {
    shared
        .config
        .seeds
        .iter()
        .filter(|s| **s != shared.config.addr)
}
