//! One session of the load: a session-era MCP session (`initialize`, then every request with
//! its `Mcp-Session-Id`), or a stateless-era client (every request self-contained at
//! 2026-07-28, carrying back the `Shardgate-Client-Key` the gateway issued it, which routes its
//! `counter` state as a session id would). It makes one request at a time, as one caller of
//! an MCP client does, and judges each answer: JSON or SSE, the JSON-RPC response with its id,
//! an error code, or a tool's `isError`.

use crate::Era;
use crate::client::{Answer, Connections, Lease};
use crate::mix::{Mix, Op};
use crate::record::{ErrorKind, Failure};
use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use shardgate_protocol::sse;
use std::time::{Duration, Instant};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

pub const SESSION_VERSION: &str = "2025-11-25";
pub const STATELESS_VERSION: &str = "2026-07-28";

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// The key a gateway issues a stateless-era client whose calls keep state for it.
const CLIENT_KEY: HeaderName = HeaderName::from_static("shardgate-client-key");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const JSON_OR_SSE: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");

/// How long a `stream` waits for the first event of its GET stream (the priming event comes
/// at once).
const FIRST_EVENT: Duration = Duration::from_secs(1);
/// How long the rest of a stream is read after its answer (the end follows the answer at
/// once), so that an HTTP/1.1 connection can carry the next request.
const DRAIN: Duration = Duration::from_secs(1);
/// The most of a JSON answer read.
const MAX_BODY: usize = 1 << 20;
/// Characters of an answer kept as an error's example.
const EXCERPT: usize = 200;

/// What an exchange waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// The JSON-RPC response with this id.
    Response(u64),
    /// Any JSON-RPC response (a replayed stream's).
    AnyResponse,
    /// Only a 2xx status (a notification's 202).
    Accepted,
    /// The first SSE event.
    FirstEvent,
}

/// What an exchange got.
struct Exchanged {
    at: Instant,
    outcome: Result<(), Failure>,
    session_id: Option<HeaderValue>,
    key: Option<HeaderValue>,
    /// The id of the first SSE event (a POST stream's priming event).
    first_event: Option<String>,
}

pub struct Session {
    pub index: usize,
    era: Era,
    sid: Option<HeaderValue>,
    key: Option<HeaderValue>,
    next_id: u64,
    /// The first event id of the session's last answered POST stream: what `resume` replays.
    resume_from: Option<HeaderValue>,
}

impl Session {
    pub fn new(index: usize, era: Era) -> Session {
        Session {
            index,
            era,
            sid: None,
            key: None,
            next_id: 1,
            resume_from: None,
        }
    }

    /// Gets the session ready before the load starts: in the session era the handshake, and a
    /// first call for `resume` to replay when the mix has it.
    pub async fn open(
        &mut self,
        conns: &Connections,
        mix: &Mix,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        if self.era == Era::Stateless {
            return Ok(());
        }
        let params = format!(
            r#""protocolVersion":"{SESSION_VERSION}","capabilities":{{}},"clientInfo":{{"name":"shardgate-bench","version":"{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        let req = self.post(conns, 0, "initialize", &params, None)?;
        let got = self.exchange(conns, req, Want::Response(0), deadline).await;
        if let Err(f) = got.outcome {
            bail!("initialize: {f}");
        }
        self.sid = Some(
            got.session_id
                .context("no Mcp-Session-Id on the initialize answer")?,
        );
        let note = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let req = self.request(conns, Method::POST, note, None)?;
        let got = self.exchange(conns, req, Want::Accepted, deadline).await;
        if let Err(f) = got.outcome {
            bail!("notifications/initialized: {f}");
        }
        if mix.has(Op::Resume) {
            let (_, outcome) = self.perform(conns, Op::Echo, deadline).await;
            if let Err(f) = outcome {
                bail!("the first echo (for resume to replay): {f}");
            }
        }
        Ok(())
    }

    /// Makes one request; when it ended, and how.
    pub async fn perform(
        &mut self,
        conns: &Connections,
        op: Op,
        deadline: Instant,
    ) -> (Instant, Result<(), Failure>) {
        let got = match self.send(conns, op, deadline).await {
            Ok(got) => got,
            Err(failure) => return (Instant::now(), Err(failure)),
        };
        if let Some(key) = got.key {
            self.key = Some(key);
        }
        if op != Op::Resume
            && let Some(id) = got.first_event.as_deref()
            && let Ok(v) = HeaderValue::from_str(id)
        {
            self.resume_from = Some(v);
        }
        (got.at, got.outcome)
    }

    async fn send(
        &mut self,
        conns: &Connections,
        op: Op,
        deadline: Instant,
    ) -> Result<Exchanged, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let echo = r#""name":"echo","arguments":{"text":"shardgate bench"}"#;
        let counter = r#""name":"counter","arguments":{}"#;
        Ok(match op {
            Op::Echo => {
                let req = self.post(conns, id, "tools/call", echo, Some("echo"))?;
                self.exchange(conns, req, Want::Response(id), deadline)
                    .await
            }
            Op::Counter => {
                let req = self.post(conns, id, "tools/call", counter, Some("counter"))?;
                self.exchange(conns, req, Want::Response(id), deadline)
                    .await
            }
            Op::List => {
                let req = self.post(conns, id, "tools/list", "", None)?;
                self.exchange(conns, req, Want::Response(id), deadline)
                    .await
            }
            Op::Stream => {
                let req = self.get(conns, None)?;
                let until = deadline.min(Instant::now() + FIRST_EVENT);
                let lease = match timeout_at(until.into(), conns.dedicated(self.index)).await {
                    Ok(lease) => lease.map_err(transport)?,
                    Err(_) => return Err(Failure::timeout()),
                };
                exchange(lease, req, Want::FirstEvent, until).await
            }
            Op::Resume => {
                let from = self.resume_from.clone().ok_or_else(|| {
                    Failure::new(ErrorKind::NoAnswer, "no stream of this session to resume")
                })?;
                let req = self.get(conns, Some(from))?;
                self.exchange(conns, req, Want::AnyResponse, deadline).await
            }
        })
    }

    /// Opens the session's standalone GET stream on the session's own connection and reads it
    /// to its first event (the priming event), by `deadline`; the stream stays open for as
    /// long as the [`HeldStream`] is kept. Over HTTP/1.1 it holds that connection.
    pub async fn hold_stream<'c>(
        &self,
        conns: &'c Connections,
        deadline: Instant,
    ) -> anyhow::Result<HeldStream<'c>> {
        let req = self.get(conns, None)?;
        let mut lease = timeout_at(deadline.into(), conns.lease(self.index))
            .await
            .context("no connection in time")?
            .map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
        let resp = timeout_at(deadline.into(), lease.send(req))
            .await
            .context("no answer in time")?
            .map_err(|e| anyhow::anyhow!("the GET failed: {e}"))?;
        let status = resp.status();
        let sse = is_sse(resp.headers());
        let mut body = resp.into_body();
        if !status.is_success() || !sse {
            let (text, _) = read_all(&mut body, deadline).await;
            bail!(
                "answered {status}{}: {}",
                if sse { "" } else { ", not an SSE stream" },
                excerpt(&String::from_utf8_lossy(&text))
            );
        }
        first_event(&mut body, deadline).await?;
        Ok(HeldStream {
            _lease: lease,
            body,
        })
    }

    /// An exchange on the session's connection.
    async fn exchange(
        &self,
        conns: &Connections,
        req: Request<Full<Bytes>>,
        want: Want,
        deadline: Instant,
    ) -> Exchanged {
        let lease = match timeout_at(deadline.into(), conns.lease(self.index)).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => return failed(Failure::new(ErrorKind::Transport, e.0)),
            Err(_) => return failed(Failure::timeout()),
        };
        exchange(lease, req, want, deadline).await
    }

    /// A JSON-RPC request as a POST.
    fn post(
        &self,
        conns: &Connections,
        id: u64,
        method: &str,
        params: &str,
        name: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let body = body(id, method, params, self.era == Era::Stateless);
        let mut extra = Vec::new();
        if self.era == Era::Stateless {
            extra.push((MCP_METHOD, header(method)?));
            if let Some(name) = name {
                extra.push((MCP_NAME, header(name)?));
            }
        }
        let mut req = self.request(conns, Method::POST, body, None)?;
        req.headers_mut().extend(extra);
        Ok(req)
    }

    /// A GET of the session's standalone stream, or a resumption after `last_event`.
    fn get(
        &self,
        conns: &Connections,
        last_event: Option<HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        self.request(conns, Method::GET, Bytes::new(), last_event)
    }

    /// A request with the headers of the session's era.
    fn request(
        &self,
        conns: &Connections,
        method: Method,
        body: Bytes,
        last_event: Option<HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let mut b = conns.request(method.clone());
        if method == Method::POST {
            b = b.header(CONTENT_TYPE, JSON).header(ACCEPT, JSON_OR_SSE);
        } else {
            b = b.header(ACCEPT, SSE);
        }
        match self.era {
            Era::Session => {
                if let Some(sid) = &self.sid {
                    b = b
                        .header(SESSION_ID, sid.clone())
                        .header(PROTOCOL_VERSION, SESSION_VERSION);
                }
            }
            Era::Stateless => {
                b = b.header(PROTOCOL_VERSION, STATELESS_VERSION);
                if let Some(key) = &self.key {
                    b = b.header(CLIENT_KEY, key.clone());
                }
            }
        }
        if let Some(last) = last_event {
            b = b.header(LAST_EVENT_ID, last);
        }
        b.body(Full::new(body)).map_err(|e| {
            Failure::new(
                ErrorKind::Transport,
                format!("cannot build the request: {e}"),
            )
        })
    }
}

/// A standalone GET stream kept open: dropping it closes the stream (over HTTP/1.1, with its
/// connection, which cannot carry anything else while it is open).
pub struct HeldStream<'c> {
    /// Keeps an HTTP/1.1 connection from being reused, or an HTTP/2 one open.
    _lease: Lease<'c>,
    body: Answer,
}

impl HeldStream<'_> {
    /// Reads the stream as an idle client would, discarding what comes (keep-alives, if any),
    /// until `stop`. False when the server ended the stream first.
    pub async fn idle(&mut self, stop: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return true,
                frame = self.body.frame() => match frame {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return false,
                },
            }
        }
    }
}

/// Reads a stream until its first event, by `deadline`.
async fn first_event(body: &mut Answer, deadline: Instant) -> anyhow::Result<()> {
    let mut parser = sse::Parser::default();
    loop {
        let frame = timeout_at(deadline.into(), body.frame())
            .await
            .context("no event in time")?
            .context("the stream ended before its first event")?
            .map_err(|e| anyhow::anyhow!("the stream broke: {}", transport(e)))?;
        if let Ok(data) = frame.into_data() {
            parser.push(&data);
            if parser.next_event().is_some() {
                return Ok(());
            }
        }
    }
}

fn header(text: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(text)
        .map_err(|_| Failure::new(ErrorKind::Transport, format!("'{text}' cannot be a header")))
}

fn transport(e: crate::client::TransportError) -> Failure {
    Failure::new(ErrorKind::Transport, e.0)
}

fn failed(failure: Failure) -> Exchanged {
    Exchanged {
        at: Instant::now(),
        outcome: Err(failure),
        session_id: None,
        key: None,
        first_event: None,
    }
}

/// A JSON-RPC request's text; a stateless-era one carries its protocol version and client
/// capabilities in `_meta`, as every 2026-07-28 request must.
fn body(id: u64, method: &str, params: &str, stateless: bool) -> Bytes {
    let meta = match stateless {
        true => concat!(
            r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
            r#""io.modelcontextprotocol/clientCapabilities":{}}"#
        ),
        false => "",
    };
    let comma = if params.is_empty() || meta.is_empty() {
        ""
    } else {
        ","
    };
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{{params}{comma}{meta}}}}}"#
    ))
}

/// Sends `req` on `lease` and reads the answer for `want`, all by `deadline`. The lease goes
/// back for the next request only when the answer was read to its end.
async fn exchange(
    mut lease: Lease<'_>,
    req: Request<Full<Bytes>>,
    want: Want,
    deadline: Instant,
) -> Exchanged {
    let resp = match timeout_at(deadline.into(), lease.send(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return failed(transport(e)),
        Err(_) => return failed(Failure::timeout()),
    };
    let status = resp.status();
    let headers = resp.headers();
    let mut got = Exchanged {
        at: Instant::now(),
        outcome: Ok(()),
        session_id: headers.get(&SESSION_ID).cloned(),
        key: headers.get(&CLIENT_KEY).cloned(),
        first_event: None,
    };
    let is_sse = is_sse(headers);
    let mut body = resp.into_body();
    if !status.is_success() || want == Want::Accepted {
        let (text, end) = read_all(&mut body, deadline).await;
        got.at = Instant::now();
        if !status.is_success() {
            got.outcome = Err(Failure::new(
                ErrorKind::Http(status.as_u16()),
                excerpt(&String::from_utf8_lossy(&text)),
            ));
        }
        if end == BodyEnd::Ended {
            lease.release();
        }
        return got;
    }
    if !is_sse {
        let (text, end) = read_all(&mut body, deadline).await;
        got.at = Instant::now();
        got.outcome = match (&end, judge(&text, want)) {
            (_, Some(outcome)) => outcome,
            (BodyEnd::Late, None) => Err(Failure::timeout()),
            (BodyEnd::Broke(why), None) => Err(Failure::new(ErrorKind::Transport, why.clone())),
            (BodyEnd::Ended, None) => Err(Failure::new(
                ErrorKind::NoAnswer,
                format!(
                    "not the answer: {}",
                    excerpt(&String::from_utf8_lossy(&text))
                ),
            )),
        };
        if end == BodyEnd::Ended {
            lease.release();
        }
        return got;
    }
    let mut parser = sse::Parser::default();
    let mut answer: Option<Result<(), Failure>> = None;
    // Until the answer, by the deadline; after it, only the end of the stream, briefly.
    let mut until = deadline;
    let ended = loop {
        let frame = match timeout_at(until.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break true,
            Ok(Some(Err(e))) => {
                if answer.is_none() {
                    answer = Some(Err(transport(e)));
                }
                break false;
            }
            Err(_) => break false,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        parser.push(&data);
        while let Some(event) = parser.next_event() {
            if got.first_event.is_none() {
                got.first_event = event.id.clone();
            }
            if answer.is_some() {
                continue;
            }
            let outcome = match want {
                Want::FirstEvent => Some(Ok(())),
                _ => judge(event.data.as_bytes(), want),
            };
            if let Some(outcome) = outcome {
                got.at = Instant::now();
                answer = Some(outcome);
                until = deadline.min(got.at + DRAIN);
            }
        }
        // A standalone stream never ends: the first event is all it was read for.
        if want == Want::FirstEvent && answer.is_some() {
            break false;
        }
    };
    got.outcome = match answer {
        Some(outcome) => outcome,
        None if ended => Err(Failure::new(
            ErrorKind::NoAnswer,
            "the stream ended without the answer",
        )),
        None if want == Want::FirstEvent => Err(Failure::new(
            ErrorKind::NoAnswer,
            format!(
                "no event on the GET stream within {} ms",
                FIRST_EVENT.as_millis()
            ),
        )),
        None => Err(Failure::timeout()),
    };
    if got.outcome.is_err() {
        got.at = Instant::now();
    }
    if ended {
        lease.release();
    }
    got
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// How reading a body ended.
#[derive(Debug, PartialEq, Eq)]
enum BodyEnd {
    Ended,
    Broke(String),
    Late,
}

/// Reads a body to its end by the deadline, keeping at most [`MAX_BODY`] of it.
async fn read_all(body: &mut Answer, deadline: Instant) -> (Vec<u8>, BodyEnd) {
    let mut text = Vec::new();
    loop {
        match timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY.saturating_sub(text.len());
                    text.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok(None) => return (text, BodyEnd::Ended),
            Ok(Some(Err(e))) => return (text, BodyEnd::Broke(transport(e).message)),
            Err(_) => return (text, BodyEnd::Late),
        }
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    result: Option<ResultShape>,
    #[serde(default)]
    error: Option<ErrorShape>,
}

#[derive(Deserialize)]
struct ResultShape {
    #[serde(default, rename = "isError")]
    is_error: bool,
}

#[derive(Deserialize)]
struct ErrorShape {
    code: i64,
    #[serde(default)]
    message: String,
}

/// The outcome a message gives, if it is the response wanted; `None` for anything else (a
/// notification, a request of the server, the priming event's empty data).
fn judge(text: &[u8], want: Want) -> Option<Result<(), Failure>> {
    let msg: Message = serde_json::from_slice(text).ok()?;
    if msg.result.is_none() && msg.error.is_none() {
        return None;
    }
    if let Want::Response(id) = want
        && msg.id.as_ref().and_then(serde_json::Value::as_u64) != Some(id)
    {
        return None;
    }
    Some(match (msg.error, msg.result) {
        (Some(e), _) => Err(Failure::new(
            ErrorKind::JsonRpc(e.code),
            excerpt(&e.message),
        )),
        (None, Some(r)) if r.is_error => Err(Failure::new(
            ErrorKind::Tool,
            excerpt(&String::from_utf8_lossy(text)),
        )),
        (None, _) => Ok(()),
    })
}

fn excerpt(text: &str) -> String {
    match text.trim() {
        "" => "(empty body)".into(),
        text => text.chars().take(EXCERPT).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn bodies_are_json_rpc_with_meta_in_the_stateless_era() {
        let echo = r#""name":"echo","arguments":{"text":"x"}"#;
        let v: Value = serde_json::from_slice(&body(7, "tools/call", echo, false)).expect("json");
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "x"}}})
        );
        let v: Value = serde_json::from_slice(&body(8, "tools/call", echo, true)).expect("json");
        assert_eq!(v["params"]["name"], "echo");
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({})
        );
        let v: Value = serde_json::from_slice(&body(9, "tools/list", "", true)).expect("json");
        assert!(v["params"]["_meta"].is_object());
        let v: Value = serde_json::from_slice(&body(9, "tools/list", "", false)).expect("json");
        assert_eq!(v["params"], json!({}));
    }

    #[test]
    fn answers_are_judged_by_id_error_and_is_error() {
        let ok = br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#;
        assert_eq!(judge(ok, Want::Response(3)), Some(Ok(())));
        assert_eq!(
            judge(ok, Want::Response(4)),
            None,
            "another request's answer"
        );
        assert_eq!(judge(ok, Want::AnyResponse), Some(Ok(())));
        let err = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(
            judge(err, Want::Response(3))
                .and_then(Result::err)
                .map(|f| f.kind),
            Some(ErrorKind::JsonRpc(-32601))
        );
        let tool = br#"{"jsonrpc":"2.0","id":3,"result":{"isError":true,"content":[]}}"#;
        assert_eq!(
            judge(tool, Want::Response(3))
                .and_then(Result::err)
                .map(|f| f.kind),
            Some(ErrorKind::Tool)
        );
        let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        assert_eq!(judge(note, Want::AnyResponse), None);
        assert_eq!(judge(b"", Want::AnyResponse), None, "a priming event");
    }
}
