//! `initialize` (session era) and `server/discover` (stateless era): every member is asked at
//! once and the answers are merged into one server's.
//!
//! The federation can do what any member can (capabilities are united), speaks the versions
//! they all speak, and names itself, as no member's identity is the federation's.

use super::state;
use super::{Inner, no_members};
use crate::upstream::Call;
use futures_util::future::join_all;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{self, META_SERVER_INFO, RpcError};
use std::sync::Arc;

fn server_info() -> Value {
    json!({"name": "shardgate", "version": env!("CARGO_PKG_VERSION")})
}

/// Asks `members` the call's own method and params at once: the answers of those that gave
/// one, in order, and the members that failed; the first error if nobody answered.
async fn ask_all(
    inner: &Arc<Inner>,
    call: &Call,
    members: &[usize],
) -> Result<(Vec<(usize, Value)>, Vec<usize>), RpcError> {
    let results = join_all(
        members
            .iter()
            .map(|&i| inner.forward(call, i, &call.method, call.params.clone())),
    )
    .await;
    let mut answers = Vec::new();
    let mut failed = Vec::new();
    let mut first_error = None;
    for (&i, result) in members.iter().zip(results) {
        match result {
            Ok(answer) => answers.push((i, answer)),
            Err(e) => {
                inner.failed(i, &call.method, &e);
                failed.push(i);
                first_error.get_or_insert(e);
            }
        }
    }
    if answers.is_empty() {
        return Err(first_error.unwrap_or_else(no_members));
    }
    Ok((answers, failed))
}

pub(super) async fn initialize(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    // A (re-)initialization gives every member a fresh chance.
    let everyone: Vec<usize> = (0..inner.members.len()).collect();
    let (answers, failed) = ask_all(inner, call, &everyone).await?;
    // The session goes on without the members that failed: nothing of theirs is listed and
    // nothing is routed to them.
    let excluded = failed
        .iter()
        .map(|&i| inner.members[i].name.clone())
        .collect();
    state::set_excluded(&call.state, excluded);
    // Whatever a failed member holds for the scope is of no use to it any more.
    for &i in &failed {
        inner.members[i].upstream.close(&call.scope);
    }
    // The client speaks to the node, which speaks every session-era revision: the one it asked
    // for stands. One we do not know is answered as the first member answered it.
    let requested = call
        .params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .filter(|v| mcp::is_session_version(v));
    let first = answers
        .iter()
        .find_map(|(_, a)| a.get("protocolVersion").and_then(Value::as_str));
    let version = requested.or(first).unwrap_or(mcp::LATEST_SESSION_VERSION);
    let mut result = Map::new();
    result.insert("protocolVersion".into(), version.into());
    result.insert("capabilities".into(), capabilities(&answers));
    result.insert("serverInfo".into(), server_info());
    if let Some(text) = instructions(inner, &answers) {
        result.insert("instructions".into(), text.into());
    }
    Ok(Value::Object(result))
}

pub(super) async fn discover(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    let (answers, _) = ask_all(inner, call, &inner.active(&call.state)).await?;
    // Members that name no versions have no say in them.
    let lists: Vec<&Vec<Value>> = answers
        .iter()
        .filter_map(|(_, a)| a.get("supportedVersions").and_then(Value::as_array))
        .filter(|l| !l.is_empty())
        .collect();
    // What every member speaks, in the first member's order of preference; if they share
    // none, the first member's list, as the client has to talk to someone.
    let first = lists.first().map(|l| l.as_slice()).unwrap_or_default();
    let common: Vec<Value> = first
        .iter()
        .filter(|v| lists.iter().all(|l| l.contains(v)))
        .cloned()
        .collect();
    let versions = if common.is_empty() {
        first.to_vec()
    } else {
        common
    };
    // A merged answer is only as fresh, and as shareable, as its least fresh part. A member
    // that says nothing about sharing is taken to forbid it.
    let ttl = answers
        .iter()
        .filter_map(|(_, a)| a.get("ttlMs").and_then(Value::as_u64))
        .min()
        .unwrap_or(0);
    let public = answers
        .iter()
        .all(|(_, a)| a.get("cacheScope").and_then(Value::as_str) == Some("public"));
    let mut result = Map::new();
    result.insert("supportedVersions".into(), Value::Array(versions));
    result.insert("capabilities".into(), capabilities(&answers));
    if let Some(text) = instructions(inner, &answers) {
        result.insert("instructions".into(), text.into());
    }
    result.insert("_meta".into(), json!({ META_SERVER_INFO: server_info() }));
    result.insert("ttlMs".into(), ttl.into());
    let scope = if public { "public" } else { "private" };
    result.insert("cacheScope".into(), scope.into());
    result.insert("resultType".into(), "complete".into());
    Ok(Value::Object(result))
}

/// What any member can do: a capability is present if one member has it, and a flag such as
/// `listChanged` or `subscribe` is on if one member's is.
fn capabilities(answers: &[(usize, Value)]) -> Value {
    let mut united = Map::new();
    for (_, answer) in answers {
        if let Some(caps) = answer.get("capabilities").and_then(Value::as_object) {
            unite(&mut united, caps);
        }
    }
    Value::Object(united)
}

/// Unites what members offer: a flag is on if one member's is, objects unite key by key,
/// lists (a listen stream's resource URIs) hold what any member's holds.
pub(super) fn unite(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (None, _) => {
                into.insert(key.clone(), value.clone());
            }
            (Some(Value::Bool(a)), Value::Bool(b)) => *a |= *b,
            (Some(Value::Object(a)), Value::Object(b)) => unite(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => {
                for v in b {
                    if !a.contains(v) {
                        a.push(v.clone());
                    }
                }
            }
            // Anything else the members disagree on: the first member's word stands.
            _ => {}
        }
    }
}

/// Each member's instructions, under its name, so that the model knows whose they are.
fn instructions(inner: &Inner, answers: &[(usize, Value)]) -> Option<String> {
    let parts: Vec<String> = answers
        .iter()
        .filter_map(|(i, a)| {
            let text = a.get("instructions").and_then(Value::as_str)?;
            Some(format!("{}: {text}", inner.members[*i].name))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_unite_and_flags_are_ored() {
        let answers = vec![
            (
                0,
                json!({"capabilities": {"tools": {"listChanged": false}, "logging": {}}}),
            ),
            (
                1,
                json!({"capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}}}),
            ),
        ];
        assert_eq!(
            capabilities(&answers),
            json!({
                "tools": {"listChanged": true},
                "logging": {},
                "resources": {"subscribe": true}
            })
        );
    }
}
