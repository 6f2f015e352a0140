//! Tests of the federation, driving [`Federation::call`] directly: two builtins with clashing
//! names, and small fakes where the members must differ (resources, versions, failures).

mod resources;
mod session;
mod stateless;

use super::{Federation, Member};
use crate::upstream::builtin::Builtin;
use crate::upstream::testing::Client;
use crate::upstream::{BoxFuture, Call, Scope, Upstream, UpstreamState};
use serde_json::{Value, json};
use shardgate_protocol::mcp::{RpcError, code};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn federation(members: Vec<(&str, Arc<dyn Upstream>)>) -> Federation {
    Federation::new(
        members
            .into_iter()
            .map(|(name, upstream)| Member {
                name: name.to_owned(),
                prefix: name.to_owned(),
                upstream,
            })
            .collect(),
    )
}

fn builtins() -> Federation {
    federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("b", Arc::new(Builtin::new([0; 32]))),
    ])
}

impl Client {
    async fn call_tool(&self, f: &Federation, name: &str, args: Value) -> Result<Value, RpcError> {
        self.run(f, "tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    /// Every page of a list, in order; fails on an error or a page of more than `max` items.
    async fn list_all(
        &self,
        f: &Federation,
        method: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut params = json!({});
        for _ in 0..100 {
            let page = self
                .run(f, method, params.clone())
                .await
                .map_err(|e| e.to_string())?;
            let got = page[key].as_array().cloned().unwrap_or_default();
            if got.len() > max {
                return Err(format!("a page of {} items", got.len()));
            }
            items.extend(got);
            match page.get("nextCursor") {
                Some(c) => params = json!({ "cursor": c }),
                None => return Ok(items),
            }
        }
        Err("the pages never end".into())
    }
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect()
}

/// The text of a tool result's first content item.
fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// A member whose answers the tests choose: resources under `uris`, a template, an
/// `initialize` answer (or failure), one method of its own; it records what it is asked, told
/// and closed for.
struct Fake {
    uris: Vec<&'static str>,
    template: Option<&'static str>,
    /// The version `initialize` answers with; `None` makes it fail.
    version: Option<&'static str>,
    /// A method no other member knows, answered with `{"by": "fake"}`.
    knows: Option<&'static str>,
    asked: Mutex<Vec<(String, Value)>>,
    told: Mutex<Vec<String>>,
    closed: Mutex<Vec<Scope>>,
}

impl Fake {
    fn new(uris: &[&'static str]) -> Fake {
        Fake {
            uris: uris.to_vec(),
            template: None,
            version: Some("2025-11-25"),
            knows: None,
            asked: Mutex::new(Vec::new()),
            told: Mutex::new(Vec::new()),
            closed: Mutex::new(Vec::new()),
        }
    }

    fn asked(&self, method: &str) -> Vec<Value> {
        self.asked
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(m, _)| m == method)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn told(&self) -> Vec<String> {
        self.told.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn closed(&self) -> Vec<Scope> {
        self.closed.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn answer(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let uri = params["uri"].as_str().unwrap_or_default();
        let template_prefix = self.template.map(|t| t.trim_end_matches("{id}"));
        let mine = self.uris.contains(&uri)
            || template_prefix.is_some_and(|p| uri.starts_with(p) && uri.len() > p.len());
        match method {
            "initialize" => match self.version {
                Some(v) => Ok(json!({
                    "protocolVersion": v,
                    "capabilities": {"resources": {"subscribe": true}},
                    "serverInfo": {"name": "fake", "version": "0"}
                })),
                None => Err(RpcError::new(code::INTERNAL_ERROR, "cannot start")),
            },
            "server/discover" => Ok(json!({
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"resources": {"subscribe": true}},
                "ttlMs": 1000
            })),
            "resources/list" => {
                let list: Vec<Value> = self
                    .uris
                    .iter()
                    .map(|u| json!({"uri": u, "name": u}))
                    .collect();
                Ok(json!({ "resources": list }))
            }
            "resources/templates/list" => Ok(json!({"resourceTemplates": self
                .template
                .map(|t| vec![json!({"uriTemplate": t, "name": "t"})])
                .unwrap_or_default()})),
            "resources/read" if mine => Ok(json!({"contents": [{"uri": uri, "text": "fake"}]})),
            "resources/read" => Err(RpcError::new(
                code::RESOURCE_NOT_FOUND,
                "Resource not found",
            )),
            "completion/complete" if self.template.is_some() => {
                Ok(json!({"completion": {"values": ["7"], "total": 1, "hasMore": false}}))
            }
            "tools/list" => Ok(json!({"tools": []})),
            "tools/call" => Ok(json!({"content": [{"type": "text", "text": params["name"]}]})),
            m if Some(m) == self.knows => Ok(json!({"by": "fake"})),
            _ => Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found")),
        }
    }
}

impl Upstream for Fake {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push((call.method.clone(), call.params.clone()));
        }
        let answer = self.answer(&call.method, &call.params);
        Box::pin(async move { answer })
    }

    fn notification(&self, method: &str, _: &Value, _: &Scope, _: &UpstreamState) {
        if let Ok(mut told) = self.told.lock() {
            told.push(method.to_owned());
        }
    }

    fn close(&self, scope: &Scope) {
        if let Ok(mut closed) = self.closed.lock() {
            closed.push(scope.clone());
        }
    }
}

/// A member that knows no method at all.
struct Bare;

impl Upstream for Bare {
    fn call(&self, _: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        Box::pin(async { Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found")) })
    }

    fn notification(&self, _: &str, _: &Value, _: &Scope, _: &UpstreamState) {}

    fn close(&self, _: &Scope) {}
}

/// A builtin whose `tools/list` comes two tools at a time (cursor: the offset).
struct Paged(Builtin);

impl Upstream for Paged {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        if call.method != "tools/list" {
            return self.0.call(call);
        }
        let offset = match call.params.get("cursor") {
            None => Some(0),
            Some(c) => c.as_str().and_then(|c| c.parse::<usize>().ok()),
        };
        let listing = self.0.call(call);
        Box::pin(async move {
            let offset = offset.ok_or_else(|| RpcError::new(code::INVALID_PARAMS, "bad cursor"))?;
            let mut all = listing.await?;
            let tools = all["tools"].as_array().cloned().unwrap_or_default();
            let page: Vec<Value> = tools.iter().skip(offset).take(2).cloned().collect();
            all["tools"] = Value::Array(page);
            if offset + 2 < tools.len()
                && let Value::Object(map) = &mut all
            {
                map.insert("nextCursor".into(), (offset + 2).to_string().into());
            }
            Ok(all)
        })
    }

    fn notification(&self, m: &str, p: &Value, s: &Scope, st: &UpstreamState) {
        self.0.notification(m, p, s, st);
    }

    fn close(&self, scope: &Scope) {
        self.0.close(scope);
    }
}
