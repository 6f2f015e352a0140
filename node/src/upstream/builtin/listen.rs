//! Change notifications: the process-wide feed of list and resource changes, and the
//! stateless era's `subscriptions/listen` streams that forward it (SEP-2575).
//!
//! A change is announced by one request (the `test_trigger_*` tools) and must reach listen
//! streams opened by other requests, so the feed is a broadcast channel shared by every call.
//! Session-era sessions have no listen stream; the announcing session is told on its own
//! response stream.

use super::{invalid_params, resources};
use crate::upstream::Call;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{Era, META_SUBSCRIPTION_ID, RpcError};
use tokio::sync::broadcast::{self, error::RecvError};

/// Changes a slow listen stream may fall behind by before it skips some (and then resends
/// every kind it listens to, as list changes are only hints to refetch).
const BACKLOG: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Change {
    ToolsListChanged,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated(String),
}

impl Change {
    fn method(&self) -> &'static str {
        match self {
            Change::ToolsListChanged => "notifications/tools/list_changed",
            Change::PromptsListChanged => "notifications/prompts/list_changed",
            Change::ResourcesListChanged => "notifications/resources/list_changed",
            Change::ResourceUpdated(_) => "notifications/resources/updated",
        }
    }

    /// The notification's params; on a listen stream they name the subscription.
    fn params(&self, subscription: Option<&Value>) -> Value {
        let mut params = Map::new();
        if let Some(id) = subscription {
            params.insert("_meta".into(), json!({ META_SUBSCRIPTION_ID: id }));
        }
        if let Change::ResourceUpdated(uri) = self {
            params.insert("uri".into(), uri.clone().into());
        }
        Value::Object(params)
    }
}

pub(super) struct Changes {
    tx: broadcast::Sender<Change>,
}

impl Changes {
    pub fn new() -> Self {
        Changes {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// Tells every open listen stream that wants it, and in the session era the calling session
    /// (resource updates only if it subscribed to the resource).
    pub fn announce(&self, call: &Call, era: Era, change: Change) {
        let tell_caller = match &change {
            Change::ResourceUpdated(uri) => resources::is_subscribed(&call.state, uri),
            _ => true,
        };
        if era == Era::Session && tell_caller {
            call.peer.notify(change.method(), change.params(None));
        }
        // No listener is not a failure: the change is simply not news to anyone.
        let _ = self.tx.send(change);
    }

    /// Serves `subscriptions/listen` until the client goes away: the acknowledgement first, then
    /// each wanted change, every one tagged with the subscription id.
    pub async fn listen(&self, call: &Call) -> Result<Value, RpcError> {
        let filter = Filter::parse(&call.params)?;
        // The subscription id is the listen request's own JSON-RPC id: clients match the
        // acknowledgement, and route each change, by it.
        let id = call.request_id.clone();
        // Subscribed before the acknowledgement, so nothing announced after it is missed.
        let mut rx = self.tx.subscribe();
        call.peer.notify(
            "notifications/subscriptions/acknowledged",
            json!({"_meta": {META_SUBSCRIPTION_ID: id}, "notifications": filter.honoured()}),
        );
        loop {
            tokio::select! {
                _ = call.cancel.cancelled() => break,
                got = rx.recv() => match got {
                    Ok(change) => {
                        if filter.wants(&change) {
                            call.peer.notify(change.method(), change.params(Some(&id)));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        for change in filter.everything() {
                            call.peer.notify(change.method(), change.params(Some(&id)));
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        Ok(json!({ "_meta": { META_SUBSCRIPTION_ID: id } }))
    }
}

/// What a listen stream asked for, cut down to what we can deliver.
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    /// `None` when the client asked for no resource updates.
    uris: Option<Vec<String>>,
}

impl Filter {
    fn parse(params: &Value) -> Result<Filter, RpcError> {
        let Some(wanted) = params.get("notifications").and_then(Value::as_object) else {
            return Err(invalid_params(
                "subscriptions/listen needs params.notifications",
            ));
        };
        let flag = |key: &str| wanted.get(key) == Some(&Value::Bool(true));
        let uris = match wanted.get("resourceSubscriptions") {
            None => None,
            // Only resources we have can ever change.
            Some(Value::Array(uris)) => Some(
                uris.iter()
                    .filter_map(Value::as_str)
                    .filter(|uri| resources::exists(uri))
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => {
                return Err(invalid_params(
                    "notifications.resourceSubscriptions must be an array of URIs",
                ));
            }
        };
        Ok(Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        })
    }

    fn honoured(&self) -> Value {
        let mut honoured = Map::new();
        for (key, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                honoured.insert(key.into(), true.into());
            }
        }
        if let Some(uris) = &self.uris {
            honoured.insert("resourceSubscriptions".into(), uris.clone().into());
        }
        Value::Object(honoured)
    }

    fn wants(&self, change: &Change) -> bool {
        match change {
            Change::ToolsListChanged => self.tools,
            Change::PromptsListChanged => self.prompts,
            Change::ResourcesListChanged => self.resources,
            Change::ResourceUpdated(uri) => self.uris.as_ref().is_some_and(|u| u.contains(uri)),
        }
    }

    /// One change of every kind this filter wants.
    fn everything(&self) -> Vec<Change> {
        let uris = self
            .uris
            .iter()
            .flatten()
            .cloned()
            .map(Change::ResourceUpdated);
        [
            Change::ToolsListChanged,
            Change::PromptsListChanged,
            Change::ResourcesListChanged,
        ]
        .into_iter()
        .chain(uris)
        .filter(|c| self.wants(c))
        .collect()
    }
}
