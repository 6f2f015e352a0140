//! A minimal MCP client over reqwest, for the chaos harness and the end-to-end tests: enough to
//! initialize, call, and read SSE streams event by event (including ids, to test resumption).

use anyhow::{Context, bail};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use shardgate_protocol::sse;

pub const SESSION_VERSION: &str = "2025-11-25";
pub const STATELESS_VERSION: &str = "2026-07-28";
/// The header of a stateless-era client's key: the gateway issues one with the first answer
/// that keeps state for the client, and routes the client's later calls by it.
pub const CLIENT_KEY_HEADER: &str = "shardgate-client-key";
/// Between a federated upstream's prefix and the name it gave a tool.
pub const FEDERATION_SEPARATOR: &str = "__";

/// How long an idle connection stays in the client's pool: well below the gateway's idle
/// timeout (60 s, before a connection's first request as after it: the pool opens spares), so
/// that the client never sends a request on a connection the gateway is closing as idle at
/// that moment (HTTP/1.1 has no way to tell the request was not read).
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub endpoint: String,
    /// The builtin's federation prefix when the cluster federates it with other upstreams.
    pub prefix: Option<String>,
}

pub use shardgate_protocol::sse::Event;

/// Reads an SSE body event by event.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    events: sse::Parser,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader {
            body: resp.bytes_stream().boxed(),
            events: sse::Parser::default(),
        }
    }

    /// The next event, skipping comments; `None` when the stream ends.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.events.next_event() {
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(chunk) => self.events.push(&chunk?),
                None => return Ok(None),
            }
        }
    }

    /// Every remaining event until the stream ends.
    pub async fn collect(mut self) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await? {
            out.push(e);
        }
        Ok(out)
    }
}

impl Client {
    pub fn new(endpoint: &str) -> Self {
        // Building a client with default settings only fails without a TLS provider, which
        // `http()` installs.
        let http = crate::http()
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .unwrap_or_default();
        Client::with_http(http, endpoint)
    }

    /// A client of `endpoint` over an HTTP client of the caller's making.
    pub fn with_http(http: reqwest::Client, endpoint: &str) -> Self {
        Client {
            http,
            endpoint: endpoint.to_string(),
            prefix: None,
        }
    }

    /// The same client for a cluster that federates the builtin under `prefix`.
    pub fn federated(self, prefix: &str) -> Self {
        Client {
            prefix: Some(prefix.to_owned()),
            ..self
        }
    }

    /// The name a builtin tool goes by on this cluster.
    pub fn tool(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}{FEDERATION_SEPARATOR}{name}"),
            None => name.to_owned(),
        }
    }

    /// A POST with the headers every MCP client sends.
    pub fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string())
    }

    /// A 2026-07-28 request: `_meta` with `capabilities`, and the headers that mirror the
    /// body.
    pub fn stateless(
        &self,
        id: i64,
        method: &str,
        mut params: Value,
        name: Option<&str>,
        capabilities: Value,
    ) -> reqwest::RequestBuilder {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
            "io.modelcontextprotocol/clientCapabilities": capabilities
        });
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let req = self
            .post(&body)
            .header("mcp-protocol-version", STATELESS_VERSION)
            .header("mcp-method", method);
        match name {
            Some(name) => req.header("mcp-name", name),
            None => req,
        }
    }

    /// A DELETE of a session: the client ends it.
    pub fn delete(&self, sid: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(&self.endpoint)
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", SESSION_VERSION)
    }

    /// A GET that resumes a stream of a session after the event `last_event_id`.
    pub fn resume(&self, sid: &str, last_event_id: &str) -> reqwest::RequestBuilder {
        self.listen(sid, Some(last_event_id))
    }

    /// A GET of a session's standalone stream, or of the stream of `last_event_id` after it.
    pub fn listen(&self, sid: &str, last_event_id: Option<&str>) -> reqwest::RequestBuilder {
        let req = self
            .http
            .get(&self.endpoint)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", SESSION_VERSION);
        match last_event_id {
            Some(id) => req.header("last-event-id", id),
            None => req,
        }
    }

    /// A POST within a session.
    pub fn session_post(&self, sid: &str, body: &Value) -> reqwest::RequestBuilder {
        self.post(body)
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", SESSION_VERSION)
    }

    /// A POST within a session that takes its answer only as JSON: what the request causes
    /// besides goes on the session's standalone stream.
    pub fn session_post_json(&self, sid: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", SESSION_VERSION)
            .body(body.to_string())
    }

    /// Runs the session-era handshake; returns the session id.
    pub async fn initialize(&self) -> anyhow::Result<String> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": SESSION_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "shardgate-tests", "version": "0"}
        }});
        let resp = self.post(&init).send().await?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("initialize: HTTP {status}: {}", resp.text().await?);
        }
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .context("no Mcp-Session-Id on the initialize response")?
            .to_str()?
            .to_string();
        let answer = response_of(resp, &json!(0)).await?;
        if answer.get("result").is_none() {
            bail!("initialize failed: {answer}");
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let status = self.session_post(&sid, &note).send().await?.status();
        if status.as_u16() != 202 {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(sid)
    }

    /// Sends one request in a session and returns its JSON-RPC response.
    pub async fn request(
        &self,
        sid: &str,
        id: i64,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self.session_post(sid, &body).send().await?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{method}: HTTP {status}: {}", resp.text().await?);
        }
        response_of(resp, &json!(id)).await
    }

    /// `tools/call` of the builtin `counter` tool; returns the counter's new value.
    pub async fn count(&self, sid: &str, id: i64) -> anyhow::Result<i64> {
        let answer = self
            .request(
                sid,
                id,
                "tools/call",
                json!({"name": self.tool("counter"), "arguments": {}}),
            )
            .await?;
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .with_context(|| format!("counter answer without text: {answer}"))?;
        Ok(text.trim().parse()?)
    }
}

impl Client {
    /// A stateless-era `tools/call` of the builtin `counter` by the client with `key` (none: a
    /// new client).
    pub fn stateless_counter(&self, id: i64, key: Option<&str>) -> reqwest::RequestBuilder {
        let counter = self.tool("counter");
        let params = json!({"name": counter, "arguments": {}});
        let req = self.stateless(id, "tools/call", params, Some(&counter), json!({}));
        match key {
            Some(key) => req.header(CLIENT_KEY_HEADER, key),
            None => req,
        }
    }

    /// `tools/call` of the builtin `counter` as a stateless-era client with `key` (none: a new
    /// client); returns the counter's new value and the key the answer issued, if any.
    pub async fn stateless_count(
        &self,
        id: i64,
        key: Option<&str>,
    ) -> anyhow::Result<(i64, Option<String>)> {
        let resp = self.stateless_counter(id, key).send().await?;
        let status = resp.status();
        let issued = resp
            .headers()
            .get(CLIENT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            bail!("counter: HTTP {status}: {}", resp.text().await?);
        }
        let answer = response_of(resp, &json!(id)).await?;
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .with_context(|| format!("counter answer without text: {answer}"))?;
        Ok((text.trim().parse()?, issued))
    }
}

/// The JSON-RPC response with `id` from a JSON or SSE answer.
pub async fn response_of(resp: reqwest::Response, id: &Value) -> anyhow::Result<Value> {
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !is_sse {
        return Ok(resp.json().await?);
    }
    let mut reader = SseReader::new(resp);
    while let Some(event) = reader.next().await? {
        if let Some(msg) = event.json()
            && msg.get("id") == Some(id)
            && (msg.get("result").is_some() || msg.get("error").is_some())
        {
            return Ok(msg);
        }
    }
    bail!("the stream ended without a response to {id}")
}
