//! The commands of the membership state machine and the pure function that applies them.
//!
//! Every node applies the same committed commands in the same order, so `apply` must be
//! deterministic: no clocks, no randomness, no I/O. A command that changes nothing leaves the
//! epoch alone, which keeps retried joins and repeated failure-detector verdicts from churning
//! the ring.
//!
//! `Found` is the first command of a cluster: it names the cluster (the id the founder generated)
//! and fixes its ring scheme, before any member joins, so every view with members carries both.

use super::types::ordinal;
use crate::{Member, MemberState, Membership, NodeId, RingScheme};
use serde::{Deserialize, Serialize};

/// A change to the membership, as proposed to the leader and stored in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Sets the cluster id; a no-op once one is set, since an id never changes. It leaves the
    /// epoch alone: epochs count changes to the members, which ring holders compare, and the
    /// founder commits it before anyone is a member.
    Found {
        cluster: String,
        /// The scheme keys are placed by. A `Found` logged before schemes existed has none and
        /// reads as the old default, so that cluster's keys stay where they are.
        #[serde(default)]
        ring: RingScheme,
    },
    /// Adds the member as `Active`; a known member becomes `Active` again with the given address
    /// and weight (a restarted pod may come back on a new IP).
    Join {
        id: NodeId,
        addr: String,
        #[serde(default)]
        session_addr: String,
        weight: u32,
    },
    SetState {
        id: NodeId,
        state: MemberState,
    },
    Leave {
        id: NodeId,
    },
}

/// Applies `command` to `membership`; returns whether anything changed. The epoch moves with
/// every change to the members.
pub fn apply(membership: &mut Membership, command: &Command) -> bool {
    let changed = match command {
        Command::Found { cluster, ring } => {
            if membership.cluster.is_none() {
                membership.cluster = Some(cluster.clone());
                // Only an empty cluster takes a scheme: members holding keys keep theirs.
                if membership.members.is_empty() {
                    membership.ring = *ring;
                }
                return true;
            }
            false
        }
        Command::Join {
            id,
            addr,
            session_addr,
            weight,
        } => join(
            membership,
            Member {
                id: id.clone(),
                addr: addr.clone(),
                session_addr: session_addr.clone(),
                state: MemberState::Active,
                weight: *weight,
            },
        ),
        Command::SetState { id, state } => match find(membership, id) {
            Some(m) if m.state != *state => {
                m.state = *state;
                true
            }
            _ => false,
        },
        Command::Leave { id } => {
            let before = membership.members.len();
            membership.members.retain(|m| &m.id != id);
            membership.members.len() != before
        }
    };
    if changed {
        membership.epoch += 1;
    }
    changed
}

fn join(membership: &mut Membership, joined: Member) -> bool {
    match find(membership, &joined.id) {
        Some(m) if *m == joined => false,
        Some(m) => {
            *m = joined;
            true
        }
        None => {
            membership.members.push(joined);
            // Ordinal order keeps every view (and `shardgate status`) listed the same way.
            membership
                .members
                .sort_by(|a, b| (ordinal(&a.id), &a.id).cmp(&(ordinal(&b.id), &b.id)));
            true
        }
    }
}

fn find<'a>(membership: &'a mut Membership, id: &NodeId) -> Option<&'a mut Member> {
    membership.members.iter_mut().find(|m| &m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(id: &str, addr: &str) -> Command {
        Command::Join {
            id: id.into(),
            addr: addr.into(),
            session_addr: format!("{addr}/mcp"),
            weight: 1,
        }
    }

    fn set(id: &str, state: MemberState) -> Command {
        Command::SetState {
            id: id.into(),
            state,
        }
    }

    fn ids(m: &Membership) -> Vec<&str> {
        m.members.iter().map(|m| m.id.0.as_str()).collect()
    }

    #[test]
    fn join_adds_an_active_member_in_ordinal_order_and_bumps_the_epoch() {
        let mut m = Membership::default();
        assert!(apply(&mut m, &join("node-10", "h10:1")));
        assert!(apply(&mut m, &join("node-2", "h2:1")));
        assert!(apply(&mut m, &join("node-0", "h0:1")));
        assert_eq!(m.epoch, 3);
        assert_eq!(ids(&m), ["node-0", "node-2", "node-10"]);
        assert!(m.members.iter().all(|m| m.state == MemberState::Active));
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn rejoin_is_idempotent_but_revives_and_readdresses() {
        let mut m = Membership::default();
        apply(&mut m, &join("node-1", "a:1"));
        assert!(!apply(&mut m, &join("node-1", "a:1")), "same join twice");
        assert_eq!(m.epoch, 1);

        apply(&mut m, &set("node-1", MemberState::Down));
        assert!(apply(&mut m, &join("node-1", "b:1")));
        let member = &m.members[0];
        assert_eq!(
            (member.state, member.addr.as_str()),
            (MemberState::Active, "b:1")
        );
        assert_eq!(m.epoch, 3);

        let reweighted = Command::Join {
            id: "node-1".into(),
            addr: "b:1".into(),
            session_addr: "b:1/mcp".into(),
            weight: 3,
        };
        assert!(apply(&mut m, &reweighted));
        assert_eq!((m.members[0].weight, m.epoch), (3, 4));
    }

    #[test]
    fn set_state_changes_only_known_members_and_only_when_different() {
        let mut m = Membership::default();
        apply(&mut m, &join("node-0", "a:1"));
        assert!(apply(&mut m, &set("node-0", MemberState::Draining)));
        assert_eq!(m.members[0].state, MemberState::Draining);
        assert!(!apply(&mut m, &set("node-0", MemberState::Draining)));
        assert!(!apply(&mut m, &set("node-9", MemberState::Down)));
        assert_eq!(m.epoch, 2);
    }

    #[test]
    fn leave_removes_the_member_once() {
        let mut m = Membership::default();
        apply(&mut m, &join("node-0", "a:1"));
        apply(&mut m, &join("node-1", "b:1"));
        assert!(apply(
            &mut m,
            &Command::Leave {
                id: "node-0".into()
            }
        ));
        assert!(!apply(
            &mut m,
            &Command::Leave {
                id: "node-0".into()
            }
        ));
        assert_eq!(ids(&m), ["node-1"]);
        assert_eq!(m.epoch, 3);
    }

    fn found(cluster: &str) -> Command {
        Command::Found {
            cluster: cluster.into(),
            ring: RingScheme::Rendezvous,
        }
    }

    #[test]
    fn found_names_the_cluster_once_and_leaves_the_epoch_alone() {
        let mut m = Membership::default();
        assert!(apply(&mut m, &found("aa")));
        assert_eq!((m.cluster.as_deref(), m.epoch), (Some("aa"), 0));
        assert_eq!(m.ring, RingScheme::Rendezvous);
        assert!(!apply(&mut m, &found("aa")), "the same id again");
        assert!(!apply(&mut m, &found("bb")), "an id never changes");
        assert_eq!(m.cluster.as_deref(), Some("aa"));

        // The members and their epochs go on as before, and keep the id.
        apply(&mut m, &join("node-0", "a:1"));
        assert!(!apply(&mut m, &found("bb")));
        assert_eq!((m.cluster.as_deref(), m.epoch), (Some("aa"), 1));
    }

    #[test]
    fn found_after_members_changes_only_the_id() {
        // The leader commits `Found` before any `Join`, but `apply` does not rely on it.
        let mut m = Membership::default();
        apply(&mut m, &join("node-0", "a:1"));
        let before = m.clone();
        assert!(apply(&mut m, &found("aa")));
        assert_eq!(m.members, before.members);
        assert_eq!((m.cluster.as_deref(), m.epoch), (Some("aa"), before.epoch));
        assert_eq!(
            m.ring,
            RingScheme::Points,
            "members with keys keep their scheme"
        );
    }

    #[test]
    fn commands_have_a_stable_wire_form() {
        let json = serde_json::to_string(&set("node-3", MemberState::Down)).expect("serializes");
        assert_eq!(json, r#"{"op":"set_state","id":"node-3","state":"down"}"#);
        let back: Command = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, set("node-3", MemberState::Down));
        let json = serde_json::to_string(&found("aa")).expect("serializes");
        assert_eq!(json, r#"{"op":"found","cluster":"aa","ring":"rendezvous"}"#);
        // A `Found` logged before schemes existed founds a cluster on the old scheme.
        let old: Command =
            serde_json::from_str(r#"{"op":"found","cluster":"aa"}"#).expect("parses");
        let mut m = Membership::default();
        apply(&mut m, &old);
        assert_eq!(m.ring, RingScheme::Points);
    }
}
