//! Remote Streamable HTTP upstreams: one POST per request, its answer as JSON or as an SSE
//! stream that may carry the call's notifications and the upstream's requests to the client
//! before the answer (those are answered with a POST of their own).
//!
//! Session-era upstreams are initialized once per scope; the upstream's session id and
//! `InitializeResult` are kept in the scope's state, so another node continues the same
//! upstream session. A 404 for that session means the upstream forgot it: the connector
//! initializes again with the stored params and sends the request once more. Stateless-era
//! upstreams get the headers that era requires (`MCP-Protocol-Version`, `Mcp-Method`,
//! `Mcp-Name`), and a stateless-era client's `Mcp-Param-*` headers as it sent them.
//!
//! Otherwise only the configured headers are sent (the node's own credentials), never the
//! client's.
//! Each request has a deadline; consecutive transport failures open a circuit breaker that
//! fails calls fast for a while, so a dead upstream costs its clients no timeouts.

use super::bridge::STATELESS_VERSION;
use super::sse;
use super::{
    Caller, Exchange, STATE_INITIALIZE_RESULT, cancelled, notification, outcome, unavailable,
};
use crate::config::{HttpConfig, UpstreamEra};
use crate::upstream::{Scope, UpstreamState};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};
use shardgate_protocol::mcp::{self, HEADER_LAST_EVENT_ID, Message, RpcError};
use shardgate_protocol::stateless_checks;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The upstream's session id, in the scope's state.
const STATE_SESSION_ID: &str = "upstreamSessionId";
/// The cookies the upstream set for this scope, `name → value`, in the scope's state.
const STATE_COOKIES: &str = "upstreamCookies";
/// How often a stream that ended before its answer is resumed.
const MAX_RESUMPTIONS: usize = 5;
/// The longest we wait before resuming, whatever `retry` the upstream asked for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Http {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
    stateless: bool,
    timeout: Duration,
    breaker: Breaker,
    /// One (re)initialization at a time per scope.
    handshakes: Mutex<HashMap<Scope, Arc<tokio::sync::Mutex<()>>>>,
    /// The upstream sessions this node uses, to end them when their scope ends.
    sessions: Mutex<HashMap<Scope, Held>>,
}

/// How to address the upstream session of a scope.
#[derive(Clone, Debug, Default)]
struct Link {
    session_id: Option<String>,
    version: Option<String>,
}

impl Link {
    fn of(state: &UpstreamState) -> Option<Link> {
        state.with(|s| {
            let init = s.get(STATE_INITIALIZE_RESULT)?;
            Some(Link {
                session_id: s
                    .get(STATE_SESSION_ID)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                version: init
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        })
    }
}

/// An upstream session in use, and the listener of its standalone stream.
struct Held {
    link: Link,
    listener: CancellationToken,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.listener.cancel();
    }
}

/// Why a request got no answer from the upstream.
enum Failure {
    /// The upstream answered with a JSON-RPC error: its answer, not its failure.
    Rpc(RpcError),
    /// The upstream no longer knows the session (404).
    SessionGone,
    /// Unreachable, failing (5xx), too slow, or talking nonsense.
    Broken(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A transport error with its causes, which say what actually went wrong (refused, reset,
/// timed out, certificate…). Without the URL reqwest adds: the client is told which upstream
/// failed by its name, and the URL's path and query may hold a credential.
fn broken(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure::Broken(text)
}

/// `text` with the upstream's URL cut down to its origin (`scheme://host[:port]`), and its
/// query and password gone wherever they appear alone: what reaches a client or a log says
/// which server failed, never the credentials a URL may carry.
fn redact(text: &str, url: &reqwest::Url) -> String {
    let mut out = text.replace(url.as_str(), &url.origin().ascii_serialization());
    for secret in [url.query(), url.password()].into_iter().flatten() {
        if !secret.is_empty() {
            out = out.replace(secret, "…");
        }
    }
    out
}

impl Http {
    pub fn new(name: &str, config: &HttpConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url: {}: is not an http(s) URL", url.scheme()));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::try_from(k.as_str()).map_err(|e| format!("header {k}: {e}"))?;
            let value =
                HeaderValue::try_from(v.as_str()).map_err(|e| format!("header {k}: {e}"))?;
            headers.insert(name, value);
        }
        // rustls is built with ring only; make it the process default before reqwest asks.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Http {
            name: name.to_owned(),
            url,
            headers,
            client,
            stateless: config.era == UpstreamEra::Stateless,
            timeout: Duration::from_secs(config.request_timeout_secs),
            breaker: Breaker::new(
                config.breaker_failures,
                Duration::from_secs(config.breaker_open_secs),
            ),
            handshakes: Mutex::default(),
            sessions: Mutex::default(),
        })
    }

    pub fn stateless(&self) -> bool {
        self.stateless
    }

    /// Serves one request, initializing the upstream session first if the scope has none.
    pub async fn request(
        &self,
        ex: &Exchange,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        self.guarded(method, async {
            if self.stateless {
                return self.exchange(ex, &Link::default(), method, params).await;
            }
            let link = self.link(ex).await?;
            match self.exchange(ex, &link, method, params.clone()).await {
                Err(Failure::SessionGone) => {
                    tracing::info!(upstream = %self.name, "upstream session gone; initializing again");
                    tracing::debug!(upstream = %self.name, scope = %ex.scope, "upstream session gone");
                    let (link, _) = self.handshake(ex, Some(&link)).await?;
                    self.exchange(ex, &link, method, params).await
                }
                other => other,
            }
        })
        .await
    }

    /// The client's `initialize`: a new upstream session, whose answer is the client's.
    pub async fn initialize(&self, ex: &Exchange) -> Result<Value, RpcError> {
        self.guarded("initialize", async {
            let (_, result) = self.handshake(ex, None).await?;
            Ok(result)
        })
        .await
    }

    /// The upstream's `InitializeResult`, initializing the upstream session if need be.
    pub async fn initialized(&self, ex: &Exchange) -> Result<Value, RpcError> {
        self.guarded("initialize", async {
            self.link(ex).await?;
            ex.initialize_result()
                .ok_or_else(|| Failure::Broken("no InitializeResult".into()))
        })
        .await
    }

    /// Runs `attempt` within the deadline and the circuit breaker.
    async fn guarded(
        &self,
        method: &str,
        attempt: impl Future<Output = Result<Value, Failure>>,
    ) -> Result<Value, RpcError> {
        if let Err(wait) = self.breaker.admit() {
            return Err(unavailable(
                &self.name,
                format!(
                    "failing repeatedly; not tried again for {}s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Broken(format!(
                "no answer to {method} within {}s",
                self.timeout.as_secs()
            ))),
        };
        self.breaker.record(!matches!(
            outcome,
            Err(Failure::Broken(_) | Failure::SessionGone)
        ));
        outcome.map_err(|f| match f {
            Failure::Rpc(e) => e,
            Failure::SessionGone => unavailable(&self.name, "the upstream session was lost twice"),
            Failure::Broken(problem) => unavailable(&self.name, redact(&problem, &self.url)),
        })
    }

    /// The scope's upstream session, initialized on first use.
    async fn link(&self, ex: &Exchange) -> Result<Link, Failure> {
        if let Some(link) = Link::of(&ex.state) {
            self.hold(ex, &link);
            return Ok(link);
        }
        Ok(self.handshake(ex, None).await?.0)
    }

    /// Initializes an upstream session for the scope, unless another call just did (with
    /// `stale`: unless the scope's session is no longer that one).
    async fn handshake(
        &self,
        ex: &Exchange,
        stale: Option<&Link>,
    ) -> Result<(Link, Value), Failure> {
        let turn = lock(&self.handshakes)
            .entry(ex.scope.clone())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        if let (Some(stale), Some(current), Some(result)) =
            (stale, Link::of(&ex.state), ex.initialize_result())
            && current.session_id != stale.session_id
        {
            return Ok((current, result));
        }
        let (_, msg, caller) = ex.outgoing("initialize", ex.initialize.clone());
        let poster = self.poster(&Link::default());
        let response = poster.post(&msg, HeaderMap::new()).await.map_err(broken)?;
        let session_id = response
            .headers()
            .get(mcp::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let result = self
            .answer(&poster, response, &id, &caller, &Link::default())
            .await?;
        let link = Link {
            session_id,
            version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        ex.keep_initialize_result(&result);
        ex.state.with(|s| match &link.session_id {
            Some(id) => s.insert(STATE_SESSION_ID.into(), id.clone().into()),
            None => s.remove(STATE_SESSION_ID),
        });
        let initialized = notification("notifications/initialized", Value::Null);
        let response = self
            .poster(&link)
            .post(&initialized, HeaderMap::new())
            .await
            .map_err(broken)?;
        if !response.status().is_success() {
            return Err(Failure::Broken(format!(
                "notifications/initialized: HTTP {}",
                response.status()
            )));
        }
        self.hold(ex, &link);
        Ok((link, result))
    }

    /// Notes that the scope uses `link`; the scope also listens to the upstream session's
    /// standalone stream (list changes, resource updates, requests that belong to no call): a
    /// session-era client on its own stream, stateless-era clients through their listen
    /// streams.
    fn hold(&self, ex: &Exchange, link: &Link) {
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&ex.scope)
            .is_some_and(|held| held.link.session_id == link.session_id)
        {
            return;
        }
        let listener = CancellationToken::new();
        if link.session_id.is_some() {
            let listening = Listening {
                name: self.name.clone(),
                poster: self.poster(link),
                caller: ex.standalone(),
            };
            tokio::spawn(listening.run(listener.clone()));
        }
        sessions.insert(
            ex.scope.clone(),
            Held {
                link: link.clone(),
                listener,
            },
        );
    }

    /// One request and its answer.
    async fn exchange(
        &self,
        ex: &Exchange,
        link: &Link,
        method: &str,
        params: Value,
    ) -> Result<Value, Failure> {
        let (id, msg, caller) = ex.outgoing(method, params);
        let poster = self.poster(link);
        let mut in_flight = InFlight {
            poster: poster.clone(),
            id,
            armed: true,
        };
        let mut headers = self.era_headers(method, &msg, &ex.param_headers);
        send_cookies(&ex.state, &mut headers);
        let response = poster.post(&msg, headers).await.map_err(broken)?;
        keep_cookies(&ex.state, response.headers());
        let answer = self
            .answer(&poster, response, &json!(id), &caller, link)
            .await;
        if !matches!(answer, Err(Failure::Broken(_))) {
            in_flight.armed = false;
        }
        answer
    }

    /// What a stateless-era upstream needs to see in the headers.
    fn era_headers(&self, method: &str, msg: &Value, params: &[(String, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !self.stateless {
            return headers;
        }
        let body = msg.get("params");
        let version = body
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(mcp::META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .unwrap_or(STATELESS_VERSION);
        insert(&mut headers, mcp::HEADER_PROTOCOL_VERSION, version);
        insert(&mut headers, mcp::HEADER_METHOD, method);
        if let Some(name) = stateless_checks::name_field(method)
            .and_then(|f| body?.get(f))
            .and_then(Value::as_str)
        {
            insert(&mut headers, mcp::HEADER_NAME, &header_value(name));
        }
        for (name, value) in params {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        headers
    }

    /// Reads the upstream's answer to request `id` from its HTTP response.
    async fn answer(
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
        let body = response.bytes().await.map_err(broken)?;
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
        let mut reader = sse::Reader::default();
        let mut last_event = None;
        for _ in 0..=MAX_RESUMPTIONS {
            // A broken connection ends the stream just as its end does.
            while let Ok(Some(chunk)) = response.chunk().await {
                for event in reader.feed(&chunk) {
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

    fn poster(&self, link: &Link) -> Poster {
        let mut headers = self.headers.clone();
        if let Some(id) = &link.session_id {
            insert(&mut headers, mcp::HEADER_SESSION_ID, id);
        }
        if let Some(v) = &link.version {
            insert(&mut headers, mcp::HEADER_PROTOCOL_VERSION, v);
        }
        Poster {
            client: self.client.clone(),
            url: self.url.clone(),
            headers,
        }
    }

    /// A client notification, for the scope's upstream session if it has one.
    pub fn notify(&self, state: &UpstreamState, method: &str, params: Value) {
        // The stateless era has no session a notification could be about.
        if self.stateless {
            return;
        }
        let Some(link) = Link::of(state) else {
            return;
        };
        let poster = self.poster(&link);
        let msg = notification(method, params);
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = poster.post(&msg, HeaderMap::new()).await {
                tracing::warn!(upstream = %name, error = %e, "could not forward a notification");
            }
        });
    }

    /// Ends the scope's upstream session, if this node used one.
    pub fn close(&self, scope: &Scope) {
        lock(&self.handshakes).remove(scope);
        let Some(held) = lock(&self.sessions).remove(scope) else {
            return;
        };
        if held.link.session_id.is_none() {
            return;
        }
        let poster = self.poster(&held.link);
        tokio::spawn(async move {
            // The upstream may not allow ending sessions (405); it expires them itself then.
            let _ = poster.delete().await;
        });
    }
}

/// Handles one message of a stream; the call's outcome if it is the answer to `id`.
fn take(
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

/// Reads an upstream session's standalone stream (the GET stream) until the scope ends,
/// reconnecting (with `Last-Event-ID`) when it drops.
struct Listening {
    name: String,
    poster: Poster,
    caller: Arc<Caller>,
}

impl Listening {
    async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = self.listen() => {}
            _ = stop.cancelled() => {}
        }
    }

    async fn listen(&self) {
        let mut last_event: Option<String> = None;
        let mut reader = sse::Reader::default();
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

/// Sends to the upstream, with its configured headers and a scope's session headers.
#[derive(Clone)]
struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl Poster {
    async fn post(&self, msg: &Value, extra: HeaderMap) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .headers(extra)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(msg.to_string())
            .send()
            .await
            .map_err(reqwest::Error::without_url)
    }

    async fn resume(&self, last_event: &str) -> reqwest::Result<reqwest::Response> {
        self.listen(Some(last_event)).await
    }

    /// A GET for the session's stream, from after `last_event` if given.
    async fn listen(&self, last_event: Option<&str>) -> reqwest::Result<reqwest::Response> {
        let mut get = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(last) = last_event {
            get = get.header(HEADER_LAST_EVENT_ID, last);
        }
        get.send().await.map_err(reqwest::Error::without_url)
    }

    async fn delete(&self) -> reqwest::Result<reqwest::Response> {
        self.client
            .delete(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(reqwest::Error::without_url)
    }
}

/// Cancels a request at the upstream if its call ends before the answer does.
struct InFlight {
    poster: Poster,
    id: u64,
    armed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let poster = self.poster.clone();
        let msg = cancelled(self.id);
        tokio::spawn(async move {
            let _ = poster.post(&msg, HeaderMap::new()).await;
        });
    }
}

/// The scope's cookies, as its `Cookie` header. An upstream that keeps per-client state behind
/// a stateless-era endpoint (another shardgate, a load balancer with sticky cookies) knows
/// its clients by a cookie: each scope is one client to it, as each scope is one client to us.
fn send_cookies(state: &UpstreamState, headers: &mut HeaderMap) {
    let cookie = state.with(|s| {
        let jar = s.get(STATE_COOKIES)?.as_object()?;
        let pairs: Vec<String> = jar
            .iter()
            .filter_map(|(name, value)| Some(format!("{name}={}", value.as_str()?)))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    });
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Keeps the cookies an answer sets (name and value; one set to expire is dropped).
fn keep_cookies(state: &UpstreamState, headers: &HeaderMap) {
    for set in headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        let mut parts = set.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        let expired = parts.any(|a| a.eq_ignore_ascii_case("max-age=0"));
        state.with(|s| {
            let jar = s
                .entry(STATE_COOKIES)
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(jar) = jar.as_object_mut() {
                if expired || value.is_empty() {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_owned(), value.into());
                }
            }
        });
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// An `Mcp-Name` value: as it is when that is plain visible ASCII, else `=?base64?…?=`.
fn header_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?");
    if plain {
        s.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

/// Fails fast after `threshold` consecutive failures, for `open_for`; then lets calls try
/// again (one more failure opens it again).
struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold,
            open_for,
            state: Mutex::default(),
        }
    }

    /// `Err(time left)` while open.
    fn admit(&self) -> Result<(), Duration> {
        match lock(&self.state).1 {
            Some(until) if Instant::now() < until => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    fn record(&self, ok: bool) {
        let mut state = lock(&self.state);
        if ok {
            *state = (0, None);
            return;
        }
        state.0 = state.0.saturating_add(1);
        if self.threshold > 0 && state.0 >= self.threshold {
            state.1 = Some(Instant::now() + self.open_for);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_success() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record(false);
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.admit().is_err());
        b.record(true);
        assert!(b.admit().is_ok());
        let b = Breaker::new(1, Duration::ZERO);
        b.record(false);
        assert!(b.admit().is_ok(), "open for no time: tried again at once");
    }

    #[test]
    fn upstream_errors_name_the_origin_not_the_url() {
        let url =
            reqwest::Url::parse("https://user:hunter2@mcp.example.com:8443/t/mcp?token=s3cret")
                .expect("url");
        let text = format!("error sending request for url ({url}): connection refused");
        let clean = redact(&text, &url);
        assert_eq!(
            clean,
            "error sending request for url (https://mcp.example.com:8443): connection refused"
        );
        let alone = redact("bad query token=s3cret, password hunter2", &url);
        assert!(
            !alone.contains("s3cret") && !alone.contains("hunter2"),
            "{alone}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_without_the_url() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = crate::config::NodeFile::parse(&format!(
            "[[upstream]]\nname = 'remote'\n[upstream.http]\nurl = 'http://127.0.0.1:{port}/mcp?token=s3cret'\n"
        ))
        .expect("config");
        let Some(crate::config::UpstreamConfig { http: Some(h), .. }) = config.upstreams.first()
        else {
            panic!("an http upstream");
        };
        let budgets = std::sync::Arc::new(crate::budget::Budgets::new(&Default::default()));
        let connector = super::super::Connector::http("remote", h, budgets).expect("client");
        let err = crate::upstream::testing::Client::session()
            .run(&connector, "tools/list", serde_json::json!({}))
            .await
            .expect_err("nothing listens");
        assert!(
            err.message.starts_with("upstream remote: "),
            "{}",
            err.message
        );
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        assert!(!err.message.contains("/mcp"), "{}", err.message);
    }

    #[test]
    fn a_scope_sends_back_the_cookies_it_was_set() {
        let state = UpstreamState::default();
        let mut set = HeaderMap::new();
        set.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("k=v1; Path=/mcp; HttpOnly"),
        );
        set.append(http::header::SET_COOKIE, HeaderValue::from_static("lb=a"));
        keep_cookies(&state, &set);
        let mut headers = HeaderMap::new();
        send_cookies(&state, &mut headers);
        assert_eq!(
            headers
                .get(http::header::COOKIE)
                .and_then(|v| v.to_str().ok()),
            Some("k=v1; lb=a")
        );
        let mut gone = HeaderMap::new();
        gone.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("lb=; Max-Age=0"),
        );
        keep_cookies(&state, &gone);
        let mut headers = HeaderMap::new();
        send_cookies(&state, &mut headers);
        assert_eq!(
            headers
                .get(http::header::COOKIE)
                .and_then(|v| v.to_str().ok()),
            Some("k=v1")
        );
        let mut none = HeaderMap::new();
        send_cookies(&UpstreamState::default(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn names_that_are_not_plain_ascii_are_encoded() {
        assert_eq!(header_value("echo"), "echo");
        assert_eq!(header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(header_value(" x"), "=?base64?IHg=?=");
    }
}
