//! Tests of the builtin server, driving [`Builtin::call`] directly with a recording peer.

mod listen;
mod session;
mod stateless;

use super::Builtin;
use crate::upstream::Upstream;
use crate::upstream::testing::{Client, Recorder};
use serde_json::{Value, json};
use shardgate_protocol::mcp::RpcError;

fn builtin() -> Builtin {
    Builtin::new([7; 32])
}

impl Client {
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
