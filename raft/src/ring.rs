//! The consistent-hash ring: which `Active` member owns a routing key.
//!
//! Each member gets `VNODES_PER_WEIGHT × weight` points on a 64-bit circle; a key belongs to the
//! first point at or after its own hash. Points and keys are hashed with [`RING_HASH`] over byte
//! strings we write ourselves (never through `std`'s `Hash` impls for `str`, whose byte layout is
//! not a stability promise), so every gateway and node, of any release, agrees on the owner.

use crate::membership::{Member, MemberState, Membership, NodeId};
use hashring::{DefaultHashBuilder, HashRing};
use std::hash::{Hash, Hasher};

/// The ring's hash function, named so that it is never changed by accident: SipHash-2-4 with the
/// all-zero 128-bit key (the `hashring` crate's default builder).
pub const RING_HASH: &str = "siphash-2-4/key=0";

/// Virtual nodes per unit of weight. 256 keeps max/mean load under ~1.1 for 3–10 members (see
/// the tests) while a ring of 10 members is still only 2,560 points.
pub const VNODES_PER_WEIGHT: u32 = 256;

/// A point on the circle: the member it belongs to, and which of its replicas this is.
struct Point {
    member: usize,
    id: NodeId,
    replica: u32,
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.id.0.as_bytes());
        state.write(b"#");
        state.write(&self.replica.to_be_bytes());
    }
}

/// A routing key as raw bytes (a session id, or a stateless affinity key).
struct Key<'a>(&'a [u8]);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// An immutable ring built from one membership view; rebuild it when the epoch changes.
pub struct Ring {
    membership: Membership,
    /// Indexes into `membership.members` of the members that own keys.
    points: HashRing<Point, DefaultHashBuilder>,
}

impl Ring {
    pub fn new(membership: Membership) -> Self {
        let mut points = HashRing::with_hasher(DefaultHashBuilder);
        let batch = membership
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state == MemberState::Active)
            .flat_map(|(member, m)| {
                (0..VNODES_PER_WEIGHT * m.weight).map(move |replica| Point {
                    member,
                    id: m.id.clone(),
                    replica,
                })
            })
            .collect();
        points.batch_add(batch);
        Ring { membership, points }
    }

    /// Whether `membership` should replace this ring's: it is newer, valid, and of the same
    /// cluster (once a holder knows its cluster, a view of another one is never taken). Views
    /// only move forward, so whoever holds a ring keeps the highest epoch it has seen.
    pub fn superseded_by(&self, membership: &Membership) -> bool {
        self.admits(membership) && membership.epoch > self.epoch()
    }

    /// Whether `membership` is a valid view of this ring's cluster (any cluster, while this
    /// ring has none), whatever its epoch.
    pub fn admits(&self, membership: &Membership) -> bool {
        let same_cluster =
            self.membership.cluster.is_none() || self.membership.cluster == membership.cluster;
        same_cluster && membership.validate().is_ok()
    }

    pub fn epoch(&self) -> u64 {
        self.membership.epoch
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The member that owns `key`, or `None` when no member is `Active`.
    pub fn owner(&self, key: &[u8]) -> Option<&Member> {
        self.points
            .get(&Key(key))
            .map(|p| &self.membership.members[p.member])
    }

    /// Whether `node` owns `key` in this view.
    pub fn owns(&self, node: &NodeId, key: &[u8]) -> bool {
        self.owner(key).is_some_and(|m| &m.id == node)
    }
}

#[cfg(test)]
mod tests;
