//! Cluster membership and the placement ring derived from it.
//!
//! Layout, in the order a routing decision uses it:
//! - [`consensus`]: the nodes agree on the membership through Raft; the state machine publishes
//!   each committed view on a `watch` channel.
//! - [`membership`]: who is in the cluster, in which state, at which epoch.
//! - [`ring`]: the consistent-hash ring over the `Active` members, which answers "who owns this
//!   key".

pub mod consensus;
pub mod membership;
pub mod ring;

pub use membership::{Member, MemberState, Membership, NodeId, RingScheme};
pub use ring::{RING_HASH, Ring};
