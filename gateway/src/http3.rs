//! HTTP/3 over QUIC on the gateway's UDP port (the TLS port's number): the same router, and so
//! the same checks, routing and forwarding as HTTP/1.1 and HTTP/2 over TCP. Each request
//! stream becomes an `http::Request` whose body is read from the stream as the handler asks
//! for it; the response's body is written out frame by frame as it comes, so SSE answers flow.
//!
//! Bounds, from the client listener's [`ListenerLimits`]: connections (beyond the cap a new
//! one is refused), request streams per connection (QUIC stream credit), header section size,
//! handshake time, a request body that sends nothing for the body timeout, and the idle timeout
//! (QUIC's own, so a connection that changes address keeps it: migration is on). On shutdown
//! every connection is sent GOAWAY, gets the shutdown grace to finish what it has in flight,
//! and is then closed once its client has closed it or [`CLOSE_LINGER`] has passed, so that
//! the last bytes of its answers arrive.
//!
//! No 0-RTT: a replayed early request could act twice.

use crate::tls::Certificates;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use h3::server::RequestStream;
use http::{HeaderName, Request, Response, header};
use http_body_util::BodyExt;
use shardgate_protocol::listener::{ListenerLimits, SHUTDOWN_GRACE};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// ALPN of HTTP/3.
const ALPN: &[u8] = b"h3";
/// Unidirectional streams a client may open: HTTP/3's control stream and QPACK's two, with
/// room for a client that opens them again.
const UNI_STREAMS: u32 = 8;
/// How long a connection that has answered everything waits for its client to close it.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// The error code of a graceful close (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;
/// Headers HTTP/3 forbids (RFC 9114 §4.2): they describe a TCP connection.
const CONNECTION_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    HeaderName::from_static("keep-alive"),
];

#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error("QUIC TLS configuration: {0}")]
    Tls(String),
    #[error("cannot serve QUIC on the UDP socket: {0}")]
    Socket(std::io::Error),
}

/// A QUIC endpoint on `socket` with the gateway's certificates (reloaded as for TCP).
pub fn endpoint(
    socket: UdpSocket,
    certificates: &Arc<Certificates>,
    limits: &ListenerLimits,
) -> Result<quinn::Endpoint, H3Error> {
    let tls = certificates
        .config(&[ALPN], true)
        .map_err(|e| H3Error::Tls(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| H3Error::Tls(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_concurrent_streams.into())
        .max_concurrent_uni_streams(UNI_STREAMS.into())
        .max_idle_timeout(limits.idle_timeout.try_into().ok());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport)).migration(true);
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
    .map_err(H3Error::Socket)
}

/// Serves HTTP/3 on `endpoint` with `router` until `shutdown`, then lets connections finish.
pub async fn serve(
    endpoint: quinn::Endpoint,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let room = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            tracing::debug!(peer = %incoming.remote_address(), "QUIC connection refused: at the connection limit");
            incoming.refuse();
            continue;
        };
        let (router, shutdown) = (router.clone(), shutdown.clone());
        connections.spawn(async move {
            connection(incoming, router, limits, shutdown).await;
            drop(permit);
        });
        // Reap the connections that ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    endpoint.set_server_config(None);
    while connections.join_next().await.is_some() {}
    endpoint.close(H3_NO_ERROR.into(), b"shutting down");
    endpoint.wait_idle().await;
}

/// One QUIC connection: its handshake, then its requests until it ends or is shut down.
async fn connection(
    incoming: quinn::Incoming,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let Ok(connecting) = incoming.accept() else {
        return;
    };
    let conn = match tokio::time::timeout(limits.tls_handshake_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake timed out");
            return;
        }
    };
    let quic = conn.clone();
    let built = h3::server::builder()
        .max_field_section_size(u64::from(limits.max_header_list_size))
        .build(h3_quinn::Connection::new(conn))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            _ = shutdown.cancelled() => {
                // GOAWAY naming the stream after the last one taken: every request taken is
                // served, none after it is (its client may safely send it again elsewhere).
                // GOAWAY naming the last one taken itself would tell its client that it was
                // not processed, and the client would give up on its answer.
                let _ = h3.shutdown(1).await;
                break;
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                let (router, body_timeout) = (router.clone(), limits.body_timeout);
                let quic = quic.clone();
                requests.spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => {
                            // The address now: a client that migrated has a new one.
                            let peer = quic.remote_address();
                            serve_request(req, stream, router, peer, body_timeout).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "HTTP/3 request head refused"),
                    }
                });
                while requests.try_join_next().is_some() {}
            }
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended with an error");
                }
                break;
            }
        }
    }
    // What was taken gets the shutdown grace to finish, as over TCP; then the connection goes.
    let finish = async { while requests.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
        tracing::debug!(%peer, "HTTP/3 requests still open at close; dropped");
    }
    // Closing at once would discard the last answers' final bytes if they are still in flight
    // (a QUIC close drops unacknowledged stream data): the client, told by GOAWAY that nothing
    // more is coming, closes once it has read them; one that does not is closed after a while.
    let _ = tokio::time::timeout(CLOSE_LINGER, quic.closed()).await;
    quic.close(H3_NO_ERROR.into(), b"");
}

/// One request: through the router, its response written back as it comes.
async fn serve_request<S>(
    req: Request<()>,
    stream: RequestStream<S, Bytes>,
    router: Router,
    peer: SocketAddr,
    body_timeout: Duration,
) where
    S: h3::quic::BidiStream<Bytes> + Send + 'static,
    S::RecvStream: Send + 'static,
    S::SendStream: Send,
{
    let (mut send, recv) = stream.split();
    let body = Body::from_stream(request_body(recv, body_timeout));
    let mut req = req.map(|()| body);
    req.extensions_mut().insert(ConnectInfo(peer));
    let Ok(resp) = router.oneshot(req).await;
    let (mut parts, mut body) = resp.into_parts();
    for name in &CONNECTION_HEADERS {
        parts.headers.remove(name);
    }
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%peer, error = %e, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The answer broke off upstream: the stream ends without its clean finish.
                tracing::debug!(%peer, error = %e, "HTTP/3 answer broke off");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
            && let Err(e) = send.send_data(data).await
        {
            // The client went away; dropping the body lets the node know.
            tracing::debug!(%peer, error = %e, "HTTP/3 client stopped reading its answer");
            return;
        }
    }
    let _ = send.finish().await;
}

/// A request stream's body as the router reads it; a body that sends nothing for
/// `body_timeout` ends with an error, as over TCP.
fn request_body<S>(
    recv: RequestStream<S, Bytes>,
    body_timeout: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: h3::quic::RecvStream + Send + 'static,
{
    futures_util::stream::unfold(Some(recv), move |recv| async move {
        let mut recv = recv?;
        match tokio::time::timeout(body_timeout, recv.recv_data()).await {
            Ok(Ok(Some(mut chunk))) => {
                let bytes = chunk.copy_to_bytes(chunk.remaining());
                Some((Ok(bytes), Some(recv)))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body sent nothing in time",
                )),
                None,
            )),
        }
    })
    .boxed()
}
