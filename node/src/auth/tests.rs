//! The guard against the cluster's own client, over loopback.

use super::*;
use axum::Router;
use axum::routing::post;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_raft::consensus::{Transport, TransportError};
use shardgate_trust::{Secret, Signer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn credentials(secret: &str) -> Credentials {
    let secret = Secret::from_bytes(secret.as_bytes().to_vec()).expect("long enough");
    Credentials::Hmac(Signer::new(&secret))
}

const OURS: &str = "the-cluster-secret-for-these-tests-0001";
const THEIRS: &str = "another-cluster-secret-for-these-tests-02";

/// An internal listener echoing `POST /internal/raft/{name}` bodies, guarded (or not).
async fn serve(guard: Option<Guard>) -> (String, CancellationToken) {
    let router = Router::new().route(
        "/internal/raft/{name}",
        post(|body: axum::body::Bytes| async move { body }),
    );
    let router = match &guard {
        Some(g) => g.protect(router, Hop::Internal),
        None => router,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    let limits = shardgate_protocol::listener::ListenerLimits::NODE_INTERNAL;
    tokio::spawn(shardgate_protocol::listener::serve(
        listener,
        limits,
        router,
        None,
        stop.clone(),
    ));
    (addr, stop)
}

#[tokio::test]
async fn a_member_is_answered_and_the_answer_is_checked() {
    let (addr, stop) = serve(Some(Guard::new(credentials(OURS)))).await;
    let client = ClusterClient::new(&credentials(OURS), Duration::from_secs(5)).expect("client");
    let reply = Transport::call(&client, &addr, "probe", br#"{"from":"node-1"}"#.to_vec()).await;
    assert_eq!(reply.expect("answered"), br#"{"from":"node-1"}"#);
    stop.cancel();
}

#[tokio::test]
async fn another_secret_is_refused_with_401() {
    let (addr, stop) = serve(Some(Guard::new(credentials(OURS)))).await;
    let stranger =
        ClusterClient::new(&credentials(THEIRS), Duration::from_secs(5)).expect("client");
    let reply = Transport::call(&stranger, &addr, "join", b"{}".to_vec()).await;
    assert!(
        matches!(&reply, Err(TransportError::Status { status: 401, body })
            if body.contains("cluster authentication failed")),
        "{reply:?}"
    );
    let raw = reqwest::Client::new()
        .post(format!("http://{addr}/internal/raft/join"))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(raw.status(), 401);
    stop.cancel();
}

#[tokio::test]
async fn an_unsigned_answer_is_not_believed() {
    // A server that answers without signing: not a member, whatever it says.
    let (addr, stop) = serve(None).await;
    let client = ClusterClient::new(&credentials(OURS), Duration::from_secs(5)).expect("client");
    let reply = Transport::call(&client, &addr, "probe", b"{}".to_vec()).await;
    assert!(
        matches!(&reply, Err(TransportError::Other(e)) if e.contains("unauthenticated answer")),
        "{reply:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_peer_nobody_listens_for_is_reported_as_refused() {
    let client = ClusterClient::new(&credentials(OURS), Duration::from_secs(5)).expect("client");
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let reply = Transport::call(&client, &addr, "probe", b"{}".to_vec()).await;
    assert!(
        matches!(reply, Err(TransportError::Refused(_))),
        "{reply:?}"
    );
}
