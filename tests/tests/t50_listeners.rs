//! The gateway's listener speaks HTTP/1.1 and HTTP/2 on one port: h2c by prior knowledge in
//! plain text, and h2 by ALPN when it has a certificate.

use serde_json::json;
use shardgate_tests::mcp::Client;
use shardgate_tests::{Cluster, TlsGateway, client_tls, scratch};
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
    let dir = scratch("tls")?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let gateway = TlsGateway::start(&dir, &certified).await?;
    let listen = gateway.addrs.mcp;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let tls = client_tls(roots, &[b"h2", b"http/1.1"])?;
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

/// The certificate a response came with.
fn served(resp: &reqwest::Response) -> Option<Vec<u8>> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
}

#[tokio::test]
async fn t30_a_certificate_replaced_on_disk_reaches_new_connections_only() -> anyhow::Result<()> {
    let dir = scratch("tls-reload")?;
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let gateway = TlsGateway::start(&dir, &first).await?;
    let (gw, cert, key) = (&gateway.addrs, &gateway.cert, &gateway.key);
    // Clients trust both certificates: what they tell apart is which one they were served.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first.cert.der().clone())?;
    roots.add(second.cert.der().clone())?;
    let mut tls = client_tls(roots, &[b"h2"])?;
    // Each new connection a full handshake: a resumed session keeps its first certificate.
    tls.resumption = rustls::client::Resumption::disabled();
    let endpoint = format!("https://localhost:{}/mcp", gw.mcp.port());
    let client = || -> anyhow::Result<Client> {
        let http = shardgate_tests::http()
            .tls_backend_preconfigured(tls.clone())
            .tls_info(true)
            .resolve("localhost", gw.mcp)
            .build()?;
        Ok(Client::with_http(http, &endpoint))
    };

    // A client on one HTTP/2 connection calls all along.
    let steady = client()?;
    let sid = steady.initialize().await?;
    let resp = steady.post(&init()).send().await?;
    assert_eq!(served(&resp).as_deref(), Some(first.cert.der().as_ref()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = tokio::spawn({
        let (steady, stop) = (steady.clone(), stop.clone());
        async move {
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let count = steady.count(&sid, n).await?;
                anyhow::ensure!(count == n, "call {n} counted {count}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let resp = steady.post(&init()).send().await?;
            Ok((n, served(&resp)))
        }
    });

    std::fs::write(cert, second.cert.pem())?;
    std::fs::write(key, second.signing_key.serialize_pem())?;
    let mut switched = false;
    for _ in 0..60 {
        let resp = client()?.post(&init()).send().await?;
        assert_eq!(resp.status(), 200);
        if served(&resp).as_deref() == Some(second.cert.der().as_ref()) {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        switched,
        "no new connection got the new certificate within 15 s"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, kept) = calls.await??;
    assert!(calls > 10, "the steady client called {calls} times");
    assert_eq!(
        kept.as_deref(),
        Some(first.cert.der().as_ref()),
        "the connection open before keeps its certificate"
    );
    Ok(())
}
