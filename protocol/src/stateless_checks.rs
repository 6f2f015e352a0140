//! The checks a stateless-era (2026-07-28) request must pass before it is served, in the order
//! the specification implies: required `_meta` (-32602), `MCP-Protocol-Version` against `_meta`
//! (-32020), a revision we speak (-32022), `Mcp-Method` and `Mcp-Name` against the body (-32020),
//! not a method this era removed (404, -32601), a valid log level (-32602). Methods we do not
//! know pass: an upstream may implement them (extensions), and says -32601 if not.
//!
//! Pure functions over headers and the parsed body, so the gateway (which parses the body and
//! so must validate it) and the node run the same code.

use crate::mcp::{self, RpcError, code, excerpt};
use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// Session-era requests the 2026-07-28 revision removed: answered 404 without asking anyone.
pub const REMOVED: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// A stateless-era request that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub method: String,
    pub version: String,
    pub client_capabilities: Value,
}

/// A refusal: the HTTP status and the JSON-RPC error that explains it.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: RpcError,
}

fn refuse(status: StatusCode, code: i64, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error: RpcError::new(code, message),
    }
}

fn mismatch(message: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, code::HEADER_MISMATCH, message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Decodes an `Mcp-Name`/`Mcp-Param-*` value: `=?base64?…?=` (exactly, lowercase) is strict
/// padded base64 of UTF-8; anything else is the literal value.
pub fn decode_header_value(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_owned()),
    }
}

/// The body field `Mcp-Name` must mirror, for the methods that carry one.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Runs every check on one request message (`msg` must classify as a request).
pub fn check(headers: &HeaderMap, msg: &Value) -> Result<Checked, Refusal> {
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let meta = msg.get("params").and_then(|p| p.get("_meta"));
    let version = meta
        .and_then(|m| m.get(mcp::META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let caps = meta
        .and_then(|m| m.get(mcp::META_CLIENT_CAPABILITIES))
        .filter(|c| c.is_object());
    let (Some(version), Some(caps)) = (version, caps) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!(
                "params._meta must carry {} and {}",
                mcp::META_PROTOCOL_VERSION,
                mcp::META_CLIENT_CAPABILITIES
            ),
        ));
    };
    match header(headers, mcp::HEADER_PROTOCOL_VERSION) {
        None => return Err(mismatch("missing MCP-Protocol-Version header")),
        Some(h) if h != version => {
            return Err(mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{}' does not match body value '{}'",
                excerpt(h),
                excerpt(version)
            )));
        }
        Some(_) => {}
    }
    if !mcp::is_stateless_version(version) {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            error: mcp::unsupported_version(version),
        });
    }
    match header(headers, mcp::HEADER_METHOD) {
        None => return Err(mismatch("missing Mcp-Method header")),
        Some(h) if h != method => {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Method header value '{}' does not match body value '{}'",
                excerpt(h),
                excerpt(&method)
            )));
        }
        Some(_) => {}
    }
    if let Some(field) = name_field(&method) {
        let body_value = msg
            .get("params")
            .and_then(|p| p.get(field))
            .and_then(Value::as_str);
        let Some(raw) = header(headers, mcp::HEADER_NAME) else {
            return Err(mismatch("missing Mcp-Name header"));
        };
        let decoded = decode_header_value(raw)
            .ok_or_else(|| mismatch("Mcp-Name header is not valid base64-encoded UTF-8"))?;
        if Some(decoded.as_str()) != body_value {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Name header value '{}' does not match body value '{}'",
                excerpt(&decoded),
                excerpt(body_value.unwrap_or_default())
            )));
        }
    }
    if REMOVED.contains(&method.as_str()) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!("Method not found: {}", excerpt(&method)),
        ));
    }
    if let Some(level) = meta.and_then(|m| m.get(mcp::META_LOG_LEVEL))
        && !level.as_str().is_some_and(|l| mcp::LOG_LEVELS.contains(&l))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!("unknown log level {}", excerpt(&level.to_string())),
        ));
    }
    Ok(Checked {
        method,
        version: version.to_owned(),
        client_capabilities: caps.clone(),
    })
}

#[cfg(test)]
mod tests;
