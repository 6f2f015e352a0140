use super::*;
use http::header::{CONTENT_TYPE, USER_AGENT};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PATH: &str = "/internal/membership?since=7";
const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

fn signer(secret: &str) -> Signer {
    Signer::new(&Secret::from_bytes(secret.as_bytes().to_vec()).expect("secret"))
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-shardgate-node", HeaderValue::from_static("node-1"));
    headers.insert("x-shardgate-epoch", HeaderValue::from_static("42"));
    headers.append("x-shardgate-hop", HeaderValue::from_static("gw-0"));
    headers.append("x-shardgate-hop", HeaderValue::from_static("node-1"));
    headers
}

/// A request signed now by `SECRET`: its headers (with the signature added) and its nonce.
fn signed(method: &Method, headers: HeaderMap) -> (HeaderMap, String) {
    let mut headers = headers;
    let (value, nonce) = sign_request(&signer(SECRET), method, PATH, &headers, BODY);
    headers.insert(AUTH_HEADER, value);
    (headers, nonce)
}

fn verify(headers: &HeaderMap) -> Result<String, AuthError> {
    verify_request(
        &signer(SECRET),
        &Method::POST,
        PATH,
        headers,
        BODY,
        SystemTime::now(),
    )
}

#[test]
fn a_signed_request_verifies_and_yields_its_nonce() {
    let (headers, nonce) = signed(&Method::POST, headers());
    assert_eq!(nonce.len(), 22, "16 bytes in base64url without padding");
    assert_eq!(verify(&headers), Ok(nonce));
    assert!(headers[AUTH_HEADER].is_sensitive());
}

#[test]
fn nonces_differ_between_requests() {
    let (_, first) = signed(&Method::POST, headers());
    let (_, second) = signed(&Method::POST, headers());
    assert_ne!(first, second);
}

#[test]
fn method_path_and_body_are_covered() {
    let (headers, _) = signed(&Method::POST, headers());
    let key = signer(SECRET);
    let now = SystemTime::now();
    let attempts = [
        verify_request(&key, &Method::PUT, PATH, &headers, BODY, now),
        verify_request(
            &key,
            &Method::POST,
            "/internal/membership?since=8",
            &headers,
            BODY,
            now,
        ),
        verify_request(
            &key,
            &Method::POST,
            "/internal/membership",
            &headers,
            BODY,
            now,
        ),
        verify_request(&key, &Method::POST, PATH, &headers, b"{}", now),
        verify_request(&key, &Method::POST, PATH, &headers, b"", now),
    ];
    for attempt in attempts {
        assert_eq!(attempt, Err(AuthError::BadSignature));
    }
}

#[test]
fn every_shardgate_header_value_is_covered() {
    let (signed_headers, _) = signed(&Method::POST, headers());
    for name in ["x-shardgate-node", "x-shardgate-epoch", "x-shardgate-hop"] {
        let mut changed = signed_headers.clone();
        changed.insert(name, HeaderValue::from_static("other"));
        assert_eq!(verify(&changed), Err(AuthError::BadSignature), "{name}");

        let mut removed = signed_headers.clone();
        removed.remove(name);
        assert_eq!(verify(&removed), Err(AuthError::BadSignature), "{name}");
    }

    let mut reordered = signed_headers.clone();
    reordered.remove("x-shardgate-hop");
    reordered.append("x-shardgate-hop", HeaderValue::from_static("node-1"));
    reordered.append("x-shardgate-hop", HeaderValue::from_static("gw-0"));
    assert_eq!(verify(&reordered), Err(AuthError::BadSignature));
}

#[test]
fn a_shardgate_header_added_after_signing_is_refused() {
    let (mut headers, _) = signed(&Method::POST, headers());
    headers.insert("x-shardgate-foo", HeaderValue::from_static("1"));
    assert_eq!(verify(&headers), Err(AuthError::BadSignature));
}

#[test]
fn other_headers_may_change_freely() {
    let (mut headers, nonce) = signed(&Method::POST, headers());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(USER_AGENT, HeaderValue::from_static("curl/8"));
    headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    headers.insert("x-shardgat", HeaderValue::from_static("not our prefix"));
    assert_eq!(verify(&headers), Ok(nonce));
}

#[test]
fn header_insertion_order_does_not_matter() {
    let mut reversed = HeaderMap::new();
    reversed.append("x-shardgate-hop", HeaderValue::from_static("gw-0"));
    reversed.append("x-shardgate-hop", HeaderValue::from_static("node-1"));
    reversed.insert("x-shardgate-epoch", HeaderValue::from_static("42"));
    reversed.insert("x-shardgate-node", HeaderValue::from_static("node-1"));
    let (signed_headers, nonce) = signed(&Method::POST, reversed);
    let mut expected = headers();
    expected.insert(AUTH_HEADER, signed_headers[AUTH_HEADER].clone());
    assert_eq!(verify(&expected), Ok(nonce));
}

#[test]
fn a_different_secret_is_refused() {
    let (headers, _) = signed(&Method::POST, headers());
    let other = signer(&SECRET.replace('0', "9"));
    let result = verify_request(
        &other,
        &Method::POST,
        PATH,
        &headers,
        BODY,
        SystemTime::now(),
    );
    assert_eq!(result, Err(AuthError::BadSignature));
}

#[test]
fn timestamps_more_than_60_s_away_are_refused_either_way() {
    let (headers, nonce) = signed(&Method::POST, headers());
    let key = signer(SECRET);
    let at = |now: SystemTime| verify_request(&key, &Method::POST, PATH, &headers, BODY, now);
    let signed_at = headers[AUTH_HEADER].to_str().expect("ascii")[5..]
        .split(' ')
        .next()
        .and_then(|secs| secs.parse::<u64>().ok())
        .expect("t=");
    let signed_at = UNIX_EPOCH + Duration::from_secs(signed_at);

    assert_eq!(at(signed_at + MAX_SKEW), Ok(nonce.clone()));
    assert_eq!(at(signed_at - MAX_SKEW), Ok(nonce));
    let late = at(signed_at + MAX_SKEW + Duration::from_secs(1));
    assert_eq!(late, Err(AuthError::Skew { skew_secs: -61 }));
    let message = late.expect_err("late").to_string();
    assert_eq!(
        message,
        "signature timestamp is 61 s behind the local clock; at most 60 s either way is allowed"
    );
    let early = at(signed_at - Duration::from_secs(3600));
    assert_eq!(early, Err(AuthError::Skew { skew_secs: 3600 }));
}

#[test]
fn a_rewritten_timestamp_breaks_the_signature() {
    let (mut headers, _) = signed(&Method::POST, headers());
    let value = headers[AUTH_HEADER].to_str().expect("ascii").to_owned();
    let secs: u64 = value[5..]
        .split(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("t=");
    let rewritten = value.replacen(&format!("t={secs}"), &format!("t={}", secs + 1), 1);
    headers.insert(
        AUTH_HEADER,
        HeaderValue::try_from(rewritten).expect("value"),
    );
    assert_eq!(verify(&headers), Err(AuthError::BadSignature));
}

#[test]
fn a_missing_header_is_refused() {
    assert_eq!(verify(&headers()), Err(AuthError::Missing));
}

#[test]
fn malformed_headers_are_refused() {
    let nonce = "AAAAAAAAAAAAAAAAAAAAAA";
    let mac = "A".repeat(43);
    let cases = [
        format!("v2 t=1 n={nonce} s={mac}"),
        format!("v1 t=-1 n={nonce} s={mac}"),
        format!("v1 t=+1 n={nonce} s={mac}"),
        format!("v1 t= n={nonce} s={mac}"),
        format!("v1 t=99999999999999999999999 n={nonce} s={mac}"),
        format!("v1 n={nonce} s={mac}"),
        format!("v1 t=1 n={nonce}"),
        format!("v1 t=1 n=AAAA s={mac}"),
        format!("v1 t=1 n={nonce} s=AAAA"),
        format!("v1 t=1 n={nonce} s={}", "!".repeat(43)),
        format!("v1 t=1 n={nonce} s={mac}="),
        format!("v1 t=1 n={nonce} s={mac} extra=1"),
        format!("v1  t=1 n={nonce} s={mac}"),
        String::new(),
    ];
    for case in cases {
        let mut headers = headers();
        headers.insert(
            AUTH_HEADER,
            HeaderValue::try_from(case.clone()).expect("value"),
        );
        assert!(
            matches!(verify(&headers), Err(AuthError::Malformed(_))),
            "{case:?}"
        );
    }

    let (mut twice, _) = signed(&Method::POST, headers());
    let value = twice[AUTH_HEADER].clone();
    twice.append(AUTH_HEADER, value);
    assert_eq!(
        verify(&twice),
        Err(AuthError::Malformed("more than one value"))
    );
}

#[test]
fn refusals_do_not_reveal_the_secret_or_the_mac() {
    let (mut headers, _) = signed(&Method::POST, headers());
    let good = headers[AUTH_HEADER].to_str().expect("ascii").to_owned();
    let good_mac = good.rsplit("s=").next().expect("s=").to_owned();
    headers.insert("x-shardgate-node", HeaderValue::from_static("node-2"));
    let err = verify(&headers).expect_err("refused");
    for message in [
        err.to_string(),
        format!("{err:?}"),
        format!("{:?}", signer(SECRET)),
    ] {
        assert!(!message.contains(SECRET), "{message}");
        assert!(!message.contains(&good_mac), "{message}");
    }
}

/// The canonical strings are the wire contract with every other implementation: pin them.
#[test]
fn canonical_strings_are_stable() {
    let canonical = request_canonical(&Method::POST, PATH, 1_700_000_000, "nonce", &headers(), b"");
    let expected = "shardgate-request-v1\nPOST\n/internal/membership?since=7\n1700000000\nnonce\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
        x-shardgate-epoch:42\nx-shardgate-hop:gw-0\nx-shardgate-hop:node-1\nx-shardgate-node:node-1\n";
    assert_eq!(String::from_utf8(canonical).expect("utf-8"), expected);

    let canonical = response_canonical(200, 1_700_000_000, "mine", "theirs", b"");
    let expected = "shardgate-response-v1\n200\n1700000000\nmine\ntheirs\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(String::from_utf8(canonical).expect("utf-8"), expected);
}

fn response_headers(value: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTH_HEADER, value);
    headers
}

#[test]
fn a_signed_response_verifies_for_its_request_only() {
    let key = signer(SECRET);
    let (_, request_nonce) = signed(&Method::POST, headers());
    let headers = response_headers(sign_response(&key, 200, &request_nonce, BODY));
    let now = SystemTime::now();
    assert_eq!(
        verify_response(&key, 200, &request_nonce, &headers, BODY, now),
        Ok(())
    );

    let (_, other_nonce) = signed(&Method::POST, self::headers());
    let refused = [
        verify_response(&key, 200, &other_nonce, &headers, BODY, now),
        verify_response(&key, 503, &request_nonce, &headers, BODY, now),
        verify_response(&key, 200, &request_nonce, &headers, b"{}", now),
        verify_response(
            &signer(&SECRET.replace('0', "9")),
            200,
            &request_nonce,
            &headers,
            BODY,
            now,
        ),
    ];
    for result in refused {
        assert_eq!(result, Err(AuthError::BadSignature));
    }
    let late = verify_response(
        &key,
        200,
        &request_nonce,
        &headers,
        BODY,
        now + 2 * MAX_SKEW,
    );
    assert!(matches!(late, Err(AuthError::Skew { .. })), "{late:?}");
    let missing = verify_response(&key, 200, &request_nonce, &HeaderMap::new(), BODY, now);
    assert_eq!(missing, Err(AuthError::Missing));
}

#[test]
fn a_request_signature_is_not_a_response_signature() {
    let key = signer(SECRET);
    let (request, nonce) = signed(&Method::POST, HeaderMap::new());
    let headers = response_headers(request[AUTH_HEADER].clone());
    let result = verify_response(&key, 200, &nonce, &headers, BODY, SystemTime::now());
    assert_eq!(result, Err(AuthError::BadSignature));
}
