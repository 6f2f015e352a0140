//! The gateway as an OAuth 2.1 resource server: every `/mcp` request carries a bearer JWT,
//! verified here before anything else is done with the request, and the verified principal
//! (tenant and `sub`) is what the nodes bind sessions to.
//!
//! - Keys: an HS256 secret (development), or a JWKS from a file or a URL (RS*, PS*, ES256,
//!   ES384, EdDSA). A JWKS is cached; a token naming a key id the cache lacks, or a set older
//!   than [`KEYS_MAX_AGE`], makes it read the set again, at most once per
//!   [`REFRESH_INTERVAL`], so that rotated keys are picked up, removed ones stop verifying,
//!   and a flood of made-up key ids cannot make the gateway hammer the key server.
//! - Algorithms follow the key, never the token: an HS256 secret verifies HS256 only, a key
//!   of a set verifies its own `alg` (or its family's algorithms when it names none), so a
//!   token signed with a public key as an HMAC secret, or with `alg: none`, is refused.
//! - Issuer, audience (the canonical resource URI, RFC 8707), expiry and `sub` are required.
//! - A token that verified is remembered (by its SHA-256) with its principal, until it expires
//!   or for [`REMEMBER_FOR`] at most, whichever is first, so that a client sending the same
//!   token with every request pays for one signature check, not one per request (ES256 costs
//!   about 0.3 ms of CPU here). At most [`REMEMBERED`] tokens are held.
//! - Answers: 401 with `WWW-Authenticate: Bearer resource_metadata=…` (and
//!   `error="invalid_token"` for a token that fails), 403 with `error="insufficient_scope"`
//!   and the scopes required; Protected Resource Metadata (RFC 9728) built from the
//!   configured resource URI only, never from the request's `Host`.
//!
//! The token itself goes no further than this module: the forwarder drops `Authorization`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use shardgate_protocol::internal::ANONYMOUS;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Where Protected Resource Metadata is served (RFC 9728 §3), and with the resource's path
/// appended.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The least time between two reads of a key set.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a key set is used before it is read again (on the next token that needs it).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long fetching a key set from its URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest principal passed on to the nodes.
const MAX_PRINCIPAL: usize = 512;
/// Seconds of clock skew forgiven on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// The longest a verified token is taken without its signature checked again: a key removed
/// from the set stops vouching for its tokens by then.
pub const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// Verified tokens remembered at most.
pub const REMEMBERED: usize = 65_536;

/// Who may use `/mcp`.
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// Anyone, as `anonymous`: local development only, and said so in the log.
    Off,
    /// Bearer JWTs, verified as configured.
    Bearer(BearerConfig),
}

#[derive(Clone, Debug)]
pub struct BearerConfig {
    pub keys: KeySource,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The canonical URI of this MCP server (`https://host/mcp`): the `aud` every token must
    /// carry, and the `resource` of the metadata.
    pub resource: String,
    /// Authorization servers clients get tokens from, as the metadata lists them; default:
    /// the issuer.
    pub authorization_servers: Vec<String>,
    /// Scopes every token must carry.
    pub required_scopes: Vec<String>,
    /// The claim naming a token's tenant, when tokens carry one: the principal is then
    /// `tenant/sub`, and a token without it is refused.
    pub tenant_claim: Option<String>,
}

#[derive(Clone, Debug)]
pub enum KeySource {
    /// An HS256 secret shared with whoever mints the tokens.
    Secret(Vec<u8>),
    /// A JWKS document on disk, read again when a token names a key it lacks.
    JwksFile(PathBuf),
    /// A JWKS URL (`jwks_uri`), fetched at start and when a token names a key the set lacks.
    JwksUrl(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the resource URI '{0}' must be an absolute https:// URL (http:// only on loopback)")]
    Resource(String),
    #[error("the token issuer must not be empty")]
    Issuer,
    #[error("'{0}' is not a scope (printable ASCII, no space, quote or backslash)")]
    Scope(String),
    #[error("the HS256 secret must be at least 32 bytes")]
    ShortSecret,
    #[error("key set {origin}: {error}")]
    Keys { origin: String, error: String },
}

/// Why a request is refused before it is routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token: 401 that only points at the metadata.
    Missing,
    /// A token that does not verify: 401 `invalid_token`, with a fixed description.
    Invalid(&'static str),
    /// A valid token without the scopes required: 403 `insufficient_scope`.
    Scope,
    /// The key set could not be read: 503, the client may retry.
    KeysUnavailable,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Missing | Refusal::Invalid(_) => StatusCode::UNAUTHORIZED,
            Refusal::Scope => StatusCode::FORBIDDEN,
            Refusal::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Missing => "Unauthorized: a bearer token is required",
            Refusal::Invalid(why) => why,
            Refusal::Scope => "Forbidden: the token lacks a scope this server requires",
            Refusal::KeysUnavailable => "the token signing keys cannot be read now; retry",
        }
    }
}

/// The verifier the gateway runs with; [`Auth::off`] lets everyone in as `anonymous`.
pub struct Auth {
    bearer: Option<Bearer>,
}

struct Bearer {
    keys: Keys,
    /// Tokens that verified, by their SHA-256: the principal, and until when it holds.
    verified: Mutex<HashMap<[u8; 32], Remembered>>,
    validation: Validation,
    tenant_claim: Option<String>,
    required_scopes: Vec<String>,
    /// `WWW-Authenticate` parameters every challenge ends with.
    metadata_param: String,
    /// `, scope="…"` naming the scopes required, as challenges end; empty when none are.
    scope_param: String,
    /// The Protected Resource Metadata document.
    metadata: Bytes,
}

/// A verified token's principal, and until when it is taken without a check.
type Remembered = (Arc<str>, Instant);

enum Keys {
    Secret(DecodingKey),
    Set(KeySet),
}

/// A key of a set, with the algorithms it verifies.
struct SetKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

struct KeySet {
    source: KeySource,
    http: reqwest::Client,
    /// By key id; a key without one under "".
    keys: RwLock<Arc<HashMap<String, Arc<SetKey>>>>,
    /// When `keys` were last read successfully.
    loaded: std::sync::Mutex<Option<Instant>>,
    /// When the set was last read (or tried); held while it is read.
    read: tokio::sync::Mutex<Option<Instant>>,
}

impl Auth {
    pub fn off() -> Auth {
        Auth { bearer: None }
    }

    /// The verifier `config` describes. A key file must read; a key URL that cannot be
    /// fetched now is fetched again when a token needs it.
    pub async fn new(config: &AuthConfig) -> Result<Auth, AuthError> {
        let AuthConfig::Bearer(config) = config else {
            return Ok(Auth::off());
        };
        let resource = resource_uri(&config.resource)?;
        if config.issuer.trim().is_empty() {
            return Err(AuthError::Issuer);
        }
        // RFC 6749 §3.3: a scope token is printable ASCII without space, `"` or `\`.
        let token = |s: &String| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
        };
        if let Some(bad) = config.required_scopes.iter().find(|s| !token(s)) {
            return Err(AuthError::Scope(bad.clone()));
        }
        let keys = match &config.keys {
            KeySource::Secret(secret) if secret.len() < 32 => return Err(AuthError::ShortSecret),
            KeySource::Secret(secret) => Keys::Secret(DecodingKey::from_secret(secret)),
            source => {
                let set = KeySet::new(source.clone())?;
                match set.read_now().await {
                    Ok(()) => {}
                    Err(error) if matches!(source, KeySource::JwksUrl(_)) => {
                        tracing::warn!(%error, "the key set cannot be fetched yet; it is tried again when a token needs it");
                    }
                    Err(error) => {
                        return Err(AuthError::Keys {
                            origin: set.describe(),
                            error,
                        });
                    }
                }
                Keys::Set(set)
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let servers = if config.authorization_servers.is_empty() {
            vec![config.issuer.clone()]
        } else {
            config.authorization_servers.clone()
        };
        let mut document = serde_json::json!({
            "resource": config.resource,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
        });
        if !config.required_scopes.is_empty() {
            document["scopes_supported"] = config.required_scopes.clone().into();
        }
        Ok(Auth {
            bearer: Some(Bearer {
                keys,
                verified: Mutex::default(),
                validation,
                tenant_claim: config.tenant_claim.clone(),
                required_scopes: config.required_scopes.clone(),
                metadata_param: format!("resource_metadata=\"{}\"", resource.metadata_url),
                scope_param: match config.required_scopes.is_empty() {
                    true => String::new(),
                    false => format!(", scope=\"{}\"", config.required_scopes.join(" ")),
                },
                metadata: Bytes::from(document.to_string()),
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.bearer.is_some()
    }

    /// The principal the request is made by: `anonymous` when auth is off, else the verified
    /// `sub` (as `tenant/sub` under a tenant claim).
    pub async fn principal(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        match &self.bearer {
            None => Ok(ANONYMOUS.to_owned()),
            Some(bearer) => bearer.verify(headers).await,
        }
    }

    /// The `WWW-Authenticate` header a refusal goes out with.
    pub fn challenge(&self, refusal: &Refusal) -> Option<HeaderValue> {
        let bearer = self.bearer.as_ref()?;
        let scope = &bearer.scope_param;
        let value = match refusal {
            Refusal::Missing => format!("Bearer {}{scope}", bearer.metadata_param),
            Refusal::Invalid(why) => format!(
                "Bearer error=\"invalid_token\", error_description=\"{why}\", {}",
                bearer.metadata_param
            ),
            Refusal::Scope => format!(
                "Bearer error=\"insufficient_scope\"{scope}, {}",
                bearer.metadata_param
            ),
            Refusal::KeysUnavailable => return None,
        };
        HeaderValue::from_str(&value).ok()
    }

    /// The Protected Resource Metadata document; `None` when auth is off.
    pub fn metadata(&self) -> Option<Bytes> {
        self.bearer.as_ref().map(|b| b.metadata.clone())
    }
}

impl Bearer {
    async fn verify(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let token = bearer_token(headers)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(principal) = self.remembered(&key) {
            return Ok(principal.to_string());
        }
        let (principal, expires) = self.check(token).await?;
        let until = Instant::now() + expires.min(REMEMBER_FOR);
        self.remember(key, Arc::from(principal.as_str()), until);
        Ok(principal)
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Arc<str>> {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let (principal, until) = verified.get(key)?;
        (Instant::now() < *until).then(|| principal.clone())
    }

    fn remember(&self, key: [u8; 32], principal: Arc<str>, until: Instant) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= REMEMBERED {
            let now = Instant::now();
            verified.retain(|_, (_, until)| *until > now);
            if verified.len() >= REMEMBERED {
                // Every one still valid: start over rather than grow (each is checked again
                // on its next use).
                verified.clear();
            }
        }
        verified.insert(key, (principal, until));
    }

    /// Verifies the token's signature and claims: its principal, and how long until it
    /// expires.
    async fn check(&self, token: &str) -> Result<(String, Duration), Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is not a signed JWT"))?;
        let claims = match &self.keys {
            Keys::Secret(key) => self.decode(token, key, &[Algorithm::HS256])?,
            Keys::Set(set) => {
                let key = set.key(header.kid.as_deref()).await?;
                self.decode(token, &key.key, &key.algorithms)?
            }
        };
        if !self.required_scopes.iter().all(|s| has_scope(&claims, s)) {
            return Err(Refusal::Scope);
        }
        let principal = principal_of(&claims, self.tenant_claim.as_deref())?;
        let now = jsonwebtoken::get_current_timestamp();
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        Ok((principal, Duration::from_secs(exp.saturating_sub(now))))
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithms: &[Algorithm],
    ) -> Result<Map<String, Value>, Refusal> {
        let mut validation = self.validation.clone();
        validation.algorithms = algorithms.to_vec();
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| Refusal::Invalid(why_invalid(e.kind())))
    }
}

/// The token of `Authorization: Bearer …`; a request without one is [`Refusal::Missing`].
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| Refusal::Invalid("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim())
        }
        _ => Err(Refusal::Invalid(
            "the Authorization header is not a bearer token",
        )),
    }
}

/// A fixed description of why a token failed: never the token, never a claim's value.
fn why_invalid(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token was issued by another issuer",
        ErrorKind::InvalidAudience => "the token is meant for another resource",
        ErrorKind::InvalidSignature => "the token signature does not verify",
        ErrorKind::InvalidAlgorithm => "the token algorithm is not the key's",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is malformed",
    }
}

/// Whether the token grants `scope`: in `scope` (space-separated, RFC 9068) or `scp` (a list,
/// or a space-separated string).
fn has_scope(claims: &Map<String, Value>, scope: &str) -> bool {
    let listed = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.split_whitespace().any(|s| s == scope),
        Some(Value::Array(a)) => a.iter().any(|s| s.as_str() == Some(scope)),
        _ => false,
    };
    listed(claims.get("scope")) || listed(claims.get("scp"))
}

/// `sub`, or `tenant/sub`: printable ASCII that fits a header, and never `anonymous`.
fn principal_of(
    claims: &Map<String, Value>,
    tenant_claim: Option<&str>,
) -> Result<String, Refusal> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::Invalid("the token lacks a required claim"))?;
    let principal = match tenant_claim {
        None => sub.to_owned(),
        Some(claim) => {
            let tenant = claims
                .get(claim)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && !t.contains('/'))
                .ok_or(Refusal::Invalid("the token names no tenant"))?;
            format!("{tenant}/{sub}")
        }
    };
    let printable = principal.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !printable || principal.len() > MAX_PRINCIPAL || principal == ANONYMOUS {
        return Err(Refusal::Invalid("the token subject cannot be used"));
    }
    Ok(principal)
}

/// The configured resource URI, checked, with the metadata URL derived from it.
struct Resource {
    metadata_url: String,
}

fn resource_uri(resource: &str) -> Result<Resource, AuthError> {
    let bad = || AuthError::Resource(resource.to_owned());
    let uri: http::Uri = resource.parse().map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad());
    };
    let loopback = matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
    if !(scheme == "https" || scheme == "http" && loopback) || uri.query().is_some() {
        return Err(bad());
    }
    let path = uri.path().trim_end_matches('/');
    Ok(Resource {
        metadata_url: format!("{scheme}://{authority}{METADATA_PATH}{path}"),
    })
}

impl KeySet {
    fn new(source: KeySource) -> Result<KeySet, AuthError> {
        // rustls is built with ring only; make it the process default before reqwest asks.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::Keys {
                origin: "HTTP client".into(),
                error: e.to_string(),
            })?;
        Ok(KeySet {
            source,
            http,
            keys: RwLock::default(),
            loaded: std::sync::Mutex::new(None),
            read: tokio::sync::Mutex::new(None),
        })
    }

    fn describe(&self) -> String {
        match &self.source {
            KeySource::JwksFile(path) => path.display().to_string(),
            KeySource::JwksUrl(url) => url.clone(),
            KeySource::Secret(_) => "secret".into(),
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<SetKey>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(kid).cloned()
    }

    /// Whether the set was read successfully within [`KEYS_MAX_AGE`].
    fn fresh(&self) -> bool {
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        loaded.is_some_and(|at| at.elapsed() < KEYS_MAX_AGE)
    }

    /// The key a token names. The set is read again (at most once per [`REFRESH_INTERVAL`])
    /// when it lacks the key or is older than [`KEYS_MAX_AGE`], so that rotated keys come in
    /// and removed ones go; while it cannot be read, the keys last read still serve.
    async fn key(&self, kid: Option<&str>) -> Result<Arc<SetKey>, Refusal> {
        let kid = kid.unwrap_or("");
        if self.fresh()
            && let Some(key) = self.cached(kid)
        {
            return Ok(key);
        }
        let mut read = self.read.lock().await;
        // Another request may have read it while this one waited.
        if self.fresh()
            && let Some(key) = self.cached(kid)
        {
            return Ok(key);
        }
        if read.is_none_or(|at| at.elapsed() >= REFRESH_INTERVAL) {
            *read = Some(Instant::now());
            if let Err(error) = self.load().await {
                tracing::warn!(source = %self.describe(), %error, "cannot read the key set");
            }
        }
        self.cached(kid).ok_or_else(|| {
            let empty = self.keys.read().map(|k| k.is_empty()).unwrap_or(true);
            match empty {
                true => Refusal::KeysUnavailable,
                false => Refusal::Invalid("the token names an unknown key"),
            }
        })
    }

    /// Reads the set now, noting the time.
    async fn read_now(&self) -> Result<(), String> {
        *self.read.lock().await = Some(Instant::now());
        self.load().await
    }

    async fn load(&self) -> Result<(), String> {
        let text = match &self.source {
            KeySource::JwksFile(path) => tokio::fs::read(path).await.map_err(|e| e.to_string())?,
            KeySource::JwksUrl(url) => {
                let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status()));
                }
                resp.bytes().await.map_err(|e| e.to_string())?.to_vec()
            }
            KeySource::Secret(_) => return Ok(()),
        };
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            match set_key(jwk) {
                Ok(key) => {
                    let kid = jwk.common.key_id.clone().unwrap_or_default();
                    keys.insert(kid, Arc::new(key));
                }
                Err(why) => tracing::warn!(kid = ?jwk.common.key_id, why, "key skipped"),
            }
        }
        if keys.is_empty() {
            return Err("no usable key in the set".into());
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }
}

/// A key of a set and the algorithms it verifies: its own `alg`, or its type's. Shared
/// secrets (`kty: oct`) are not taken from a key set.
fn set_key(jwk: &Jwk) -> Result<SetKey, &'static str> {
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("a shared secret in a key set"),
        _ => return Err("unsupported key type"),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(named) => {
            let alg = algorithm(named).ok_or("unsupported alg")?;
            if !family.contains(&alg) {
                return Err("alg does not match the key type");
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key")?;
    Ok(SetKey { key, algorithms })
}

fn algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
