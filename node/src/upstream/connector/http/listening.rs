//! The standalone stream of an upstream session (its GET stream), read while the scope holds
//! the session.

use super::MAX_RETRY_WAIT;
use super::answer::take;
use super::poster::Poster;
use crate::upstream::connector::{Caller, sse};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads an upstream session's standalone stream (the GET stream) until the scope ends,
/// reconnecting (with `Last-Event-ID`) when it drops.
pub(super) struct Listening {
    pub(super) name: String,
    pub(super) poster: Poster,
    pub(super) caller: Arc<Caller>,
    /// The most an event may hold, in bytes.
    pub(super) max_message_bytes: usize,
}

impl Listening {
    pub(super) async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = self.listen() => {}
            _ = stop.cancelled() => {}
        }
    }

    async fn listen(&self) {
        let mut last_event: Option<String> = None;
        let mut reader = sse::Reader::with_limit(self.max_message_bytes);
        loop {
            let response = match self.poster.listen(last_event.as_deref()).await {
                Ok(r) if r.status().is_success() => r,
                // 405: the upstream offers no standalone stream; anything else: it is gone
                // or refuses, and the next call finds out and says so.
                Ok(r) => {
                    tracing::debug!(upstream = %self.name, status = %r.status(), "no standalone stream");
                    return;
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "standalone stream failed");
                    return;
                }
            };
            let mut response = response;
            while let Ok(Some(chunk)) = response.chunk().await {
                for event in reader.feed(&chunk) {
                    // Resuming would only bring the same event again: stop listening.
                    let event = match event {
                        Ok(event) => event,
                        Err(sse::TooLarge(limit)) => {
                            tracing::warn!(
                                upstream = %self.name,
                                limit,
                                "an event on the standalone stream exceeded upstream_message_bytes; no longer listening"
                            );
                            return;
                        }
                    };
                    if event.id.is_some() {
                        last_event = event.id;
                    }
                    match serde_json::from_str::<Value>(&event.data) {
                        Ok(msg) => {
                            take(&self.name, &self.poster, &msg, &Value::Null, &self.caller);
                        }
                        Err(_) if event.data.is_empty() => {}
                        Err(_) => {
                            tracing::warn!(upstream = %self.name, "upstream sent an event that is not JSON")
                        }
                    }
                }
            }
            let wait = reader
                .retry
                .map_or(Duration::from_secs(1), Duration::from_millis)
                .min(MAX_RETRY_WAIT);
            tokio::time::sleep(wait).await;
        }
    }
}
