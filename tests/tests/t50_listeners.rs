//! The gateway's listener speaks HTTP/1.1 and HTTP/2 on one port: h2c by prior knowledge in
//! plain text, and h2 by ALPN when it has a certificate.

use serde_json::json;
use shardgate_tests::mcp::Client;
use shardgate_tests::{Cluster, start_gateway, start_node};
use std::sync::Arc;

fn init() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
}

#[tokio::test]
async fn t10_h2c_and_http1_on_one_port() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    for (http, version) in [
        (shardgate_tests::http().build()?, reqwest::Version::HTTP_11),
        (
            shardgate_tests::http().http2_prior_knowledge().build()?,
            reqwest::Version::HTTP_2,
        ),
    ] {
        let client = Client::with_http(http, &cluster.endpoint);
        let resp = client.post(&init()).send().await?;
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("mcp-session-id"));
    }
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_tls_with_alpn_h2() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("shardgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;

    // A one-node cluster; the gateway starts from a view naming it, and follows it.
    let (_node, node) = start_node(&[
        "--id".into(),
        "node-0".into(),
        "--data-dir".into(),
        dir.join("node-0").display().to_string(),
    ])
    .await?;
    let members = format!("node-0={}/{}", node.session, node.internal);
    let (_gateway, gw) = start_gateway(&[
        "--seeds".into(),
        node.internal.to_string(),
        "--members".into(),
        members,
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ])
    .await?;
    let listen = gw.mcp;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let http = shardgate_tests::http()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", listen)
        .build()?;
    let client = Client::with_http(http, &format!("https://localhost:{}/mcp", listen.port()));
    let resp = client.post(&init()).send().await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(resp.status(), 200);
    let sid = client.initialize().await?;
    assert_eq!(client.count(&sid, 1).await?, 1);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
