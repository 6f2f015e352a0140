//! Helpers for tests in which sessions change owner (`t86_takeover`, `t89_upstream_takeover`):
//! which node owns which session, `counter` (or any tool) calls that ride out the moment a key
//! has no owner, and checks that a resumed stream continues the one a client was reading.

use crate::mcp::{self, Client, Event, SseReader};
use futures_util::future::join_all;
use serde_json::{Value, json};
use shardgate_raft::{Membership, Ring};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a session gets to answer again after its owner went away.
pub const RECOVER: Duration = Duration::from_secs(30);

/// `n` new sessions, each of which called `counter` `calls` times (and got 1, 2, …).
pub async fn sessions_counted_to(c: &Client, n: usize, calls: i64) -> anyhow::Result<Vec<String>> {
    let made = join_all((0..n).map(|_| async {
        let sid = c.initialize().await?;
        for k in 1..=calls {
            let got = c.count(&sid, k).await?;
            anyhow::ensure!(
                got == k,
                "session {sid}: call {k} of counter answered {got}"
            );
        }
        anyhow::Ok(sid)
    }))
    .await;
    made.into_iter().collect()
}

/// Each session's owner in `view`.
pub fn owners(view: &Membership, sids: &[String]) -> anyhow::Result<Vec<String>> {
    let ring = Ring::new(view.clone());
    sids.iter()
        .map(|sid| {
            ring.owner(sid.as_bytes())
                .map(|m| m.id.0.clone())
                .ok_or_else(|| anyhow::anyhow!("no owner for {sid} in {view:?}"))
        })
        .collect()
}

/// The node (but those in `except`) that owns most sessions, and how many.
pub fn most_loaded(owner: &[String], except: &[&str]) -> (String, usize) {
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for o in owner {
        *load.entry(o).or_default() += 1;
    }
    load.into_iter()
        .filter(|(o, _)| !except.contains(o))
        .max_by_key(|(_, n)| *n)
        .map(|(o, n)| (o.to_owned(), n))
        .expect("some node owns sessions")
}

/// Which failed tries are followed by another. A try that failed but counted shows as a
/// skipped value in the answer that follows, and the tries are reported with it.
#[derive(Clone, Copy)]
pub enum Retry {
    /// Only those the gateway could not place (503 while a key has no live owner, a refused
    /// connection) or lost on the way (502, 504).
    Unplaced,
    /// Also JSON-RPC errors and any other status but 404: an old owner may refuse what it can
    /// no longer store.
    AnyError,
}

/// One session's answer after a change of owner.
pub struct Answer {
    pub value: Result<i64, String>,
    /// From the change to the answer.
    pub after: Duration,
    /// What the tries before it got.
    pub tries: Vec<String>,
}

/// `counter` in every session at once, each until it answers.
pub async fn count_everywhere(
    c: &Client,
    sids: &[String],
    id: i64,
    since: Instant,
    retry: Retry,
) -> Vec<Answer> {
    join_all(
        sids.iter()
            .map(|sid| count_until_answered(c, sid, id, since, retry)),
    )
    .await
}

/// `counter` in session `sid` until it answers, or fails in a way `retry` does not retry, or
/// [`RECOVER`] after `since`.
pub async fn count_until_answered(
    c: &Client,
    sid: &str,
    id: i64,
    since: Instant,
    retry: Retry,
) -> Answer {
    let mut tries = Vec::new();
    loop {
        let value = match count_once(c, sid, id).await {
            Ok(n) => Ok(n),
            Err(Failed { again, why }) => {
                let again =
                    again || (matches!(retry, Retry::AnyError) && !why.starts_with("HTTP 404"));
                if again && since.elapsed() < RECOVER {
                    tries.push(why);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(why)
            }
        };
        return Answer {
            value,
            after: since.elapsed(),
            tries,
        };
    }
}

/// A failed `counter` call.
#[derive(Debug)]
pub struct Failed {
    /// Whether it is worth another try whatever the [`Retry`]: it was not placed or was lost
    /// on the way.
    pub again: bool,
    pub why: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// One `tools/call` of the builtin `counter` in session `sid`: its new value.
pub async fn count_once(c: &Client, sid: &str, id: i64) -> Result<i64, Failed> {
    let fail = |again, why: String| Failed { again, why };
    let answer = call_once(c, sid, id, "counter", json!({})).await?;
    answer["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| fail(false, format!("not a count: {answer}")))
}

/// One `tools/call` of `tool` in session `sid`: its JSON-RPC response, which may be an error.
pub async fn call_once(
    c: &Client,
    sid: &str,
    id: i64,
    tool: &str,
    arguments: Value,
) -> Result<Value, Failed> {
    let fail = |again, why: String| Failed { again, why };
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    let resp = c
        .session_post(sid, &body)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| fail(e.is_connect(), format!("send: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let unplaced = matches!(status.as_u16(), 502..=504);
        return Err(fail(unplaced, format!("HTTP {}: {text}", status.as_u16())));
    }
    mcp::response_of(resp, &json!(id))
        .await
        .map_err(|e| fail(false, format!("reading the answer: {e:#}")))
}

/// One session's answer to a `tools/call` after a change of owner.
pub struct Reply {
    /// The JSON-RPC response (result or error), or why there was none.
    pub value: Result<Value, String>,
    /// From the change to the answer.
    pub after: Duration,
    /// What the tries before it got.
    pub tries: Vec<String>,
}

/// `tools/call` of `tool` in session `sid` until it is answered (a JSON-RPC error is an
/// answer), or fails in a way `retry` does not retry, or [`RECOVER`] after `since`.
pub async fn call_until_answered(
    c: &Client,
    sid: &str,
    id: i64,
    tool: &str,
    arguments: &Value,
    since: Instant,
    retry: Retry,
) -> Reply {
    let mut tries = Vec::new();
    loop {
        let value = match call_once(c, sid, id, tool, arguments.clone()).await {
            Ok(answer) => Ok(answer),
            Err(Failed { again, why }) => {
                let again =
                    again || (matches!(retry, Retry::AnyError) && !why.starts_with("HTTP 404"));
                if again && since.elapsed() < RECOVER {
                    tries.push(why);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(why)
            }
        };
        return Reply {
            value,
            after: since.elapsed(),
            tries,
        };
    }
}

/// Every session whose answer is not `expected`, with its owner and what it got.
pub fn mismatches(
    sids: &[String],
    owner: &[String],
    answers: &[Answer],
    expected: &[i64],
) -> Vec<String> {
    (0..sids.len())
        .filter(|&i| answers[i].value != Ok(expected[i]))
        .map(|i| {
            let a = &answers[i];
            format!(
                "{} (owner {}): {:?} after {:?}, expected {}; earlier tries: {:?}",
                sids[i], owner[i], a.value, a.after, expected[i], a.tries
            )
        })
        .collect()
}

/// Median, p99 and max.
pub fn spread(mut times: Vec<Duration>) -> String {
    if times.is_empty() {
        return "none".into();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:?}, p99 {:?}, max {:?} (n = {})",
        at(0.5),
        at(0.99),
        times[times.len() - 1],
        times.len()
    )
}

/// `shardgate_node_sessions` of the node whose admin listener is `admin`.
pub async fn sessions_on(http: &reqwest::Client, admin: SocketAddr) -> anyhow::Result<u64> {
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("shardgate_node_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no session gauge at {admin}"))
}

/// GETs the stream after `last`, again while the gateway cannot place it yet (the owner gone
/// and the ring not moved).
pub async fn resume_until_placed(
    c: &Client,
    sid: &str,
    last: &str,
    since: Instant,
) -> anyhow::Result<reqwest::Response> {
    let mut tries = Vec::new();
    loop {
        match c.resume(sid, last).send().await {
            Ok(resp) if resp.status() == 200 => return Ok(resp),
            Ok(resp) if !matches!(resp.status().as_u16(), 502..=504) => {
                let status = resp.status();
                anyhow::bail!(
                    "resuming {sid} after {last}: HTTP {status}: {} (earlier tries: {tries:?})",
                    resp.text().await.unwrap_or_default()
                );
            }
            Ok(resp) => tries.push(format!("HTTP {}", resp.status())),
            Err(e) => tries.push(format!("send: {e}")),
        }
        if since.elapsed() > RECOVER {
            anyhow::bail!("resuming {sid} after {last}: no stream within {RECOVER:?}: {tries:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events of a resumed stream until the response to `id`, and whatever follows it within a
/// second (a duplicate would); at most `within` in all.
pub async fn read_until_response(
    mut reader: SseReader,
    id: &Value,
    within: Duration,
) -> anyhow::Result<Vec<Event>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut events: Vec<Event> = Vec::new();
    let mut answered: Option<tokio::time::Instant> = None;
    loop {
        let until = answered.map_or(deadline, |t| t + Duration::from_secs(1));
        match tokio::time::timeout_at(until, reader.next()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Ok(Some(event))) => {
                let is_answer = event.json().is_some_and(|m| {
                    &m["id"] == id && (m.get("result").is_some() || m.get("error").is_some())
                });
                if is_answer && answered.is_none() {
                    answered = Some(tokio::time::Instant::now());
                }
                events.push(event);
            }
            Ok(Err(e)) if answered.is_none() => {
                return Err(e.context(format!("the resumed stream broke after {events:?}")));
            }
            Ok(Err(_)) => break,
        }
    }
    Ok(events)
}

/// `replay` continues the stream `seen` was read from: the same stream, the next sequence
/// numbers with no gap, no id twice, progress only forward.
pub fn check_continuation(seen: &[Event], replay: &[Event]) -> anyhow::Result<()> {
    let position = |e: &Event| {
        e.position()
            .ok_or_else(|| anyhow::anyhow!("an event without a <stream>-<seq> id: {e:?}"))
    };
    let end = position(seen.last().expect("something was seen"))?;
    let (stream, last) = (end.stream, end.seq);
    anyhow::ensure!(!replay.is_empty(), "the resumed stream is empty");
    let mut ids = HashSet::new();
    for e in seen.iter().chain(replay) {
        let id = e.id.clone().unwrap_or_default();
        anyhow::ensure!(
            ids.insert(id.clone()),
            "event id {id} twice: {seen:?} then {replay:?}"
        );
    }
    let positions = replay
        .iter()
        .map(position)
        .collect::<anyhow::Result<Vec<_>>>()?;
    assert!(
        positions.iter().all(|p| p.stream == stream),
        "only stream {stream} is replayed: {replay:?}"
    );
    let seqs: Vec<u64> = positions.iter().map(|p| p.seq).collect();
    let want: Vec<u64> = (last + 1..=last + seqs.len() as u64).collect();
    assert_eq!(
        seqs, want,
        "the events after {stream}-{last}, in order, once: {replay:?}"
    );
    let progress: Vec<f64> = seen
        .iter()
        .chain(replay)
        .filter_map(Event::json)
        .filter(|m| m["method"] == "notifications/progress")
        .filter_map(|m| m["params"]["progress"].as_f64())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress only moves forward across the takeover: {progress:?}"
    );
    Ok(())
}
