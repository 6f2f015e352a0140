//! A node's SSE answer that breaks before the client can resume it.
//!
//! A client resumes a broken stream from the last event id it saw (`Last-Event-ID`). When the
//! node's stream breaks before any event with an id reached the client (the node was killed
//! before its priming event went out, or the stream is a stateless-era one, which has no ids),
//! the client has nothing to resume from: its requests would get no answer at all. The gateway
//! then ends the stream itself, cleanly, with an explicit JSON-RPC error for each request of the
//! POST that it has not seen answered: interrupted, not known to have completed.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use shardgate_protocol::mcp::{self, RequestId, RpcError};

/// The longest event the scanner keeps whole to see whether it answers a request. A longer one
/// is not looked into: if the stream then breaks, the gateway cannot tell what was answered and
/// passes the break on rather than risk a second answer.
const MAX_EVENT: usize = 256 * 1024;

/// What the gateway has seen of a stream so far.
struct Scan {
    /// The requests of the POST not seen answered, in the order they were sent.
    pending: Vec<RequestId>,
    /// An event with an id went out: the client can resume, so a break is passed on.
    resumable: bool,
    /// An event too long to look into went out: what it answered is unknown.
    unknown: bool,
    /// The current line, and the data lines of the current event.
    line: BytesMut,
    data: BytesMut,
}

impl Scan {
    /// Looks at bytes on their way to the client.
    fn see(&mut self, mut chunk: &[u8]) {
        while !(self.resumable || self.unknown || chunk.is_empty()) {
            let (part, rest, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            if self.line.len() + self.data.len() + part.len() > MAX_EVENT {
                self.unknown = true;
                return;
            }
            self.line.extend_from_slice(part);
            chunk = rest;
            if ended {
                self.line_ended();
            }
        }
    }

    fn line_ended(&mut self) {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() {
            self.event_ended();
        } else if let Some(value) = field(line, b"id") {
            self.resumable = !value.is_empty();
        } else if let Some(value) = field(line, b"data") {
            if !self.data.is_empty() {
                self.data.extend_from_slice(b"\n");
            }
            self.data.extend_from_slice(value);
        }
    }

    /// One whole event went out: the requests it answers are answered.
    fn event_ended(&mut self) {
        let data = std::mem::take(&mut self.data);
        let Ok(message) = serde_json::from_slice::<Value>(&data) else {
            return;
        };
        let answers = |m: &Value| {
            if m.get("result").is_some() || m.get("error").is_some() {
                m.get("id").cloned()
            } else {
                None
            }
        };
        let answered: Vec<Value> = match &message {
            Value::Array(batch) => batch.iter().filter_map(answers).collect(),
            one => answers(one).into_iter().collect(),
        };
        self.pending.retain(|id| !answered.contains(&**id));
    }

    /// What the client gets when the node's stream breaks: the error events, or `None` when
    /// the break is to be passed on (the client can resume, or what was answered is unknown).
    fn on_break(&self) -> Option<Bytes> {
        if self.resumable || self.unknown || self.pending.is_empty() {
            return None;
        }
        let err = RpcError::new(mcp::code::INTERNAL_ERROR, mcp::INTERRUPTED)
            .with_data(serde_json::json!({ "reason": "node_lost" }));
        let mut out = BytesMut::new();
        for id in &self.pending {
            out.extend_from_slice(b"event: message\ndata: ");
            out.extend_from_slice(mcp::answer(Some(id), Err(&err)).as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        Some(out.freeze())
    }
}

/// The value of SSE field `name` on `line`, if the line is that field.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// The node's SSE body for a POST of `requests`, ended with their explicit errors if it breaks
/// before the client could resume it. The error of a break that is passed on ends the client's
/// stream as it ended the node's.
pub fn guard<S, E>(
    body: S,
    requests: Vec<RequestId>,
) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let scan = Scan {
        pending: requests,
        resumable: false,
        unknown: false,
        line: BytesMut::new(),
        data: BytesMut::new(),
    };
    futures_util::stream::unfold(Some((body, scan)), |state| async move {
        let (mut body, mut scan) = state?;
        match body.next().await? {
            Ok(chunk) => {
                scan.see(&chunk);
                Some((Ok(chunk), Some((body, scan))))
            }
            Err(e) => match scan.on_break() {
                Some(errors) => {
                    tracing::warn!(error = %e, requests = scan.pending.len(), "a node's answer stream broke before the client could resume it; its requests are told they were interrupted");
                    Some((Ok(errors), None))
                }
                None => Some((Err(e), None)),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(list: &[Value]) -> Vec<RequestId> {
        list.iter().cloned().map(RequestId::new).collect()
    }

    /// Runs chunks through the guard, the last followed by a break; returns what the client
    /// got and whether the break reached it.
    async fn through(chunks: &[&str], requests: &[Value]) -> (String, bool) {
        let mut items: Vec<Result<Bytes, String>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        items.push(Err("connection reset".into()));
        let out: Vec<_> = guard(futures_util::stream::iter(items), ids(requests))
            .collect()
            .await;
        let broke = out.iter().any(Result::is_err);
        let text = out
            .into_iter()
            .filter_map(Result::ok)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        (text, broke)
    }

    fn interrupted_ids(text: &str) -> Vec<Value> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|m| {
                m["error"]["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("interrupted"))
            })
            .map(|m| m["id"].clone())
            .collect()
    }

    #[tokio::test]
    async fn a_break_before_any_event_answers_every_request() {
        let (text, broke) = through(&[], &[json!(1), json!("b")]).await;
        assert!(!broke, "the client's stream ends cleanly");
        assert_eq!(interrupted_ids(&text), vec![json!(1), json!("b")]);
    }

    #[tokio::test]
    async fn a_break_after_an_event_id_is_passed_on_for_the_client_to_resume() {
        let (text, broke) = through(&["id: 3-0\nretry: 1000\ndata: \n\n"], &[json!(1)]).await;
        assert!(broke);
        assert!(interrupted_ids(&text).is_empty());
    }

    #[tokio::test]
    async fn an_id_split_across_chunks_still_counts() {
        let (_, broke) = through(&["i", "d: 3-", "0\n", "data: \n\n"], &[json!(1)]).await;
        assert!(broke);
    }

    #[tokio::test]
    async fn requests_seen_answered_are_not_answered_again() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}}).to_string();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress"}).to_string();
        let events = format!("data: {note}\n\ndata: {answer}\n\n");
        let (text, broke) = through(&[&events[..10], &events[10..]], &[json!(1), json!(2)]).await;
        assert!(!broke);
        assert_eq!(interrupted_ids(&text), vec![json!(2)]);
        // Every request answered: the break is passed on, nothing is added.
        let (text, broke) = through(&[&events], &[json!(1)]).await;
        assert!(broke);
        assert!(interrupted_ids(&text).is_empty());
    }

    #[tokio::test]
    async fn a_half_sent_answer_does_not_count_as_answered() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}}).to_string();
        let (text, _) = through(&[&format!("data: {answer}\n")], &[json!(1)]).await;
        assert_eq!(interrupted_ids(&text), vec![json!(1)]);
    }

    #[tokio::test]
    async fn an_event_too_long_to_look_into_leaves_the_break_as_it_is() {
        let long = format!("data: \"{}\"\n\n", "x".repeat(MAX_EVENT + 1));
        let (text, broke) = through(&[&long], &[json!(1)]).await;
        assert!(broke);
        assert!(interrupted_ids(&text).is_empty());
    }
}
