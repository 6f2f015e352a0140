//! The accept loop shared by gateway and node listeners: HTTP/1.1 and HTTP/2 on one port
//! (h2c by prior knowledge, or ALPN when TLS is configured), with graceful shutdown.
//!
//! A listener that demands client certificates (a node's, under mTLS) still completes the
//! handshake of a client without one, and answers each of its requests 401: a refusal the
//! client can read, rather than a handshake failure it has to guess at.
//!
//! We run our own loop rather than `axum::serve` to set HTTP/2 limits: one gateway→node
//! connection multiplexes every SSE stream of every session on that node, so the concurrent
//! stream limit must be far above hyper's default.

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Concurrent HTTP/2 streams per connection (each open SSE stream holds one).
const MAX_CONCURRENT_STREAMS: u32 = 100_000;
/// How long open connections (long-lived SSE streams, mostly) get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// TLS on a listener.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// Requests on a connection without a verified client certificate get 401.
    pub client_certificate_required: bool,
}

/// What every request on a connection without the client certificate it needs gets.
fn unauthenticated() -> Router {
    Router::new().fallback(|| async {
        crate::reply::refuse(
            http::StatusCode::UNAUTHORIZED,
            "a client certificate of the cluster CA is required",
        )
        .into_response()
    })
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let service = TowerToHyperService::new(router);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => match tls.acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let certified = stream.get_ref().1.peer_certificates().is_some();
                        let router = if tls.client_certificate_required && !certified {
                            tracing::debug!(%peer, "a connection without a client certificate");
                            unauthenticated()
                        } else {
                            router
                        };
                        let service = TowerToHyperService::new(router);
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("closing connections still open after the shutdown grace period");
    }
}
