//! The official Python SDK client (`mcp` 2.3) through the gateway: initialize, list tools,
//! call tools and close, in `legacy` mode (session era) and `auto` mode (which picks the
//! stateless era when the server offers it).

use shardgate_tests::{Cluster, peers};
use std::path::Path;

async fn sdk_client(endpoint: &str, mode: &str) -> anyhow::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sdk_client.py");
    let out = tokio::process::Command::new(peers::python()?)
        .arg(script)
        .args([endpoint, mode])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "python sdk ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test]
async fn t10_legacy_and_auto_modes_through_the_gateway() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let legacy = sdk_client(&cluster.endpoint, "legacy").await?;
    assert!(legacy.contains("ok legacy 2025-11-25"), "{legacy}");
    let auto = sdk_client(&cluster.endpoint, "auto").await?;
    assert!(auto.contains("ok auto 2026-07-28"), "{auto}");
    cluster.stop().await?;
    Ok(())
}
