//! The official conformance suite, run against a gateway in front of three nodes serving the
//! builtin upstream: the stable 0.1.x suite (every active scenario), and the 0.2.0 pre-release
//! with the 2025-11-25 and the 2026-07-28 requirement sets. No expected-failures file: a
//! failing scored check fails the test.

use shardgate_tests::{Cluster, peers};

async fn conformance(which: &str, extra: &[&str]) -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).gateways(1).start().await?;
    let out = tokio::process::Command::new(peers::node()?)
        .arg(peers::conformance(which)?)
        .args(["server", "--url", &cluster.endpoint])
        .args(extra)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    cluster.stop().await?;
    anyhow::ensure!(
        out.status.success(),
        "conformance {which} {extra:?} failed: {}",
        stdout
            .lines()
            .filter(|l| l.contains("FAIL") || l.contains("Total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn t10_stable_suite_all_active_scenarios() -> anyhow::Result<()> {
    conformance("stable", &[]).await
}

#[tokio::test]
async fn t20_next_suite_2025_11_25_requirements() -> anyhow::Result<()> {
    conformance("next", &["--requirements", "2025-11-25"]).await
}

#[tokio::test]
async fn t30_next_suite_2026_07_28_requirements() -> anyhow::Result<()> {
    conformance("next", &["--requirements", "2026-07-28"]).await
}
