//! What one ownership lookup costs, for each placement scheme and cluster size: every request a
//! gateway routes and every ownership check a node makes is one lookup.
//!
//! `cargo bench -p shardgate-raft --bench ring`

use shardgate_raft::{Member, MemberState, Membership, NodeId, Ring, RingScheme};
use std::hint::black_box;
use std::time::Instant;

fn view(members: usize, ring: RingScheme) -> Membership {
    Membership {
        cluster: None,
        ring,
        epoch: 1,
        members: (0..members)
            .map(|i| Member {
                id: NodeId(format!("node-{i}")),
                addr: format!("10.0.0.{i}:7000"),
                session_addr: format!("10.0.0.{i}:8000"),
                state: MemberState::Active,
                weight: 1,
            })
            .collect(),
    }
}

fn main() {
    // Session ids as the node mints them: 32 URL-safe characters.
    let keys: Vec<String> = (0..4096u64)
        .map(|i| format!("{:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i))
        .collect();
    const LOOKUPS: usize = 2_000_000;
    println!("| members | scheme | ns per lookup | ring build |");
    println!("|---|---|---|---|");
    for members in [3, 10, 50] {
        for scheme in [RingScheme::Points, RingScheme::Rendezvous] {
            let built = Instant::now();
            let ring = Ring::new(view(members, scheme));
            let build = built.elapsed();
            let start = Instant::now();
            for i in 0..LOOKUPS {
                let key = &keys[i % keys.len()];
                black_box(ring.owner(black_box(key.as_bytes())));
            }
            let ns = start.elapsed().as_nanos() as f64 / LOOKUPS as f64;
            println!("| {members} | {scheme:?} | {ns:.0} | {build:.1?} |");
        }
    }
}
