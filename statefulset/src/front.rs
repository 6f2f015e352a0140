//! The front `up` puts before two or more gateways: one TCP port for clients, its connections
//! relayed to the gateways in turn, as a Kubernetes Service spreads connections over the ready
//! pods of the gateway Deployment. So a client keeps one URL while a gateway dies.
//!
//! It works at layer 4: each connection is relayed whole to one gateway and its bytes are not
//! looked at, so it holds nothing about requests or sessions (a session routes by its id at
//! whichever gateway gets it). A gateway is served from the moment the controller finds it
//! ready ([`ready`], then [`Front::serve`]) until it finds it dead ([`Front::withdraw`]); one
//! that died since is skipped as soon as its port refuses, and the next one is tried. A
//! connection that no gateway takes is closed. A connection relayed to a gateway that dies is
//! closed with it: its client sees the reset and connects again, to another gateway.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a gateway gets to take a connection before the next one is tried. On one machine
/// a live gateway takes it at once and a dead one refuses at once; a gateway that is alive
/// but does not take connections (frozen, backlog full) costs its client this much.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after a failed accept (out of descriptors, say), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Gateway addresses by ordinal; `None` while that gateway is not served.
type Gateways = Vec<Option<SocketAddr>>;

/// A running front. The controller owns it and is the only one that changes what it serves.
pub struct Front {
    /// Where clients connect.
    pub addr: SocketAddr,
    gateways: watch::Sender<Gateways>,
}

impl Front {
    /// Binds `addr` and relays what it accepts to the gateways it serves (none yet) until
    /// `shutdown`.
    pub async fn start(
        addr: SocketAddr,
        gateways: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Front> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("the front cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(vec![None; gateways]);
        tokio::spawn(accept(listener, rx, shutdown));
        Ok(Front { addr, gateways: tx })
    }

    /// Sends connections to gateway `ordinal`, listening on `at`.
    pub fn serve(&self, ordinal: usize, at: SocketAddr) {
        self.set(ordinal, Some(at));
    }

    /// Sends no more connections to gateway `ordinal`.
    pub fn withdraw(&self, ordinal: usize) {
        self.set(ordinal, None);
    }

    /// Where gateway `ordinal` is served, if it is.
    pub fn serving(&self, ordinal: usize) -> Option<SocketAddr> {
        self.gateways.borrow().get(ordinal).copied().flatten()
    }

    fn set(&self, ordinal: usize, to: Option<SocketAddr>) {
        self.gateways
            .send_if_modified(|g| match g.get_mut(ordinal) {
                Some(slot) if *slot != to => {
                    *slot = to;
                    true
                }
                _ => false,
            });
    }
}

/// Whether the gateway whose admin listener is `admin` answers `/health/ready` with 200: it
/// knows a ring, so what it takes goes somewhere. A plain HTTP/1.1 GET, as a kubelet's
/// `httpGet` probe sends.
pub async fn ready(admin: SocketAddr) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(admin).await?;
        let request =
            format!("GET /health/ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut status = [0u8; 12];
        s.read_exact(&mut status).await?;
        Ok::<bool, std::io::Error>(&status == b"HTTP/1.1 200")
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Ok(true))
    )
}

async fn accept(
    listener: TcpListener,
    gateways: watch::Receiver<Gateways>,
    shutdown: CancellationToken,
) {
    let mut n: usize = 0;
    loop {
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "front: accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let order = order(&gateways.borrow(), n);
        n = n.wrapping_add(1);
        tokio::spawn(relay(client, order));
    }
}

/// The gateways to try for the `n`th connection, in order: those served, starting one
/// further along for each connection (round-robin over the served ones, so a withdrawn
/// gateway's share is spread evenly rather than given to its neighbour).
fn order(gateways: &[Option<SocketAddr>], n: usize) -> Vec<SocketAddr> {
    let served: Vec<SocketAddr> = gateways.iter().flatten().copied().collect();
    let start = n % served.len().max(1);
    served[start..]
        .iter()
        .chain(&served[..start])
        .copied()
        .collect()
}

/// Relays `client` to the first gateway in `order` that takes a connection.
async fn relay(mut client: TcpStream, order: Vec<SocketAddr>) {
    for at in order {
        let mut gateway = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(at)).await
        {
            Ok(Ok(gateway)) => gateway,
            Ok(Err(e)) => {
                tracing::debug!(gateway = %at, error = %e, "front: not taken; trying the next");
                continue;
            }
            Err(_) => {
                tracing::debug!(gateway = %at, "front: connect timed out; trying the next");
                continue;
            }
        };
        // Small writes (SSE events, keep-alive comments) must not wait for Nagle.
        let _ = client.set_nodelay(true);
        let _ = gateway.set_nodelay(true);
        // It ends when both sides have closed, or at the first error on either, which then
        // closes both: a gateway that dies takes its clients' connections with it.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut gateway).await;
        return;
    }
    tracing::warn!("front: no gateway took the connection; closing it");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn connections_go_round_robin_over_the_served_gateways() {
        let all = [Some(at(1)), Some(at(2)), Some(at(3))];
        assert_eq!(order(&all, 0), [at(1), at(2), at(3)]);
        assert_eq!(order(&all, 1), [at(2), at(3), at(1)]);
        assert_eq!(order(&all, 5), [at(3), at(1), at(2)]);
        let one_withdrawn = [Some(at(1)), None, Some(at(3))];
        assert_eq!(order(&one_withdrawn, 0), [at(1), at(3)]);
        assert_eq!(order(&one_withdrawn, 1), [at(3), at(1)]);
        assert!(order(&[None, None], 3).is_empty());
    }

    /// An echo server on a free port.
    async fn echo() -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(at(0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(addr)
    }

    /// A port nothing listens on: connections to it are refused.
    async fn refusing() -> anyhow::Result<SocketAddr> {
        Ok(TcpListener::bind(at(0)).await?.local_addr()?)
    }

    async fn round_trip(front: SocketAddr) -> anyhow::Result<Vec<u8>> {
        let mut s = TcpStream::connect(front).await?;
        s.write_all(b"ping").await?;
        s.shutdown().await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_refusing_gateway_is_skipped_and_with_none_left_the_client_is_closed()
    -> anyhow::Result<()> {
        let shutdown = CancellationToken::new();
        let front = Front::start(at(0), 2, shutdown.clone()).await?;
        front.serve(0, refusing().await?);
        front.serve(1, echo().await?);
        for _ in 0..4 {
            assert_eq!(round_trip(front.addr).await?, b"ping");
        }
        front.withdraw(1);
        assert_eq!(front.serving(1), None);
        // Closed without a byte relayed: an end of stream, or a reset.
        let closed = round_trip(front.addr).await;
        assert!(closed.as_ref().map_or(true, Vec::is_empty), "{closed:?}");
        shutdown.cancel();
        Ok(())
    }
}
