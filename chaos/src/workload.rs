//! The load: long-lived session-era sessions and stateless-era clients (each with the key the
//! gateway issued it, which carries its state as a session id does), each with callers that
//! call the builtin `counter` one call after another, every answer recorded as the client saw
//! it; where the cluster has a stdio upstream, each session also has a caller of its `echo`.
//! A call is never sent
//! twice: whatever it got is its outcome, and the caller's next call follows. Every other caller
//! is impatient: it gives a call up after [`PATIENCE`] and moves on, so a session keeps
//! sending while a call hangs (on a frozen node, say), as real clients with timeouts do. A call whose
//! stream ends or breaks before its answer is resumed with `Last-Event-ID`, as the protocol
//! lets a client do. A call whose connection fails before it has an event id has nothing to
//! resume from: it is recorded as [`Outcome::ConnectionLost`]. A stateless-era answer has no
//! event ids: a node lost under it is the gateway's to answer, with an explicit error.

use crate::history::{Call, Outcome};
use crate::mcp::{Client, SseReader};
use serde_json::{Value, json};
use shardgate_protocol::causes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a call may take before it counts as hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an impatient caller waits before it gives a call up and sends its next one, as
/// clients with a request timeout do. The call it gave up may still take effect.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// How long a call's stream is resumed after it ends or breaks before its answer.
const RESUME_FOR: Duration = Duration::from_secs(20);
/// The pause before each resume.
const RESUME_PAUSE: Duration = Duration::from_millis(200);
/// The pause between one session's calls.
const PAUSE: Duration = Duration::from_millis(20);
/// The JSON-RPC error a new owner sends for a call that was in flight on the node it replaced.
const INTERRUPTED: &str = "interrupted by failover";

/// Milliseconds since `t0`.
pub fn ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Calls and failed calls so far, for the progress lines.
#[derive(Default)]
pub struct Tally {
    pub calls: AtomicU64,
    pub failed: AtomicU64,
}

/// What a caller calls in: a session, or a stateless-era client's state.
#[derive(Clone, Debug)]
pub enum Target {
    /// A session-era session, by its id.
    Session(String),
    /// A stateless-era client, by the key it was issued.
    Stateless(String),
}

impl Target {
    /// How the history names it: the session id, or the key's routing scope.
    pub fn name(&self) -> String {
        match self {
            Target::Session(sid) => sid.clone(),
            Target::Stateless(key) => format!("client/{key}"),
        }
    }
}

/// What a caller calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The builtin's `counter`: its answer is the session's next count.
    Counter,
    /// The stdio upstream's `echo` ([`crate::stdio`]), with the call's id as its text: its
    /// answer is that id. Session-era sessions only.
    Echo,
}

/// How a call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Waits up to [`CALL_TIMEOUT`] for its answer.
    Patient,
    /// Gives the call up after [`PATIENCE`].
    Impatient,
    /// Patient, and made after the faults ended, to see that the session is usable again.
    Healing,
}

/// One caller of one session (or stateless client).
pub struct Caller {
    pub client: Client,
    /// The session's index in the history, and what it calls in.
    pub session: usize,
    pub target: Target,
    /// The JSON-RPC id of its first call; each next call takes the next.
    pub first_id: i64,
    /// [`Pace::Patient`] or [`Pace::Impatient`].
    pub pace: Pace,
    pub tool: Tool,
}

/// Calls its tool as `caller` until `stop`; returns every call.
pub async fn run_session(
    caller: Caller,
    t0: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<Call> {
    let Caller {
        client: c,
        session,
        target,
        first_id,
        pace,
        tool,
    } = caller;
    let mut calls = Vec::new();
    let mut id = first_id;
    while !stop.load(Ordering::Relaxed) {
        let made = call(&c, session, &target, tool, id, t0, pace).await;
        tally.calls.fetch_add(1, Ordering::Relaxed);
        if made.outcome.value().is_none() {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
        calls.push(made);
        id += 1;
        tokio::time::sleep(PAUSE).await;
    }
    calls
}

/// One `tools/call` of `tool`, recorded. A patient call that gets no answer within
/// [`CALL_TIMEOUT`] hung; an impatient one is given up after [`PATIENCE`].
pub async fn call(
    c: &Client,
    session: usize,
    target: &Target,
    tool: Tool,
    id: i64,
    t0: Instant,
    pace: Pace,
) -> Call {
    let (limit, late) = match pace {
        Pace::Impatient => (PATIENCE, Outcome::Abandoned),
        Pace::Patient | Pace::Healing => (CALL_TIMEOUT, Outcome::Hung),
    };
    let sent_ms = ms(t0);
    let outcome = tokio::time::timeout(limit, tool_call(c, target, tool, id))
        .await
        .unwrap_or(late);
    Call {
        session,
        id,
        sent_ms,
        done_ms: ms(t0),
        outcome,
        healing: pace == Pace::Healing,
    }
}

async fn tool_call(c: &Client, target: &Target, tool: Tool, id: i64) -> Outcome {
    let params = match tool {
        Tool::Counter => json!({"name": c.tool("counter"), "arguments": {}}),
        Tool::Echo => json!({
            "name": format!("{}{}echo", crate::stdio::STDIO, crate::mcp::FEDERATION_SEPARATOR),
            "arguments": {"text": id.to_string()},
        }),
    };
    let sent = match target {
        Target::Session(sid) => {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": params});
            c.session_post(sid, &body).send().await
        }
        Target::Stateless(key) => c.stateless_counter(id, Some(key)).send().await,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Outcome::ConnectionLost {
                message: causes(&e),
            };
        }
    };
    let status = resp.status();
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !status.is_success() || !is_sse {
        let text = resp.text().await.unwrap_or_default();
        return match serde_json::from_str::<Value>(&text) {
            Ok(answer) if status.is_success() => judge(&[answer]),
            // A gateway that lost the node with the request under way says so (HTTP 502).
            Ok(answer) if interrupted(&answer) => judge(&[answer]),
            _ => Outcome::Error {
                what: format!("HTTP {}", status.as_u16()),
                message: excerpt(&text),
            },
        };
    }
    // Read the stream to its end: every response to this id counts. A stream that ends or
    // breaks before the answer is resumed from its last event, as the protocol lets a client.
    let mut answers = Vec::new();
    let mut last_id = None;
    let mut broke = read_answers(SseReader::new(resp), id, &mut answers, &mut last_id).await;
    if answers.is_empty()
        && last_id.is_none()
        && let Some(why) = broke
    {
        return Outcome::ConnectionLost {
            message: format!("the stream broke before any event id: {why}"),
        };
    }
    let until = Instant::now() + RESUME_FOR;
    // Only a session's streams can be resumed.
    let sid = match target {
        Target::Session(sid) => Some(sid),
        Target::Stateless(_) => None,
    };
    while answers.is_empty()
        && let Some(from) = last_id.clone()
        && let Some(sid) = sid
    {
        if Instant::now() > until {
            break;
        }
        match c.resume(sid, &from).send().await {
            Ok(r) if r.status().is_success() => {
                broke = read_answers(SseReader::new(r), id, &mut answers, &mut last_id).await;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                return Outcome::Error {
                    what: format!("resume: HTTP {status}"),
                    message: excerpt(&text),
                };
            }
            Ok(r) => broke = Some(format!("resume: HTTP {}", r.status().as_u16())),
            Err(e) => broke = Some(format!("resume: {e}")),
        }
        if answers.is_empty() {
            tokio::time::sleep(RESUME_PAUSE).await;
        }
    }
    if answers.is_empty()
        && let Some(why) = broke
    {
        return Outcome::NoAnswer {
            message: format!("the stream broke: {why}"),
        };
    }
    judge(&answers)
}

/// Reads a stream to its end, collecting the responses to `id` and the last event id; why it
/// broke, if it did.
async fn read_answers(
    mut reader: SseReader,
    id: i64,
    answers: &mut Vec<Value>,
    last_id: &mut Option<String>,
) -> Option<String> {
    loop {
        match reader.next().await {
            Ok(Some(event)) => {
                if let Some(eid) = event.id.clone().filter(|e| !e.is_empty()) {
                    *last_id = Some(eid);
                }
                if let Some(msg) = event.json()
                    && msg.get("id") == Some(&json!(id))
                    && (msg.get("result").is_some() || msg.get("error").is_some())
                {
                    answers.push(msg);
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(format!("{e:#}")),
        }
    }
}

/// Whether a JSON-RPC error answer says its request was interrupted by failover.
fn interrupted(answer: &Value) -> bool {
    answer["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(INTERRUPTED))
}

/// The outcome of the responses a call got.
fn judge(answers: &[Value]) -> Outcome {
    match answers {
        [] => Outcome::NoAnswer {
            message: "the stream ended without a response".into(),
        },
        [answer] => {
            if let Some(error) = answer.get("error") {
                let message = error["message"].as_str().unwrap_or_default().to_owned();
                if interrupted(answer) {
                    return Outcome::Interrupted { message };
                }
                return Outcome::Error {
                    what: format!("JSON-RPC {}", error["code"]),
                    message: excerpt(&message),
                };
            }
            match answer["result"]["content"][0]["text"]
                .as_str()
                .and_then(|t| t.trim().parse().ok())
            {
                Some(value) => Outcome::Value { value },
                None => Outcome::Error {
                    what: "not a count".into(),
                    message: excerpt(&answer.to_string()),
                },
            }
        }
        more => Outcome::Answered { times: more.len() },
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_judged_by_what_they_say_and_how_many_there_are() {
        let value = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "7"}]}});
        assert_eq!(
            judge(std::slice::from_ref(&value)),
            Outcome::Value { value: 7 }
        );
        let interrupted = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32001,
            "message": "interrupted by failover; not known to have completed"}});
        assert!(matches!(judge(&[interrupted]), Outcome::Interrupted { .. }));
        let other = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "x"}});
        assert_eq!(judge(&[other]).label(), "JSON-RPC -32603");
        assert_eq!(
            judge(&[value.clone(), value]),
            Outcome::Answered { times: 2 }
        );
        assert!(matches!(judge(&[]), Outcome::NoAnswer { .. }));
    }
}
