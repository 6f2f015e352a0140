//! A client for unit tests of upstreams: [`Client`] makes the calls of one session (or affinity
//! key), and its [`Recorder`] records what it is told and asked, answering requests from a
//! table (anything else: -32601).

use crate::upstream::{BoxFuture, Call, Peer, Scope, Upstream, UpstreamState};
use serde_json::{Value, json};
use shardgate_protocol::mcp::RpcError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One client's session (or affinity key): the calls it makes share state and peer.
pub(crate) struct Client {
    pub version: &'static str,
    pub caps: Value,
    pub state: UpstreamState,
    pub peer: Arc<Recorder>,
    pub cancel: CancellationToken,
}

impl Client {
    /// A session-era client that can be asked anything.
    pub(crate) fn session() -> Client {
        Client {
            version: "2025-11-25",
            caps: json!({"sampling": {}, "elicitation": {}, "roots": {}}),
            state: UpstreamState::default(),
            peer: Arc::new(Recorder::default()),
            cancel: CancellationToken::new(),
        }
    }

    pub(crate) fn stateless() -> Client {
        Client {
            version: "2026-07-28",
            ..Client::session()
        }
    }

    pub(crate) fn call(&self, method: &str, params: Value) -> Call {
        Call {
            method: method.to_owned(),
            request_id: Value::from(1),
            params,
            peer: self.peer.clone(),
            session_peer: self.peer.clone(),
            scope: Scope::Session("test".into()),
            principal: "anonymous".into(),
            initialize: None,
            state: self.state.clone(),
            cancel: self.cancel.clone(),
            protocol_version: self.version.to_owned(),
            client_capabilities: self.caps.clone(),
            param_headers: Vec::new(),
            accepted: crate::upstream::Accepted::now(),
        }
    }

    pub(crate) async fn run(
        &self,
        upstream: &dyn Upstream,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        upstream.call(self.call(method, params)).await
    }
}

/// A client that records what it is told and asked, and answers requests from a table.
#[derive(Default)]
pub(crate) struct Recorder {
    notes: Mutex<Vec<(String, Value)>>,
    requests: Mutex<Vec<(String, Value)>>,
    answers: HashMap<&'static str, Value>,
    pub disconnects: AtomicUsize,
}

impl Recorder {
    pub(crate) fn answering(answers: &[(&'static str, Value)]) -> Arc<Recorder> {
        Arc::new(Recorder {
            answers: answers.iter().cloned().collect(),
            ..Recorder::default()
        })
    }

    pub(crate) fn notes(&self) -> Vec<(String, Value)> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    pub(crate) fn notes_of(&self, method: &str) -> Vec<Value> {
        self.notes()
            .into_iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p)
            .collect()
    }

    pub(crate) fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `n` notifications have arrived (or a second has passed).
    pub(crate) async fn wait_for_notes(&self, n: usize) -> Vec<(String, Value)> {
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
