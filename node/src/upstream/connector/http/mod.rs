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
//! fails calls fast for a while, so a dead upstream costs its clients no timeouts. What is read
//! from the upstream is bounded: a JSON answer or an SSE event larger than the configured
//! message size ends its call with an error instead of being buffered.

mod answer;
mod breaker;
mod failure;
mod handshake;
mod headers;
mod in_flight;
mod listening;
mod poster;
#[cfg(test)]
mod tests;

use super::{Exchange, notification, unavailable};
use crate::config::{HttpConfig, UpstreamEra};
use crate::metrics::METRICS;
use crate::upstream::{Scope, UpstreamState};
use breaker::Breaker;
use failure::{Failure, broken, redact, too_large};
use handshake::{Held, Link};
use headers::{keep_cookies, send_cookies};
use http::{HeaderMap, HeaderName, HeaderValue};
use in_flight::InFlight;
use serde_json::{Value, json};
use shardgate_protocol::mcp::RpcError;
use shardgate_protocol::metered;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::Instrument;
use tracing::field::Empty;

/// The longest we wait before resuming, whatever `retry` the upstream asked for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Http {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
    stateless: bool,
    timeout: Duration,
    breaker: Arc<Breaker>,
    /// The most a JSON body or an SSE event from the upstream may hold, in bytes.
    max_message_bytes: usize,
    /// One (re)initialization at a time per scope.
    handshakes: Mutex<HashMap<Scope, Arc<tokio::sync::Mutex<()>>>>,
    /// The upstream sessions this node uses, to end them when their scope ends.
    sessions: Mutex<HashMap<Scope, Held>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Http {
    /// An upstream at `config.url`, whose messages (a JSON body, an SSE event) may hold at most
    /// `max_message_bytes` bytes.
    pub fn new(name: &str, config: &HttpConfig, max_message_bytes: usize) -> Result<Self, String> {
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
        let breaker = Arc::new(Breaker::new(
            config.breaker_failures,
            Duration::from_secs(config.breaker_open_secs),
        ));
        let watched: Arc<dyn crate::metrics::Breaker> = breaker.clone();
        METRICS.watch_breaker(name, Arc::downgrade(&watched));
        Ok(Http {
            name: name.to_owned(),
            url,
            headers,
            client,
            stateless: config.era == UpstreamEra::Stateless,
            timeout: Duration::from_secs(config.request_timeout_secs),
            breaker,
            max_message_bytes,
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
        let errors = || {
            METRICS
                .upstream_errors
                .with_label_values(&[self.name.as_str()])
                .inc();
        };
        if let Err(wait) = self.breaker.admit() {
            errors();
            return Err(unavailable(
                &self.name,
                format!(
                    "failing repeatedly; not tried again for {}s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let span = shardgate_protocol::exported_span!(
            "node.upstream",
            otel.kind = "client",
            otel.status_code = Empty,
            shardgate.upstream = %self.name,
            mcp.class = metered::method_class(method),
        );
        let started = std::time::Instant::now();
        let attempt = attempt.instrument(span.clone());
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Broken(format!(
                "no answer to {method} within {}s",
                self.timeout.as_secs()
            ))),
        };
        METRICS
            .upstream_seconds
            .with_label_values(&[self.name.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let failed = matches!(outcome, Err(Failure::Broken(_) | Failure::SessionGone));
        if failed {
            errors();
            span.record("otel.status_code", "error");
        }
        self.breaker.record(!failed);
        outcome.map_err(|f| match f {
            Failure::Rpc(e) => e,
            Failure::SessionGone => unavailable(&self.name, "the upstream session was lost twice"),
            Failure::TooLarge(limit) => unavailable(&self.name, too_large(limit)),
            Failure::Broken(problem) => unavailable(&self.name, redact(&problem, &self.url)),
        })
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
        if !matches!(answer, Err(Failure::Broken(_) | Failure::TooLarge(_))) {
            in_flight.armed = false;
        }
        answer
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
