//! The edge: where clients connect. Gateways hold no session state; they check each request,
//! pick its era and routing key, and proxy it to the node that owns the key.
//!
//! Layout, in the order a request flows through it:
//! - [`config`]: the typed, validated configuration.
//! - [`http3`]: HTTP/3 over QUIC beside TLS, into the same router.
//! - [`tls`]: the optional TLS acceptor (ALPN h2, http/1.1) for the client listener, its
//!   certificate reloaded when its files change.
//! - [`proxy`]: the `/mcp` handler and its phases, calling in turn
//!   [`checks`] (403/405/406/415/413), [`rate`] and [`auth`] (429, the bearer token:
//!   401/403), the era and routing-key decision ([`affinity`] in the
//!   stateless era), and
//!   [`forward`] (pooled h2c to the owner, one retry after 421) over [`ring_view`].
//! - [`error`]: every refusal with its blame, status, JSON-RPC error and metric label.
//! - [`admin`] and [`metrics`]: `/health`, `/health/ready`, `/metrics` on the admin port, and
//!   [`status`]: the status page there.

pub mod admin;
pub mod affinity;
pub mod auth;
mod broken;
pub mod checks;
pub mod config;
pub mod error;
pub mod follow;
pub mod forward;
pub mod http3;
pub mod metrics;
pub mod proxy;
pub mod rate;
pub mod ring_view;
pub mod status;
pub mod tls;

use axum::Router;
use axum::routing::{any, get};
use config::GatewayConfig;
use forward::Forwarder;
use http::{HeaderName, Method};
use metrics::Metrics;
use ring_view::RingView;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_protocol::{listener, mcp};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Shared state of one gateway process.
pub struct Gateway {
    pub config: GatewayConfig,
    pub ring: RingView,
    pub metrics: Metrics,
    /// Stateless-era routing: what nodes said each call needs, and the spread.
    pub affinity: affinity::Affinity,
    /// Who may use `/mcp`.
    pub auth: auth::Auth,
    /// Requests per minute per principal and per client IP.
    pub rate: rate::RateLimits,
    /// `Alt-Svc` advertising HTTP/3, when it is served.
    pub alt_svc: Option<http::HeaderValue>,
}

/// What one worker thread serves client requests with: the gateway's shared state, and the
/// worker's own connections to the nodes, so that a request and its hop to a node stay on one
/// thread.
pub struct Worker {
    pub gw: Arc<Gateway>,
    pub forwarder: Forwarder,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("client to nodes: {0}")]
    NodeClient(String),
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error("auth: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("HTTP/3: {0}")]
    H3(#[from] http3::H3Error),
}

/// The longest the status page's client waits for a member; each report asks for less.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Browsers may read these response headers (a client in a page needs the session id, or its
/// stateless-era correlation key; the challenge of a 401 to find where to get a token; when to
/// retry after a 429).
const EXPOSED: [&str; 5] = [
    mcp::HEADER_SESSION_ID,
    mcp::HEADER_PROTOCOL_VERSION,
    affinity::KEY_HEADER,
    "www-authenticate",
    "retry-after",
];

fn cors(gw: &Arc<Gateway>) -> CorsLayer {
    let check = gw.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| checks::origin_allowed(&check.config, o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(tower_http::cors::Any)
        .expose_headers(EXPOSED.map(HeaderName::from_static))
}

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/mcp", any(proxy::mcp))
        .route(auth::METADATA_PATH, get(proxy::resource_metadata))
        .route(
            &format!("{}/mcp", auth::METADATA_PATH),
            get(proxy::resource_metadata),
        )
        .layer(cors(&worker.gw))
        .with_state(worker)
}

/// Forgets, now and then, the rate buckets of clients not seen lately.
async fn forget_idle_buckets(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(rate::FORGET_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => gw.rate.forget_idle(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Listeners bound but not yet serving, so callers learn the real ports first.
pub struct Bound {
    pub mcp: TcpListener,
    pub admin: TcpListener,
    /// HTTP/3's UDP socket, on the client listener's port number, when it is served.
    pub udp: Option<std::net::UdpSocket>,
}

impl Bound {
    pub async fn bind(config: &GatewayConfig) -> Result<Bound, GatewayError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| GatewayError::Bind { addr, error })
        };
        let mcp = bind(config.listen).await?;
        let udp = match config.tls.is_some() && config.http3 {
            true => {
                let addr = mcp.local_addr().map_err(|error| GatewayError::Bind {
                    addr: config.listen,
                    error,
                })?;
                Some(
                    std::net::UdpSocket::bind(addr)
                        .map_err(|error| GatewayError::Bind { addr, error })?,
                )
            }
            false => None,
        };
        Ok(Bound {
            mcp,
            admin: bind(config.admin_listen).await?,
            udp,
        })
    }
}

/// Runs a gateway on already-bound listeners until `shutdown` is cancelled.
pub async fn run(
    config: GatewayConfig,
    bound: Bound,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    config.validate()?;
    let certificates = config
        .tls
        .as_ref()
        .map(tls::Certificates::load)
        .transpose()?;
    let tls = certificates
        .as_ref()
        .map(tls::acceptor)
        .transpose()?
        .map(|acceptor| listener::Tls {
            acceptor,
            client_certificate_required: false,
        });
    let quic = match (&bound.udp, &certificates) {
        (Some(udp), Some(certificates)) => {
            let udp = udp.try_clone().map_err(http3::H3Error::Socket)?;
            Some(http3::endpoint(udp, certificates, &config.client_limits)?)
        }
        _ => None,
    };
    if let Some(certificates) = certificates {
        tokio::spawn(tls::watch(certificates, shutdown.clone()));
    }
    let alt_svc = match &quic {
        Some(endpoint) => {
            let port = endpoint
                .local_addr()
                .map_err(http3::H3Error::Socket)?
                .port();
            http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
        }
        None => None,
    };
    let auth = auth::Auth::new(&config.auth).await?;
    if !auth.is_on() {
        tracing::warn!(
            "auth is off: every client is anonymous and may use any session whose id it learns; for local development only"
        );
    }
    let gw = Arc::new(Gateway {
        auth,
        rate: rate::RateLimits::new(&config.rate),
        alt_svc,
        ring: RingView::new(config.membership.clone()),
        metrics: Metrics::new()?,
        affinity: affinity::Affinity::new(config.affinity),
        config,
    });
    let forwarder = || {
        Forwarder::new(&gw.config.credentials, gw.config.failover_hold)
            .map_err(GatewayError::NodeClient)
    };
    if gw.rate.is_on() {
        tokio::spawn(forget_idle_buckets(gw.clone(), shutdown.clone()));
    }
    // Without seeds the view is fixed but for what 421s bring.
    if !gw.config.seeds.is_empty() {
        tokio::spawn(follow::follow(
            gw.clone(),
            forwarder()?,
            gw.config.seeds.clone(),
            shutdown.clone(),
        ));
    }
    let reports = ClusterClient::new(&gw.config.credentials, STATUS_TIMEOUT)
        .map_err(GatewayError::NodeClient)?;
    let admin = listener::serve(
        bound.admin,
        gw.config.admin_limits,
        admin::router(gw.clone(), reports),
        None,
        shutdown.clone(),
    );
    let threads = listener::Workers::start(gw.config.workers, "gateway-worker")
        .map_err(GatewayError::Workers)?;
    let routers: Vec<Router> = (0..threads.len())
        .map(|_| {
            Ok(router(Arc::new(Worker {
                gw: gw.clone(),
                forwarder: forwarder()?,
            })))
        })
        .collect::<Result<_, GatewayError>>()?;
    let client_limits = gw.config.client_limits;
    // HTTP/3 on the main runtime, with a worker of its own.
    let h3 = match quic {
        Some(endpoint) => {
            tracing::info!(addr = %endpoint.local_addr().map_err(http3::H3Error::Socket)?, "HTTP/3 listening");
            let worker = Arc::new(Worker {
                gw: gw.clone(),
                forwarder: forwarder()?,
            });
            Some(http3::serve(
                endpoint,
                router(worker),
                client_limits,
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let h3 = async {
        if let Some(h3) = h3 {
            h3.await;
        }
    };
    let mcp = listener::serve_on(
        bound.mcp,
        client_limits,
        &threads,
        |i| routers[i].clone(),
        tls,
        shutdown,
    );
    tokio::join!(admin, mcp, h3);
    threads.stop().await;
    Ok(())
}
