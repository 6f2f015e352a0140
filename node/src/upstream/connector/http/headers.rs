//! The headers we add to a request: the scope's cookies, and what a stateless-era upstream
//! needs to see (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, the client's
//! `Mcp-Param-*`), encoded when a value is not plain ASCII.

use super::Http;
use crate::upstream::UpstreamState;
use crate::upstream::connector::bridge::STATELESS_VERSION;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use shardgate_protocol::mcp;
use shardgate_protocol::stateless_checks;

/// The cookies the upstream set for this scope, `name → value`, in the scope's state.
const STATE_COOKIES: &str = "upstreamCookies";

impl Http {
    /// What a stateless-era upstream needs to see in the headers.
    pub(super) fn era_headers(
        &self,
        method: &str,
        msg: &Value,
        params: &[(String, String)],
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !self.stateless {
            return headers;
        }
        let body = msg.get("params");
        let version = body
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(mcp::META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .unwrap_or(STATELESS_VERSION);
        insert(&mut headers, mcp::HEADER_PROTOCOL_VERSION, version);
        insert(&mut headers, mcp::HEADER_METHOD, method);
        if let Some(name) = stateless_checks::name_field(method)
            .and_then(|f| body?.get(f))
            .and_then(Value::as_str)
        {
            insert(&mut headers, mcp::HEADER_NAME, &header_value(name));
        }
        for (name, value) in params {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        headers
    }
}

/// The scope's cookies, as its `Cookie` header. An upstream that keeps per-client state behind
/// a stateless-era endpoint (another shardgate, a load balancer with sticky cookies) knows
/// its clients by a cookie: each scope is one client to it, as each scope is one client to us.
pub(super) fn send_cookies(state: &UpstreamState, headers: &mut HeaderMap) {
    let cookie = state.read(|s| {
        let jar = s.get(STATE_COOKIES)?.as_object()?;
        let pairs: Vec<String> = jar
            .iter()
            .filter_map(|(name, value)| Some(format!("{name}={}", value.as_str()?)))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    });
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Keeps the cookies an answer sets (name and value; one set to expire is dropped).
pub(super) fn keep_cookies(state: &UpstreamState, headers: &HeaderMap) {
    for set in headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        let mut parts = set.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        let expired = parts.any(|a| a.eq_ignore_ascii_case("max-age=0"));
        state.with(|s| {
            let jar = s
                .entry(STATE_COOKIES)
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(jar) = jar.as_object_mut() {
                if expired || value.is_empty() {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_owned(), value.into());
                }
            }
        });
    }
}

pub(super) fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// An `Mcp-Name` value: as it is when that is plain visible ASCII, else `=?base64?…?=`.
fn header_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?");
    if plain {
        s.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_sends_back_the_cookies_it_was_set() {
        let state = UpstreamState::default();
        let mut set = HeaderMap::new();
        set.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("k=v1; Path=/mcp; HttpOnly"),
        );
        set.append(http::header::SET_COOKIE, HeaderValue::from_static("lb=a"));
        keep_cookies(&state, &set);
        let mut headers = HeaderMap::new();
        send_cookies(&state, &mut headers);
        assert_eq!(
            headers
                .get(http::header::COOKIE)
                .and_then(|v| v.to_str().ok()),
            Some("k=v1; lb=a")
        );
        let mut gone = HeaderMap::new();
        gone.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("lb=; Max-Age=0"),
        );
        keep_cookies(&state, &gone);
        let mut headers = HeaderMap::new();
        send_cookies(&state, &mut headers);
        assert_eq!(
            headers
                .get(http::header::COOKIE)
                .and_then(|v| v.to_str().ok()),
            Some("k=v1")
        );
        let mut none = HeaderMap::new();
        send_cookies(&UpstreamState::default(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn names_that_are_not_plain_ascii_are_encoded() {
        assert_eq!(header_value("echo"), "echo");
        assert_eq!(header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(header_value(" x"), "=?base64?IHg=?=");
    }
}
