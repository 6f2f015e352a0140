//! Tests of the builtin server, driving [`Builtin::call`] directly with a recording peer.

mod listen;
mod session;
mod stateless;

use super::Builtin;
use crate::protocol::RpcError;
use crate::upstream::recorder::Recorder;
use crate::upstream::{Call, Scope, Upstream, UpstreamState};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn builtin() -> Builtin {
    Builtin::new([7; 32])
}

struct CallSpec {
    version: &'static str,
    caps: Value,
    state: UpstreamState,
    peer: Arc<Recorder>,
    cancel: CancellationToken,
}

impl CallSpec {
    fn session() -> CallSpec {
        CallSpec {
            version: "2025-11-25",
            caps: json!({"sampling": {}, "elicitation": {}, "roots": {}}),
            state: UpstreamState::default(),
            peer: Arc::new(Recorder::default()),
            cancel: CancellationToken::new(),
        }
    }

    fn stateless() -> CallSpec {
        CallSpec {
            version: "2026-07-28",
            ..CallSpec::session()
        }
    }

    fn call(&self, method: &str, params: Value) -> Call {
        Call {
            method: method.to_owned(),
            params,
            peer: self.peer.clone(),
            session_peer: self.peer.clone(),
            scope: Scope::Session("test".into()),
            initialize: None,
            state: self.state.clone(),
            cancel: self.cancel.clone(),
            protocol_version: self.version.to_owned(),
            client_capabilities: self.caps.clone(),
        }
    }

    async fn run(&self, b: &Builtin, method: &str, params: Value) -> Result<Value, RpcError> {
        b.call(self.call(method, params)).await
    }

    async fn tool(&self, b: &Builtin, name: &str, extra: Value) -> Result<Value, RpcError> {
        let mut params = json!({"name": name, "arguments": {}});
        if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
            p.extend(extra);
        }
        self.run(b, "tools/call", params).await
    }
}

/// The text of a tool result's first content item.
fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

fn listed_tool_names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
