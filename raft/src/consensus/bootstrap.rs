//! Starting a node, StatefulSet style: ordinal 0 founds the cluster on a pristine data dir once
//! it is sure no cluster exists, and every node (a founder included) then asks to join until the
//! leader has it as an `Active` member.
//!
//! Founding is the one step that can split the cluster in two: an ordinal 0 that lost its volume,
//! or starts before its peers answer, must not found a second cluster beside theirs. So it founds
//! only on a pristine data dir (no Raft state, no cluster id) and only when no seed knows a
//! cluster: at once if every other seed answers and is pristine too, otherwise after probing in
//! rounds for `found_wait`, naming the seeds that stayed silent. If any seed is in a cluster, it
//! joins that one instead.
//!
//! A node that holds a cluster id checks its seeds before it starts, and refuses to run when one
//! of them belongs to another cluster (a volume or a seed list from the wrong deployment).
//!
//! Joining again after a restart is harmless: the leader skips the Raft steps for a node it
//! already has, and the `Join` command is a no-op unless the node was `Down` or moved.

use super::cluster;
use super::error::ConsensusError;
use super::rpc::{self, JoinRequest, ProbeReply, ProbeRequest};
use super::transport::Transport;
use super::{ConsensusConfig, Shared};
use crate::{Membership, NodeId};
use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Refuses to start a node whose seeds answer for another cluster than `ours`. One round of
/// probes: a seed that is down or pristine tells nothing, and is not waited for.
pub(crate) async fn check_seeds(
    transport: &Arc<dyn Transport>,
    config: &ConsensusConfig,
    ours: &str,
) -> Result<(), ConsensusError> {
    let seeds = other_seeds(config);
    let deadline = config.timing.election_max;
    let replies = probe_all(transport, &config.id, Some(ours), &seeds, deadline).await;
    for (seed, reply) in seeds.iter().zip(replies) {
        let theirs = reply.and_then(|r| r.cluster);
        if cluster::conflicts(Some(ours), theirs.as_deref()) {
            return Err(cluster::foreign(
                ours,
                theirs.as_deref(),
                &format!("seed {seed}"),
            ));
        }
    }
    Ok(())
}

/// Founds a single-voter cluster if this is ordinal 0 on a pristine data dir and no seed knows a
/// cluster; see the module docs.
pub(crate) async fn found_if_first(
    shared: &Shared,
    raft_pristine: bool,
) -> Result<(), ConsensusError> {
    if shared.nid != 0 || !raft_pristine {
        return Ok(());
    }
    if let Some(cluster) = shared.cluster.get() {
        // The id was kept, then the node stopped before Raft wrote anything. Founding again
        // could start a second cluster under the same id, which no check would catch.
        tracing::warn!(
            cluster,
            "the data dir has a cluster id but no raft state: joining, not founding"
        );
        return Ok(());
    }
    if !wait_for_seeds(shared).await {
        return Ok(());
    }
    // Kept before Raft is initialized, so that a restart never finds this node's Raft state
    // without the id it was founded with.
    let cluster = shared.cluster.found().await?;
    let founders = BTreeMap::from([(shared.nid, BasicNode::new(&shared.config.addr))]);
    match shared.raft.initialize(founders).await {
        Ok(()) => {
            tracing::info!(id = %shared.id, %cluster, "founded a new cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(ConsensusError::Failed(e.to_string())),
    }
}

/// Probes the other seeds in rounds until [`founding`] decides; returns whether to found.
async fn wait_for_seeds(shared: &Shared) -> bool {
    let config = &shared.config;
    let seeds = other_seeds(config);
    let round = config.timing.election_max;
    let started = Instant::now();
    loop {
        let round_started = Instant::now();
        let replies = probe_all(&shared.transport, &shared.id, None, &seeds, round).await;
        let knows: Vec<Option<bool>> = replies
            .iter()
            .map(|r| r.as_ref().map(|r| r.in_cluster || r.cluster.is_some()))
            .collect();
        let silent: Vec<&String> = seeds
            .iter()
            .zip(&knows)
            .filter_map(|(seed, k)| k.is_none().then_some(seed))
            .collect();
        let waited = started.elapsed();
        match founding(&knows, waited, config.found_wait) {
            Founding::Join(i) => {
                let seed = seeds.get(i).map_or("?", String::as_str);
                tracing::warn!(
                    seed,
                    "pristine data dir but a seed is in a cluster: joining it instead of founding"
                );
                return false;
            }
            Founding::Found if silent.is_empty() => {
                tracing::info!(?seeds, "no seed is in a cluster: founding one");
                return true;
            }
            Founding::Found => {
                tracing::warn!(
                    ?silent,
                    ?waited,
                    "no answer from some seeds within found_wait and none of the others is in a \
                     cluster: founding one"
                );
                return true;
            }
            Founding::Wait => {
                tracing::info!(
                    ?silent,
                    ?waited,
                    "waiting for seeds to answer before founding"
                );
            }
        }
        // Rounds every `election_max`, but the last one right at `found_wait`.
        let next = (round_started + round).min(started + config.found_wait);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// What a pristine ordinal 0 does after a round of probes.
#[derive(Debug, PartialEq, Eq)]
enum Founding {
    /// Seed `i` knows a cluster: join it.
    Join(usize),
    Found,
    /// Some seeds are silent and might be in a cluster: probe again.
    Wait,
}

/// The founding rule. `knows[i]` is whether seed `i` answered that it knows a cluster (`None`:
/// no answer). Founding needs every other seed to answer that it knows none, or `found_wait`
/// to pass without any of them knowing one.
fn founding(knows: &[Option<bool>], waited: Duration, found_wait: Duration) -> Founding {
    if let Some(i) = knows.iter().position(|k| *k == Some(true)) {
        Founding::Join(i)
    } else if knows.iter().all(Option::is_some) || waited >= found_wait {
        Founding::Found
    } else {
        Founding::Wait
    }
}

/// Probes `seeds` in parallel on behalf of `cluster`; a reply per seed, `None` for no answer
/// within `deadline`.
async fn probe_all(
    transport: &Arc<dyn Transport>,
    from: &NodeId,
    cluster: Option<&str>,
    seeds: &[String],
    deadline: Duration,
) -> Vec<Option<ProbeReply>> {
    let mut probes = JoinSet::new();
    for (i, seed) in seeds.iter().enumerate() {
        let (transport, seed) = (transport.clone(), seed.clone());
        let cluster = cluster.map(str::to_owned);
        let req = ProbeRequest { from: from.clone() };
        probes.spawn(async move {
            let reply: Result<ProbeReply, _> = rpc::call(
                &*transport,
                cluster.as_deref(),
                &seed,
                rpc::PROBE,
                &req,
                deadline,
            )
            .await;
            (i, reply.ok())
        });
    }
    let mut replies: Vec<Option<ProbeReply>> = seeds.iter().map(|_| None).collect();
    while let Some(done) = probes.join_next().await {
        if let Ok((i, reply)) = done
            && let Some(slot) = replies.get_mut(i)
        {
            *slot = reply;
        }
    }
    replies
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
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "join attempt failed, retrying");
            }
            Err(e) => tracing::warn!(error = %e, "join attempt failed, retrying"),
        }
        tokio::time::sleep(shared.config.timing.election_max).await;
    }
}

/// Through this node's own leader hint first (a restarted member learns it from the first
/// heartbeat), then through each seed, which forwards to the leader it knows. The cluster id in
/// the reply is kept before the join counts as done.
async fn join_once(shared: &Shared, req: &JoinRequest) -> Result<Membership, ConsensusError> {
    let ours = shared.cluster.get();
    let mut result = shared.join(req.clone(), ours).await;
    for seed in other_seeds(&shared.config) {
        if result.is_ok() {
            break;
        }
        let deadline = shared.config.timing.admin_timeout();
        result = rpc::call(&*shared.transport, ours, &seed, rpc::JOIN, req, deadline).await;
    }
    let membership = result?;
    if let Some(cluster) = &membership.cluster {
        shared.cluster.adopt(cluster, "the join reply").await?;
    }
    Ok(membership)
}

fn other_seeds(config: &ConsensusConfig) -> Vec<String> {
    config
        .seeds
        .iter()
        .filter(|s| **s != config.addr)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_seed_in_a_cluster_means_joining_it_even_with_others_silent() {
        let waited = Duration::ZERO;
        assert_eq!(
            founding(&[None, Some(true)], waited, WAIT),
            Founding::Join(1)
        );
        assert_eq!(
            founding(&[Some(false), Some(true)], WAIT, WAIT),
            Founding::Join(1)
        );
    }

    #[test]
    fn every_seed_pristine_or_no_seeds_at_all_means_founding_at_once() {
        let waited = Duration::ZERO;
        assert_eq!(
            founding(&[Some(false), Some(false)], waited, WAIT),
            Founding::Found
        );
        assert_eq!(founding(&[], waited, WAIT), Founding::Found);
    }

    #[test]
    fn a_silent_seed_is_waited_for_until_found_wait() {
        let knows = [Some(false), None];
        assert_eq!(
            founding(&knows, Duration::from_secs(9), WAIT),
            Founding::Wait
        );
        assert_eq!(founding(&knows, WAIT, WAIT), Founding::Found);
        assert_eq!(founding(&[None, None], WAIT * 2, WAIT), Founding::Found);
    }
}
