//! The chaos harness's `smoke` scenario, as a user runs it: `shardgate chaos --scenario smoke
//! --seed 7 --duration 30s` against a local cluster (a node killed, a node frozen, one added
//! and one drained away, one of the two gateways behind `up`'s front killed, under two callers
//! per session), with every invariant checked on the recorded history. The run fails on any
//! violation; its report must say what held.

use shardgate_tests::{scratch, shardgate_bin};

#[tokio::test]
async fn t10_smoke_holds_every_invariant() -> anyhow::Result<()> {
    let out = scratch("chaos-smoke")?;
    let run = tokio::process::Command::new(shardgate_bin()?)
        .args([
            "chaos",
            "--scenario",
            "smoke",
            "--seed",
            "7",
            "--duration",
            "30s",
        ])
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
        "the smoke scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.trim_end().ends_with("0 violations"), "{stdout}");
    for kind in [
        "kill -9",
        "freeze",
        "scale up",
        "scale down",
        "gateway kill -9 | gateway-",
    ] {
        assert!(
            report.contains(kind),
            "the report lists the {kind}:\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
