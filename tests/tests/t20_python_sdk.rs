//! The official Python SDK client (`mcp` 2.3) through the gateway: initialize, list tools,
//! call tools and close, in `legacy` mode (session era) and `auto` mode (which picks the
//! stateless era when the server offers it).

use shardgate_tests::{Cluster, peers};

#[tokio::test]
async fn t10_legacy_and_auto_modes_through_the_gateway() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let legacy = peers::sdk_client(&cluster.endpoint, "legacy", &[]).await?;
    assert!(legacy.contains("ok legacy 2025-11-25"), "{legacy}");
    let auto = peers::sdk_client(&cluster.endpoint, "auto", &[]).await?;
    assert!(auto.contains("ok auto 2026-07-28"), "{auto}");
    cluster.stop().await?;
    Ok(())
}
