//! The consistent-hash ring: which `Active` member owns a routing key.
//!
//! Two placement schemes, chosen by the view ([`RingScheme`]):
//! - **Rendezvous** (new clusters): every member scores a key with
//!   `mix(hash(key) ^ hash(member))` and the highest score owns it; a member of weight `w`
//!   scores `w` times (as `w` members would) and keeps its best. Each member's expected share is
//!   its weight over the total for any number of members, and a change moves only the keys won
//!   or lost by the member that changed. One key hash and one multiply-xorshift mix per member:
//!   cheaper than a search among thousands of points at the sizes a cluster has, and nothing
//!   allocated per lookup (the rendezvous crates on the registry sort every member per lookup).
//! - **Points** (clusters founded before): `VNODES_PER_WEIGHT × weight` points per member on a
//!   64-bit circle; a key belongs to the first point at or after its own hash.
//!
//! Keys, points and members are hashed with [`RING_HASH`] over byte strings we write ourselves
//! (never through `std`'s `Hash` impls for `str`, whose byte layout is not a stability promise),
//! so every gateway and node, of any release, agrees on the owner.

use crate::membership::{Member, MemberState, Membership, NodeId, RingScheme};
use hashring::{DefaultHashBuilder, HashRing};
use std::hash::{BuildHasher, Hash, Hasher};

/// The ring's hash function, named so that it is never changed by accident: SipHash-2-4 with the
/// all-zero 128-bit key (the `hashring` crate's default builder). Rendezvous scores mix it with
/// the finalizer of [`mix`].
pub const RING_HASH: &str = "siphash-2-4/key=0";

/// Virtual nodes per unit of weight of the points scheme: ~1.1 max/mean for 3–10 members.
pub const VNODES_PER_WEIGHT: u32 = 256;

/// A member's `replica`-th identity: its id, `#`, the replica's number (big-endian). A points
/// member's points and a rendezvous member's scores are both derived from it.
fn write_identity<H: Hasher>(state: &mut H, id: &NodeId, replica: u32) {
    state.write(id.0.as_bytes());
    state.write(b"#");
    state.write(&replica.to_be_bytes());
}

/// A point on the circle of the points scheme: the member it belongs to, and which of its
/// replicas this is.
struct Point {
    member: usize,
    id: NodeId,
    replica: u32,
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_identity(state, &self.id, self.replica);
    }
}

/// A routing key as raw bytes (a session id, or a stateless affinity key).
struct Key<'a>(&'a [u8]);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// The rendezvous score of a key (by its hash) for one member replica (by its seed): the
/// `splitmix64` finalizer of their xor, a bijection whose every output bit depends on every
/// input bit, so the scores of one key for different seeds behave as independent draws.
fn mix(key: u64, seed: u64) -> u64 {
    let mut z = key ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One scoring identity of a rendezvous member.
struct Seed {
    seed: u64,
    member: usize,
}

enum Placement {
    Points(HashRing<Point, DefaultHashBuilder>),
    Rendezvous(Vec<Seed>),
}

/// An immutable ring built from one membership view; rebuild it when the epoch changes.
pub struct Ring {
    membership: Membership,
    placement: Placement,
}

impl Ring {
    pub fn new(membership: Membership) -> Self {
        let owners = || {
            membership
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.state == MemberState::Active)
        };
        let placement = match membership.ring {
            RingScheme::Points => {
                let mut points = HashRing::with_hasher(DefaultHashBuilder);
                let batch = owners()
                    .flat_map(|(member, m)| {
                        (0..VNODES_PER_WEIGHT * m.weight).map(move |replica| Point {
                            member,
                            id: m.id.clone(),
                            replica,
                        })
                    })
                    .collect();
                points.batch_add(batch);
                Placement::Points(points)
            }
            RingScheme::Rendezvous => Placement::Rendezvous(
                owners()
                    .flat_map(|(member, m)| {
                        (0..m.weight).map(move |replica| {
                            let mut h = DefaultHashBuilder.build_hasher();
                            write_identity(&mut h, &m.id, replica);
                            Seed {
                                seed: h.finish(),
                                member,
                            }
                        })
                    })
                    .collect(),
            ),
        };
        Ring {
            membership,
            placement,
        }
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
        let member = self.owner_index(key)?;
        Some(&self.membership.members[member])
    }

    /// The owner's index in the view's members.
    fn owner_index(&self, key: &[u8]) -> Option<usize> {
        Some(match &self.placement {
            Placement::Points(points) => points.get(&Key(key))?.member,
            Placement::Rendezvous(seeds) => {
                let mut h = DefaultHashBuilder.build_hasher();
                h.write(key);
                let key = h.finish();
                let members = &self.membership.members;
                // Highest score wins; an exact tie (odds 2⁻⁶⁴) goes to the smaller id, so the
                // order members are listed in never matters.
                seeds
                    .iter()
                    .map(|s| (mix(key, s.seed), s.member))
                    .reduce(|best, next| {
                        let better = next.0 > best.0
                            || (next.0 == best.0 && members[next.1].id < members[best.1].id);
                        if better { next } else { best }
                    })?
                    .1
            }
        })
    }

    /// Whether `node` owns `key` in this view.
    pub fn owns(&self, node: &NodeId, key: &[u8]) -> bool {
        self.owner(key).is_some_and(|m| &m.id == node)
    }

    /// Each member's share of the keys, in the view's order (0 for members that are not
    /// `Active`), measured over `samples` distinct keys, whose hashes fall at random over the hash
    /// space. Measured rather than derived: a rendezvous member's share has no closed form, and
    /// measuring both schemes the same way makes them comparable. The standard error of a share
    /// `p` is `sqrt(p × (1 − p) / samples)`: 0.2 % for a third of 65,536 keys.
    pub fn shares(&self, samples: u32) -> Vec<f64> {
        let mut owned = vec![0u32; self.membership.members.len()];
        for i in 0..samples {
            if let Some(member) = self.owner_index(&i.to_be_bytes()) {
                owned[member] += 1;
            }
        }
        owned
            .into_iter()
            .map(|n| f64::from(n) / f64::from(samples.max(1)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
