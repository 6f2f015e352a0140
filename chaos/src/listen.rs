//! GET holders: a session that keeps its standalone stream open, comes back with
//! `Last-Event-ID` whenever the stream ends or breaks, and meanwhile makes calls whose
//! notifications travel on that stream. Each call is `test_tool_with_progress`, answered in
//! JSON (so its three progress notifications go on the standalone stream), with a progress
//! token of its own: the checker can tell which notifications a call owed and whether each
//! came exactly once.

use crate::history::{Heard, ProgressCall};
use crate::mcp::{Client, SseReader};
use crate::workload::{CALL_TIMEOUT, ms};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The progress a `test_tool_with_progress` call reports, in order.
pub const STEPS: [i64; 3] = [0, 50, 100];
/// The pause between one session's progress calls.
const PAUSE: Duration = Duration::from_millis(300);
/// The pause before the stream is opened again.
const AGAIN: Duration = Duration::from_millis(200);
/// Silence on an open stream after which a holder that was told to finish is done.
const QUIET: Duration = Duration::from_secs(1);
/// How long a holder told to finish keeps trying to open its stream.
const FINISH_FOR: Duration = Duration::from_secs(15);
/// JSON-RPC ids of progress calls start here, apart from the counter callers'.
const FIRST_ID: i64 = 2_000_000_000;

/// Holds `sid`'s standalone stream (and says so on `opened` the first time it is open) until
/// `finish` is set, then until it has caught up (a
/// second of silence on an open stream); returns every progress notification it heard, why
/// the stream could not be opened again each time it could not, and how many times it was
/// opened again with `Last-Event-ID`.
pub async fn hold(
    c: Client,
    session: usize,
    sid: String,
    t0: Instant,
    opened: Arc<Notify>,
    finish: Arc<AtomicBool>,
) -> (Vec<Heard>, Vec<String>, usize) {
    let (mut heard, mut refused, mut resumed) = (Vec::new(), Vec::new(), 0);
    let mut last: Option<String> = None;
    let mut finishing_since: Option<Instant> = None;
    loop {
        if finish.load(Ordering::Relaxed) {
            let since = *finishing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > FINISH_FOR {
                refused.push(format!("{} ms: could not catch up before the end", ms(t0)));
                return (heard, refused, resumed);
            }
        }
        let sent = tokio::time::timeout(CALL_TIMEOUT, c.listen(&sid, last.as_deref()).send()).await;
        match sent {
            Ok(Ok(resp)) if resp.status().is_success() => {
                match last {
                    Some(_) => resumed += 1,
                    None => opened.notify_one(),
                }
                let mut reader = SseReader::new(resp);
                loop {
                    match tokio::time::timeout(QUIET, reader.next()).await {
                        Ok(Ok(Some(event))) => {
                            if let Some(id) = &event.id {
                                last = Some(id.clone());
                            }
                            if let (Some(id), Some(msg)) = (&event.id, event.json())
                                && let Some(h) = progress_of(&msg, session, id, ms(t0))
                            {
                                heard.push(h);
                            }
                        }
                        // Ended or broke: open it again from the last event.
                        Ok(_) => break,
                        Err(_quiet) if finish.load(Ordering::Relaxed) => {
                            return (heard, refused, resumed);
                        }
                        Err(_quiet) => {}
                    }
                }
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                refused.push(format!(
                    "{} ms: HTTP {status} after {last:?}: {}",
                    ms(t0),
                    text.chars().take(160).collect::<String>()
                ));
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(AGAIN).await;
    }
}

/// A progress notification, as heard on the stream.
fn progress_of(msg: &Value, session: usize, event: &str, at_ms: u64) -> Option<Heard> {
    if msg.get("method")?.as_str()? != "notifications/progress" {
        return None;
    }
    let params = msg.get("params")?;
    Some(Heard {
        session,
        event: event.to_owned(),
        token: params.get("progressToken")?.as_str()?.to_owned(),
        progress: params.get("progress")?.as_i64()?,
        at_ms,
    })
}

/// Makes progress calls in `sid`, one after another, until `stop`: from when its holder's
/// stream is open (a stream opened without `Last-Event-ID` carries what comes after it, not
/// what came before), or [`CALL_TIMEOUT`] at the latest.
pub async fn call_progress(
    c: Client,
    session: usize,
    sid: String,
    t0: Instant,
    opened: Arc<Notify>,
    stop: Arc<AtomicBool>,
) -> Vec<ProgressCall> {
    let _ = tokio::time::timeout(CALL_TIMEOUT, opened.notified()).await;
    let mut calls = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let token = format!("{session}/{n}");
        let body = json!({"jsonrpc": "2.0", "id": FIRST_ID + n, "method": "tools/call",
            "params": {"name": c.tool("test_tool_with_progress"), "arguments": {},
                "_meta": {"progressToken": token}}});
        let sent_ms = ms(t0);
        let answered = tokio::time::timeout(CALL_TIMEOUT, async {
            let resp = c.session_post_json(&sid, &body).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let answer: Value = resp.json().await.ok()?;
            Some(answer["result"]["content"][0]["text"].as_str() == Some(token.as_str()))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        calls.push(ProgressCall {
            session,
            token,
            sent_ms,
            done_ms: ms(t0),
            answered,
        });
        tokio::time::sleep(PAUSE).await;
    }
    calls
}
