//! Era bridging: the pure rewrites between what a client of one era sends and what an upstream
//! of the other era expects.
//!
//! - A stateless-era client served by a session-era upstream: the node initializes the upstream
//!   on the client's behalf ([`initialize_params`]), answers `server/discover` from the upstream's
//!   `InitializeResult` ([`discover_from`]), and strips the per-request `_meta` keys the upstream
//!   would not understand ([`strip_stateless_meta`]); cacheable results say not to cache them
//!   ([`with_cache_hints`]). The stateless engine adds `resultType`.
//! - A session-era client served by a stateless-era upstream: `initialize` is answered from the
//!   upstream's `server/discover` ([`initialize_from`]), every request gains the `_meta` the
//!   upstream needs ([`with_stateless_meta`]), and results lose the stateless-only fields
//!   ([`session_result`]). `input_required` results are driven by the connector, asking the
//!   client over the session.

use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{
    self, META_CLIENT_CAPABILITIES, META_LOG_LEVEL, META_PROTOCOL_VERSION, RpcError,
};

/// Prefix of the `_meta` keys the protocol itself defines.
const PROTOCOL_META_PREFIX: &str = "io.modelcontextprotocol/";

/// The stateless-era revision a bridged session-era client is served under, upstream.
pub const STATELESS_VERSION: &str = mcp::STATELESS_ERA_VERSIONS[0];

/// Who we say we are when we initialize an upstream for stateless-era clients.
fn client_info() -> Value {
    json!({"name": "shardgate", "version": env!("CARGO_PKG_VERSION")})
}

/// `initialize` params for a session-era upstream serving stateless-era clients. The clients
/// behind one affinity key may differ in capabilities, and each states its own per request,
/// so the upstream is told everything can be asked; whether this client can is checked when
/// the upstream asks (-32021 if not).
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": mcp::LATEST_SESSION_VERSION,
        "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}},
        "clientInfo": client_info(),
    })
}

/// `server/discover` of a stateless-era client, answered from a session-era upstream's
/// `InitializeResult`.
pub fn discover_from(init: &Value) -> Value {
    let mut result = Map::new();
    // The endpoint serves every revision, whichever era the upstream speaks.
    result.insert("supportedVersions".into(), json!(mcp::supported_versions()));
    result.insert(
        "capabilities".into(),
        init.get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    if let Some(instructions) = init.get("instructions") {
        result.insert("instructions".into(), instructions.clone());
    }
    if let Some(info) = init.get("serverInfo") {
        result.insert(
            "_meta".into(),
            json!({ (mcp::META_SERVER_INFO): info.clone() }),
        );
    }
    Value::Object(result)
}

/// An `InitializeResult` for a session-era client, from a stateless-era upstream's
/// `server/discover` result; `requested` is the revision the client asked for.
pub fn initialize_from(discover: &Value, requested: Option<&str>, upstream: &str) -> Value {
    let version = requested
        .filter(|v| mcp::is_session_version(v))
        .unwrap_or(mcp::LATEST_SESSION_VERSION);
    let server_info = discover
        .get("_meta")
        .and_then(|m| m.get(mcp::META_SERVER_INFO))
        .cloned()
        .unwrap_or_else(|| json!({"name": upstream, "version": "unknown"}));
    let mut capabilities = discover
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    // The stateless era has no `resources/subscribe`; the bridge cannot offer it.
    if let Some(resources) = capabilities
        .get_mut("resources")
        .and_then(Value::as_object_mut)
    {
        resources.remove("subscribe");
    }
    let mut result = Map::new();
    result.insert("protocolVersion".into(), version.into());
    result.insert("capabilities".into(), capabilities);
    result.insert("serverInfo".into(), server_info);
    if let Some(instructions) = discover.get("instructions") {
        result.insert("instructions".into(), instructions.clone());
    }
    Value::Object(result)
}

/// Adds the caching hints the stateless era requires of lists, `server/discover` and reads.
/// A session-era upstream gives none and may change its lists at any time, so: not cached.
pub fn with_cache_hints(method: &str, mut result: Value) -> Value {
    let cacheable = matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    );
    if let (true, Some(obj)) = (cacheable, result.as_object_mut()) {
        obj.entry("ttlMs").or_insert_with(|| 0.into());
        obj.entry("cacheScope").or_insert_with(|| "private".into());
    }
    result
}

/// Removes the protocol's own `_meta` keys (and `_meta`, if that empties it): a session-era
/// upstream has no use for them. Other `_meta` keys pass unchanged.
pub fn strip_stateless_meta(params: &mut Value) {
    let Some(obj) = params.as_object_mut() else {
        return;
    };
    let emptied = match obj.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.retain(|k, _| !k.starts_with(PROTOCOL_META_PREFIX));
            meta.is_empty()
        }
        None => false,
    };
    if emptied {
        obj.remove("_meta");
    }
}

/// Adds what a stateless-era upstream needs in every request's `_meta`.
pub fn with_stateless_meta(params: Value, capabilities: &Value, log_level: Option<&str>) -> Value {
    let mut obj = match params {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_PROTOCOL_VERSION.into(), STATELESS_VERSION.into());
        meta.insert(META_CLIENT_CAPABILITIES.into(), capabilities.clone());
        if let Some(level) = log_level {
            meta.insert(META_LOG_LEVEL.into(), level.into());
        }
    }
    Value::Object(obj)
}

/// A stateless-era result as a session-era client expects it: without `resultType`, the
/// caching hints and the protocol's `_meta` keys.
pub fn session_result(mut result: Value) -> Value {
    if let Some(obj) = result.as_object_mut() {
        obj.remove("resultType");
        obj.remove("ttlMs");
        obj.remove("cacheScope");
    }
    strip_stateless_meta(&mut result);
    result
}

/// A session-era upstream's error as the stateless era words it: a missing resource is
/// -32602 there (SEP-2164), where the session era used -32002.
pub fn stateless_error(mut e: RpcError) -> RpcError {
    if e.code == mcp::code::RESOURCE_NOT_FOUND {
        e.code = mcp::code::INVALID_PARAMS;
    }
    e
}

/// An `input_required` result's requests (`{key: {method, params}}`), if it is one.
pub fn input_requests(result: &Value) -> Option<&Map<String, Value>> {
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    result.get("inputRequests").and_then(Value::as_object)
}

/// The params of the retry of an `input_required` request: the original params with the
/// client's answers and the upstream's `requestState`.
pub fn retry_params(original: &Value, answers: Map<String, Value>, asked: &Value) -> Value {
    let mut params = original.as_object().cloned().unwrap_or_default();
    params.insert("inputResponses".into(), Value::Object(answers));
    match asked.get("requestState") {
        Some(state) => params.insert("requestState".into(), state.clone()),
        None => params.remove("requestState"),
    };
    Value::Object(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_comes_from_the_initialize_result() {
        let init = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "up", "version": "1"},
            "instructions": "be nice"
        });
        let d = discover_from(&init);
        assert_eq!(d["supportedVersions"], json!(mcp::supported_versions()));
        assert_eq!(d["capabilities"], json!({"tools": {}}));
        assert_eq!(d["instructions"], "be nice");
        assert_eq!(d["_meta"][mcp::META_SERVER_INFO]["name"], "up");
    }

    #[test]
    fn initialize_comes_from_discover() {
        let d = json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"resources": {"subscribe": true, "listChanged": true}},
            "_meta": {(mcp::META_SERVER_INFO): {"name": "up", "version": "2"}},
            "resultType": "complete"
        });
        let init = initialize_from(&d, Some("2025-06-18"), "remote");
        assert_eq!(init["protocolVersion"], "2025-06-18");
        assert_eq!(init["serverInfo"]["name"], "up");
        assert_eq!(
            init["capabilities"],
            json!({"resources": {"listChanged": true}})
        );
        let init = initialize_from(&json!({}), Some("1999-01-01"), "remote");
        assert_eq!(init["protocolVersion"], mcp::LATEST_SESSION_VERSION);
        assert_eq!(init["serverInfo"]["name"], "remote");
    }

    #[test]
    fn protocol_meta_is_stripped_and_the_rest_kept() {
        let mut p = json!({"name": "t", "_meta": {
            (META_PROTOCOL_VERSION): "2026-07-28", "progressToken": 3, "x.y/z": 1
        }});
        strip_stateless_meta(&mut p);
        assert_eq!(
            p,
            json!({"name": "t", "_meta": {"progressToken": 3, "x.y/z": 1}})
        );
        let mut p = json!({"_meta": {(META_PROTOCOL_VERSION): "2026-07-28"}});
        strip_stateless_meta(&mut p);
        assert_eq!(p, json!({}));
    }

    #[test]
    fn stateless_meta_is_added_and_results_cleaned() {
        let p = with_stateless_meta(json!({"name": "t"}), &json!({"roots": {}}), Some("info"));
        assert_eq!(p["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(p["_meta"][META_CLIENT_CAPABILITIES], json!({"roots": {}}));
        assert_eq!(p["_meta"][META_LOG_LEVEL], "info");
        let r = session_result(json!({
            "tools": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "public",
            "_meta": {(mcp::META_SERVER_INFO): {}}
        }));
        assert_eq!(r, json!({"tools": []}));
    }

    #[test]
    fn a_missing_resource_is_invalid_params_in_the_stateless_era() {
        let e = stateless_error(RpcError::new(mcp::code::RESOURCE_NOT_FOUND, "gone"));
        assert_eq!(e.code, mcp::code::INVALID_PARAMS);
        assert_eq!(e.message, "gone");
    }

    #[test]
    fn cacheable_results_say_not_to_cache() {
        let r = with_cache_hints("tools/list", json!({"tools": []}));
        assert_eq!(r["ttlMs"], 0);
        assert_eq!(r["cacheScope"], "private");
        let r = with_cache_hints("tools/call", json!({"content": []}));
        assert!(r.get("ttlMs").is_none());
    }

    #[test]
    fn input_required_is_recognised_and_retried() {
        let asked = json!({
            "resultType": "input_required",
            "inputRequests": {"a": {"method": "roots/list", "params": {}}},
            "requestState": "s1"
        });
        assert!(input_requests(&asked).is_some_and(|r| r.contains_key("a")));
        assert!(input_requests(&json!({"content": []})).is_none());
        let mut answers = Map::new();
        answers.insert("a".into(), json!({"roots": []}));
        let p = retry_params(&json!({"name": "t"}), answers, &asked);
        assert_eq!(p["requestState"], "s1");
        assert_eq!(p["inputResponses"]["a"], json!({"roots": []}));
    }
}
