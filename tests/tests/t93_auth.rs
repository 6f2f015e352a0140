//! The gateway as an OAuth resource server, through real processes: `shardgate up` whose
//! gateways verify HS256 bearer tokens (the development key source; the JWKS sources and the
//! algorithm rules are covered by the gateway's unit tests), real nodes, real upstreams.
//!
//! What must hold: no request gets past the gateway without a valid token, and each refusal
//! says why in `WWW-Authenticate`; a session belongs to the principal that opened it (another
//! principal gets 404, the same one with a refreshed token keeps it); the client's token never
//! reaches an upstream.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::upstreams::{http_config, recording_stateless_upstream, write_config};
use shardgate_tests::{Cluster, scratch};
use std::path::Path;

const ISSUER: &str = "https://issuer.test";
const RESOURCE: &str = "https://gateway.test/mcp";
const METADATA: &str = "https://gateway.test/.well-known/oauth-protected-resource/mcp";
const SECRET: &str = "a development secret, 32 bytes or more";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({ "iss": ISSUER, "aud": RESOURCE, "sub": sub, "iat": now(), "exp": now() + 600 })
}

fn sign(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
        .unwrap_or_default()
}

fn token(sub: &str) -> String {
    sign(Algorithm::HS256, &claims(sub), SECRET.as_bytes())
}

/// A client that sends `token` with every request.
fn client(endpoint: &str, token: &str) -> anyhow::Result<Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let http = shardgate_tests::http().default_headers(headers).build()?;
    Ok(Client::with_http(http, endpoint))
}

/// A cluster whose gateways verify tokens signed with [`SECRET`], configured as an operator
/// does: through the environment the gateways inherit.
fn builder(dir: &Path, nodes: usize) -> anyhow::Result<shardgate_tests::ClusterBuilder> {
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, SECRET)?;
    Ok(Cluster::builder()
        .nodes(nodes)
        .env("SHARDGATE_JWT_SECRET_FILE", &secret.display().to_string())
        .env("SHARDGATE_JWT_ISSUER", ISSUER)
        .env("SHARDGATE_RESOURCE", RESOURCE))
}

async fn cluster(dir: &Path, nodes: usize, config: Option<&Path>) -> anyhow::Result<Cluster> {
    let mut builder = builder(dir, nodes)?;
    if let Some(config) = config {
        builder = builder.config(config);
    }
    builder.start().await
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "shardgate-tests", "version": "0"}
    }})
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn t10_requests_without_a_valid_token_are_refused_with_a_challenge() -> anyhow::Result<()> {
    let dir = scratch("auth-refusals")?;
    let cluster = cluster(&dir, 1, None).await?;
    let http = shardgate_tests::http().build()?;

    let anonymous = Client::with_http(http.clone(), &cluster.endpoint);
    let resp = anonymous.post(&initialize()).send().await?;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        challenge(&resp),
        format!("Bearer resource_metadata=\"{METADATA}\"")
    );
    let answer: Value = resp.json().await?;
    // Refused before its body is read (an unauthenticated client costs no parsing): the error
    // cannot name the request's id.
    assert_eq!(answer["id"], Value::Null, "{answer}");
    assert!(answer["error"]["message"].is_string(), "{answer}");

    // The metadata, at both paths, names the configured resource, whatever Host says.
    let base = cluster.endpoint.trim_end_matches("/mcp");
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = http
            .get(format!("{base}{path}"))
            .header("x-forwarded-host", "evil.test")
            .send()
            .await?;
        assert_eq!(resp.status(), 200, "{path}");
        let doc: Value = resp.json().await?;
        assert_eq!(doc["resource"], RESOURCE, "{doc}");
        assert_eq!(doc["authorization_servers"], json!([ISSUER]), "{doc}");
    }

    let mut expired = claims("alice");
    expired["exp"] = (now() - 600).into();
    let mut other_audience = claims("alice");
    other_audience["aud"] = "https://elsewhere.test/mcp".into();
    let mut other_issuer = claims("alice");
    other_issuer["iss"] = "https://evil.test".into();
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims("alice").to_string())
        )
    };
    let cases = [
        (
            "expired",
            sign(Algorithm::HS256, &expired, SECRET.as_bytes()),
        ),
        (
            "wrong audience",
            sign(Algorithm::HS256, &other_audience, SECRET.as_bytes()),
        ),
        (
            "wrong issuer",
            sign(Algorithm::HS256, &other_issuer, SECRET.as_bytes()),
        ),
        ("unsigned", unsigned),
        (
            "wrong key",
            sign(
                Algorithm::HS256,
                &claims("alice"),
                b"another secret of thirty-two bytes",
            ),
        ),
        (
            "wrong algorithm",
            sign(Algorithm::HS512, &claims("alice"), SECRET.as_bytes()),
        ),
        ("not a JWT", "not-a-token".to_owned()),
    ];
    for (case, bad) in cases {
        let resp = client(&cluster.endpoint, &bad)?
            .post(&initialize())
            .send()
            .await?;
        assert_eq!(resp.status(), 401, "{case}");
        let challenge = challenge(&resp);
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\", error_description=\"")
                && challenge.ends_with(&format!("resource_metadata=\"{METADATA}\"")),
            "{case}: {challenge}"
        );
    }
    // A browser client in a page: its preflight passes (the token is a header it may send),
    // and it may read the challenge and the session id.
    let origin = "http://localhost:5173";
    let preflight = http
        .request(reqwest::Method::OPTIONS, &cluster.endpoint)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_lowercase()
    };
    assert_eq!(allowed(&preflight, "access-control-allow-origin"), origin);
    let from_page = anonymous
        .post(&initialize())
        .header("origin", origin)
        .send()
        .await?;
    assert_eq!(from_page.status(), 401);
    let exposed = allowed(&from_page, "access-control-expose-headers");
    for header in ["www-authenticate", "mcp-session-id", "retry-after"] {
        assert!(exposed.contains(header), "{header} not exposed: {exposed}");
    }
    // A session-era GET without a token is refused before any session is looked up.
    let resp = anonymous.listen("no-such-session", None).send().await?;
    assert_eq!(resp.status(), 401);
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_a_session_is_its_principals_alone() -> anyhow::Result<()> {
    let dir = scratch("auth-binding")?;
    let cluster = cluster(&dir, 2, None).await?;
    let alice = client(&cluster.endpoint, &token("alice"))?;
    let bob = client(&cluster.endpoint, &token("bob"))?;

    let sid = alice.initialize().await?;
    assert_eq!(alice.count(&sid, 1).await?, 1);

    // Bob holds Alice's session id: to him it does not exist, whatever he asks.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "counter", "arguments": {}}});
    assert_eq!(bob.session_post(&sid, &call).send().await?.status(), 404);
    assert_eq!(bob.listen(&sid, None).send().await?.status(), 404);
    assert_eq!(bob.delete(&sid).send().await?.status(), 404);

    // Alice's session went on untouched; a refreshed token (another `iat` and `exp`) is the
    // same principal.
    assert_eq!(alice.count(&sid, 3).await?, 2);
    let mut refreshed = claims("alice");
    refreshed["iat"] = (now() + 1).into();
    refreshed["exp"] = (now() + 1200).into();
    let alice_again = client(
        &cluster.endpoint,
        &sign(Algorithm::HS256, &refreshed, SECRET.as_bytes()),
    )?;
    assert_eq!(alice_again.count(&sid, 4).await?, 3);
    assert_eq!(alice_again.delete(&sid).send().await?.status(), 200);
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_the_token_never_reaches_an_upstream() -> anyhow::Result<()> {
    let dir = scratch("auth-upstream")?;
    let (url, seen) = recording_stateless_upstream().await?;
    let config = write_config(&dir, &http_config("modern", &url, "stateless"))?;
    let cluster = cluster(&dir, 1, Some(&config)).await?;
    let alice_token = token("alice");
    let alice = client(&cluster.endpoint, &alice_token)?;
    let resp = alice
        .stateless(
            7,
            "tools/call",
            json!({"name": "weather", "arguments": {}}),
            Some("weather"),
            json!({}),
        )
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await?;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    cluster.stop().await?;
    let call = seen.call()?;
    assert!(
        call.contains("authorization: bearer node-credential"),
        "{call}"
    );
    let signature = alice_token
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    for head in &seen.all() {
        assert!(
            !head.contains(&signature),
            "the client's token reached the upstream: {head}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn t40_rates_are_limited_per_principal_and_per_address() -> anyhow::Result<()> {
    let dir = scratch("auth-rates")?;
    // The per-principal rate by the name the seed's deployment configuration gives it.
    let cluster = builder(&dir, 1)?
        .env("RATE_LIMIT_REQUESTS_PER_MINUTE", "60")
        .env("SHARDGATE_RATE_LIMIT_BURST", "5")
        .env("SHARDGATE_IP_RATE_LIMIT_PER_MINUTE", "60")
        .env("SHARDGATE_IP_RATE_LIMIT_BURST", "20")
        .start()
        .await?;
    let alice = client(&cluster.endpoint, &token("alice"))?;
    let bob = client(&cluster.endpoint, &token("bob"))?;
    let retry_after = |resp: &reqwest::Response| -> u64 {
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for i in 0..5 {
        let status = alice.post(&initialize()).send().await?.status();
        assert_eq!(status, 200, "alice's request {i}, within her burst");
    }
    let resp = alice.post(&initialize()).send().await?;
    assert_eq!(resp.status(), 429, "alice over her burst");
    assert!(retry_after(&resp) >= 1, "{:?}", resp.headers());
    let answer: Value = resp.json().await?;
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("per principal")),
        "{answer}"
    );
    for i in 0..5 {
        let status = bob.post(&initialize()).send().await?.status();
        assert_eq!(status, 200, "bob's request {i}: his own bucket");
    }
    // Eleven requests came from this address; requests without a token count too, as the
    // address is checked before any token is.
    let anonymous = Client::with_http(shardgate_tests::http().build()?, &cluster.endpoint);
    for i in 0..9 {
        let status = anonymous.post(&initialize()).send().await?.status();
        assert_eq!(
            status, 401,
            "request {i} without a token, within the address's burst"
        );
    }
    let resp = anonymous.post(&initialize()).send().await?;
    assert_eq!(resp.status(), 429, "the address over its burst");
    assert!(retry_after(&resp) >= 1, "{:?}", resp.headers());
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t50_a_principal_fills_no_node() -> anyhow::Result<()> {
    let dir = scratch("auth-caps")?;
    let config = write_config(
        &dir,
        "[limits]\nsessions_per_principal = 2\nstreams_per_principal = 1\n",
    )?;
    let cluster = cluster(&dir, 1, Some(&config)).await?;
    let alice = client(&cluster.endpoint, &token("alice"))?;
    let bob = client(&cluster.endpoint, &token("bob"))?;
    let first = alice.initialize().await?;
    let second = alice.initialize().await?;
    let resp = alice.post(&initialize()).send().await?;
    assert_eq!(resp.status(), 429, "alice's third session on the node");
    let answer: Value = resp.json().await?;
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sessions_per_principal")),
        "{answer}"
    );
    bob.initialize().await?;

    let held = alice.listen(&first, None).send().await?;
    assert_eq!(held.status(), 200);
    assert_eq!(
        alice.listen(&second, None).send().await?.status(),
        429,
        "alice's second GET stream on the node"
    );
    drop(held);
    // The place is given back when the stream closes.
    let mut reopened = 0;
    for _ in 0..50 {
        let resp = alice.listen(&second, None).send().await?;
        if resp.status() == 200 {
            reopened += 1;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reopened, 1, "the closed stream's place came back");
    // Ending a session gives its place back too.
    assert_eq!(alice.delete(&first).send().await?.status(), 200);
    alice.initialize().await?;
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t60_no_header_reaches_an_upstream_through_mcp_name_or_params() -> anyhow::Result<()> {
    use base64::Engine;
    let dir = scratch("auth-injection")?;
    let (url, seen) = recording_stateless_upstream().await?;
    let config = write_config(&dir, &http_config("modern", &url, "stateless"))?;
    let cluster = cluster(&dir, 1, Some(&config)).await?;
    let alice = client(&cluster.endpoint, &token("alice"))?;
    let evil = "weather\r\nx-injected: 1";
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode(evil)
    );
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
    "name": evil, "arguments": {"region": evil},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    // Header and body agree (the name and the parameter as encoded values): the checks pass
    // it on, and the upstream must still see no header the client made up.
    let resp = alice
        .post(&body)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", &encoded)
        .header("mcp-param-region", &encoded)
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{answer}");
    cluster.stop().await?;
    seen.call()?;
    for head in &seen.all() {
        let injected = head
            .lines()
            .any(|line| line.trim_start().starts_with("x-injected"));
        assert!(!injected, "a header line made up by the client: {head}");
    }
    Ok(())
}
