//! How one node's request reaches another: a [`Transport`] carries a named JSON body to
//! `http://{addr}/internal/raft/{name}` and brings back the reply body.
//!
//! Consensus code only sees the trait, so tests can swap in an in-process router with injected
//! faults while production uses [`HttpTransport`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future, as [`Transport::call`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries one cluster RPC to the node at `addr` and returns its reply body.
///
/// Implementations add no retries: Raft and the join loop retry at their own pace, and callers
/// bound each call with their own deadline.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: &str,
        name: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing answered at the address; openraft backs off instead of retrying at once.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("timed out")]
    Timeout,
    /// The peer answered with an HTTP error (unknown RPC, malformed body, shutting down).
    #[error("status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Other(String),
}

/// The production transport: one pooled HTTP/1.1 client for every peer.
///
/// HTTP/1.1 with keep-alive rather than h2c, since it works with any listener the node mounts
/// the routes on; Raft traffic is a few small requests per heartbeat.
///
/// In a binary where reqwest is built with `rustls-no-provider` (feature unification), a rustls
/// crypto provider must be installed before [`HttpTransport::new`], although these requests are
/// plain HTTP.
pub struct HttpTransport {
    client: reqwest::Client,
}

/// Bounds connection setup to a peer that is gone (a blackholed pod IP) well below a lease.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl HttpTransport {
    /// `request_timeout` caps every call as a last resort; callers use shorter deadlines.
    pub fn new(request_timeout: Duration) -> Result<HttpTransport, TransportError> {
        // The workspace builds reqwest without a TLS provider of its own (one crypto library,
        // ring); the client refuses to build unless one is installed, even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            .build()
            .map_err(|e| TransportError::Other(e.to_string()))?;
        Ok(HttpTransport { client })
    }
}

impl Transport for HttpTransport {
    fn call(
        &self,
        addr: &str,
        name: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let request = self
            .client
            .post(format!("http://{addr}/internal/raft/{name}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Box::pin(async move {
            let response = request.send().await.map_err(classify)?;
            let status = response.status();
            let body = response.bytes().await.map_err(classify)?;
            if !status.is_success() {
                return Err(TransportError::Status {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            Ok(body.to_vec())
        })
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_connect() {
        TransportError::Unreachable(e.to_string())
    } else if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one HTTP/1.1 request with `response` and returns the request as text.
    async fn serve_once(listener: TcpListener, response: &'static str) -> String {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = socket.read(&mut chunk).await.expect("read");
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0usize);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            assert!(n > 0, "connection closed mid-request");
        }
        socket.write_all(response.as_bytes()).await.expect("write");
        String::from_utf8_lossy(&request).to_string()
    }

    #[tokio::test]
    async fn posts_json_to_the_internal_route() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong",
        ));
        let transport = HttpTransport::new(Duration::from_secs(2)).expect("client");
        let reply = transport
            .call(&addr, "probe", br#"{"from":"node-1"}"#.to_vec())
            .await;
        assert_eq!(reply.expect("reply"), b"pong");
        let request = server.await.expect("server");
        assert!(
            request.starts_with("POST /internal/raft/probe HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert!(request.ends_with(r#"{"from":"node-1"}"#), "{request}");
    }

    #[tokio::test]
    async fn reports_http_errors_and_unreachable_peers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\n\r\nunknown",
        ));
        let transport = HttpTransport::new(Duration::from_secs(2)).expect("client");
        let reply = transport.call(&addr, "nope", b"{}".to_vec()).await;
        assert!(
            matches!(&reply, Err(TransportError::Status { status: 404, body }) if body == "unknown"),
            "{reply:?}"
        );
        server.await.expect("server");

        // Nothing listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let reply = transport.call(&addr, "probe", b"{}".to_vec()).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable(_))),
            "{reply:?}"
        );
    }
}
