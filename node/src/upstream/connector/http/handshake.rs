//! The upstream session of a scope: initialized once ([`Http::handshake`]), found again in the
//! scope's state ([`Link`]), and held while the scope uses it ([`Held`]), with a listener on
//! its standalone stream.

use super::failure::{Failure, broken};
use super::listening::Listening;
use super::{Http, lock};
use crate::upstream::UpstreamState;
use crate::upstream::connector::{Exchange, STATE_INITIALIZE_RESULT, notification};
use http::HeaderMap;
use serde_json::Value;
use shardgate_protocol::mcp;
use tokio_util::sync::CancellationToken;

/// The upstream's session id, in the scope's state.
const STATE_SESSION_ID: &str = "upstreamSessionId";

/// How to address the upstream session of a scope.
#[derive(Clone, Debug, Default)]
pub(super) struct Link {
    pub(super) session_id: Option<String>,
    pub(super) version: Option<String>,
}

impl Link {
    pub(super) fn of(state: &UpstreamState) -> Option<Link> {
        state.read(|s| {
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
pub(super) struct Held {
    pub(super) link: Link,
    listener: CancellationToken,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.listener.cancel();
    }
}

impl Http {
    /// The scope's upstream session, initialized on first use.
    pub(super) async fn link(&self, ex: &Exchange) -> Result<Link, Failure> {
        if let Some(link) = Link::of(&ex.state) {
            self.hold(ex, &link);
            return Ok(link);
        }
        Ok(self.handshake(ex, None).await?.0)
    }

    /// Initializes an upstream session for the scope, unless another call just did (with
    /// `stale`: unless the scope's session is no longer that one).
    pub(super) async fn handshake(
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
                max_message_bytes: self.max_message_bytes,
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
}
