//! The proxy against stand-in nodes on a real socket, with the wire behaviour under test, a real
//! gateway in front of them, and a client speaking HTTP/1.1 or HTTP/2 to the gateway.

use crate::config::GatewayConfig;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use shardgate_protocol::listener::ListenerLimits;
use shardgate_protocol::mcp;
use shardgate_raft::{Member, MemberState, Membership, NodeId};
use shardgate_trust::{Credentials, Secret, Signer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

type Answer = Response<BoxBody<Bytes, std::io::Error>>;

/// A stand-in node on a real socket that answers every request with `answer()`.
async fn stand_in(answer: fn() -> Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("node address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(
                        move |_req| async move { Ok::<_, Infallible>(answer()) },
                    );
                let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(served);
            });
        }
    });
    addr
}

fn answer(content_type: &str, body: BoxBody<Bytes, std::io::Error>) -> Answer {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.parse().expect("a valid content type"),
    );
    resp
}

/// A node that starts every answer as JSON and dies halfway through it.
fn breaking_off() -> Answer {
    // The answer's head goes out at once; its body a moment later, then the node is gone.
    let frames = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"#,
        ))),
        Err(std::io::Error::other("the node died")),
    ])
    .then(|frame| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        frame
    });
    answer("application/json", BodyExt::boxed(StreamBody::new(frames)))
}

/// A node that answers with a one-event SSE stream whose end comes as a frame of its own, as a
/// streamed answer's end does.
fn streaming() -> Answer {
    let event = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    let frames = futures_util::stream::iter([Ok(Frame::data(Bytes::from(format!(
        "event: message\ndata: {event}\n\n"
    ))))]);
    answer("text/event-stream", BodyExt::boxed(StreamBody::new(frames)))
}

/// A gateway whose ring holds the one node at `node`; cancelling the token stops it.
async fn gateway_before(node: SocketAddr) -> (SocketAddr, CancellationToken) {
    let member = Member {
        id: NodeId::from("node-0"),
        addr: node.to_string(),
        session_addr: node.to_string(),
        state: MemberState::Active,
        weight: 1,
    };
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: None,
        http3: false,
        allowed_hosts: GatewayConfig::loopback_hosts(),
        allowed_origins: Vec::new(),
        max_body_bytes: GatewayConfig::DEFAULT_MAX_BODY,
        membership: Membership {
            cluster: None,
            ring: Default::default(),
            epoch: 1,
            members: vec![member],
        },
        seeds: Vec::new(),
        affinity: Default::default(),
        credentials: Credentials::Hmac(Signer::new(&Secret::generate())),
        client_limits: Default::default(),
        admin_limits: ListenerLimits::ADMIN,
        failover_hold: GatewayConfig::DEFAULT_FAILOVER_HOLD,
        workers: 0,
        auth: crate::auth::AuthConfig::Off,
        rate: Default::default(),
    };
    let bound = crate::Bound::bind(&config)
        .await
        .expect("gateway listeners");
    let addr = bound.mcp.local_addr().expect("gateway address");
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::run(config, bound, shutdown.clone()));
    (addr, shutdown)
}

/// POSTs `body` to the gateway's `/mcp` over HTTP/1.1; the status and the whole answer.
async fn post(gateway: SocketAddr, body: &Value) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(gateway).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post("/mcp")
        .header(header::HOST, gateway.to_string())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("an answer");
    let status = resp.status();
    let answer = resp
        .into_body()
        .collect()
        .await
        .expect("the answer arrives whole");
    (status, answer.to_bytes())
}

/// An HTTP/2 client counts the empty DATA frames that do not end a stream over its
/// connection's whole life, and closes the connection after 100 (h2's defence against a flood
/// of them). A streamed answer's end reaches the gateway as an empty frame of its own; passed
/// on as data, it became one such frame per answer, and every HTTP/2 client lost its connection
/// after 100 answers.
#[tokio::test]
async fn an_http2_client_keeps_its_connection_over_many_streamed_answers() {
    let node = stand_in(streaming).await;
    let (gateway, shutdown) = gateway_before(node).await;
    let stream = TcpStream::connect(gateway).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for n in 0..250 {
        let req = Request::post(format!("http://{gateway}/mcp"))
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .header(mcp::HEADER_SESSION_ID, "s-1")
            .body(Full::new(Bytes::from(call.clone())))
            .expect("request");
        let resp = sender
            .clone()
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("answer {n}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "answer {n}");
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("answer {n}'s body: {e}"));
        assert!(body.to_bytes().ends_with(b"\n\n"), "answer {n}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_json_answer_that_breaks_off_becomes_an_explicit_error_for_its_request() {
    let node = stand_in(breaking_off).await;
    let (gateway, shutdown) = gateway_before(node).await;
    let initialize = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "proxy-test", "version": "0"},
        },
    });
    let (status, answer) =
        tokio::time::timeout(Duration::from_secs(10), post(gateway, &initialize))
            .await
            .expect("answered, not hung");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let answer: Value = serde_json::from_slice(&answer).expect("a whole JSON-RPC answer");
    assert_eq!(answer["id"], json!(1), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("node-0"), "{answer}");
    assert!(message.contains("broke off"), "{answer}");
    assert!(message.contains(mcp::INTERRUPTED), "{answer}");
    shutdown.cancel();
}
