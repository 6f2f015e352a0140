//! The edge checks every request passes before it is routed, in order: Host and Origin
//! (403, DNS rebinding), Accept (406), Content-Type (415), body size (413).
//!
//! Pure functions over headers, so they are unit-tested without sockets. A refusal quotes at
//! most a short excerpt of what the client sent ([`excerpt`]).

use crate::config::GatewayConfig;
use crate::error::ProxyError;
use http::{HeaderMap, Method, header};
use shardgate_protocol::mcp::{Accepts, excerpt};

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// The host part of a `Host` header or an origin's authority: without port and brackets.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// 403 when the request is addressed to a host we do not serve, or comes from a browser origin
/// we do not trust (the DNS-rebinding defence the transport requires).
pub fn host_and_origin(
    config: &GatewayConfig,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), ProxyError> {
    let host = authority.or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()));
    if let Some(host) = host {
        let name = host_of(host).to_ascii_lowercase();
        let allowed = config
            .allowed_hosts
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&name));
        if !allowed {
            return Err(ProxyError::Host(excerpt(host)));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<non-ascii>");
        if !origin_allowed(config, origin) {
            return Err(ProxyError::Origin(excerpt(origin)));
        }
    }
    Ok(())
}

pub fn origin_allowed(config: &GatewayConfig, origin: &str) -> bool {
    if config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // Loopback pages may talk to a gateway that is itself served on loopback.
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| {
        is_loopback(host_of(a)) && config.allowed_hosts.iter().any(|h| is_loopback(h.as_str()))
    })
}

/// 406 only when the answer can be sent in neither media type the client accepts: a POST may
/// be answered as JSON or as SSE; a GET only as SSE.
pub fn accept(method: &Method, headers: &HeaderMap) -> Result<Accepts, ProxyError> {
    let accepts = Accepts::from_headers(headers);
    if *method == Method::GET && !accepts.sse {
        return Err(ProxyError::NotAcceptable(
            "Client must accept text/event-stream",
        ));
    }
    if *method == Method::POST && !accepts.any() {
        return Err(ProxyError::NotAcceptable(
            "Client must accept application/json or text/event-stream",
        ));
    }
    Ok(accepts)
}

/// 415 unless the body is declared as JSON.
pub fn content_type(headers: &HeaderMap) -> Result<(), ProxyError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ProxyError::UnsupportedMediaType)
    }
}

/// 413 early, when the declared length is already over the limit.
pub fn declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ProxyError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use shardgate_raft::Membership;

    fn config() -> GatewayConfig {
        GatewayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
            http3: false,
            allowed_hosts: GatewayConfig::loopback_hosts(),
            allowed_origins: vec!["https://app.example.com".into()],
            max_body_bytes: 1024,
            membership: Membership::default(),
            seeds: Vec::new(),
            affinity: Default::default(),
            credentials: shardgate_trust::Credentials::Hmac(shardgate_trust::Signer::new(
                &shardgate_trust::Secret::generate(),
            )),
            client_limits: Default::default(),
            admin_limits: shardgate_protocol::listener::ListenerLimits::ADMIN,
            failover_hold: GatewayConfig::DEFAULT_FAILOVER_HOLD,
            workers: 0,
            auth: crate::auth::AuthConfig::Off,
            rate: Default::default(),
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn dns_rebinding_is_refused() {
        let c = config();
        let evil = headers(&[
            (header::HOST, "evil.example.com"),
            (header::ORIGIN, "http://evil.example.com"),
        ]);
        assert!(matches!(
            host_and_origin(&c, &evil, None),
            Err(ProxyError::Host(_))
        ));
        let local = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://localhost:3000"),
        ]);
        assert!(host_and_origin(&c, &local, None).is_ok());
        let v6 = headers(&[(header::HOST, "[::1]:8080")]);
        assert!(host_and_origin(&c, &v6, None).is_ok());
    }

    #[test]
    fn refusals_quote_a_short_excerpt_of_the_header() {
        let c = config();
        let long = format!("{}.example.com", "a".repeat(8192));
        let refused = host_and_origin(&c, &headers(&[(header::HOST, &long)]), None)
            .expect_err("not an allowed host");
        assert!(refused.to_string().len() < 128, "{refused}");
        let origin = format!("https://{long}");
        let refused = host_and_origin(
            &c,
            &headers(&[(header::HOST, "localhost"), (header::ORIGIN, &origin)]),
            None,
        )
        .expect_err("not an allowed origin");
        assert!(refused.to_string().len() < 128, "{refused}");
    }

    #[test]
    fn origins_are_checked_against_the_list() {
        let c = config();
        assert!(origin_allowed(&c, "https://app.example.com"));
        assert!(!origin_allowed(&c, "https://evil.example.com"));
        assert!(!origin_allowed(&c, "null"));
        let bad = headers(&[
            (header::HOST, "localhost"),
            (header::ORIGIN, "https://evil.example.com"),
        ]);
        assert!(matches!(
            host_and_origin(&c, &bad, None),
            Err(ProxyError::Origin(_))
        ));
    }

    #[test]
    fn accept_needs_one_usable_type() {
        let json_only = headers(&[(header::ACCEPT, "application/json")]);
        assert!(accept(&Method::POST, &json_only).is_ok());
        assert!(accept(&Method::GET, &json_only).is_err());
        let html = headers(&[(header::ACCEPT, "text/html")]);
        assert!(accept(&Method::POST, &html).is_err());
    }

    #[test]
    fn content_type_and_length() {
        assert!(
            content_type(&headers(&[(
                header::CONTENT_TYPE,
                "application/json; charset=utf-8"
            )]))
            .is_ok()
        );
        assert!(content_type(&headers(&[(header::CONTENT_TYPE, "text/plain")])).is_err());
        assert!(content_type(&HeaderMap::new()).is_err());
        assert!(declared_length(&headers(&[(header::CONTENT_LENGTH, "2048")]), 1024).is_err());
        assert!(declared_length(&headers(&[(header::CONTENT_LENGTH, "10")]), 1024).is_ok());
    }
}
