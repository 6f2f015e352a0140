//! Resources: the conformance fixtures (`test://static-text`, `test://static-binary`,
//! `test://watched-resource`, the template `test://template/{id}/data`), and the session-era
//! `resources/subscribe`/`unsubscribe`, which keep the subscribed URIs in the session's state.

use super::{fixtures, invalid_params};
use crate::upstream::{Call, UpstreamState};
use serde_json::{Value, json};
use shardgate_protocol::mcp::{Era, RpcError, code};

/// Where a session's subscribed URIs live in its state.
const SUBSCRIPTIONS: &str = "subscriptions";

const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

/// The first entry must be readable: the caching check reads whatever comes first.
pub(super) fn list() -> Value {
    json!({"resources": [
        {
            "uri": "test://static-text",
            "name": "static-text",
            "title": "Static Text Resource",
            "description": "A static text resource for testing",
            "mimeType": "text/plain"
        },
        {
            "uri": "test://static-binary",
            "name": "static-binary",
            "title": "Static Binary Resource",
            "description": "A static binary resource (image) for testing",
            "mimeType": "image/png"
        },
        {
            "uri": "test://watched-resource",
            "name": "watched-resource",
            "title": "Watched Resource",
            "description": "A resource to subscribe to; test_trigger_resource_change announces changes",
            "mimeType": "text/plain"
        }
    ]})
}

pub(super) fn templates() -> Value {
    json!({"resourceTemplates": [{
        "uriTemplate": "test://template/{id}/data",
        "name": "template",
        "title": "Resource Template",
        "description": "A resource template with parameter substitution",
        "mimeType": "application/json"
    }]})
}

/// The `id` of a URI the template matches.
fn template_id(uri: &str) -> Option<&str> {
    uri.strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The contents of `uri`, if it names a resource.
fn contents(uri: &str) -> Option<Value> {
    let content = match uri {
        "test://static-text" => json!({
            "uri": uri,
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource."
        }),
        "test://static-binary" => {
            json!({"uri": uri, "mimeType": "image/png", "blob": fixtures::PNG})
        }
        "test://watched-resource" => json!({
            "uri": uri,
            "mimeType": "text/plain",
            "text": "Watched resource content"
        }),
        _ => {
            let id = template_id(uri)?;
            let data =
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            json!({"uri": uri, "mimeType": "application/json", "text": data.to_string()})
        }
    };
    Some(json!({ "contents": [content] }))
}

pub(super) fn exists(uri: &str) -> bool {
    contents(uri).is_some()
}

/// Unknown resources: -32602 in the stateless era (SEP-2164), -32002 before it; both name the
/// URI.
fn not_found(uri: &str, era: Era) -> RpcError {
    let code = match era {
        Era::Stateless => code::INVALID_PARAMS,
        Era::Session => code::RESOURCE_NOT_FOUND,
    };
    RpcError::new(code, "Resource not found").with_data(json!({ "uri": uri }))
}

fn uri_param(call: &Call) -> Result<&str, RpcError> {
    call.params
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params(format!("{} needs params.uri", call.method)))
}

pub(super) fn read(call: &Call, era: Era) -> Result<Value, RpcError> {
    let uri = uri_param(call)?;
    contents(uri).ok_or_else(|| not_found(uri, era))
}

/// `resources/subscribe` (`on`) and `resources/unsubscribe`: the result is exactly `{}`.
pub(super) fn subscribe(call: &Call, on: bool) -> Result<Value, RpcError> {
    let uri = uri_param(call)?;
    if on && !exists(uri) {
        return Err(not_found(uri, Era::Session));
    }
    call.state.with(|state| {
        let mut uris: Vec<String> = state
            .get(SUBSCRIPTIONS)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        uris.retain(|u| u != uri);
        if on {
            uris.push(uri.to_owned());
        }
        uris.sort();
        state.insert(SUBSCRIPTIONS.into(), uris.into());
    });
    Ok(json!({}))
}

pub(super) fn is_subscribed(state: &UpstreamState, uri: &str) -> bool {
    state.read(|state| {
        state
            .get(SUBSCRIPTIONS)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|u| u == uri))
    })
}
