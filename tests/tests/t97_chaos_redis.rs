//! The chaos harness's `smoke` scenario on a Redis Cluster the harness runs itself
//! (`shardgate chaos --scenario smoke --seed 7 --duration 30s --redis`): besides the node and
//! gateway faults, a Redis primary is killed, its replica takes over and the killed server
//! comes back as a replica, under the same load and the same invariants. Its own test file, so
//! that it does not run beside the other smoke run on this machine's two cores.

use shardgate_tests::chaos_smoke;

#[tokio::test]
async fn t10_smoke_on_redis_survives_a_primary_kill() -> anyhow::Result<()> {
    let (out, _, report) = chaos_smoke("chaos-smoke-redis", &["--redis"]).await?;
    assert!(
        report.contains("| redis primary kill -9 | primary :"),
        "the report lists the primary kill:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
