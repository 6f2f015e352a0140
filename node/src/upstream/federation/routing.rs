//! Requests about one thing of one member: tools and prompts by their prefixed name, resources
//! by URI, completions by whichever of the two their `ref` names.
//!
//! URIs carry no prefix, so a resource goes to the member that listed it (or whose template
//! matches it) in this session; one nobody listed yet is offered to each member in turn, and
//! the first that does not call it unknown answers.

use super::state::{self, Owned};
use super::{Inner, invalid_params};
use crate::config::PREFIX_SEPARATOR;
use crate::upstream::Call;
use serde_json::Value;
use shardgate_protocol::mcp::{RpcError, code};
use std::collections::HashSet;
use std::sync::Arc;

/// The member a prefixed name belongs to, and the name as that member knows it. Matched by
/// whole prefix rather than split at the first separator, as a prefix may end in `_` (`x_`
/// shows `tool` as `x___tool`); where two prefixes both fit, the longer one wins.
fn split<'a>(inner: &Inner, call: &Call, name: &'a str) -> Option<(usize, &'a str)> {
    let (i, original) = inner
        .members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let original = name
                .strip_prefix(&m.prefix)?
                .strip_prefix(PREFIX_SEPARATOR)?;
            Some((i, original))
        })
        .max_by_key(|(i, _)| inner.members[*i].prefix.len())?;
    inner
        .active(&call.state)
        .contains(&i)
        .then_some((i, original))
}

/// `tools/call` and `prompts/get` (`what` is "tool" or "prompt"): everything in `params` but
/// the name goes to the member as the client sent it, `_meta` included.
pub(super) async fn named(inner: &Arc<Inner>, call: &Call, what: &str) -> Result<Value, RpcError> {
    let Some(name) = call.params.get("name").and_then(Value::as_str) else {
        return Err(invalid_params(format!("{} needs params.name", call.method)));
    };
    let Some((i, original)) = split(inner, call, name) else {
        return Err(unknown(what, name));
    };
    let mut params = call.params.clone();
    params["name"] = original.into();
    inner.forward(call, i, &call.method, params).await
}

/// Worded as a single server words it (`Unknown tool: x`), as clients may match on it.
fn unknown(what: &str, name: &str) -> RpcError {
    invalid_params(format!("Unknown {what}: {name}"))
}

/// `completion/complete`: a prompt's arguments by the prompt's name, a resource template's by
/// its URI.
pub(super) async fn complete(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    let reference = call.params.get("ref");
    let kind = reference
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str);
    match kind {
        Some("ref/prompt") => {
            let Some(name) = reference
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
            else {
                return Err(invalid_params("ref/prompt needs a name"));
            };
            let Some((i, original)) = split(inner, call, name) else {
                return Err(unknown("prompt", name));
            };
            let mut params = call.params.clone();
            params["ref"]["name"] = original.into();
            inner.forward(call, i, &call.method, params).await
        }
        Some("ref/resource") => {
            let Some(uri) = reference.and_then(|r| r.get("uri")).and_then(Value::as_str) else {
                return Err(invalid_params("ref/resource needs a uri"));
            };
            by_uri(inner, call, uri).await
        }
        // Not ours to judge: the first member that knows what it is answers.
        _ => ask_in_turn(inner, call, None).await,
    }
}

/// `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
pub(super) async fn resource(inner: &Arc<Inner>, call: &Call) -> Result<Value, RpcError> {
    let Some(uri) = call.params.get("uri").and_then(Value::as_str) else {
        return Err(invalid_params(format!("{} needs params.uri", call.method)));
    };
    by_uri(inner, call, uri).await
}

async fn by_uri(inner: &Arc<Inner>, call: &Call, uri: &str) -> Result<Value, RpcError> {
    match owner(inner, call, uri) {
        Some(i) => {
            inner
                .forward(call, i, &call.method, call.params.clone())
                .await
        }
        None => ask_in_turn(inner, call, Some(uri)).await,
    }
}

/// The active member that listed `uri` in this scope, or listed a template it matches (or is:
/// completions name the template itself).
fn owner(inner: &Inner, call: &Call, uri: &str) -> Option<usize> {
    let listed = || {
        state::remembered(&call.state, Owned::Resources)
            .into_iter()
            .find(|(u, _)| u == uri)
    };
    let templated = || {
        state::remembered(&call.state, Owned::Templates)
            .into_iter()
            .find(|(t, _)| t == uri || matches(t, uri))
    };
    let (_, name) = listed().or_else(templated)?;
    let i = inner.by_name(&name)?;
    inner.active(&call.state).contains(&i).then_some(i)
}

/// Offers the call to each member in turn; the first answer that is not "no such thing" wins.
/// When a URI is known to be served by someone, it is remembered for the next time.
async fn ask_in_turn(
    inner: &Arc<Inner>,
    call: &Call,
    uri: Option<&str>,
) -> Result<Value, RpcError> {
    let mut first_error: Option<RpcError> = None;
    for i in inner.active(&call.state) {
        match inner
            .forward(call, i, &call.method, call.params.clone())
            .await
        {
            Err(e) if is_not_found(&e) => {
                // "Not found" from a member that has such things says more than "method not
                // found" from one that has none.
                let better = first_error.as_ref().is_none_or(|f| {
                    f.code == code::METHOD_NOT_FOUND && e.code != code::METHOD_NOT_FOUND
                });
                if better {
                    first_error = Some(e);
                }
            }
            answer => {
                if let (Ok(_), Some(uri), "resources/read" | "resources/subscribe") =
                    (&answer, uri, call.method.as_str())
                {
                    let member = &inner.members[i].name;
                    state::remember(&call.state, Owned::Resources, member, &[uri.to_owned()]);
                }
                return answer;
            }
        }
    }
    Err(first_error.unwrap_or_else(super::no_members))
}

/// -32002 is the session era's "resource not found", -32602 the stateless era's (and any era's
/// "no such prompt/template" in completions); -32601 is a member without resources at all.
fn is_not_found(e: &RpcError) -> bool {
    matches!(
        e.code,
        code::RESOURCE_NOT_FOUND | code::INVALID_PARAMS | code::METHOD_NOT_FOUND
    )
}

/// Whether `uri` is an expansion of `template`, for RFC 6570 level-1 templates: each `{var}`
/// stands for one or more characters other than `/` (a simple expansion percent-encodes `/`).
/// Templates with operators (`{+var}`, `{?q}`, …) never match; their URIs are found by asking.
pub(super) fn matches(template: &str, uri: &str) -> bool {
    let Some(parts) = parts(template) else {
        return false;
    };
    // Positions already known not to match: without them, adjacent variables would make the
    // search exponential in the URI's length, and the URI is the client's.
    let mut failed = HashSet::new();
    walk(&parts, uri, 0, 0, &mut failed)
}

enum Part<'a> {
    Literal(&'a str),
    Var,
}

/// A level-1 template's literals and variables; `None` if it is anything more.
fn parts(mut template: &str) -> Option<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    while let Some(start) = template.find('{') {
        let (literal, rest) = template.split_at(start);
        let (var, after) = rest.strip_prefix('{')?.split_once('}')?;
        let simple = !var.is_empty()
            && var
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%'));
        if !simple {
            return None;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        parts.push(Part::Var);
        template = after;
    }
    if !template.is_empty() {
        parts.push(Part::Literal(template));
    }
    Some(parts)
}

fn walk(
    parts: &[Part<'_>],
    uri: &str,
    p: usize,
    pos: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(p, pos)) {
        return false;
    }
    let rest = uri.get(pos..).unwrap_or_default();
    let ok = match parts.get(p) {
        None => rest.is_empty(),
        Some(Part::Literal(l)) => {
            rest.starts_with(l) && walk(parts, uri, p + 1, pos + l.len(), failed)
        }
        Some(Part::Var) => {
            let run = rest.find('/').unwrap_or(rest.len());
            (1..=run)
                .filter(|&n| rest.is_char_boundary(n))
                .any(|n| walk(parts, uri, p + 1, pos + n, failed))
        }
    };
    if !ok {
        failed.insert((p, pos));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn level_one_templates_match_their_expansions() {
        assert!(matches(
            "test://template/{id}/data",
            "test://template/123/data"
        ));
        assert!(!matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(matches("file:///{dir}/{name}.txt", "file:///a/b.c.txt"));
        assert!(matches("plain://uri", "plain://uri"));
        assert!(!matches("q://{?x}", "q://?x=1"));
        assert!(!matches("broken://{id", "broken://1"));
        let long = format!("x://{}", "a".repeat(300));
        assert!(
            !matches("x://{a}{b}{c}{d}/", &long),
            "adjacent variables stay cheap"
        );
    }
}
