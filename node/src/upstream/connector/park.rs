//! Asking a stateless-era client on behalf of a session-era upstream (SEP-2322, "MRTR").
//!
//! A session-era upstream asks for sampling, elicitation or roots in the middle of a call and
//! waits for the answer; a stateless-era client can only be asked by an `input_required`
//! result, and answers by sending the request again with `inputResponses` and the
//! `requestState` it was given. So the upstream call runs in a task of its own; when it asks,
//! the task is parked under a random `requestState` and the client gets the questions. The
//! retry finds the parked task (the `requestState` carries the client's correlation key, and the
//! gateway routes the retry by it, so it reaches this node), hands it the answers, and waits
//! again — for the result or for more questions.
//!
//! Parked calls live in this node's memory for [`PARK_TTL`] at most, and no more of them than
//! `limits.parked_calls` (a call that would park beyond it ends with an error naming the
//! limit); an unknown or expired `requestState` gets an error, never a second upstream call.

use crate::budget::{Exhausted, Gauge, Held};
use crate::upstream::{BoxFuture, Peer};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{RpcError, code};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a parked call waits for the client to come back.
const PARK_TTL: Duration = Duration::from_secs(5 * 60);

/// A question the upstream asked during a parked call.
pub(super) struct Ask {
    pub method: String,
    pub params: Value,
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
}

/// The client of a parked call: the request that is waiting now (each retry is a new
/// request, with its own response stream for progress and log messages).
pub(super) struct Relay(Mutex<Arc<dyn Peer>>);

impl Relay {
    pub fn new(peer: Arc<dyn Peer>) -> Self {
        Relay(Mutex::new(peer))
    }

    fn current(&self) -> Arc<dyn Peer> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Peer for Relay {
    fn notify(&self, method: &str, params: Value) {
        self.current().notify(method, params);
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'_, Result<Value, RpcError>> {
        let peer = self.current();
        let method = method.to_owned();
        Box::pin(async move { peer.request(&method, params).await })
    }

    fn disconnect(&self) {
        self.current().disconnect();
    }
}

/// An upstream call that may ask the client questions.
pub(super) struct Running {
    task: AbortOnDrop,
    relay: Arc<Relay>,
    asks: mpsc::UnboundedReceiver<Ask>,
    /// Questions sent to the client, by their key in `inputRequests`.
    waiting: HashMap<String, oneshot::Sender<Result<Value, RpcError>>>,
    next_key: u64,
}

struct AbortOnDrop(JoinHandle<Result<Value, RpcError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a running call came to, for now.
pub(super) enum Turn {
    Done(Result<Value, RpcError>),
    /// The `input_required` result to answer the client with.
    Asking(Value),
}

impl Running {
    pub fn new(
        task: JoinHandle<Result<Value, RpcError>>,
        asks: mpsc::UnboundedReceiver<Ask>,
        relay: Arc<Relay>,
    ) -> Self {
        Running {
            task: AbortOnDrop(task),
            relay,
            asks,
            waiting: HashMap::new(),
            next_key: 1,
        }
    }

    /// Continues with the client's retry: its answers go to the questions they answer (one
    /// left unanswered gets an error, as the upstream must not wait for ever), and what the
    /// upstream says from now on goes to `peer`.
    pub fn resume(&mut self, peer: Arc<dyn Peer>, responses: &Map<String, Value>) {
        *self.relay.0.lock().unwrap_or_else(PoisonError::into_inner) = peer;
        for (key, reply) in self.waiting.drain() {
            let answer = responses.get(&key).cloned().ok_or_else(|| {
                RpcError::new(
                    code::INVALID_PARAMS,
                    format!("the client sent no answer to input request {key}"),
                )
            });
            let _ = reply.send(answer);
        }
    }

    /// Waits for the result or the next questions. Questions needing a capability the client
    /// did not declare end the call with -32021.
    pub async fn next(mut self, parking: &Parking, capabilities: &Value) -> Turn {
        let first = tokio::select! {
            done = &mut self.task.0 => {
                return Turn::Done(done.unwrap_or_else(|e| {
                    Err(RpcError::new(code::INTERNAL_ERROR, format!("the upstream call failed: {e}")))
                }));
            }
            ask = self.asks.recv() => match ask {
                Some(ask) => ask,
                // The sender lives in the task; it only goes when the task does.
                None => return Turn::Done((&mut self.task.0).await.unwrap_or_else(|e| {
                    Err(RpcError::new(code::INTERNAL_ERROR, format!("the upstream call failed: {e}")))
                })),
            },
        };
        let mut asks = vec![first];
        while let Ok(more) = self.asks.try_recv() {
            asks.push(more);
        }
        let mut missing = Map::new();
        for ask in &asks {
            if let Some(cap) = capability_of(&ask.method)
                && capabilities.get(cap).is_none()
            {
                missing.insert(cap.into(), json!({}));
            }
        }
        if !missing.is_empty() {
            let names = missing.keys().cloned().collect::<Vec<_>>().join(", ");
            return Turn::Done(Err(RpcError::new(
                code::MISSING_CAPABILITY,
                format!("Server requires the {names} capability for this request"),
            )
            .with_data(json!({ "requiredCapabilities": missing }))));
        }
        let mut requests = Map::new();
        for ask in asks {
            let key = format!("q{}", self.next_key);
            self.next_key += 1;
            requests.insert(
                key.clone(),
                json!({"method": ask.method, "params": ask.params}),
            );
            self.waiting.insert(key, ask.reply);
        }
        match parking.park(self) {
            Ok(token) => Turn::Asking(json!({
                "resultType": "input_required",
                "inputRequests": requests,
                "requestState": token,
            })),
            Err(limit) => Turn::Done(Err(limit.error())),
        }
    }
}

/// The client capability a server-to-client request needs.
fn capability_of(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// A parked call: since when, and its unit of the node's budget of parked calls.
struct Parked {
    since: Instant,
    running: Running,
    _counted: Held,
}

/// Parked calls by `requestState`, counted against the node's budget (shared by every
/// connector of the node).
pub(super) struct Parking {
    parked: Mutex<HashMap<String, Parked>>,
    budget: Arc<Gauge>,
}

impl Parking {
    pub fn new(budget: Arc<Gauge>) -> Self {
        Parking {
            parked: Mutex::default(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks a call under a new `requestState`; refused when the node holds as many parked
    /// calls as it may (expired ones are let go first).
    fn park(&self, running: Running) -> Result<String, Exhausted> {
        let mut parked = self.lock();
        parked.retain(|_, p| p.since.elapsed() < PARK_TTL);
        let counted = self.budget.take(1).ok_or_else(|| {
            Exhausted::new(
                "parked_calls",
                self.budget.limit(),
                "calls parked for their clients' answers",
                http::StatusCode::SERVICE_UNAVAILABLE,
            )
        })?;
        let mut bytes = [0u8; 18];
        // Without randomness a token could be guessed; refuse to park rather than risk it.
        if getrandom::fill(&mut bytes).is_err() {
            return Ok(String::new());
        }
        let token = format!("shardgate-{}", URL_SAFE_NO_PAD.encode(bytes));
        let call = Parked {
            since: Instant::now(),
            running,
            _counted: counted,
        };
        parked.insert(token.clone(), call);
        Ok(token)
    }

    /// The call parked under `token`, taken out of the parking.
    pub fn take(&self, token: &str) -> Option<Running> {
        let parked = self.lock().remove(token)?;
        (parked.since.elapsed() < PARK_TTL).then_some(parked.running)
    }
}

/// The error for a `requestState` we did not give or no longer hold.
pub(super) fn unknown_state() -> RpcError {
    RpcError::new(
        code::INVALID_PARAMS,
        "requestState is unknown or has expired; send the request again without it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::testing::Recorder;

    fn running(answer_after_asking: bool) -> (Running, tokio::sync::mpsc::UnboundedSender<Ask>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let asker = tx.clone();
        let task = tokio::spawn(async move {
            if !answer_after_asking {
                return Ok(json!({"direct": true}));
            }
            let (reply, answered) = oneshot::channel();
            let _ = asker.send(Ask {
                method: "roots/list".into(),
                params: json!({}),
                reply,
            });
            let roots = answered
                .await
                .map_err(|_| RpcError::new(code::INTERNAL_ERROR, "dropped"))??;
            Ok(json!({"got": roots}))
        });
        let relay = Arc::new(Relay::new(Arc::new(Recorder::default())));
        (Running::new(task, rx, relay), tx)
    }

    #[tokio::test]
    async fn a_call_that_asks_is_parked_and_resumed() {
        let parking = Parking::new(Gauge::new(8));
        let (run, _tx) = running(true);
        let Turn::Asking(irr) = run.next(&parking, &json!({"roots": {}})).await else {
            panic!("expected questions");
        };
        assert_eq!(irr["inputRequests"]["q1"]["method"], "roots/list");
        let token = irr["requestState"].as_str().expect("a token").to_owned();
        assert!(parking.take("shardgate-forged").is_none());
        let mut run = parking.take(&token).expect("parked");
        assert!(parking.take(&token).is_none(), "taken once");
        let mut answers = Map::new();
        answers.insert("q1".into(), json!({"roots": []}));
        run.resume(Arc::new(Recorder::default()), &answers);
        let Turn::Done(Ok(result)) = run.next(&parking, &json!({"roots": {}})).await else {
            panic!("expected the result");
        };
        assert_eq!(result, json!({"got": {"roots": []}}));
    }

    #[tokio::test]
    async fn a_missing_capability_ends_the_call() {
        let parking = Parking::new(Gauge::new(8));
        let (run, _tx) = running(true);
        let Turn::Done(Err(e)) = run.next(&parking, &json!({})).await else {
            panic!("expected -32021");
        };
        assert_eq!(e.code, code::MISSING_CAPABILITY);
        assert_eq!(e.data, Some(json!({"requiredCapabilities": {"roots": {}}})));
    }

    #[tokio::test]
    async fn a_call_that_does_not_ask_just_answers() {
        let parking = Parking::new(Gauge::new(8));
        let (run, tx) = running(false);
        drop(tx);
        let Turn::Done(Ok(result)) = run.next(&parking, &json!({})).await else {
            panic!("expected the result");
        };
        assert_eq!(result, json!({"direct": true}));
    }

    #[tokio::test]
    async fn no_more_calls_park_than_the_budget_allows() {
        let budget = Gauge::new(1);
        let parking = Parking::new(budget.clone());
        let (first, _tx1) = running(true);
        let Turn::Asking(irr) = first.next(&parking, &json!({"roots": {}})).await else {
            panic!("expected questions");
        };
        let (second, _tx2) = running(true);
        let Turn::Done(Err(e)) = second.next(&parking, &json!({"roots": {}})).await else {
            panic!("expected the limit");
        };
        assert_eq!(
            e.data.as_ref().map(|d| &d["limit"]),
            Some(&json!("limits.parked_calls"))
        );
        let token = irr["requestState"].as_str().expect("a token");
        drop(parking.take(token));
        assert_eq!(budget.used(), 0, "a call taken out gives its place back");
    }
}
