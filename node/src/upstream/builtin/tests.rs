//! Tests of the builtin server, driving [`Builtin::call`] directly with a recording peer.

mod listen;
mod session;
mod stateless;

use super::Builtin;
use crate::protocol::RpcError;
use crate::upstream::{BoxFuture, Call, Peer, Scope, Upstream, UpstreamState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A client that records what it is told and asked, and answers requests from a table.
#[derive(Default)]
struct Recorder {
    notes: Mutex<Vec<(String, Value)>>,
    requests: Mutex<Vec<(String, Value)>>,
    answers: HashMap<&'static str, Value>,
    disconnects: AtomicUsize,
}

impl Recorder {
    fn answering(answers: &[(&'static str, Value)]) -> Arc<Recorder> {
        Arc::new(Recorder {
            answers: answers.iter().cloned().collect(),
            ..Recorder::default()
        })
    }

    fn notes(&self) -> Vec<(String, Value)> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn notes_of(&self, method: &str) -> Vec<Value> {
        self.notes()
            .into_iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p)
            .collect()
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `n` notifications have arrived (or a second has passed).
    async fn wait_for_notes(&self, n: usize) -> Vec<(String, Value)> {
        for _ in 0..100 {
            if self.notes().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.notes()
    }
}

impl Peer for Recorder {
    fn notify(&self, method: &str, params: Value) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push((method.to_owned(), params));
        }
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push((method.to_owned(), params));
        }
        let answer = self
            .answers
            .get(method)
            .cloned()
            .ok_or_else(|| RpcError::new(-32601, format!("no answer for {method}")));
        Box::pin(async move { answer })
    }

    fn disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

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
