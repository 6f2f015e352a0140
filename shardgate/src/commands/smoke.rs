//! `shardgate smoke URL --admin URL`: what a pipeline runs after a deploy. Checks, in order,
//! that the gateway is alive and ready, that every member owning keys answers, serves and has
//! a healthy session store (a member marked down is named: the others hold its keys), a whole session-era session (`initialize`, `tools/list`, a
//! tool call, `DELETE`), a stateless-era exchange (`server/discover`, `tools/list`, a tool
//! call), and that `/metrics` counted them. Prints a line per check; the first that fails
//! ends the run with a non-zero exit and one line saying why.

use anyhow::{Context, anyhow, bail};
use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use shardgate_protocol::internal::NodeReport;
use shardgate_protocol::sse;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SESSION_VERSION: &str = "2025-11-25";
const STATELESS_VERSION: &str = "2026-07-28";
const SESSION_ID: &str = "mcp-session-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const CLIENT_KEY: &str = "shardgate-client-key";
/// Series the gateway's `/metrics` must have after the exchanges above.
const GATEWAY_SERIES: &[&str] = &[
    "shardgate_gateway_requests_total",
    "shardgate_gateway_response_head_seconds",
    "shardgate_gateway_ring_epoch",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's MCP endpoint, e.g. `https://mcp.example.com/mcp`.
    pub url: String,
    /// The gateway's admin listener, e.g. `http://10.0.0.7:9090`: health, cluster status and
    /// metrics are read there.
    #[arg(long, env = "SHARDGATE_SMOKE_ADMIN")]
    pub admin: String,
    /// A file holding a bearer token for the endpoint (when the gateway checks tokens).
    #[arg(long, env = "SHARDGATE_SMOKE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust besides the system's, for an endpoint whose
    /// certificate a private CA signed (`shardgate up --tls` names its `ca.pem`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The tool to call in each era, when the endpoint lists it; its text argument carries a
    /// nonce that must come back.
    #[arg(long, default_value = "echo")]
    pub tool: String,
    /// Pass although members keep sessions in memory only (no store): without one, a node's
    /// death ends its sessions.
    #[arg(long)]
    pub allow_memory_only: bool,
    /// Fail when a member is down, not only when a member that owns keys does not serve.
    #[arg(long)]
    pub require_all: bool,
    /// Seconds each request may take.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Print each check as a JSON object, one per line (`{"step","ok","ms","said"}`), the
    /// failure too, then `{"passed":true,…}`.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let smoke = Smoke::new(&args)?;
    let started = Instant::now();
    let steps: [(&str, Step<'_>); 5] = [
        ("health", Box::pin(smoke.health())),
        ("cluster", Box::pin(smoke.cluster())),
        ("session era", Box::pin(smoke.session_era())),
        ("stateless era", Box::pin(smoke.stateless_era())),
        ("metrics", Box::pin(smoke.metrics())),
    ];
    for (name, step) in steps {
        let at = Instant::now();
        let outcome = step.await;
        let ms = at.elapsed().as_millis();
        match (outcome, args.json) {
            (Ok(said), false) => println!("ok    {name:<14} {ms:>6} ms  {said}"),
            (Ok(said), true) => println!("{}", step_json(name, true, ms, &said)),
            // One line, the step and why, whatever the cause's chain (and with no backtrace,
            // which an error returned from main would print when RUST_BACKTRACE is set).
            (Err(e), json) => {
                let why = one_line(&e);
                if json {
                    println!("{}", step_json(name, false, ms, &why));
                }
                eprintln!("smoke failed at {name}: {why}");
                std::process::exit(1);
            }
        }
    }
    let total = started.elapsed().as_millis();
    match args.json {
        true => println!("{}", json!({"passed": true, "url": args.url, "ms": total})),
        false => println!("smoke passed against {} in {total} ms", args.url),
    }
    Ok(())
}

fn step_json(step: &str, ok: bool, ms: u128, said: &str) -> Value {
    json!({"step": step, "ok": ok, "ms": ms, "said": said})
}

type Step<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<String>> + 'a>>;

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

struct Smoke {
    http: Client,
    url: String,
    admin: String,
    token: Option<String>,
    tool: String,
    allow_memory_only: bool,
    require_all: bool,
    /// Comes back from each tool call, so an answer cannot be an old one.
    nonce: String,
}

/// One JSON-RPC answer and the response headers it came with.
struct Answer {
    headers: HeaderMap,
    message: Value,
}

impl Smoke {
    fn new(args: &Args) -> anyhow::Result<Smoke> {
        let mut http = Client::builder().timeout(Duration::from_secs(args.timeout_secs));
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            http = http.add_root_certificate(cert);
        }
        let token = match &args.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(text.trim().to_owned())
            }
            None => None,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Ok(Smoke {
            http: http.build()?,
            url: args.url.clone(),
            admin: args.admin.trim_end_matches('/').to_owned(),
            token,
            tool: args.tool.clone(),
            allow_memory_only: args.allow_memory_only,
            require_all: args.require_all,
            nonce: format!("smoke-{}-{nanos:08x}", std::process::id()),
        })
    }

    async fn get_admin(&self, path: &str) -> anyhow::Result<String> {
        get_ok(&self.http, &format!("{}{path}", self.admin)).await
    }

    async fn health(&self) -> anyhow::Result<String> {
        self.get_admin("/health").await?;
        let ready = self.get_admin("/health/ready").await?;
        Ok(format!("alive, {}", ready.trim()))
    }

    /// Every member that owns keys (active or draining) answering, serving, and writing to a
    /// healthy store. A member marked down owns no keys: its sessions are taken over by the
    /// others, so it is named but fails the check only under `--require-all`.
    async fn cluster(&self) -> anyhow::Result<String> {
        let text = self.get_admin("/status.json").await?;
        let status: Value = serde_json::from_str(&text).context("/status.json is not JSON")?;
        let members = status["members"]
            .as_array()
            .context("/status.json has no members")?;
        let (mut sessions, mut serving, mut away) = (0, 0, Vec::new());
        for m in members {
            let id = m["id"].as_str().unwrap_or("a member");
            match m["state"].as_str() {
                Some("active" | "draining") => {}
                Some(other) if self.require_all => bail!("{id} is {other}"),
                Some(other) => {
                    away.push(format!("{id} {other}"));
                    continue;
                }
                None => bail!("{id} has no state"),
            }
            let Ok(report) = serde_json::from_value::<NodeReport>(m["report"].clone()) else {
                let why = m["unreachable"].as_str().unwrap_or("no report");
                bail!("{id} does not answer the gateway: {why}");
            };
            if !report.serving {
                bail!("{id} does not serve: it does not hear from a quorum");
            }
            match &report.store {
                Some(store) if !store.healthy => {
                    bail!("{id}'s session store ({}) is not taking writes", store.kind)
                }
                None if !self.allow_memory_only => bail!(
                    "{id} keeps sessions in memory only (started without a store): its sessions \
                     end when it dies (--allow-memory-only accepts this)"
                ),
                _ => {}
            }
            sessions += report.sessions;
            serving += 1;
        }
        if serving == 0 {
            bail!("no member serves ({})", away.join(", "));
        }
        let away = match away.is_empty() {
            true => String::new(),
            false => format!(" ({}: the others hold its keys)", away.join(", ")),
        };
        Ok(format!(
            "{serving} members serving{away} at epoch {}, leader {}, {sessions} sessions",
            status["epoch"],
            status["leader"].as_str().unwrap_or("unknown")
        ))
    }

    fn post(&self, body: &Value) -> RequestBuilder {
        let req = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends a request and reads its one answer, JSON or the matching event of an SSE body.
    async fn call(&self, req: RequestBuilder, id: u64, what: &str) -> anyhow::Result<Answer> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("{what}: the endpoint did not answer: {e}"))?;
        let resp = self.refused(resp, what).await?;
        let headers = resp.headers().clone();
        let sse = is_sse(&headers);
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("{what}: the answer broke off: {e}"))?;
        let message = if sse {
            let mut parser = sse::Parser::default();
            parser.push(&body);
            std::iter::from_fn(|| parser.next_event())
                .filter_map(|e| e.json())
                .find(|m| m["id"] == json!(id))
                .with_context(|| format!("{what}: the event stream ended without an answer"))?
        } else {
            serde_json::from_slice(&body)
                .with_context(|| format!("{what}: the answer is not JSON"))?
        };
        if let Some(error) = message.get("error") {
            bail!("{what}: error {}: {}", error["code"], error["message"]);
        }
        Ok(Answer { headers, message })
    }

    /// A response that is not a success, said as why: a 401 names what the gateway wants.
    async fn refused(&self, resp: Response, what: &str) -> anyhow::Result<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.unwrap_or_default();
        match (status, challenge, &self.token) {
            (StatusCode::UNAUTHORIZED, Some(c), None) => {
                bail!("{what}: the gateway asks for a bearer token ({c}); give --token-file")
            }
            (StatusCode::UNAUTHORIZED, Some(c), Some(_)) => {
                bail!("{what}: the gateway refused the token ({c})")
            }
            (StatusCode::FORBIDDEN, Some(c), _) => {
                bail!("{what}: the token lacks a scope ({c})")
            }
            _ => bail!("{what}: {status}: {}", first_line(&body)),
        }
    }

    async fn session_era(&self) -> anyhow::Result<String> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": SESSION_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "shardgate-smoke", "version": env!("CARGO_PKG_VERSION")},
        }});
        let answer = self.call(self.post(&init), 1, "initialize").await?;
        let sid = answer
            .headers
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .context("initialize: the answer has no Mcp-Session-Id")?
            .to_owned();
        let version = answer.message["result"]["protocolVersion"]
            .as_str()
            .unwrap_or("none")
            .to_owned();
        let in_session = |body: &Value| {
            self.post(body)
                .header(SESSION_ID, &sid)
                .header(PROTOCOL_VERSION, &version)
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = in_session(&initialized)
            .send()
            .await
            .context("notifications/initialized: the endpoint did not answer")?;
        self.refused(resp, "notifications/initialized").await?;
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let tools = self.call(in_session(&list), 2, "tools/list").await?;
        let called = self
            .call_tool(&tools.message, |body| in_session(body), 3)
            .await?;
        let mut delete = self.http.delete(&self.url).header(SESSION_ID, &sid);
        if let Some(token) = &self.token {
            delete = delete.bearer_auth(token);
        }
        let resp = delete
            .header(PROTOCOL_VERSION, &version)
            .send()
            .await
            .context("DELETE: the endpoint did not answer")?;
        self.refused(resp, "DELETE").await?;
        Ok(format!("{version}: initialize, {called}, DELETE"))
    }

    async fn stateless_era(&self) -> anyhow::Result<String> {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let request = |id: u64, method: &str, mut params: Value| {
            params["_meta"] = meta.clone();
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        };
        let stateless = |body: &Value, key: Option<&str>| {
            let method = body["method"].as_str().unwrap_or_default();
            let mut req = self
                .post(body)
                .header(PROTOCOL_VERSION, STATELESS_VERSION)
                .header("mcp-method", method);
            if let Some(name) = body["params"]["name"].as_str() {
                req = req.header("mcp-name", name);
            }
            if let Some(key) = key {
                req = req.header(CLIENT_KEY, key);
            }
            req
        };
        let discover = request(1, "server/discover", json!({}));
        let found = self
            .call(stateless(&discover, None), 1, "server/discover")
            .await?;
        let versions = &found.message["result"]["supportedVersions"];
        if !versions
            .as_array()
            .is_some_and(|v| v.contains(&json!(STATELESS_VERSION)))
        {
            bail!(
                "server/discover: {STATELESS_VERSION} is not among the supported versions {versions}"
            );
        }
        // The routing key the gateway hands an anonymous client, carried back like a client would.
        let key = found
            .headers
            .get(CLIENT_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let list = request(2, "tools/list", json!({}));
        let tools = self
            .call(stateless(&list, key.as_deref()), 2, "tools/list")
            .await?;
        let called = self
            .call_tool(
                &tools.message,
                |body| {
                    stateless(
                        &request(3, "tools/call", body["params"].clone()),
                        key.as_deref(),
                    )
                },
                3,
            )
            .await?;
        Ok(format!("{STATELESS_VERSION}: server/discover, {called}"))
    }

    /// Calls the smoke's tool if `list` (a `tools/list` answer) has it, checking the nonce
    /// comes back; says what was done.
    async fn call_tool(
        &self,
        list: &Value,
        send: impl Fn(&Value) -> RequestBuilder,
        id: u64,
    ) -> anyhow::Result<String> {
        let tools = list["result"]["tools"]
            .as_array()
            .context("tools/list: the answer has no tools")?;
        if !tools.iter().any(|t| t["name"] == json!(self.tool)) {
            return Ok(format!(
                "tools/list ({} tools, no '{}' to call)",
                tools.len(),
                self.tool
            ));
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": self.tool, "arguments": {"text": self.nonce},
        }});
        let what = format!("tools/call {}", self.tool);
        let answer = self.call(send(&body), id, &what).await?;
        let result = &answer.message["result"];
        if result["isError"] == json!(true) || !result.to_string().contains(&self.nonce) {
            bail!("{what}: the answer does not carry the text sent: {result}");
        }
        Ok(format!("tools/list ({} tools), {what}", tools.len()))
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let text = self.get_admin("/metrics").await?;
        let missing: Vec<&str> = GATEWAY_SERIES
            .iter()
            .copied()
            .filter(|name| !text.lines().any(|l| l.starts_with(name)))
            .collect();
        if !missing.is_empty() {
            bail!("/metrics lacks {}", missing.join(", "));
        }
        let answered = text
            .lines()
            .filter(|l| l.starts_with("shardgate_gateway_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if answered < 1.0 {
            bail!("/metrics counted no request");
        }
        Ok(format!(
            "{} series, {answered} requests counted",
            text.lines().filter(|l| !l.starts_with('#')).count()
        ))
    }
}

/// `GET url`'s body, or why not: no answer, or a status other than success (with the first
/// line of what it said). The admin listeners' probes, for `smoke` and `health` alike.
pub async fn get_ok(http: &Client, url: &str) -> anyhow::Result<String> {
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {}", first_line(&body));
    }
    Ok(body)
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or("")
}
