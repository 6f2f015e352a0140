//! `subscriptions/listen` of stateless-era clients, served from a session-era upstream.
//!
//! A session-era upstream announces changes (list changes, updates of subscribed resources)
//! on its standalone stream, or on the stream of the call that caused them. For the clients of
//! an affinity key, the connector publishes every such announcement to the scope's [`Feed`]
//! instead of to whichever request happened to be running, and each listen stream takes what
//! it asked for from there, tagged with its subscription id. Resource subscriptions become the
//! upstream's `resources/subscribe` for as long as the stream is open.

use super::{Exchange, Inner};
use crate::upstream::Call;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{META_SUBSCRIPTION_ID, RpcError, code};
use tokio::sync::broadcast::{self, error::RecvError};

/// Announcements a slow listen stream may fall behind by before it misses some.
const BACKLOG: usize = 64;

/// One scope's announcements: (method, params).
pub(super) type Feed = broadcast::Sender<(String, Value)>;

pub(super) fn feed() -> Feed {
    broadcast::channel(BACKLOG).0
}

/// The notifications that announce a change, rather than belong to a call.
pub(super) fn is_change(method: &str) -> bool {
    matches!(
        method,
        "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated"
    )
}

/// What one listen stream asked for.
struct Filter {
    methods: Vec<&'static str>,
    uris: Vec<String>,
    honoured: Map<String, Value>,
}

impl Filter {
    fn parse(params: &Value) -> Result<Filter, RpcError> {
        let wanted = params
            .get("notifications")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                RpcError::new(
                    code::INVALID_PARAMS,
                    "subscriptions/listen needs params.notifications",
                )
            })?;
        let mut filter = Filter {
            methods: Vec::new(),
            uris: Vec::new(),
            honoured: Map::new(),
        };
        for (key, method) in [
            ("toolsListChanged", "notifications/tools/list_changed"),
            ("promptsListChanged", "notifications/prompts/list_changed"),
            (
                "resourcesListChanged",
                "notifications/resources/list_changed",
            ),
        ] {
            if wanted.get(key) == Some(&Value::Bool(true)) {
                filter.methods.push(method);
                filter.honoured.insert(key.into(), true.into());
            }
        }
        match wanted.get("resourceSubscriptions") {
            None => {}
            Some(Value::Array(uris)) => {
                filter.uris = uris
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
            }
            Some(_) => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "notifications.resourceSubscriptions must be an array of URIs",
                ));
            }
        }
        Ok(filter)
    }

    fn wants(&self, method: &str, params: &Value) -> bool {
        if method == "notifications/resources/updated" {
            return params
                .get("uri")
                .and_then(Value::as_str)
                .is_some_and(|uri| self.uris.iter().any(|u| u == uri));
        }
        self.methods.contains(&method)
    }
}

impl Inner {
    /// Serves one listen stream until the client goes away.
    pub(super) async fn listen(
        &self,
        ex: &Exchange,
        call: &Call,
        params: &Value,
        feed: &Feed,
    ) -> Result<Value, RpcError> {
        let mut filter = Filter::parse(params)?;
        let init = self.initialized(ex).await?;
        // Subscribed before anything is asked of the upstream, so that nothing it announces
        // from then on is missed.
        let mut announcements = feed.subscribe();
        let can_subscribe = init["capabilities"]["resources"]["subscribe"] == Value::Bool(true);
        let mut subscribed = Vec::new();
        if can_subscribe {
            for uri in &filter.uris {
                match self
                    .request(ex, "resources/subscribe", json!({ "uri": uri }))
                    .await
                {
                    Ok(_) => subscribed.push(uri.clone()),
                    Err(e) => {
                        tracing::debug!(upstream = %self.name, uri, error = %e, "subscription refused")
                    }
                }
            }
        }
        filter.uris = subscribed;
        filter
            .honoured
            .insert("resourceSubscriptions".into(), json!(filter.uris));
        if filter.uris.is_empty()
            && !params["notifications"]
                .as_object()
                .is_some_and(|n| n.contains_key("resourceSubscriptions"))
        {
            filter.honoured.remove("resourceSubscriptions");
        }
        // The listen request's own id: clients match the acknowledgement by it.
        let id = call.request_id.clone();
        call.peer.notify(
            "notifications/subscriptions/acknowledged",
            json!({
                "_meta": { META_SUBSCRIPTION_ID: id },
                "notifications": Value::Object(filter.honoured.clone()),
            }),
        );
        loop {
            tokio::select! {
                _ = call.cancel.cancelled() => break,
                got = announcements.recv() => match got {
                    Ok((method, params)) => {
                        if filter.wants(&method, &params) {
                            call.peer.notify(&method, tagged(params, &id));
                        }
                    }
                    // Changes are hints to refetch: a stream that fell behind is told that
                    // everything it listens to may have changed.
                    Err(RecvError::Lagged(_)) => {
                        for method in &filter.methods {
                            call.peer.notify(method, tagged(json!({}), &id));
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        for uri in &filter.uris {
            let _ = self
                .request(ex, "resources/unsubscribe", json!({ "uri": uri }))
                .await;
        }
        Ok(json!({ "_meta": { META_SUBSCRIPTION_ID: id } }))
    }
}

/// The subscription id a notification's (or a listen result's) `_meta` carries.
pub(super) fn subscription_of(params: &Value) -> Option<&Value> {
    params.get("_meta")?.get(META_SUBSCRIPTION_ID)
}

/// A stateless-era upstream's listen result, under the client's subscription id rather than
/// the id the connector gave the request.
pub(super) fn retagged_result(result: Value, id: &Value) -> Value {
    match subscription_of(&result) {
        Some(_) => tagged(result, id),
        None => result,
    }
}

/// `params` with the subscription id in `_meta`.
pub(super) fn tagged(mut params: Value, id: &Value) -> Value {
    if !params.is_object() {
        params = json!({});
    }
    if let Some(obj) = params.as_object_mut() {
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SUBSCRIPTION_ID.into(), id.clone());
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_what_was_asked_for() {
        let f = Filter::parse(&json!({"notifications": {
            "toolsListChanged": true, "promptsListChanged": false,
            "resourceSubscriptions": ["file:///a"]
        }}))
        .expect("valid");
        assert!(f.wants("notifications/tools/list_changed", &json!({})));
        assert!(!f.wants("notifications/prompts/list_changed", &json!({})));
        assert!(f.wants(
            "notifications/resources/updated",
            &json!({"uri": "file:///a"})
        ));
        assert!(!f.wants(
            "notifications/resources/updated",
            &json!({"uri": "file:///b"})
        ));
        assert!(Filter::parse(&json!({})).is_err());
    }

    #[test]
    fn notifications_are_tagged_with_the_subscription() {
        let t = tagged(json!({"uri": "x"}), &json!("listen:0"));
        assert_eq!(t["_meta"][META_SUBSCRIPTION_ID], "listen:0");
        assert_eq!(t["uri"], "x");
        let ended = json!({"_meta": {(META_SUBSCRIPTION_ID): 41}});
        assert_eq!(
            subscription_of(&retagged_result(ended, &json!(7))),
            Some(&json!(7))
        );
        assert_eq!(retagged_result(json!({}), &json!(7)), json!({}));
    }
}
