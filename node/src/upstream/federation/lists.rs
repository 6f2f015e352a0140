//! `tools/list`, `prompts/list`, `resources/list` and `resources/templates/list`, one member
//! at a time.
//!
//! Every page comes from one member, unchanged but for the prefixed names and `nextCursor`, so
//! what a member says about its page (`ttlMs`, `cacheScope`, `_meta`) stays true. Our cursor is
//! base64url JSON `[member index, that member's cursor or null]`: the member's own cursor goes
//! back to it as it gave it, and when a member has no more pages the next page is the next
//! member's first.

use super::state::{self, Owned};
use super::{Inner, invalid_params};
use crate::config::PREFIX_SEPARATOR;
use crate::upstream::Call;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{self, RpcError};
use std::sync::Arc;

/// The array a list result carries its items in.
fn items_key(method: &str) -> &'static str {
    match method {
        "prompts/list" => "prompts",
        "resources/list" => "resources",
        "resources/templates/list" => "resourceTemplates",
        _ => "tools",
    }
}

fn encode(index: usize, cursor: Option<&str>) -> String {
    URL_SAFE_NO_PAD.encode(json!([index, cursor]).to_string())
}

/// Where a cursor of ours resumes: `(member index, member cursor)`.
fn decode(cursor: &str, members: usize) -> Result<(usize, Option<String>), RpcError> {
    let invalid = || invalid_params("Invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let Some([index, inner]) = value.as_array().map(Vec::as_slice) else {
        return Err(invalid());
    };
    let index = index
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < members)
        .ok_or_else(invalid)?;
    let inner = match inner {
        Value::Null => None,
        Value::String(c) => Some(c.clone()),
        _ => return Err(invalid()),
    };
    Ok((index, inner))
}

/// Prefixes the names of a member's page in place, and notes which URIs (or URI templates)
/// it listed, so that reads of them go to it.
fn rename(inner: &Inner, call: &Call, i: usize, page: &mut Value) {
    let member = &inner.members[i];
    let (uri_key, kind) = match call.method.as_str() {
        "resources/list" => ("uri", Some(Owned::Resources)),
        "resources/templates/list" => ("uriTemplate", Some(Owned::Templates)),
        _ => ("", None),
    };
    let mut uris = Vec::new();
    let Some(items) = page
        .get_mut(items_key(&call.method))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(Value::String(name)) = item.get_mut("name") {
            *name = format!("{}{PREFIX_SEPARATOR}{name}", member.prefix);
        }
        if let Some(uri) = item.get(uri_key).and_then(Value::as_str) {
            uris.push(uri.to_owned());
        }
    }
    if let Some(kind) = kind {
        state::remember(&call.state, kind, &member.name, &uris);
    }
}

fn is_empty(page: &Value, key: &str) -> bool {
    page.get(key)
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

pub(super) async fn list(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    let key = items_key(&call.method);
    let (start, mut cursor) = match call.params.get("cursor") {
        None | Some(Value::Null) => (0, None),
        Some(Value::String(c)) => decode(c, inner.members.len())?,
        Some(_) => return Err(invalid_params("Invalid cursor")),
    };
    let active: Vec<usize> = inner
        .active(&call.state)
        .into_iter()
        .filter(|&i| i >= start)
        .collect();
    let mut first_error = None;
    // A member with nothing to show is skipped, but its answer is kept in case nobody after it
    // has anything either: a real page beats one we make up.
    let mut skipped = None;
    for (n, &i) in active.iter().enumerate() {
        // A member cursor only ever applies to the member it came from.
        let member_cursor = if i == start { cursor.take() } else { None };
        let mut params = call.params.clone();
        if let Value::Object(p) = &mut params {
            match member_cursor {
                Some(c) => p.insert("cursor".into(), c.into()),
                None => p.remove("cursor"),
            };
        }
        let mut page = match inner.forward(call, i, &call.method, params).await {
            Ok(page) => page,
            Err(e) => {
                inner.failed(i, &call.method, &e);
                first_error.get_or_insert(e);
                continue;
            }
        };
        rename(inner, call, i, &mut page);
        let member_next = match &mut page {
            Value::Object(map) => map
                .remove("nextCursor")
                .and_then(|c| c.as_str().map(str::to_owned)),
            // Not a list result; the client may make sense of it, we cannot.
            _ => return Ok(page),
        };
        let next = match (member_next, active.get(n + 1)) {
            (Some(c), _) => Some(encode(i, Some(&c))),
            (None, Some(_)) if is_empty(&page, key) => {
                skipped = Some(page);
                continue;
            }
            (None, Some(&m)) => Some(encode(m, None)),
            (None, None) => None,
        };
        if let (Some(next), Value::Object(map)) = (next, &mut page) {
            map.insert("nextCursor".into(), next.into());
        }
        return Ok(page);
    }
    if let Some(page) = skipped {
        return Ok(page);
    }
    // Every member from here on failed. On the first page that is the client's answer; on a
    // later one the client already has earlier members' items, so the list simply ends.
    match first_error {
        Some(e) if start == 0 => Err(e),
        _ if active.is_empty() && start == 0 => Err(super::no_members()),
        _ => Ok(empty_page(call, key)),
    }
}

/// The last page when the members it would have come from failed. Not cacheable, as it is not
/// what the members would say once they are back.
fn empty_page(call: &Call, key: &str) -> Value {
    let mut page = Map::new();
    page.insert(key.into(), json!([]));
    if mcp::is_stateless_version(&call.protocol_version) {
        page.insert("ttlMs".into(), 0.into());
        page.insert("cacheScope".into(), "private".into());
    }
    Value::Object(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = encode(1, Some("abc"));
        assert_eq!(decode(&c, 2), Ok((1, Some("abc".to_owned()))));
        assert_eq!(decode(&encode(0, None), 2), Ok((0, None)));
        assert!(decode(&c, 1).is_err(), "index out of range");
        assert!(decode("not base64!", 2).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("{}"), 2).is_err());
    }
}
