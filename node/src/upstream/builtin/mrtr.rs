//! Asking the client for input (elicitation, sampling, roots) in either era.
//!
//! A tool or prompt that needs the client is written once, as a [`StepFn`]: given the answers
//! so far it either finishes or names what it still needs. In the stateless era (SEP-2322,
//! "MRTR") each step is one request: what is needed goes back as an `input_required` result and
//! the client retries with `inputResponses` and the sealed `requestState`. In the session era
//! the same steps are driven in-process, asking through [`Peer::request`](super::super::Peer).
//!
//! `requestState` comes back from the client, so it is sealed: HMAC-SHA256 over the state's
//! JSON, bound to the request it belongs to and to an expiry, so that a retry can land on any
//! node that shares the secret and a forged or replayed-elsewhere state is refused.

use super::{invalid_params, tool_error};
use crate::upstream::Call;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{Era, RpcError, code};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a client may take to answer before its `requestState` is refused.
const STATE_TTL_SECS: u64 = 15 * 60;
/// Session-era rounds before we stop asking: the steps converge, this only guards a loop.
const MAX_ROUNDS: usize = 8;

/// What one step of an asking tool or prompt sees.
pub(super) struct Round<'a> {
    pub args: &'a Map<String, Value>,
    /// The client's answers to the previous step's requests, by key.
    pub responses: &'a Map<String, Value>,
    /// What the previous step chose to carry over (verified, in the stateless era).
    pub state: Option<&'a Value>,
    pub caps: &'a Value,
}

pub(super) enum Step {
    /// Needs these input requests (`{key: {method, params}}`) answered first.
    Ask {
        requests: Map<String, Value>,
        state: Option<Value>,
    },
    Done(Value),
}

pub(super) type StepFn = fn(&Round<'_>) -> Result<Step, RpcError>;

/// What is being served: the method (`tools/call`, `prompts/get`) and the tool or prompt name.
pub(super) struct Target<'a> {
    pub method: &'static str,
    pub name: &'a str,
}

/// Seals and opens `requestState`.
pub(super) struct Sealer {
    key: hmac::Key,
}

impl Sealer {
    pub fn new(secret: &[u8; 32]) -> Self {
        Sealer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn seal(&self, target: &Target<'_>, data: &Value) -> String {
        let payload = json!({
            "method": target.method,
            "name": target.name,
            "exp": now_secs().saturating_add(STATE_TTL_SECS),
            "data": data,
        })
        .to_string();
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The state data, if `token` is one we sealed for `target` and it has not expired.
    fn open(&self, target: &Target<'_>, token: &str) -> Result<Value, RpcError> {
        let tampered = || invalid_params("requestState integrity check failed");
        let (payload, tag) = token.split_once('.').ok_or_else(tampered)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| tampered())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| tampered())?;
        hmac::verify(&self.key, &payload, &tag).map_err(|_| tampered())?;
        let mut sealed: Value = serde_json::from_slice(&payload).map_err(|_| tampered())?;
        if sealed["method"] != target.method || sealed["name"] != target.name {
            return Err(invalid_params(
                "requestState belongs to a different request",
            ));
        }
        if sealed["exp"].as_u64().is_none_or(|exp| exp < now_secs()) {
            return Err(invalid_params("requestState has expired"));
        }
        Ok(sealed.get_mut("data").map(Value::take).unwrap_or_default())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `step` to completion for the call, the way its era asks clients for input.
pub(super) async fn drive(
    sealer: &Sealer,
    call: &Call,
    era: Era,
    target: Target<'_>,
    args: &Map<String, Value>,
    step: StepFn,
) -> Result<Value, RpcError> {
    match era {
        Era::Stateless => stateless(sealer, call, &target, args, step),
        Era::Session => session(call, &target, args, step).await,
    }
}

/// One stateless round: answers or an `input_required` result.
fn stateless(
    sealer: &Sealer,
    call: &Call,
    target: &Target<'_>,
    args: &Map<String, Value>,
    step: StepFn,
) -> Result<Value, RpcError> {
    let empty = Map::new();
    let responses = match call.params.get("inputResponses") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid_params("inputResponses must be an object")),
    };
    let state = match call.params.get("requestState") {
        None => None,
        Some(Value::String(token)) => Some(sealer.open(target, token)?),
        Some(_) => return Err(invalid_params("requestState must be a string")),
    };
    let round = Round {
        args,
        responses,
        state: state.as_ref(),
        caps: &call.client_capabilities,
    };
    let (requests, state) = match step(&round)? {
        Step::Done(result) => return Ok(result),
        Step::Ask { requests, state } => (requests, state),
    };
    let missing = missing_capabilities(&requests, &call.client_capabilities);
    if !missing.is_empty() {
        let names = missing.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(RpcError::new(
            code::MISSING_CAPABILITY,
            format!("Server requires the {names} capability for this request"),
        )
        .with_data(json!({ "requiredCapabilities": missing })));
    }
    let mut result = Map::new();
    result.insert("resultType".into(), "input_required".into());
    result.insert("inputRequests".into(), Value::Object(requests));
    if let Some(state) = state {
        result.insert("requestState".into(), sealer.seal(target, &state).into());
    }
    Ok(Value::Object(result))
}

/// All rounds at once, asking the client over the session.
async fn session(
    call: &Call,
    target: &Target<'_>,
    args: &Map<String, Value>,
    step: StepFn,
) -> Result<Value, RpcError> {
    let mut responses = Map::new();
    let mut state = None;
    for _ in 0..MAX_ROUNDS {
        let round = Round {
            args,
            responses: &responses,
            state: state.as_ref(),
            caps: &call.client_capabilities,
        };
        let (requests, next) = match step(&round)? {
            Step::Done(result) => return Ok(result),
            Step::Ask { requests, state } => (requests, state),
        };
        let missing = missing_capabilities(&requests, &call.client_capabilities);
        if let Some(cap) = missing.keys().next() {
            return refuse(
                target,
                code::INVALID_REQUEST,
                format!(
                    "this needs the client's {cap} capability, which the session did not declare"
                ),
            );
        }
        let mut answers = Map::new();
        for (key, request) in requests {
            let method = request["method"].as_str().unwrap_or_default();
            let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
            match call.peer.request(method, params).await {
                Ok(answer) => {
                    answers.insert(key, answer);
                }
                Err(e) => {
                    let message = format!("{method} failed: {}", e.message);
                    return refuse(target, e.code, message);
                }
            }
        }
        responses = answers;
        state = next;
    }
    Err(RpcError::new(
        code::INTERNAL_ERROR,
        format!("{} kept asking for input", target.name),
    ))
}

/// A session-era call that cannot go on: a tool says so in its result (the model may recover),
/// anything else fails the request.
fn refuse(target: &Target<'_>, code: i64, message: String) -> Result<Value, RpcError> {
    if target.method == "tools/call" {
        Ok(tool_error(&message))
    } else {
        Err(RpcError::new(code, message))
    }
}

/// The client capabilities `requests` need but `caps` lacks, as a `ClientCapabilities` object.
fn missing_capabilities(requests: &Map<String, Value>, caps: &Value) -> Map<String, Value> {
    let mut missing = Map::new();
    for request in requests.values() {
        let method = request["method"].as_str().unwrap_or_default();
        let cap = match method {
            "elicitation/create" => "elicitation",
            "sampling/createMessage" => "sampling",
            "roots/list" => "roots",
            _ => continue,
        };
        if !supports(caps, method) {
            missing.insert(cap.into(), json!({}));
        }
    }
    missing
}

/// Whether `caps` lets us send `method` to the client. Our elicitations are forms, which an
/// `elicitation` capability naming only other modes does not cover.
pub(super) fn supports(caps: &Value, method: &str) -> bool {
    let declared = |cap: &str| caps.get(cap).filter(|v| !v.is_null());
    match method {
        "elicitation/create" => declared("elicitation").is_some_and(|e| {
            e.get("form").is_some() || (e.get("url").is_none() && e.get("form").is_none())
        }),
        "sampling/createMessage" => declared("sampling").is_some(),
        "roots/list" => declared("roots").is_some(),
        _ => false,
    }
}

/// An elicitation answer.
pub(super) struct Elicited {
    pub action: String,
    pub content: Map<String, Value>,
}

impl Elicited {
    pub fn accepted(&self) -> bool {
        self.action == "accept"
    }

    /// A string field of the accepted content.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.content.get(field).and_then(Value::as_str)
    }

    pub fn describe(&self) -> String {
        format!(
            "action={}, content={}",
            self.action,
            Value::Object(self.content.clone())
        )
    }
}

fn malformed(key: &str, what: &str) -> RpcError {
    invalid_params(format!("inputResponses.{key} is not a valid {what}"))
}

impl Round<'_> {
    /// The `ElicitResult` answering `key`, if there is one.
    pub fn elicited(&self, key: &str) -> Result<Option<Elicited>, RpcError> {
        let Some(answer) = self.responses.get(key) else {
            return Ok(None);
        };
        let action = answer
            .get("action")
            .and_then(Value::as_str)
            .filter(|a| matches!(*a, "accept" | "decline" | "cancel"))
            .ok_or_else(|| malformed(key, "ElicitResult"))?;
        let content = match answer.get("content") {
            None => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => return Err(malformed(key, "ElicitResult")),
        };
        Ok(Some(Elicited {
            action: action.to_owned(),
            content,
        }))
    }

    /// The text of the `CreateMessageResult` answering `key`, if there is one.
    pub fn sampled(&self, key: &str) -> Result<Option<String>, RpcError> {
        let Some(answer) = self.responses.get(key) else {
            return Ok(None);
        };
        let blocks = match answer.get("content") {
            Some(Value::Array(blocks)) => blocks.iter().collect::<Vec<_>>(),
            Some(block @ Value::Object(_)) => vec![block],
            _ => return Err(malformed(key, "CreateMessageResult")),
        };
        let text = blocks
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => format!("[{} content]", b["type"].as_str().unwrap_or("unknown")),
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Some(text))
    }

    /// The root URIs of the `ListRootsResult` answering `key`, if there is one.
    pub fn roots(&self, key: &str) -> Result<Option<Vec<String>>, RpcError> {
        let Some(answer) = self.responses.get(key) else {
            return Ok(None);
        };
        let roots = answer
            .get("roots")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(key, "ListRootsResult"))?;
        roots
            .iter()
            .map(|r| r.get("uri").and_then(Value::as_str).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| malformed(key, "ListRootsResult"))
    }

    /// A field of the carried-over state.
    pub fn state_field(&self, field: &str) -> Option<&Value> {
        self.state.and_then(|s| s.get(field))
    }
}

/// An `elicitation/create` input request for a form.
pub(super) fn elicit(message: &str, schema: Value) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {"message": message, "requestedSchema": schema}
    })
}

/// A `sampling/createMessage` input request for one user message.
pub(super) fn sample(text: &str, max_tokens: u32) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
            "maxTokens": max_tokens
        }
    })
}

/// A `roots/list` input request.
pub(super) fn list_roots() -> Value {
    json!({"method": "roots/list", "params": {}})
}

/// Input requests from `(key, request)` pairs, in order.
pub(super) fn requests<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
