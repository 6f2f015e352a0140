//! The membership view: members with their address, state and weight, stamped with an epoch.
//!
//! Every change to membership bumps the epoch, so two views are ordered by epoch alone and a
//! holder keeps the highest one it has seen.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable identity, `node-<ordinal>` in a StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_owned())
    }
}

/// Where a member stands; only `Active` members own keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    #[default]
    Active,
    Draining,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// The node's internal listener (`host:port`): Raft, membership, drain and status.
    pub addr: String,
    /// The node's session listener (`host:port`): the `/mcp` traffic gateways forward.
    pub session_addr: String,
    #[serde(default)]
    pub state: MemberState,
    /// Relative share of keys: the ring treats a member of weight `w` as `w` members.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How the ring places keys on members. A cluster's scheme is part of its replicated view, so
/// every gateway and node that holds the view computes the same owner for every key, whatever
/// release it runs; a release that does not know a view's scheme refuses the view rather than
/// guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RingScheme {
    /// 256 points per unit of weight on a hash circle. The scheme of every view that names
    /// none: clusters founded before rendezvous hashing keep it, so their keys stay put.
    #[default]
    Points,
    /// Rendezvous (highest random weight) hashing: every member scores every key and the
    /// highest score owns it. Even in expectation for any number of members, and a change
    /// moves only the keys of the member that joined or left. New clusters are founded with it.
    Rendezvous,
}

impl RingScheme {
    fn is_points(&self) -> bool {
        *self == RingScheme::Points
    }
}

/// One version of the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Membership {
    /// The id of the cluster this view belongs to, fixed when the cluster is founded; `None`
    /// for a fixed membership. A view of another cluster never replaces one of ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How keys are placed; left out of the wire form when it is the default, so a view of a
    /// cluster that keeps the old scheme reads the same to every release.
    #[serde(default, skip_serializing_if = "RingScheme::is_points")]
    pub ring: RingScheme,
    pub epoch: u64,
    pub members: Vec<Member>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("member {0} is listed twice")]
    DuplicateMember(NodeId),
    #[error("member {0} has weight 0")]
    ZeroWeight(NodeId),
    #[error("member {0} has an empty address")]
    EmptyAddress(NodeId),
}

impl Membership {
    /// Checks the invariants a ring relies on: unique ids, non-empty addresses, positive weights.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.members {
            if !seen.insert(&m.id) {
                return Err(MembershipError::DuplicateMember(m.id.clone()));
            }
            if m.weight == 0 {
                return Err(MembershipError::ZeroWeight(m.id.clone()));
            }
            if m.addr.trim().is_empty() || m.session_addr.trim().is_empty() {
                return Err(MembershipError::EmptyAddress(m.id.clone()));
            }
        }
        Ok(())
    }

    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }
}
