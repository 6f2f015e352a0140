//! The openraft type configuration, and the mapping between our `node-<ordinal>` ids and Raft's
//! numeric node ids.

use super::command::Command;
use crate::{Membership, NodeId};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Raft types of the membership group: commands in, the resulting [`Membership`] out.
    pub TypeConfig:
        D = Command,
        R = Membership,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type LogId = openraft::LogId<u64>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type Metrics = openraft::RaftMetrics<u64, openraft::BasicNode>;
pub(crate) type StorageError = openraft::StorageError<u64>;

const PREFIX: &str = "node-";

/// The Raft node id of `node-<ordinal>`.
///
/// Only the canonical spelling is accepted (`node-5`, not `node-05` or `node-+5`), so two
/// different [`NodeId`]s never share one Raft id.
pub(crate) fn ordinal(id: &NodeId) -> Option<u64> {
    let n: u64 = id.0.strip_prefix(PREFIX)?.parse().ok()?;
    (node_id(n) == *id).then_some(n)
}

/// The [`NodeId`] of Raft node `n`.
pub(crate) fn node_id(n: u64) -> NodeId {
    NodeId(format!("{PREFIX}{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_round_trip_only_in_canonical_form() {
        assert_eq!(ordinal(&"node-0".into()), Some(0));
        assert_eq!(ordinal(&"node-17".into()), Some(17));
        assert_eq!(node_id(17), NodeId::from("node-17"));
        for bad in [
            "node-", "node-05", "node-+5", "node--1", "pod-1", "node-1x", "node-1 ",
        ] {
            assert_eq!(ordinal(&bad.into()), None, "{bad}");
        }
    }
}
