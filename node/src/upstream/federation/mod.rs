//! [`Federation`]: several upstreams behind one session, as if they were one MCP server.
//!
//! Names clash between upstreams (two servers may both have an `echo` tool), so what a member
//! lists under a name (tools, prompts, resources, resource templates) is shown as
//! `<prefix>__<name>`, and calls are routed back by that prefix with the original name restored.
//! Resource URIs are identifiers clients hand back as they are, so they are never rewritten;
//! a read goes to the member that listed the URI (see [`routing`]).
//!
//! Requests about the server as a whole are fanned out and merged ([`merge`]: `initialize`,
//! `server/discover`; here: `ping`, `logging/setLevel`); lists are paged member by member
//! ([`lists`]); `subscriptions/listen` is held open on every member at once ([`listen`]).
//! Everything else a member says — notifications, requests to the client, results — passes
//! through unchanged but for the prefixed names.
//!
//! Each member gets its own slice of the session's state ([`state`]), since their keys clash
//! just as their names do.

mod listen;
mod lists;
mod merge;
mod routing;
mod state;

#[cfg(test)]
mod tests;

use super::{BoxFuture, Call, Peer, Scope, Upstream, UpstreamState};
use futures_util::future::join_all;
use serde_json::{Value, json};
use shardgate_protocol::mcp::{RpcError, code};
use std::future::Future;
use std::sync::Arc;

/// One upstream of a federation.
pub struct Member {
    /// The configured name: how logs and the session's state refer to it.
    pub name: String,
    /// What its names are shown under (`<prefix>__<name>`); unique within the federation.
    pub prefix: String,
    pub upstream: Arc<dyn Upstream>,
}

/// Several upstreams served as one; see the module documentation.
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Member>,
    views: state::Views,
}

impl Federation {
    /// Members are consulted in this order wherever order matters (lists, fallbacks).
    pub fn new(members: Vec<Member>) -> Self {
        Federation {
            inner: Arc::new(Inner {
                members,
                views: state::Views::default(),
            }),
        }
    }
}

impl Upstream for Federation {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.serve(&call).await })
    }

    fn notification(&self, method: &str, params: &Value, scope: &Scope, state: &UpstreamState) {
        for i in self.inner.active(state) {
            let member = &self.inner.members[i];
            let lease = self.inner.views.open(scope, i, &member.name, state);
            member
                .upstream
                .notification(method, params, scope, &lease.state);
            self.inner
                .views
                .sync_back(scope, i, &member.name, state, &lease);
        }
    }

    fn close(&self, scope: &Scope) {
        for member in &self.inner.members {
            member.upstream.close(scope);
        }
        self.inner.views.close(scope);
    }

    /// Lists, `server/discover` and listen streams reach every member, so one member that
    /// keeps client state makes every call depend on the scope.
    fn keeps_client_state(&self) -> bool {
        self.inner
            .members
            .iter()
            .any(|m| m.upstream.keeps_client_state())
    }
}

impl Inner {
    async fn serve(self: &Arc<Self>, call: &Call) -> Result<Value, RpcError> {
        match call.method.as_str() {
            "initialize" => merge::initialize(self, call).await,
            "server/discover" => merge::discover(self, call).await,
            "ping" | "logging/setLevel" => self.fan_out(call).await,
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                lists::list(self, call).await
            }
            "tools/call" => routing::named(self, call, "tool").await,
            "prompts/get" => routing::named(self, call, "prompt").await,
            "completion/complete" => routing::complete(self, call).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                routing::resource(self, call).await
            }
            "subscriptions/listen" => listen::listen(self, call).await,
            _ => self.first_that_knows(call).await,
        }
    }

    /// The members this scope uses, in order: all but those whose `initialize` failed.
    fn active(&self, state: &UpstreamState) -> Vec<usize> {
        let excluded = state::excluded(state);
        (0..self.members.len())
            .filter(|&i| !excluded.contains(&self.members[i].name))
            .collect()
    }

    fn by_name(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Sends `method` with `params` to member `i`, on behalf of `call`.
    fn forward(
        self: &Arc<Self>,
        call: &Call,
        i: usize,
        method: &str,
        params: Value,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send + 'static {
        self.forward_via(call, i, method, params, call.peer.clone())
    }

    /// [`Inner::forward`], with the member talking to the client through `peer`.
    fn forward_via(
        self: &Arc<Self>,
        call: &Call,
        i: usize,
        method: &str,
        params: Value,
        peer: Arc<dyn Peer>,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send + 'static {
        let member = &self.members[i];
        let lease = self.views.open(&call.scope, i, &member.name, &call.state);
        let sub = Call {
            method: method.to_owned(),
            request_id: call.request_id.clone(),
            params,
            peer,
            session_peer: call.session_peer.clone(),
            scope: call.scope.clone(),
            principal: call.principal.clone(),
            initialize: call.initialize.clone(),
            state: lease.state.clone(),
            cancel: call.cancel.child_token(),
            protocol_version: call.protocol_version.clone(),
            client_capabilities: call.client_capabilities.clone(),
            param_headers: call.param_headers.clone(),
            accepted: call.accepted.clone(),
        };
        let running = member.upstream.call(sub);
        // Also when the call is dropped half way (cancelled): what the member changed so far
        // is real.
        let guard = SyncBack {
            inner: self.clone(),
            scope: call.scope.clone(),
            index: i,
            session: call.state.clone(),
            lease,
        };
        async move {
            let result = running.await;
            drop(guard);
            result
        }
    }

    /// Sends the call to every member; `{}` if any of them took it (these results are `{}` by
    /// definition, and session-era clients check that exactly), else the first error.
    async fn fan_out(self: &Arc<Self>, call: &Call) -> Result<Value, RpcError> {
        let active = self.active(&call.state);
        let results = join_all(
            active
                .iter()
                .map(|&i| self.forward(call, i, &call.method, call.params.clone())),
        )
        .await;
        self.any_took(call, &active, results)?;
        Ok(json!({}))
    }

    /// `Ok` if any of the `active` members' `results` is a success, else the first error (or
    /// "no members"); the failures are logged either way.
    fn any_took(
        &self,
        call: &Call,
        active: &[usize],
        results: Vec<Result<Value, RpcError>>,
    ) -> Result<(), RpcError> {
        let mut first_error = None;
        let mut any = false;
        for (&i, result) in active.iter().zip(results) {
            match result {
                Ok(_) => any = true,
                Err(e) => {
                    self.failed(i, &call.method, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        match (any, first_error) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(e),
            (false, None) => Err(no_members()),
        }
    }

    /// A method we do not know: the first member that knows it answers.
    async fn first_that_knows(self: &Arc<Self>, call: &Call) -> Result<Value, RpcError> {
        for i in self.active(&call.state) {
            match self
                .forward(call, i, &call.method, call.params.clone())
                .await
            {
                Err(e) if e.code == code::METHOD_NOT_FOUND => continue,
                answer => return answer,
            }
        }
        Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found"))
    }

    /// Logs a member's failure that the client will not see (another member answered).
    fn failed(&self, i: usize, method: &str, e: &RpcError) {
        tracing::warn!(member = %self.members[i].name, method, error = %e, "federated upstream failed");
    }
}

/// Copies a member's view back into the session when its call ends.
struct SyncBack {
    inner: Arc<Inner>,
    scope: Scope,
    index: usize,
    session: UpstreamState,
    lease: state::Lease,
}

impl Drop for SyncBack {
    fn drop(&mut self) {
        let name = &self.inner.members[self.index].name;
        self.inner
            .views
            .sync_back(&self.scope, self.index, name, &self.session, &self.lease);
    }
}

/// What a federation of no members answers (the node never builds one, but `new` allows it).
fn no_members() -> RpcError {
    RpcError::new(code::UNAVAILABLE, "no upstream is available")
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, message)
}
