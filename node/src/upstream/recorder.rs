//! A client for unit tests of upstreams: records what it is told and asked, and answers
//! requests from a table (anything else: -32601).

use crate::protocol::RpcError;
use crate::upstream::{BoxFuture, Peer};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
