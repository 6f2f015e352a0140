//! The leader's failure detector: probe every member, mark the silent ones `Down` and the
//! recovered ones `Active` again.
//!
//! Silence is judged by [`Timing::down_after`](super::timing::Timing), long enough that a node
//! cut off from the cluster has stopped serving before its keys move. A member whose address
//! refuses the connection [`REFUSALS_FOR_DOWN`] probes in a row, with no reply between, is
//! marked `Down` at once: nothing listens there, so its process has exited (a `kill -9`, a
//! crash, a container restarting in place) and serves nobody; waiting out a lease it can no
//! longer hold would only keep its sessions waiting. A cut network drops or delays packets; it
//! does not refuse connections (the chaos harness's partitions drop, as Kubernetes network
//! policies do). Should anything ever refuse for a live node, the store's fencing still keeps
//! it from writing a session after the new owner's claim.
//!
//! Only the leader runs it, so there is one verdict per outage rather than one per observer, and
//! every verdict is a committed command that bumps the epoch. [`Detector`] holds the decisions
//! (pure, driven by the instants it is given); [`run`] does the probing and proposing.

use super::Shared;
use super::changes::plan;
use super::cluster::conflicts;
use super::command::Command;
use super::error::ConsensusError;
use super::rpc::{self, ProbeReply, ProbeRequest};
use super::types::node_id;
use crate::{MemberState, Membership, NodeId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// One leadership term's view of who answers.
pub(crate) struct Detector {
    last_heard: HashMap<NodeId, Instant>,
    /// Members whose latest probe failed. A verdict needs one, so that silence measured before
    /// this term (the previous leader's) is confirmed by this leader before it counts.
    unanswered: HashSet<NodeId>,
    /// Members with a verdict being proposed, so a slow commit is not proposed again.
    pending: HashSet<NodeId>,
    /// Probes in a row whose connection each member's address refused, since it last replied.
    refusals: HashMap<NodeId, u32>,
}

/// Refused probes in a row that mark a member `Down` without waiting for `down_after`: two, so
/// that one refusal (a listener being rebound) is not enough, at a cost of one probe interval.
pub(crate) const REFUSALS_FOR_DOWN: u32 = 2;

impl Detector {
    /// Starts a term. A new leader has probed nobody yet, so every `Active` member gets a full
    /// `down_after` of grace, and a `Down` member must answer before it counts as alive. The
    /// previous leader is the exception: this node knows when its last heartbeat came, and an
    /// election only starts after an election timeout of silence, so a crashed leader is marked
    /// `Down` after one failed probe rather than a whole `down_after` into the new term.
    pub(crate) fn new(
        membership: &Membership,
        now: Instant,
        previous_leader: Option<(NodeId, Instant)>,
    ) -> Detector {
        let mut last_heard: HashMap<NodeId, Instant> = membership
            .members
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| (m.id.clone(), now))
            .collect();
        if let Some((id, at)) = previous_leader
            && let Some(heard) = last_heard.get_mut(&id)
        {
            *heard = at.min(now);
        }
        Detector {
            last_heard,
            unanswered: HashSet::new(),
            pending: HashSet::new(),
            refusals: HashMap::new(),
        }
    }

    pub(crate) fn heard(&mut self, id: NodeId, at: Instant) {
        self.unanswered.remove(&id);
        self.refusals.remove(&id);
        let last = self.last_heard.entry(id).or_insert(at);
        *last = (*last).max(at);
    }

    pub(crate) fn unanswered(&mut self, id: NodeId) {
        self.unanswered.insert(id);
    }

    /// A probe's connection was refused: the member did not answer, and nothing listens at its
    /// address.
    pub(crate) fn refused(&mut self, id: NodeId) {
        *self.refusals.entry(id.clone()).or_default() += 1;
        self.unanswered.insert(id);
    }

    /// A proposal finished, committed or not; a failed one is proposed again next time.
    /// Either way, what was heard of the member before is history: a member that was marked
    /// `Down` may rejoin (`Active`) before the next round, and must not be judged on the
    /// silence that got it marked, so it starts again with the grace of a new member.
    pub(crate) fn settled(&mut self, id: &NodeId) {
        self.pending.remove(id);
        self.last_heard.remove(id);
        self.unanswered.remove(id);
        self.refusals.remove(id);
    }

    /// The state changes to propose now. `Draining` members are left alone: they are on their
    /// way out and an operator decided so. The leader judges itself only to undo a `Down`: it
    /// is evidently alive (it was marked while it was away, and won an election since).
    pub(crate) fn verdicts(
        &mut self,
        membership: &Membership,
        me: &NodeId,
        now: Instant,
        down_after: Duration,
    ) -> Vec<(NodeId, MemberState)> {
        self.last_heard
            .retain(|id, _| membership.member(id).is_some());
        self.unanswered.retain(|id| membership.member(id).is_some());
        self.refusals
            .retain(|id, _| membership.member(id).is_some());
        let mut verdicts = Vec::new();
        for m in &membership.members {
            if self.pending.contains(&m.id) {
                continue;
            }
            if &m.id == me {
                if m.state == MemberState::Down {
                    self.pending.insert(m.id.clone());
                    verdicts.push((m.id.clone(), MemberState::Active));
                }
                continue;
            }
            let verdict = match m.state {
                MemberState::Active => {
                    // A member that joined during this term starts with its grace period.
                    let heard = *self.last_heard.entry(m.id.clone()).or_insert(now);
                    let silent = now.saturating_duration_since(heard) >= down_after;
                    let gone = self
                        .refusals
                        .get(&m.id)
                        .is_some_and(|n| *n >= REFUSALS_FOR_DOWN);
                    ((silent && self.unanswered.contains(&m.id)) || gone)
                        .then_some(MemberState::Down)
                }
                MemberState::Down => self
                    .last_heard
                    .get(&m.id)
                    .is_some_and(|t| now.saturating_duration_since(*t) < down_after)
                    .then_some(MemberState::Active),
                MemberState::Draining => None,
            };
            if let Some(state) = verdict {
                self.pending.insert(m.id.clone());
                verdicts.push((m.id.clone(), state));
            }
        }
        verdicts
    }
}

/// What the detector's helper tasks report back.
enum Event {
    Heard(NodeId, Instant),
    Silent(NodeId),
    Refused(NodeId),
    Settled(NodeId),
    Reconciled,
}

/// Probes and proposes while this node leads; idles otherwise.
pub(crate) async fn run(shared: Arc<Shared>) {
    let timing = shared.config.timing.clone();
    let mut tick = tokio::time::interval(timing.probe_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut term: Option<(u64, Detector)> = None;
    // Probes and proposals run beside the loop so that a dead member's timeout or a slow commit
    // never delays the next round; dropping the set (on shutdown) aborts them.
    let mut tasks = JoinSet::new();
    let mut reconciling = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(current) = shared.leading_term() else {
                    term = None;
                    continue;
                };
                let now = Instant::now();
                let membership = shared.membership();
                let detector = match &mut term {
                    Some((t, d)) if *t == current => d,
                    slot => {
                        // A follower that lost the old leader long before the others did must
                        // not count its silence from then: openraft's followers refuse votes
                        // for `election_max` after a leader's last contact, so the others heard
                        // it at most that long before this term began.
                        let earliest = now.checked_sub(timing.election_max).unwrap_or(now);
                        let previous = shared
                            .lease
                            .last_leader_contact()
                            .filter(|(leader, _)| *leader != shared.nid)
                            .map(|(leader, at)| (node_id(leader), at.max(earliest)));
                        &mut slot.insert((current, Detector::new(&membership, now, previous))).1
                    }
                };
                for (id, state) in detector.verdicts(&membership, &shared.id, now, timing.down_after) {
                    tracing::info!(member = %id, ?state, "failure detector verdict");
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        let command = Command::SetState { id: id.clone(), state };
                        if let Err(e) = shared.commit(command).await {
                            tracing::warn!(member = %id, error = %e, "could not propose a verdict");
                        }
                        Event::Settled(id)
                    });
                }
                for m in membership.members.iter().filter(|m| m.id != shared.id) {
                    tasks.spawn(probe(shared.clone(), m.id.clone(), m.addr.clone()));
                }
                if !reconciling && needs_reconcile(&shared, &membership) {
                    reconciling = true;
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        if let Err(e) = shared.reconcile_if_idle().await {
                            tracing::warn!(error = %e, "could not reconcile raft membership");
                        }
                        Event::Reconciled
                    });
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok(event) = done else { continue };
                match (event, &mut term) {
                    (Event::Reconciled, _) => reconciling = false,
                    (Event::Heard(id, at), Some((_, d))) => d.heard(id, at),
                    (Event::Silent(id), Some((_, d))) => d.unanswered(id),
                    (Event::Refused(id), Some((_, d))) => d.refused(id),
                    (Event::Settled(id), Some((_, d))) => d.settled(&id),
                    _ => {}
                }
            }
        }
    }
}

/// Asks `id` whether it is alive. A reply counts only within `probe_timeout`, which
/// `Timing::min_down_after` counts on.
async fn probe(shared: Arc<Shared>, id: NodeId, addr: String) -> Event {
    let req = ProbeRequest {
        from: shared.id.clone(),
    };
    let deadline = shared.config.timing.probe_timeout;
    let ours = shared.cluster.get();
    let reply: Result<ProbeReply, _> =
        rpc::call(&*shared.transport, ours, &addr, rpc::PROBE, &req, deadline).await;
    match reply {
        // A node of another cluster at the member's address is not the member.
        Ok(r) if r.id == id && !conflicts(ours, r.cluster.as_deref()) => {
            Event::Heard(id, Instant::now())
        }
        Err(ConsensusError::Refused(_)) => Event::Refused(id),
        _ => Event::Silent(id),
    }
}

/// Whether Raft's voters or nodes lag behind the membership, e.g. after a leader removed
/// itself and stepped down before it could finish the change. Uses the metrics' (possibly
/// slightly stale) view; the reconcile itself rereads the authoritative one.
fn needs_reconcile(shared: &Shared, membership: &Membership) -> bool {
    let metrics = shared.metrics.borrow();
    let raft = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = raft.voter_ids().collect();
    let nodes: BTreeSet<u64> = raft.nodes().map(|(id, _)| *id).collect();
    !plan(membership, &voters, &nodes, shared.config.voters).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Member;

    const DOWN_AFTER: Duration = Duration::from_millis(400);

    fn membership(states: &[(&str, MemberState)]) -> Membership {
        Membership {
            cluster: None,
            ring: Default::default(),
            epoch: 7,
            members: states
                .iter()
                .map(|(id, state)| Member {
                    id: (*id).into(),
                    addr: format!("{id}:1"),
                    session_addr: format!("{id}:2"),
                    state: *state,
                    weight: 1,
                })
                .collect(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_member_whose_address_refuses_twice_in_a_row_is_down_at_once() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Active),
            ("node-2", MemberState::Active),
        ]);
        let me = NodeId::from("node-0");
        let mut d = Detector::new(&m, t0, None);
        d.refused("node-1".into());
        assert!(
            d.verdicts(&m, &me, t0 + ms(100), DOWN_AFTER).is_empty(),
            "one refusal"
        );
        // A reply in between starts the count again: the listener was only being rebound.
        d.heard("node-1".into(), t0 + ms(150));
        d.refused("node-1".into());
        assert!(d.verdicts(&m, &me, t0 + ms(200), DOWN_AFTER).is_empty());
        d.refused("node-1".into());
        // Timeouts are silence, not refusals: node-2 waits out `down_after`.
        d.unanswered("node-2".into());
        d.unanswered("node-2".into());
        assert_eq!(
            d.verdicts(&m, &me, t0 + ms(300), DOWN_AFTER),
            [("node-1".into(), MemberState::Down)],
            "well before down_after"
        );
    }

    #[test]
    fn a_silent_active_member_is_marked_down_once() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Active),
        ]);
        let me = NodeId::from("node-0");
        let mut d = Detector::new(&m, t0, None);
        d.unanswered("node-1".into());
        assert!(
            d.verdicts(&m, &me, t0 + ms(399), DOWN_AFTER).is_empty(),
            "grace"
        );
        let v = d.verdicts(&m, &me, t0 + ms(400), DOWN_AFTER);
        assert_eq!(v, [("node-1".into(), MemberState::Down)]);
        assert!(
            d.verdicts(&m, &me, t0 + ms(500), DOWN_AFTER).is_empty(),
            "pending"
        );
        d.settled(&"node-1".into());
        // Not committed (lost leadership, say): judged again, from a fresh grace period.
        d.unanswered("node-1".into());
        assert!(d.verdicts(&m, &me, t0 + ms(600), DOWN_AFTER).is_empty());
        d.unanswered("node-1".into());
        assert_eq!(d.verdicts(&m, &me, t0 + ms(1000), DOWN_AFTER).len(), 1);
    }

    #[test]
    fn a_new_leader_marks_a_long_silent_previous_leader_down_after_one_failed_probe() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Active),
            ("node-2", MemberState::Active),
        ]);
        let me = NodeId::from("node-1");
        let now = t0 + ms(500);
        let mut d = Detector::new(&m, now, Some(("node-0".into(), t0)));
        assert!(
            d.verdicts(&m, &me, now, DOWN_AFTER).is_empty(),
            "not probed yet"
        );
        d.unanswered("node-0".into());
        d.unanswered("node-2".into());
        let v = d.verdicts(&m, &me, now + ms(10), DOWN_AFTER);
        assert_eq!(
            v,
            [("node-0".into(), MemberState::Down)],
            "node-2 keeps its grace"
        );

        // A previous leader that is alive (it stepped down during a long election) answers the
        // first probe of the term and is left alone.
        let mut d = Detector::new(&m, now, Some(("node-0".into(), t0)));
        d.heard("node-0".into(), now + ms(5));
        assert!(d.verdicts(&m, &me, now + ms(10), DOWN_AFTER).is_empty());
    }

    #[test]
    fn answering_members_stay_active_and_the_leader_never_judges_itself() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Active),
        ]);
        let me = NodeId::from("node-0");
        let mut d = Detector::new(&m, t0, None);
        for step in 1..10 {
            let now = t0 + ms(step * 100);
            d.heard("node-1".into(), now);
            assert!(d.verdicts(&m, &me, now, DOWN_AFTER).is_empty());
        }
    }

    #[test]
    fn a_down_member_that_answers_again_is_marked_active() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-2", MemberState::Down),
        ]);
        let me = NodeId::from("node-0");
        let mut d = Detector::new(&m, t0, None);
        assert!(
            d.verdicts(&m, &me, t0 + ms(1000), DOWN_AFTER).is_empty(),
            "no answer yet"
        );
        d.heard("node-2".into(), t0 + ms(1100));
        let v = d.verdicts(&m, &me, t0 + ms(1150), DOWN_AFTER);
        assert_eq!(v, [("node-2".into(), MemberState::Active)]);
    }

    #[test]
    fn draining_members_are_left_alone() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Draining),
        ]);
        let mut d = Detector::new(&m, t0, None);
        d.heard("node-1".into(), t0);
        assert!(
            d.verdicts(&m, &"node-0".into(), t0 + ms(5000), DOWN_AFTER)
                .is_empty()
        );
    }

    #[test]
    fn a_member_that_rejoins_gets_a_fresh_grace_period() {
        let t0 = Instant::now();
        let me = NodeId::from("node-0");
        let active = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Active),
        ]);
        let down = membership(&[
            ("node-0", MemberState::Active),
            ("node-1", MemberState::Down),
        ]);
        let mut d = Detector::new(&active, t0, None);
        d.unanswered("node-1".into());
        assert_eq!(d.verdicts(&active, &me, t0 + ms(400), DOWN_AFTER).len(), 1);
        d.settled(&"node-1".into());
        assert!(d.verdicts(&down, &me, t0 + ms(500), DOWN_AFTER).is_empty());
        // It restarts and rejoins (Active again) before any probe of this term reached it;
        // the probe that failed while it was away must not count against it.
        d.unanswered("node-1".into());
        assert!(
            d.verdicts(&active, &me, t0 + ms(600), DOWN_AFTER)
                .is_empty(),
            "a rejoined member is not marked Down on stale silence"
        );
        d.unanswered("node-1".into());
        let v = d.verdicts(&active, &me, t0 + ms(1000), DOWN_AFTER);
        assert_eq!(v, [("node-1".into(), MemberState::Down)], "silent again");
    }

    #[test]
    fn a_leader_marked_down_marks_itself_active() {
        let t0 = Instant::now();
        let m = membership(&[
            ("node-0", MemberState::Down),
            ("node-1", MemberState::Active),
        ]);
        let mut d = Detector::new(&m, t0, None);
        let v = d.verdicts(&m, &"node-0".into(), t0, DOWN_AFTER);
        assert_eq!(v, [("node-0".into(), MemberState::Active)]);
        assert!(
            d.verdicts(&m, &"node-0".into(), t0 + ms(10), DOWN_AFTER)
                .is_empty(),
            "pending"
        );
    }

    #[test]
    fn a_member_that_joins_mid_term_gets_its_grace_period() {
        let t0 = Instant::now();
        let me = NodeId::from("node-0");
        let before = membership(&[("node-0", MemberState::Active)]);
        let mut d = Detector::new(&before, t0, None);
        let after = membership(&[
            ("node-0", MemberState::Active),
            ("node-3", MemberState::Active),
        ]);
        d.unanswered("node-3".into());
        assert!(
            d.verdicts(&after, &me, t0 + ms(1000), DOWN_AFTER)
                .is_empty()
        );
        let v = d.verdicts(&after, &me, t0 + ms(1400), DOWN_AFTER);
        assert_eq!(v, [("node-3".into(), MemberState::Down)]);
    }
}
