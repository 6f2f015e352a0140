//! The development CA and the mTLS configurations, checked by real handshakes over loopback.

use super::*;
use crate::devca;
use crate::files::TempDir;
use rustls::pki_types::ServerName;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
}

/// A fresh development CA in its own temp dir (kept alive by the returned guard).
fn cluster(name: &str) -> (TempDir, TlsFiles) {
    let dir = TempDir::new(name);
    let files = devca::generate(&dir.path().join("tls"), &hosts()).expect("generate");
    (dir, files)
}

/// A client that trusts the CA in `trust` and presents the certificate in `identity`, if any.
fn client(trust: &TlsFiles, identity: Option<&TlsFiles>) -> Arc<ClientConfig> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(read_roots(&trust.ca).expect("roots"));
    let config = match identity {
        Some(files) => builder
            .with_client_auth_cert(
                read_chain(&files.cert).expect("chain"),
                read_key(&files.key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

struct Outcome {
    /// Whether the client presented a verified certificate.
    server: io::Result<bool>,
    /// The ALPN protocol the client saw, once a ping got its pong.
    client: io::Result<Option<Vec<u8>>>,
}

/// One connection over loopback: the client sends `ping`, the server answers `pong`.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Outcome {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let certified = tls.get_ref().1.peer_certificates().is_some();
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await?;
        assert_eq!(&ping, b"ping");
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok(certified)
    });
    let dial = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await?;
        assert_eq!(&pong, b"pong");
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    };
    let deadline = Duration::from_secs(10);
    let client = tokio::time::timeout(deadline, dial)
        .await
        .expect("client finishes in time");
    let server = tokio::time::timeout(deadline, accept)
        .await
        .expect("server finishes in time")
        .expect("server task");
    Outcome { server, client }
}

fn by_ip() -> ServerName<'static> {
    ServerName::IpAddress(LOOPBACK.into())
}

#[tokio::test]
async fn members_of_one_cluster_shake_hands_by_ip_with_h2() {
    let (_dir, files) = cluster("ok");
    let mtls = Mtls::load(&files).expect("load");
    let outcome = exchange(mtls.server.clone(), mtls.client.clone(), by_ip()).await;
    outcome.server.expect("server accepts");
    assert_eq!(
        outcome.client.expect("client connects"),
        Some(b"h2".to_vec())
    );
}

#[tokio::test]
async fn dns_sans_are_honoured_and_other_names_refused() {
    let (_dir, files) = cluster("names");
    let mtls = Mtls::load(&files).expect("load");
    let localhost = ServerName::try_from("localhost").expect("name");
    let outcome = exchange(mtls.server.clone(), mtls.client.clone(), localhost).await;
    outcome.client.expect("localhost is a SAN");

    let other = ServerName::try_from("node-9.example").expect("name");
    let outcome = exchange(mtls.server.clone(), mtls.client.clone(), other).await;
    let err = outcome.client.expect_err("not a SAN");
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// The handshake lets a client without a certificate through, marked as such, so that the
/// node can answer its requests with a readable 401 instead of a failed handshake.
#[tokio::test]
async fn a_client_without_a_certificate_is_known_as_such() {
    let (_dir, files) = cluster("anonymous");
    let mtls = Mtls::load(&files).expect("load");
    let outcome = exchange(mtls.server.clone(), client(&files, None), by_ip()).await;
    assert!(
        !outcome.server.expect("handshake completes"),
        "no certificate"
    );
    let (_dir, files) = cluster("member");
    let mtls = Mtls::load(&files).expect("load");
    let outcome = exchange(mtls.server.clone(), mtls.client.clone(), by_ip()).await;
    assert!(outcome.server.expect("handshake completes"), "certified");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (_dir, ours) = cluster("ours");
    let (_other_dir, theirs) = cluster("theirs");
    let mtls = Mtls::load(&ours).expect("load");
    let intruder = client(&ours, Some(&theirs));
    let outcome = exchange(mtls.server.clone(), intruder, by_ip()).await;
    let err = outcome.server.expect_err("server refuses");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    outcome.client.expect_err("client gets no answer");
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_our_server() {
    let (_dir, ours) = cluster("server");
    let (_other_dir, theirs) = cluster("client");
    let server = Mtls::load(&ours).expect("load").server;
    let stranger = Mtls::load(&theirs).expect("load").client;
    let outcome = exchange(server, stranger, by_ip()).await;
    let err = outcome.client.expect_err("client refuses");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    outcome
        .server
        .expect_err("the handshake failed on both sides");
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let (dir, files) = cluster("errors");
    let (_other_dir, other) = cluster("errors-other");
    let with = |change: &dyn Fn(&mut TlsFiles)| {
        let mut files = files.clone();
        change(&mut files);
        Mtls::load(&files).expect_err("refused")
    };

    let missing = dir.path().join("missing-ca.pem");
    let err = with(&|f| f.ca = missing.clone());
    assert!(matches!(err, TrustError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    let err = with(&|f| f.ca = files.key.clone());
    assert!(matches!(err, TrustError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("key.pem"), "{err}");

    let err = with(&|f| f.key = files.cert.clone());
    assert!(matches!(err, TrustError::NoPrivateKey { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");

    let err = with(&|f| f.key = other.key.clone());
    assert!(matches!(err, TrustError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let garbled = dir.path().join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let err = with(&|f| f.cert = garbled.clone());
    assert!(matches!(err, TrustError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("garbled.pem"), "{err}");
}
