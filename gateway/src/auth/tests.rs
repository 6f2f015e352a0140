use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://issuer.example";
const RESOURCE: &str = "https://gw.example/mcp";

fn config(keys: KeySource) -> BearerConfig {
    BearerConfig {
        keys,
        issuer: ISSUER.into(),
        resource: RESOURCE.into(),
        authorization_servers: Vec::new(),
        required_scopes: Vec::new(),
        tenant_claim: None,
    }
}

async fn auth(config: BearerConfig) -> Auth {
    Auth::new(&AuthConfig::Bearer(config))
        .await
        .expect("configured")
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({ "iss": ISSUER, "aud": RESOURCE, "sub": "alice", "exp": now() + 300 })
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signed")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    headers.insert(header::AUTHORIZATION, value);
    headers
}

async fn verify(auth: &Auth, token: &str) -> Result<String, Refusal> {
    auth.principal(&bearer(token)).await
}

#[tokio::test]
async fn a_valid_token_gives_its_subject() {
    let auth = auth(config(KeySource::Secret(SECRET.to_vec()))).await;
    assert_eq!(
        verify(&auth, &hs256(&claims(), SECRET)).await,
        Ok("alice".into())
    );
}

#[tokio::test]
async fn a_tenant_claim_scopes_the_principal() {
    let mut c = config(KeySource::Secret(SECRET.to_vec()));
    c.tenant_claim = Some("tid".into());
    let auth = auth(c).await;
    let mut with = claims();
    with["tid"] = "acme".into();
    assert_eq!(
        verify(&auth, &hs256(&with, SECRET)).await,
        Ok("acme/alice".into())
    );
    assert_eq!(
        verify(&auth, &hs256(&claims(), SECRET)).await,
        Err(Refusal::Invalid("the token names no tenant"))
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let auth = auth(config(KeySource::Secret(SECRET.to_vec()))).await;
    let with = |key: &str, value: Value| {
        let mut c = claims();
        c[key] = value;
        hs256(&c, SECRET)
    };
    let cases = [
        (with("exp", (now() - 600).into()), "the token has expired"),
        (
            with("aud", "https://other.example/mcp".into()),
            "the token is meant for another resource",
        ),
        (
            with("iss", "https://evil.example".into()),
            "the token was issued by another issuer",
        ),
        (
            hs256(&claims(), b"another secret, just as long as it"),
            "the token signature does not verify",
        ),
        (
            with("nbf", (now() + 600).into()),
            "the token is not valid yet",
        ),
    ];
    for (token, why) in cases {
        assert_eq!(
            verify(&auth, &token).await,
            Err(Refusal::Invalid(why)),
            "{why}"
        );
    }
    let no_sub = {
        let mut c = claims();
        c.as_object_mut().expect("object").remove("sub");
        hs256(&c, SECRET)
    };
    assert_eq!(
        verify(&auth, &no_sub).await,
        Err(Refusal::Invalid("the token lacks a required claim"))
    );
    // Unsigned: alg none.
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let unsigned = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_eq!(
        verify(&auth, &unsigned).await,
        Err(Refusal::Invalid("the token is not a signed JWT"))
    );
    // Another HMAC algorithm with the right secret: the key verifies HS256 only.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("signed");
    assert_eq!(
        verify(&auth, &hs384).await,
        Err(Refusal::Invalid("the token algorithm is not the key's"))
    );
    assert_eq!(
        auth.principal(&HeaderMap::new()).await,
        Err(Refusal::Missing)
    );
    let mut basic = HeaderMap::new();
    basic.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic YWxpY2U6cHc="),
    );
    assert_eq!(
        auth.principal(&basic).await,
        Err(Refusal::Invalid(
            "the Authorization header is not a bearer token"
        ))
    );
}

#[tokio::test]
async fn subjects_that_cannot_travel_are_refused() {
    let auth = auth(config(KeySource::Secret(SECRET.to_vec()))).await;
    for sub in ["anonymous", "al ice", "alice\u{e9}", &"a".repeat(600)] {
        let mut c = claims();
        c["sub"] = sub.into();
        assert_eq!(
            verify(&auth, &hs256(&c, SECRET)).await,
            Err(Refusal::Invalid("the token subject cannot be used")),
            "{sub}"
        );
    }
}

#[tokio::test]
async fn scopes_are_required_and_named_in_the_challenge() {
    let mut c = config(KeySource::Secret(SECRET.to_vec()));
    c.required_scopes = vec!["mcp:use".into()];
    let auth = auth(c).await;
    assert_eq!(
        verify(&auth, &hs256(&claims(), SECRET)).await,
        Err(Refusal::Scope)
    );
    let mut scoped = claims();
    scoped["scope"] = "openid mcp:use".into();
    assert_eq!(
        verify(&auth, &hs256(&scoped, SECRET)).await,
        Ok("alice".into())
    );
    let mut scp = claims();
    scp["scp"] = json!(["mcp:use"]);
    assert_eq!(
        verify(&auth, &hs256(&scp, SECRET)).await,
        Ok("alice".into())
    );
    let metadata =
        "resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/mcp\"";
    assert_eq!(
        auth.challenge(&Refusal::Scope).expect("a challenge"),
        format!("Bearer error=\"insufficient_scope\", scope=\"mcp:use\", {metadata}").as_str()
    );
    assert_eq!(
        auth.challenge(&Refusal::Missing).expect("a challenge"),
        format!("Bearer {metadata}, scope=\"mcp:use\"").as_str()
    );
    assert_eq!(Refusal::Scope.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_metadata_names_the_configured_resource_only() {
    let auth = auth(config(KeySource::Secret(SECRET.to_vec()))).await;
    let doc: Value = serde_json::from_slice(&auth.metadata().expect("on")).expect("JSON");
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(doc["authorization_servers"], json!([ISSUER]));
    assert_eq!(
        auth.challenge(&Refusal::Invalid("the token has expired"))
            .expect("a challenge"),
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\", \
         resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/mcp\""
    );
    assert!(Auth::off().metadata().is_none());
    assert_eq!(
        Auth::off().principal(&HeaderMap::new()).await,
        Ok(ANONYMOUS.into())
    );
}

#[tokio::test]
async fn configuration_mistakes_are_refused_at_start() {
    for resource in [
        "http://gw.example/mcp",
        "/mcp",
        "https://gw.example/mcp?x=1",
    ] {
        let mut c = config(KeySource::Secret(SECRET.to_vec()));
        c.resource = resource.into();
        assert!(
            Auth::new(&AuthConfig::Bearer(c)).await.is_err(),
            "{resource}"
        );
    }
    let mut local = config(KeySource::Secret(SECRET.to_vec()));
    local.resource = "http://127.0.0.1:8080/mcp".into();
    assert!(Auth::new(&AuthConfig::Bearer(local)).await.is_ok());
    let mut quoted = config(KeySource::Secret(SECRET.to_vec()));
    quoted.required_scopes = vec!["a\"b".into()];
    assert!(matches!(
        Auth::new(&AuthConfig::Bearer(quoted)).await,
        Err(AuthError::Scope(_))
    ));
    let short = config(KeySource::Secret(b"short".to_vec()));
    assert!(matches!(
        Auth::new(&AuthConfig::Bearer(short)).await,
        Err(AuthError::ShortSecret)
    ));
    let missing = config(KeySource::JwksFile("/nonexistent/jwks.json".into()));
    assert!(matches!(
        Auth::new(&AuthConfig::Bearer(missing)).await,
        Err(AuthError::Keys { .. })
    ));
}

/// An ES256 key: its signing key and its public JWK.
struct EcKey {
    signing: EncodingKey,
    jwk: Value,
    /// The public point as bytes: what an attacker would use as an HMAC secret.
    public: Vec<u8>,
}

fn ec_key(kid: &str) -> EcKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let public = pair.public_key_raw().to_vec();
    let (x, y) = public[1..].split_at(32);
    EcKey {
        signing: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }),
        public,
    }
}

fn es256(key: &EcKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key.signing).expect("signed")
}

fn jwks(keys: &[&EcKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

#[tokio::test(start_paused = true)]
async fn a_key_file_verifies_and_is_read_again_for_a_new_key() {
    let dir = std::env::temp_dir().join(format!("sg-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    let first = ec_key("k1");
    std::fs::write(&path, jwks(&[&first])).expect("written");
    let auth = auth(config(KeySource::JwksFile(path.clone()))).await;
    assert_eq!(
        verify(&auth, &es256(&first, "k1", &claims())).await,
        Ok("alice".into())
    );

    // The public key used as an HMAC secret, under the key's id: algorithm confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&first.public))
            .expect("signed");
    assert_eq!(
        verify(&auth, &confused).await,
        Err(Refusal::Invalid("the token algorithm is not the key's"))
    );

    // Rotation: a second key appears in the file; a token naming it makes the set be read.
    let second = ec_key("k2");
    std::fs::write(&path, jwks(&[&first, &second])).expect("written");
    let rotated = es256(&second, "k2", &claims());
    assert_eq!(
        verify(&auth, &rotated).await,
        Err(Refusal::Invalid("the token names an unknown key")),
        "read at start, less than {REFRESH_INTERVAL:?} ago: not read again yet"
    );
    tokio::time::advance(REFRESH_INTERVAL).await;
    assert_eq!(verify(&auth, &rotated).await, Ok("alice".into()));
    // A verified token is remembered, but not beyond REMEMBER_FOR: a key taken out of the
    // set stops vouching for its tokens by then.
    let first_token = es256(&first, "k1", &claims());
    assert_eq!(verify(&auth, &first_token).await, Ok("alice".into()));
    std::fs::write(&path, jwks(&[&second])).expect("written");
    tokio::time::advance(REFRESH_INTERVAL).await;
    assert_eq!(
        verify(&auth, &first_token).await,
        Ok("alice".into()),
        "remembered"
    );
    tokio::time::advance(REMEMBER_FOR.max(KEYS_MAX_AGE)).await;
    assert_eq!(
        verify(&auth, &first_token).await,
        Err(Refusal::Invalid("the token names an unknown key")),
        "checked again, against a set read again, once both are old enough"
    );
    // A token signed by a key nobody published, under a published key's id.
    let stranger = ec_key("k2");
    assert_eq!(
        verify(&auth, &es256(&stranger, "k2", &claims())).await,
        Err(Refusal::Invalid("the token signature does not verify"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unknown_key_ids_read_a_key_url_at_most_once_per_interval() {
    let key = ec_key("k1");
    let document = jwks(&[&key]);
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let document = document.clone();
            async move { document }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let auth = auth(config(KeySource::JwksUrl(format!("http://{addr}/jwks")))).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(
        verify(&auth, &es256(&key, "k1", &claims())).await,
        Ok("alice".into())
    );
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        assert_eq!(
            verify(&auth, &es256(&key, kid, &claims())).await,
            Err(Refusal::Invalid("the token names an unknown key"))
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "no fetch within {REFRESH_INTERVAL:?} of the last"
    );
}

/// A throw-away 2048-bit RSA key made for these tests (PKCS#1 DER), and its modulus as a JWK
/// carries it.
const RSA_KEY: &[u8] = include_bytes!("testdata/rsa-key.der");
const RSA_MODULUS: &str = include_str!("testdata/rsa-modulus.b64u");

#[tokio::test]
async fn rsa_keys_verify_their_own_family_only() {
    let dir = std::env::temp_dir().join(format!("sg-jwks-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    let jwk = json!({"kty": "RSA", "kid": "r1", "use": "sig", "n": RSA_MODULUS, "e": "AQAB"});
    std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).expect("written");
    let auth = auth(config(KeySource::JwksFile(path))).await;
    let key = EncodingKey::from_rsa_der(RSA_KEY);
    for alg in [Algorithm::RS256, Algorithm::PS256, Algorithm::RS512] {
        let mut header = Header::new(alg);
        header.kid = Some("r1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &key).expect("signed");
        assert_eq!(verify(&auth, &token).await, Ok("alice".into()), "{alg:?}");
    }
    // The public modulus as an HMAC secret under the RSA key's id: algorithm confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("r1".into());
    let modulus = URL_SAFE_NO_PAD.decode(RSA_MODULUS).expect("base64url");
    let confused = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&modulus))
        .expect("signed");
    assert_eq!(
        verify(&auth, &confused).await,
        Err(Refusal::Invalid("the token algorithm is not the key's"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
