//! The HTTP verbs towards the upstream (POST, GET, DELETE), with its configured headers and a
//! scope's session headers.

use super::Http;
use super::handshake::Link;
use super::headers::insert;
use http::HeaderMap;
use serde_json::Value;
use shardgate_protocol::mcp::{self, HEADER_LAST_EVENT_ID};
use shardgate_protocol::traces;

impl Http {
    pub(super) fn poster(&self, link: &Link) -> Poster {
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
}

/// Sends to the upstream, with its configured headers and a scope's session headers.
#[derive(Clone)]
pub(super) struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl Poster {
    /// POSTs `msg`; within a call, with the call's trace context.
    pub(super) async fn post(
        &self,
        msg: &Value,
        mut extra: HeaderMap,
    ) -> reqwest::Result<reqwest::Response> {
        traces::inject(&mut extra);
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

    pub(super) async fn resume(&self, last_event: &str) -> reqwest::Result<reqwest::Response> {
        self.listen(Some(last_event)).await
    }

    /// A GET for the session's stream, from after `last_event` if given.
    pub(super) async fn listen(
        &self,
        last_event: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
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

    pub(super) async fn delete(&self) -> reqwest::Result<reqwest::Response> {
        self.client
            .delete(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(reqwest::Error::without_url)
    }
}
