//! Reading the upstream's answer to a request from its HTTP response: a JSON body, or an SSE
//! stream followed (and resumed) to the answer, handling the messages that come before it.

use super::failure::{Failure, broken};
use super::handshake::Link;
use super::poster::Poster;
use super::{Http, MAX_RETRY_WAIT};
use crate::upstream::connector::{Caller, outcome, sse};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use shardgate_protocol::mcp::Message;
use std::sync::Arc;
use std::time::Duration;

/// How often a stream that ended before its answer is resumed.
const MAX_RESUMPTIONS: usize = 5;

impl Http {
    /// Reads the upstream's answer to request `id` from its HTTP response.
    pub(super) async fn answer(
        &self,
        poster: &Poster,
        response: reqwest::Response,
        id: &Value,
        caller: &Arc<Caller>,
        link: &Link,
    ) -> Result<Value, Failure> {
        let status = response.status();
        if status == StatusCode::NOT_FOUND && link.session_id.is_some() {
            return Err(Failure::SessionGone);
        }
        let is_stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if status.is_success() && is_stream {
            return self.read_stream(poster, response, id, caller).await;
        }
        let body = read_body(response, self.max_message_bytes).await?;
        if let Ok(value) = serde_json::from_slice::<Value>(&body) {
            let found = match &value {
                Value::Array(items) => items.iter().find(|m| m.get("id") == Some(id)),
                single => Some(single),
            };
            if let Some(m) = found.filter(|m| m.get("result").is_some() || m.get("error").is_some())
            {
                return outcome(m).map_err(Failure::Rpc);
            }
        }
        Err(Failure::Broken(format!("HTTP {status} without an answer")))
    }

    /// Follows an SSE answer to its response, resuming the stream if it ends early.
    async fn read_stream(
        &self,
        poster: &Poster,
        mut response: reqwest::Response,
        id: &Value,
        caller: &Arc<Caller>,
    ) -> Result<Value, Failure> {
        let mut reader = sse::Reader::with_limit(self.max_message_bytes);
        let mut last_event = None;
        for _ in 0..=MAX_RESUMPTIONS {
            // A broken connection ends the stream just as its end does.
            while let Ok(Some(chunk)) = response.chunk().await {
                for event in reader.feed(&chunk) {
                    // Past the limit: the stream is dropped, and the call fails.
                    let event = event.map_err(|sse::TooLarge(limit)| Failure::TooLarge(limit))?;
                    if event.id.is_some() {
                        last_event = event.id;
                    }
                    if event.data.is_empty() {
                        continue;
                    }
                    let Ok(msg) = serde_json::from_str::<Value>(&event.data) else {
                        tracing::warn!(upstream = %self.name, "upstream sent an event that is not JSON");
                        continue;
                    };
                    if let Some(answer) = take(&self.name, poster, &msg, id, caller) {
                        return answer;
                    }
                }
            }
            let Some(last) = &last_event else {
                break;
            };
            // The upstream closed the stream to be polled (SSE polling): do the same to our
            // client, whose stream resumes from our event log while we resume the upstream's.
            caller.disconnect();
            let wait = reader
                .retry
                .map_or(Duration::ZERO, Duration::from_millis)
                .min(MAX_RETRY_WAIT);
            tokio::time::sleep(wait).await;
            response = poster.resume(last).await.map_err(broken)?;
            if !response.status().is_success() {
                return Err(Failure::Broken(format!(
                    "resuming the answer's stream: HTTP {}",
                    response.status()
                )));
            }
        }
        Err(Failure::Broken("the stream ended before the answer".into()))
    }
}

/// The response's body, refused once it is longer than `limit` bytes: by its `Content-Length`
/// before reading, else as it arrives, so that no more than `limit` bytes are ever held.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Failure> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(Failure::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(broken)? {
        if chunk.len() > limit - body.len() {
            return Err(Failure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Handles one message of a stream; the call's outcome if it is the answer to `id`.
pub(super) fn take(
    name: &str,
    poster: &Poster,
    msg: &Value,
    id: &Value,
    caller: &Arc<Caller>,
) -> Option<Result<Value, Failure>> {
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    match Message::classify(msg) {
        Some(Message::Response { id: answered }) if &answered == id => {
            Some(outcome(msg).map_err(Failure::Rpc))
        }
        Some(Message::Notification { method }) => {
            caller.notify(&method, params);
            None
        }
        Some(Message::Request { id: asked, method }) => {
            let caller = caller.clone();
            let poster = poster.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                let reply = caller.answer(&asked, &method, params).await;
                if let Err(e) = poster.post(&reply, HeaderMap::new()).await {
                    tracing::warn!(upstream = %name, %method, error = %e, "could not send the client's answer");
                }
            });
            None
        }
        Some(Message::Response { .. }) | None => {
            tracing::debug!(upstream = %name, "ignored a message on a call's stream");
            None
        }
    }
}
