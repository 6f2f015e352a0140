//! The audit of tool calls: every `tools/call` this node serves, in either era, becomes one row
//! of its store's audit when it ends, however it ends. The row is handed to the store's
//! [`Auditor`], which writes it later, in a batch, so a call never waits for its audit.
//!
//! Only a node whose store keeps an audit (one with PostgreSQL) audits; for every other node
//! [`Audited::begin`] returns `None`, and a call costs nothing more.

use crate::upstream::{Call, Scope};
use serde_json::Value;
use shardgate_protocol::mcp::RpcError;
use shardgate_store::audit::{AuditEntry, Auditor, Outcome, field};
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// A `tools/call` being served. Its row is recorded when this is dropped: with the outcome
/// [`Audited::end`] gave it, or as [`Outcome::Cancelled`] when the call's handler was dropped
/// first (its client went away).
pub struct Audited {
    auditor: Auditor,
    principal: String,
    session: Option<String>,
    tool: String,
    started_at: SystemTime,
    clock: Instant,
    outcome: Outcome,
}

impl Audited {
    /// Starts the audit of `call` if the node audits and the call is a `tools/call`.
    pub fn begin(auditor: Option<&Auditor>, call: &Call) -> Option<Audited> {
        let auditor = auditor?;
        if call.method != "tools/call" {
            return None;
        }
        let tool = call.params.get("name").and_then(Value::as_str);
        Some(Audited {
            auditor: auditor.clone(),
            principal: field(&call.principal),
            session: match &call.scope {
                Scope::Session(id) => Some(field(id)),
                Scope::Affinity(_) => None,
            },
            tool: field(tool.unwrap_or_default()),
            started_at: SystemTime::now(),
            clock: Instant::now(),
            outcome: Outcome::Cancelled,
        })
    }

    /// The call ended with `answer` (the one its client gets), or without one, or with its
    /// token `cancel` cancelled (an answer that raced the cancellation does not count): then
    /// it was stopped by the node when `interrupted` (its session ended here), else by its
    /// client.
    pub fn end(
        mut self,
        answer: Option<&Result<Value, RpcError>>,
        cancel: &CancellationToken,
        interrupted: bool,
    ) {
        let answer = answer.filter(|_| !cancel.is_cancelled());
        self.outcome = outcome(answer, interrupted);
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.auditor.record(AuditEntry {
            principal: std::mem::take(&mut self.principal),
            session: self.session.take(),
            tool: std::mem::take(&mut self.tool),
            started_at: self.started_at,
            duration: self.clock.elapsed(),
            outcome: self.outcome,
        });
    }
}

/// How a call ended, from what its client got.
fn outcome(answer: Option<&Result<Value, RpcError>>, interrupted: bool) -> Outcome {
    match answer {
        None if interrupted => Outcome::Interrupted,
        None => Outcome::Cancelled,
        Some(Err(_)) => Outcome::Error,
        Some(Ok(result)) if result.get("isError") == Some(&Value::Bool(true)) => Outcome::Error,
        Some(Ok(result)) if result.get("resultType") == Some(&"input_required".into()) => {
            Outcome::InputRequired
        }
        Some(Ok(_)) => Outcome::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_the_client_got_names_the_outcome() {
        let answered = |r: Result<Value, RpcError>| outcome(Some(&r), false);
        assert_eq!(answered(Ok(json!({"content": []}))), Outcome::Ok);
        assert_eq!(
            answered(Ok(json!({"content": [], "isError": false}))),
            Outcome::Ok
        );
        assert_eq!(
            answered(Ok(json!({"content": [], "isError": true}))),
            Outcome::Error
        );
        assert_eq!(answered(Err(RpcError::new(-32603, "x"))), Outcome::Error);
        assert_eq!(
            answered(Ok(
                json!({"resultType": "input_required", "requestState": "s"})
            )),
            Outcome::InputRequired
        );
        assert_eq!(outcome(None, false), Outcome::Cancelled);
        assert_eq!(outcome(None, true), Outcome::Interrupted);
        // An answer is an answer, whatever happened to the session after it.
        assert_eq!(outcome(Some(&Ok(json!({}))), true), Outcome::Ok);
    }
}
