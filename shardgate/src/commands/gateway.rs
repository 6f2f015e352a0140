//! `shardgate gateway`: the client-facing endpoint.

use crate::{credentials, members};
use anyhow::{Context, bail};
use shardgate_gateway::auth::{AuthConfig, BearerConfig, KeySource};
use shardgate_gateway::config::{AffinityKey, GatewayConfig, TlsFiles};
use shardgate_gateway::rate::{Rate, RateConfig};
use shardgate_protocol::listener::{self, ListenerLimits};
use shardgate_statefulset::ready;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Affinity {
    /// Each call by what it needs, as nodes report it.
    Needed,
    /// Every call by its client's correlation key.
    Always,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Client-facing listener for /mcp.
    #[arg(long, env = "SHARDGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener for /health, /health/ready and /metrics.
    #[arg(long, env = "SHARDGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Nodes' internal listeners to follow membership through, `host:port,…` (in Kubernetes,
    /// the headless Service names); the gateway routes once it has learnt a view from one of
    /// them.
    #[arg(long, env = "SHARDGATE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// A membership to start from: `node-0=session/internal,…`, each a `host:port`; newer
    /// views from nodes replace it.
    #[arg(long, env = "SHARDGATE_MEMBERS")]
    pub members: Option<String>,
    /// The id of the cluster to follow (`shardgate status` shows it); views of any other
    /// cluster are refused. Default: the cluster of the first authenticated view.
    #[arg(long, env = "SHARDGATE_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Epoch of that membership view.
    #[arg(long, env = "SHARDGATE_EPOCH", default_value_t = 1)]
    pub epoch: u64,
    /// TLS certificate chain (PEM); with --tls-key, serves HTTPS with ALPN h2/http1.1.
    #[arg(long, env = "SHARDGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SHARDGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS, serve HTTP/3 too, on the UDP port of the listener's number, and advertise it
    /// (`Alt-Svc`); `--http3 false` serves TCP only.
    #[arg(long, env = "SHARDGATE_HTTP3", default_value_t = true, action = clap::ArgAction::Set)]
    pub http3: bool,
    /// Host names clients may use (repeat or comma-separate); `*` for any. Default: loopback.
    #[arg(
        long = "allowed-host",
        env = "SHARDGATE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed besides loopback ones (repeat or comma-separate); `*` for any.
    #[arg(
        long = "allowed-origin",
        env = "SHARDGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SHARDGATE_MAX_BODY_BYTES", default_value_t = GatewayConfig::DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// How stateless-era calls are routed: `needed` spreads calls that need no client state
    /// and keeps the others with their client; `always` keeps every call with its client.
    #[arg(long, env = "SHARDGATE_AFFINITY", value_enum, default_value = "needed")]
    pub affinity: Affinity,
    /// Milliseconds a request whose owner refuses connections (a node that died) is held for
    /// the ring to give its key another owner; then it goes there. Past it, a retryable 503.
    #[arg(long, env = "SHARDGATE_FAILOVER_HOLD_MS", default_value_t = GatewayConfig::DEFAULT_FAILOVER_HOLD.as_millis() as u64)]
    pub failover_hold_ms: u64,
    /// Threads serving client connections, each with its own connections to the nodes, so
    /// that a request never crosses threads on its way through; 0: one per core.
    #[arg(long, env = "SHARDGATE_WORKERS", default_value_t = 0)]
    pub workers: usize,
    #[command(flatten)]
    pub credentials: credentials::ClusterCredentials,
    #[command(flatten)]
    pub auth: Auth,
    #[command(flatten)]
    pub rate: Rates,
    #[command(flatten)]
    pub limits: Limits,
    /// Once the listeners are bound, write their addresses here as JSON.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Who may use /mcp: bearer JWTs verified with one key source (and `--jwt-issuer`,
/// `--resource`), or, explicitly, anyone.
#[derive(clap::Args, Debug)]
pub struct Auth {
    /// Let every client in as `anonymous`, with sessions bound to no one: local development
    /// only (the gateway says so in its log).
    #[arg(long, env = "SHARDGATE_AUTH_OFF")]
    pub auth_off: bool,
    /// Verify tokens with the keys of this JWKS URL (the authorization server's `jwks_uri`),
    /// fetched again when a token names a key it lacks.
    #[arg(long, env = "SHARDGATE_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Verify tokens with the keys of this JWKS file, read again when a token names a key it
    /// lacks.
    #[arg(long, env = "SHARDGATE_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Verify HS256 tokens with the secret in this file (development). The secret itself may
    /// come in `JWT_SECRET` instead.
    #[arg(long, env = "SHARDGATE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, env = "SHARDGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// This server's canonical URI as clients reach it (`https://mcp.example.com/mcp`): the
    /// `aud` tokens must carry, and where the protected resource metadata says it lives.
    #[arg(long, env = "SHARDGATE_RESOURCE")]
    pub resource: Option<String>,
    /// Authorization servers the metadata names (repeat or comma-separate); default: the
    /// issuer.
    #[arg(
        long = "authorization-server",
        env = "SHARDGATE_AUTHORIZATION_SERVERS",
        value_delimiter = ','
    )]
    pub authorization_servers: Vec<String>,
    /// Scopes every token must carry (repeat or comma-separate); a token without them gets
    /// 403 `insufficient_scope`.
    #[arg(
        long = "required-scope",
        env = "SHARDGATE_REQUIRED_SCOPES",
        value_delimiter = ','
    )]
    pub required_scopes: Vec<String>,
    /// The claim naming a token's tenant: principals become `tenant/sub`, and tokens without
    /// it are refused.
    #[arg(long, env = "SHARDGATE_TENANT_CLAIM")]
    pub tenant_claim: Option<String>,
}

impl Auth {
    fn config(&self) -> anyhow::Result<AuthConfig> {
        let mut sources = Vec::new();
        if let Some(url) = &self.jwks_url {
            sources.push(KeySource::JwksUrl(url.clone()));
        }
        if let Some(path) = &self.jwks_file {
            sources.push(KeySource::JwksFile(path.clone()));
        }
        if let Some(path) = &self.jwt_secret_file {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("--jwt-secret-file {}", path.display()))?;
            sources.push(KeySource::Secret(secret.trim().as_bytes().to_vec()));
        }
        if let Some(secret) = std::env::var("JWT_SECRET").ok().filter(|s| !s.is_empty()) {
            sources.push(KeySource::Secret(secret.into_bytes()));
        }
        let keys = match (self.auth_off, sources.len()) {
            (true, 0) => return Ok(AuthConfig::Off),
            (true, _) => bail!("--auth-off, yet a token key is configured: choose one"),
            (false, 0) => bail!(
                "no token verification configured: give --jwks-url, --jwks-file, \
                 --jwt-secret-file or JWT_SECRET (with --jwt-issuer and --resource), \
                 or --auth-off for local development"
            ),
            (false, 1) => sources.remove(0),
            (false, _) => bail!("more than one token key source configured: give one"),
        };
        let (Some(issuer), Some(resource)) = (&self.jwt_issuer, &self.resource) else {
            bail!("verifying tokens needs --jwt-issuer and --resource");
        };
        Ok(AuthConfig::Bearer(BearerConfig {
            keys,
            issuer: issuer.clone(),
            resource: resource.clone(),
            authorization_servers: self.authorization_servers.clone(),
            required_scopes: self.required_scopes.clone(),
            tenant_claim: self.tenant_claim.clone(),
        }))
    }
}

/// Requests a minute through this gateway, per verified principal and per client IP; each
/// bucket starts full and holds a burst. Per gateway: with G gateways a client may get up to
/// G times the rate.
#[derive(clap::Args, Debug)]
pub struct Rates {
    /// Requests a minute each verified principal may send (unlimited when not given or 0);
    /// `RATE_LIMIT_REQUESTS_PER_MINUTE` is read too.
    #[arg(long, env = "SHARDGATE_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<u32>,
    /// Requests a principal may send at once on a full bucket; default: a tenth of a minute's.
    #[arg(long, env = "SHARDGATE_RATE_LIMIT_BURST", default_value_t = 0)]
    pub rate_limit_burst: u32,
    /// Requests a minute from each client IP address, checked before the token is (unlimited
    /// when 0). Behind a proxy every client has the proxy's address: leave it off there.
    #[arg(long, env = "SHARDGATE_IP_RATE_LIMIT_PER_MINUTE", default_value_t = 0)]
    pub ip_rate_limit_per_minute: u32,
    /// Requests an IP address may send at once on a full bucket; default: a tenth of a
    /// minute's.
    #[arg(long, env = "SHARDGATE_IP_RATE_LIMIT_BURST", default_value_t = 0)]
    pub ip_rate_limit_burst: u32,
}

impl Rates {
    /// The name the seed's deployment configuration gives the per-principal rate.
    const ALIAS: &str = "RATE_LIMIT_REQUESTS_PER_MINUTE";

    fn config(&self) -> anyhow::Result<RateConfig> {
        let per_principal = match self.rate_limit_per_minute {
            Some(n) => n,
            None => match std::env::var(Self::ALIAS) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{}={v:?}", Self::ALIAS))?,
                Err(_) => 0,
            },
        };
        Ok(RateConfig {
            per_principal: Rate::new(per_principal, self.rate_limit_burst),
            per_ip: Rate::new(self.ip_rate_limit_per_minute, self.ip_rate_limit_burst),
        })
    }
}

/// Connection hygiene of the two listeners; the defaults are `ListenerLimits::CLIENT` and
/// `ListenerLimits::ADMIN` (protocol/src/listener.rs).
#[derive(clap::Args, Debug)]
pub struct Limits {
    /// Connections the client listener holds open at once. At the limit, the connection idle
    /// longest is closed to make room; when none is idle, the newcomer is turned away.
    #[arg(long, env = "SHARDGATE_MAX_CONNECTIONS", default_value_t = ListenerLimits::CLIENT.max_connections)]
    pub max_connections: usize,
    /// Connections the admin listener holds open at once.
    #[arg(long, env = "SHARDGATE_ADMIN_MAX_CONNECTIONS", default_value_t = ListenerLimits::ADMIN.max_connections)]
    pub admin_max_connections: usize,
    /// Seconds an HTTP/1.1 request head may take from its first byte.
    #[arg(long, env = "SHARDGATE_HEADER_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "SHARDGATE_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.tls_handshake_timeout.as_secs())]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a request body may send nothing before it is cut off with 408. Responses (SSE
    /// streams) are never timed.
    #[arg(long, env = "SHARDGATE_BODY_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a connection with no request in flight stays open, before its first request as
    /// between requests.
    #[arg(long, env = "SHARDGATE_IDLE_TIMEOUT_SECS", default_value_t = ListenerLimits::CLIENT.idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// HTTP/2 streams a client connection may have open at once; more are refused.
    #[arg(long, env = "SHARDGATE_MAX_CONCURRENT_STREAMS", default_value_t = ListenerLimits::CLIENT.max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// HTTP/2: the largest request header list, in bytes.
    #[arg(long, env = "SHARDGATE_MAX_HEADER_LIST_BYTES", default_value_t = ListenerLimits::CLIENT.max_header_list_size)]
    pub max_header_list_bytes: u32,
}

impl Limits {
    /// The client listener's limits and the admin listener's, capped to the descriptor table.
    fn listeners(&self) -> anyhow::Result<(ListenerLimits, ListenerLimits)> {
        let mut client = ListenerLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_list_size: self.max_header_list_bytes,
            max_pending_resets: ListenerLimits::CLIENT.max_pending_resets,
        };
        let mut admin = ListenerLimits {
            max_connections: self.admin_max_connections,
            ..ListenerLimits::ADMIN.with_timeouts_of(&client)
        };
        client.validate().context("client listener")?;
        admin.validate().context("admin listener")?;
        fit_to_descriptors(&mut [&mut client, &mut admin]);
        Ok((client, admin))
    }
}

/// Caps the listeners' connection limits below the process's descriptor table, with a warning.
pub fn fit_to_descriptors(listeners: &mut [&mut ListenerLimits]) {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((table, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if let Some(configured) = listener::fit_to_descriptors(listeners, table) {
        let capped: usize = listeners.iter().map(|l| l.max_connections).sum();
        tracing::warn!(
            configured,
            capped,
            descriptors = table,
            "the connection limits exceed the descriptor table (ulimit -n); lowered"
        );
    }
}

impl Args {
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut membership = match &self.members {
            Some(list) => members::parse(list, self.epoch)
                .map_err(anyhow::Error::msg)
                .context("--members")?,
            None => shardgate_raft::Membership::default(),
        };
        membership.cluster = self.cluster_id.clone();
        let (client_limits, admin_limits) = self.limits.listeners()?;
        let config = GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            http3: self.http3,
            allowed_hosts: if self.allowed_hosts.is_empty() {
                GatewayConfig::loopback_hosts()
            } else {
                self.allowed_hosts.clone()
            },
            allowed_origins: self.allowed_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            membership,
            seeds: self.seeds.clone(),
            affinity: match self.affinity {
                Affinity::Needed => AffinityKey::Needed,
                Affinity::Always => AffinityKey::Always,
            },
            credentials: self.credentials.load()?.credentials,
            client_limits,
            admin_limits,
            failover_hold: Duration::from_millis(self.failover_hold_ms),
            workers: self.workers,
            auth: self.auth.config()?,
            rate: self.rate.config()?,
        };
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let bound = shardgate_gateway::Bound::bind(&config).await?;
    if let Some(path) = &args.ready_file {
        let addrs = ready::Gateway {
            mcp: bound.mcp.local_addr()?,
            admin: bound.admin.local_addr()?,
        };
        ready::write(path, &addrs)?;
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        endpoint = %format!("{scheme}://{}/mcp", bound.mcp.local_addr()?),
        admin = %bound.admin.local_addr()?,
        "gateway listening"
    );
    shardgate_gateway::run(config, bound, super::shutdown_on_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
