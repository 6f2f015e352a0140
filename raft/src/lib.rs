//! Cluster membership and the placement ring derived from it.
//!
//! Layout, in the order a routing decision uses it:
//! - [`membership`]: who is in the cluster, in which state, at which epoch. Today a static list
//!   from configuration; the Raft state machine produces the same type later.
//! - [`ring`]: the consistent-hash ring over the `Active` members, which answers "who owns this
//!   key".

pub mod membership;
pub mod ring;

pub use membership::{Member, MemberState, Membership, NodeId};
pub use ring::{RING_HASH, Ring};
