//! The HTTP connector end to end, against loopback sockets.

use super::Http;
use crate::upstream::connector::{Connector, Transport};
use crate::upstream::testing::Client;
use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use shardgate_protocol::mcp::code;

#[tokio::test]
async fn a_refused_connection_is_reported_without_the_url() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = crate::config::NodeFile::parse(&format!(
        "[[upstream]]\nname = 'remote'\n[upstream.http]\nurl = 'http://127.0.0.1:{port}/mcp?token=s3cret'\n"
    ))
    .expect("config");
    let Some(crate::config::UpstreamConfig { http: Some(h), .. }) = config.upstreams.first() else {
        panic!("an http upstream");
    };
    let budgets = std::sync::Arc::new(crate::budget::Budgets::new(&Default::default()));
    let connector = Connector::http("remote", h, budgets).expect("client");
    let err = Client::session()
        .run(&connector, "tools/list", json!({}))
        .await
        .expect_err("nothing listens");
    assert!(
        err.message.starts_with("upstream remote: "),
        "{}",
        err.message
    );
    assert!(!err.message.contains("s3cret"), "{}", err.message);
    assert!(!err.message.contains("/mcp"), "{}", err.message);
}

/// The message size the upstream of [`oversized`] is read with.
const LIMIT: usize = 1024;

/// A body of `n` bytes of `x`, in chunks, without a `Content-Length`.
fn padding(n: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::iter((0..n / 256).map(|_| Ok(Bytes::from(vec![b'x'; 256]))))
}

/// What the upstream of [`oversized`] answers to each method.
fn answer(request: &Value) -> Response {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let json = |body: Body| {
        Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
    };
    let events = |body: Body| {
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(body)
    };
    let response = match request.get("method").and_then(Value::as_str) {
        // Small enough.
        Some("ping") => json(Body::from(
            json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
        )),
        // Over the limit, and says so in its Content-Length.
        Some("tools/list") => json(Body::from(
            json!({"jsonrpc": "2.0", "id": id, "result": {"pad": "x".repeat(4 * LIMIT)}})
                .to_string(),
        )),
        // Over the limit, without saying so: chunked.
        Some("resources/list") => {
            let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"pad":""#);
            let body = stream::iter([Ok(Bytes::from(head))])
                .chain(padding(4 * LIMIT))
                .chain(stream::iter([Ok(Bytes::from_static(b"\"}}"))]));
            json(Body::from_stream(body))
        }
        // An event whose one line never ends.
        Some("tools/call") => {
            let endless = stream::iter([Ok(Bytes::from_static(b"data: "))]).chain(
                stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 256]))),
            );
            events(Body::from_stream(endless))
        }
        // An event of many short lines, over the limit together; the answer comes after it.
        Some("prompts/list") => {
            let line = format!("data: {}\n", "x".repeat(100));
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {}});
            events(Body::from(format!(
                "{}\ndata: {answer}\n\n",
                line.repeat(LIMIT / 100 + 1)
            )))
        }
        _ => Response::builder()
            .status(http::StatusCode::BAD_REQUEST)
            .body(Body::empty()),
    };
    response.expect("a response")
}

/// A stateless-era upstream on loopback that answers some methods with more than [`LIMIT`]
/// bytes, and the connector to it; one failure opens its breaker.
async fn oversized() -> Connector {
    let router =
        Router::new().route(
            "/mcp",
            post(|body: Bytes| async move {
                answer(&serde_json::from_slice(&body).unwrap_or(Value::Null))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let config = crate::config::NodeFile::parse(&format!(
        "[[upstream]]\nname = 'remote'\n[upstream.http]\nurl = 'http://{addr}/mcp'\n\
         era = 'stateless'\nrequest_timeout_secs = 10\nbreaker_failures = 1\n"
    ))
    .expect("config");
    let Some(crate::config::UpstreamConfig { http: Some(h), .. }) = config.upstreams.first() else {
        panic!("an http upstream");
    };
    let http = Http::new("remote", h, LIMIT).expect("client");
    Connector::with(
        "remote",
        Transport::Http(http),
        &crate::budget::Budgets::new(&Default::default()),
    )
}

#[tokio::test]
async fn messages_over_the_limit_end_their_call_with_an_error_naming_it() {
    let connector = oversized().await;
    let client = Client::stateless();
    for method in ["tools/list", "resources/list", "tools/call", "prompts/list"] {
        let err = client
            .run(&connector, method, json!({}))
            .await
            .expect_err("over the limit");
        assert_eq!(err.code, code::UNAVAILABLE, "{method}: {}", err.message);
        assert!(
            err.message.starts_with("upstream remote: ")
                && err.message.contains(&format!("exceeded {LIMIT} bytes"))
                && err.message.contains("upstream_message_bytes"),
            "{method}: {}",
            err.message
        );
    }
    // The upstream works: it said too much, and its breaker (one failure opens it) stays shut.
    let pong = client.run(&connector, "ping", json!({})).await;
    assert_eq!(pong.expect("a small answer"), json!({}));
}
