//! The chaos harness's `smoke` scenario on a Redis Cluster the harness runs itself
//! (`shardgate chaos --scenario smoke --seed 7 --duration 30s --redis`): besides the node and
//! gateway faults, a Redis primary is killed, its replica takes over and the killed server
//! comes back as a replica, under the same load and the same invariants. Its own test file, so
//! that it does not run beside the other smoke run on this machine's two cores.

use shardgate_tests::{scratch, shardgate_bin};

#[tokio::test]
async fn t10_smoke_on_redis_survives_a_primary_kill() -> anyhow::Result<()> {
    let out = scratch("chaos-smoke-redis")?;
    let run = tokio::process::Command::new(shardgate_bin()?)
        .args(["chaos", "--scenario", "smoke", "--seed", "7"])
        .args(["--duration", "30s", "--redis"])
        // CI machines are slower than production clusters.
        .args(["--timings", "relaxed", "--out"])
        .arg(&out)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap_or_default();
    println!("{stdout}\n{report}");
    assert!(
        run.status.success(),
        "the smoke scenario on Redis failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.trim_end().ends_with("0 violations"), "{stdout}");
    assert!(
        report.contains("| redis primary kill -9 | primary :"),
        "the report lists the primary kill:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
