//! How long a `kill -9` takes to reach a gateway: from the kill of a follower, and of the
//! leader, to the gateway routing by a view that has the dead node `Down`. Five nodes, one
//! gateway, real processes; each victim is restarted (same id, same data) between runs.
//!
//! `cargo run -p shardgate-tests --bin membership-bench -- [RUNS]` (default 20 per kind).

use shardgate_raft::MemberState;
use shardgate_tests::raft::{RaftCluster, active, state_of};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 20,
    };
    let dir = shardgate_tests::scratch("bench")?;
    let mut cluster = RaftCluster::new(dir.clone(), 5, &["--timings", "production"])?;
    cluster.start(5).await?;
    cluster.start_gateway().await?;
    cluster.until_gateway(CONVERGE, |m| active(m) == 5).await?;

    let mut follower = Vec::new();
    let mut leader = Vec::new();
    for run in 0..runs * 2 {
        let lead = cluster.leader().await?;
        let (kind, victim) = if run % 2 == 0 {
            ("follower", (lead + 1 + run / 2 % 4) % 5)
        } else {
            ("leader", lead)
        };
        let before = cluster.gateway_view().await?.epoch;
        let started = std::time::Instant::now();
        cluster.kill(victim).await?;
        cluster
            .until_gateway(CONVERGE, |m| {
                m.epoch > before && state_of(m, victim) == Some(MemberState::Down)
            })
            .await?;
        let took = started.elapsed();
        println!(
            "{kind:8} node-{victim}: {:7.1} ms",
            took.as_secs_f64() * 1e3
        );
        match kind {
            "follower" => follower.push(took),
            _ => leader.push(took),
        }
        cluster.start_node(victim).await?;
        cluster.until_gateway(CONVERGE, |m| active(m) == 5).await?;
        cluster.wait_for_agreement(CONVERGE).await?;
    }
    for (kind, mut times) in [("follower", follower), ("leader", leader)] {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{kind}: runs {}, median {:.0} ms, max {:.0} ms, min {:.0} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            ms(times[0]),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
