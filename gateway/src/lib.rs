//! The edge: where clients connect. Gateways hold no session state; they check each request,
//! pick its era and routing key, and proxy it to the node that owns the key.
//!
//! Layout, in the order a request flows through it:
//! - [`config`]: the typed, validated configuration.
//! - [`tls`]: the optional TLS acceptor (ALPN h2, http/1.1) for the client listener.
//! - [`proxy`]: the `/mcp` handler and its phases, calling in turn
//!   [`checks`] (403/405/406/415/413), the era and routing-key decision ([`affinity`] in the
//!   stateless era), and
//!   [`forward`] (pooled h2c to the owner, one retry after 421) over [`ring_view`].
//! - [`error`]: every refusal with its blame, status, JSON-RPC error and metric label.
//! - [`admin`] and [`metrics`]: `/health`, `/health/ready`, `/metrics` on the admin port.

pub mod admin;
pub mod affinity;
mod broken;
pub mod checks;
pub mod config;
pub mod error;
pub mod follow;
pub mod forward;
pub mod metrics;
pub mod proxy;
pub mod ring_view;
pub mod tls;

use axum::Router;
use axum::routing::any;
use config::GatewayConfig;
use forward::Forwarder;
use http::{HeaderName, Method};
use metrics::Metrics;
use ring_view::RingView;
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
}

/// Browsers may read these response headers (a client in a page needs the session id, or its
/// stateless-era correlation key).
const EXPOSED: [&str; 3] = [
    mcp::HEADER_SESSION_ID,
    mcp::HEADER_PROTOCOL_VERSION,
    affinity::KEY_HEADER,
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
        .layer(cors(&worker.gw))
        .with_state(worker)
}

/// Listeners bound but not yet serving, so callers learn the real ports first.
pub struct Bound {
    pub mcp: TcpListener,
    pub admin: TcpListener,
}

impl Bound {
    pub async fn bind(config: &GatewayConfig) -> Result<Bound, GatewayError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| GatewayError::Bind { addr, error })
        };
        Ok(Bound {
            mcp: bind(config.listen).await?,
            admin: bind(config.admin_listen).await?,
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
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()?
        .map(|acceptor| listener::Tls {
            acceptor,
            client_certificate_required: false,
        });
    let gw = Arc::new(Gateway {
        ring: RingView::new(config.membership.clone()),
        metrics: Metrics::new()?,
        affinity: affinity::Affinity::new(config.affinity),
        config,
    });
    let forwarder = || {
        Forwarder::new(&gw.config.credentials, gw.config.failover_hold)
            .map_err(GatewayError::NodeClient)
    };
    // Without seeds the view is fixed but for what 421s bring.
    if !gw.config.seeds.is_empty() {
        tokio::spawn(follow::follow(
            gw.clone(),
            forwarder()?,
            gw.config.seeds.clone(),
            shutdown.clone(),
        ));
    }
    let admin = listener::serve(
        bound.admin,
        gw.config.admin_limits,
        admin::router(gw.clone()),
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
    let mcp = listener::serve_on(
        bound.mcp,
        client_limits,
        &threads,
        |i| routers[i].clone(),
        tls,
        shutdown,
    );
    tokio::join!(admin, mcp);
    threads.stop().await;
    Ok(())
}
