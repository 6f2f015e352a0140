//! Fail-closed serving: a node serves only while it has recently heard from a quorum.
//!
//! The leader uses openraft's quorum-ack clock (the time since a majority last acknowledged its
//! appends or heartbeats). A follower or learner cannot see a quorum directly; it uses the time
//! since the current leader's last append or heartbeat, since that leader keeps sending them
//! only while it leads. A partitioned node thus stops serving within one lease of being cut off,
//! while the majority side elects a new leader and marks it `Down`.

use super::lock;
use super::types::Metrics;
use openraft::ServerState;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Lease {
    /// The Raft id of the leader last heard from, and when.
    last_leader_contact: Mutex<Option<(u64, Instant)>>,
}

impl Lease {
    /// Records an accepted append or heartbeat from `leader`.
    pub(crate) fn heard_from_leader(&self, leader: u64) {
        *lock(&self.last_leader_contact) = Some((leader, Instant::now()));
    }

    pub(crate) fn last_leader_contact(&self) -> Option<(u64, Instant)> {
        *lock(&self.last_leader_contact)
    }

    pub(crate) fn serving(&self, metrics: &Metrics, lease: Duration) -> bool {
        let since_leader = self.last_leader_contact().map(|(_, t)| t.elapsed());
        serving(
            metrics.state,
            metrics.current_leader.is_some_and(|l| l != metrics.id),
            metrics.millis_since_quorum_ack.map(Duration::from_millis),
            since_leader,
            lease,
        )
    }
}

/// The serving rule itself, kept free of clocks so it is testable.
fn serving(
    state: ServerState,
    follows_a_leader: bool,
    since_quorum_ack: Option<Duration>,
    since_leader_contact: Option<Duration>,
    lease: Duration,
) -> bool {
    match state {
        ServerState::Leader => since_quorum_ack.is_some_and(|d| d < lease),
        ServerState::Follower | ServerState::Learner => {
            follows_a_leader && since_leader_contact.is_some_and(|d| d < lease)
        }
        ServerState::Candidate | ServerState::Shutdown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1500);
    const RECENT: Option<Duration> = Some(Duration::from_millis(100));
    const STALE: Option<Duration> = Some(Duration::from_millis(1600));

    #[test]
    fn leader_serves_only_while_a_quorum_acked_within_the_lease() {
        assert!(serving(ServerState::Leader, false, RECENT, None, LEASE));
        assert!(!serving(ServerState::Leader, false, STALE, RECENT, LEASE));
        assert!(!serving(ServerState::Leader, false, None, RECENT, LEASE));
    }

    #[test]
    fn followers_and_learners_serve_only_while_their_leader_is_heard() {
        for state in [ServerState::Follower, ServerState::Learner] {
            assert!(serving(state, true, None, RECENT, LEASE));
            assert!(!serving(state, true, None, STALE, LEASE));
            assert!(!serving(state, true, None, None, LEASE));
            assert!(
                !serving(state, false, None, RECENT, LEASE),
                "no leader known"
            );
        }
    }

    #[test]
    fn candidates_never_serve() {
        assert!(!serving(
            ServerState::Candidate,
            true,
            RECENT,
            RECENT,
            LEASE
        ));
        assert!(!serving(ServerState::Shutdown, true, RECENT, RECENT, LEASE));
    }
}
