//! What a bearer token costs the gateway per request, with its key cached: HS256 with a
//! secret, and ES256 with a key from a JWKS file (read once, at start). Each is timed over many
//! distinct valid tokens, first when each is new (its signature checked) and then when each
//! comes again (remembered), the two algorithms alternating in rounds so that both see the same
//! machine.
//!
//! `cargo bench -p shardgate-gateway --bench auth [-- ROUNDS TOKENS]`

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shardgate_gateway::auth::{Auth, AuthConfig, BearerConfig, KeySource};
use std::time::Instant;

const ISSUER: &str = "https://issuer.example";
const RESOURCE: &str = "https://gw.example/mcp";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn config(keys: KeySource) -> AuthConfig {
    AuthConfig::Bearer(BearerConfig {
        keys,
        issuer: ISSUER.into(),
        resource: RESOURCE.into(),
        authorization_servers: Vec::new(),
        required_scopes: vec!["mcp".into()],
        tenant_claim: Some("tid".into()),
    })
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

/// `n` distinct tokens of one round, signed with `key` under `head`.
fn tokens(
    head: &Header,
    key: &EncodingKey,
    claims: impl Fn(u32) -> Value,
    n: u32,
) -> anyhow::Result<Vec<HeaderMap>> {
    (0..n)
        .map(|i| Ok(bearer(&jsonwebtoken::encode(head, &claims(i), key)?)))
        .collect()
}

/// Microseconds per request, over one request with each of `tokens`.
async fn time(auth: &Auth, tokens: &[HeaderMap]) -> f64 {
    let started = Instant::now();
    for headers in tokens {
        let principal = auth.principal(headers).await;
        assert_eq!(principal.as_deref(), Ok("acme/alice"));
    }
    started.elapsed().as_nanos() as f64 / tokens.len().max(1) as f64 / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(3);
    let n = args.get(1).copied().unwrap_or(5_000);
    let now = jsonwebtoken::get_current_timestamp();

    let hs_head = Header::new(Algorithm::HS256);
    let hs_key = EncodingKey::from_secret(SECRET);
    let hs = Auth::new(&config(KeySource::Secret(SECRET.to_vec()))).await?;

    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let public = pair.public_key_raw();
    let (x, y) = public[1..].split_at(32);
    let dir = std::env::temp_dir().join(format!("sg-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
        .to_string(),
    )?;
    let mut es_head = Header::new(Algorithm::ES256);
    es_head.kid = Some("k1".into());
    let es_key = EncodingKey::from_ec_der(&pair.serialize_der());
    let es = Auth::new(&config(KeySource::JwksFile(jwks))).await?;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "| round | HS256 new token µs | HS256 again µs | ES256 new token µs | ES256 again µs |"
    );
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        // Every round's tokens are new to the verifiers: `jti` tells them apart.
        let claims = |i: u32| {
            json!({"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "tid": "acme",
                "scope": "openid mcp", "iat": now, "exp": now + 3600,
                "jti": format!("{round}-{i}")})
        };
        let hs_tokens = tokens(&hs_head, &hs_key, claims, n)?;
        let es_tokens = tokens(&es_head, &es_key, claims, n)?;
        let hs_new = time(&hs, &hs_tokens).await;
        let hs_again = time(&hs, &hs_tokens).await;
        let es_new = time(&es, &es_tokens).await;
        let es_again = time(&es, &es_tokens).await;
        println!("| {round} | {hs_new:.2} | {hs_again:.2} | {es_new:.2} | {es_again:.2} |");
    }
    Ok(())
}
