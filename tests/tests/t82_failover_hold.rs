//! A node killed under traffic: requests whose owner refuses connections are held by the
//! gateway until the ring gives their keys another owner, then served there. Clients see
//! latency, not errors, where nothing had reached the dead node.

use futures_util::future::join_all;
use shardgate_tests::mcp::Client;
use shardgate_tests::raft::{RaftCluster, active};
use shardgate_tests::scratch;
use std::time::{Duration, Instant};

#[tokio::test]
async fn t10_new_sessions_for_a_killed_owner_wait_for_the_ring_and_succeed() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("failover-hold")?, 3, &["--timings", "production"])?;
    cluster.start(3).await?;
    // A generous hold: detection takes about 2 s with production timings, more on a busy CI.
    let gateway = cluster
        .start_gateway_with(&["--failover-hold-ms", "15000"])
        .await?;
    cluster
        .until_gateway(Duration::from_secs(15), |m| active(m) == 3)
        .await?;
    let c = Client::new(&format!("http://{}/mcp", gateway.mcp));
    cluster.kill(1).await?;
    let started = Instant::now();
    // Each `initialize` is routed by the id the gateway mints for it: about a third belong to
    // the dead node.
    let results = join_all((0..24).map(|_| {
        let c = c.clone();
        async move {
            let began = Instant::now();
            c.initialize().await.map(|_| began.elapsed())
        }
    }))
    .await;
    let mut waits: Vec<Duration> = Vec::new();
    for r in results {
        waits.push(r.map_err(|e| e.context("every initialize succeeds"))?);
    }
    waits.sort();
    println!(
        "24 initializes after kill -9: fastest {:?}, slowest {:?} (held ones wait for the ring), all done after {:?}",
        waits[0],
        waits[waits.len() - 1],
        started.elapsed()
    );
    let (_, view) = cluster
        .until_gateway(Duration::from_secs(15), |m| active(m) == 2)
        .await?;
    assert_eq!(
        active(&view),
        2,
        "the dead node is down in the gateway's view"
    );
    Ok(())
}
