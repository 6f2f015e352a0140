//! The node's budgets: everything a client can make a node hold is counted against a limit of
//! `[limits]`, and what would go over is refused with an HTTP status and a JSON-RPC error that
//! names the limit — never taken on and failed later.
//!
//! Every unit taken is held by a guard ([`Held`], [`Tallied`]) that gives it back on drop, so
//! however a request ends (answered, cancelled, its client gone, its task aborted) the counts
//! return to what they were.

use crate::config::Limits;
use crate::replay::NodeReplay;
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde_json::json;
use shardgate_protocol::mcp::{RequestId, RpcError, code};
use shardgate_protocol::reply;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Seconds a client refused for a node-wide limit is told to wait before retrying.
const RETRY_AFTER_SECS: &str = "1";

/// A limit that was reached: which one, its value, and how the refusal is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The key under `[limits]`.
    pub key: &'static str,
    pub value: usize,
    /// What the limit counts, for the message.
    pub what: &'static str,
    /// 429 when the client itself holds too much, 503 when the node does.
    pub status: StatusCode,
}

impl Exhausted {
    pub fn new(key: &'static str, value: usize, what: &'static str, status: StatusCode) -> Self {
        Exhausted {
            key,
            value,
            what,
            status,
        }
    }

    /// The JSON-RPC error: the message and `data.limit` name the key.
    pub fn error(&self) -> RpcError {
        RpcError::new(
            code::UNAVAILABLE,
            format!(
                "limit reached: {} (limits.{} = {}); try again later",
                self.what, self.key, self.value
            ),
        )
        .with_data(json!({ "limit": format!("limits.{}", self.key), "value": self.value }))
    }

    /// The HTTP refusal, with `Retry-After`: both limits free up as calls finish.
    pub fn reply(&self, id: Option<&RequestId>) -> Response {
        let mut resp = reply::rpc_error(self.status, id, &self.error());
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
        resp
    }
}

/// A count with a ceiling.
#[derive(Debug)]
pub struct Gauge {
    limit: usize,
    used: AtomicUsize,
}

/// Units of a [`Gauge`], given back on drop.
#[derive(Debug)]
pub struct Held {
    gauge: Arc<Gauge>,
    units: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.used.fetch_sub(self.units, Ordering::AcqRel);
    }
}

impl Gauge {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Gauge {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Counts `units` more, all or none; false when they would go over the limit.
    fn reserve(&self, units: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(units).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }

    /// `units` more, all or none; `None` when they would go over the limit.
    pub fn take(self: &Arc<Self>, units: usize) -> Option<Held> {
        self.reserve(units).then(|| Held {
            gauge: self.clone(),
            units,
        })
    }

    /// `n` units, all or none, each held on its own (given back when its own work ends).
    pub fn take_each(self: &Arc<Self>, n: usize) -> Option<Vec<Held>> {
        self.reserve(n).then(|| {
            (0..n)
                .map(|_| Held {
                    gauge: self.clone(),
                    units: 1,
                })
                .collect()
        })
    }
}

/// Counts with one ceiling per owner (a principal), forgetting owners that hold nothing.
#[derive(Debug)]
pub struct Tally {
    limit: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One unit of one owner's [`Tally`], given back on drop.
#[derive(Debug)]
pub struct Tallied {
    tally: Arc<Tally>,
    owner: String,
}

impl Drop for Tallied {
    fn drop(&mut self) {
        let mut counts = self.tally.lock();
        if let Some(n) = counts.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}

impl Tally {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Tally {
            limit,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// One more unit for `owner`; `None` when it holds its limit already.
    pub fn take(self: &Arc<Self>, owner: &str) -> Option<Tallied> {
        let mut counts = self.lock();
        let n = counts.entry(owner.to_owned()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Tallied {
            tally: self.clone(),
            owner: owner.to_owned(),
        })
    }

    /// One more unit for `owner`, whatever it holds: for what exists already (a session
    /// continued from the store), which a limit cannot undo.
    pub fn count(self: &Arc<Self>, owner: &str) -> Tallied {
        *self.lock().entry(owner.to_owned()).or_insert(0) += 1;
        Tallied {
            tally: self.clone(),
            owner: owner.to_owned(),
        }
    }

    /// Units held, all owners together.
    pub fn total(&self) -> usize {
        self.lock().values().sum()
    }
}

/// The node-wide budgets, shared by every handler and upstream of a node.
pub struct Budgets {
    pub limits: Limits,
    /// Client requests being served, both eras.
    pub requests: Arc<Gauge>,
    /// Event-stream bytes kept for replay.
    pub replay: Arc<NodeReplay>,
    /// Calls parked for their client's answers.
    pub parked: Arc<Gauge>,
    /// stdio upstream processes, node-wide and per principal.
    pub processes: Arc<Gauge>,
    pub processes_per_principal: Arc<Tally>,
    /// Sessions and GET streams per verified principal (anonymous clients are bounded by the
    /// node's own limits alone: they are everyone).
    pub sessions_per_principal: Arc<Tally>,
    pub streams_per_principal: Arc<Tally>,
}

impl Budgets {
    pub fn new(limits: &Limits) -> Self {
        Budgets {
            limits: limits.clone(),
            requests: Gauge::new(limits.requests),
            replay: NodeReplay::new(limits.replay_bytes),
            parked: Gauge::new(limits.parked_calls),
            processes: Gauge::new(limits.stdio_processes),
            processes_per_principal: Tally::new(limits.stdio_processes_per_principal),
            sessions_per_principal: Tally::new(limits.sessions_per_principal),
            streams_per_principal: Tally::new(limits.streams_per_principal),
        }
    }

    /// A place for one more session of `principal` on this node; `None` for anonymous
    /// clients.
    pub fn session_for(&self, principal: &str) -> Result<Option<Tallied>, Exhausted> {
        per_principal(
            &self.sessions_per_principal,
            principal,
            "sessions_per_principal",
            "sessions one principal holds on this node",
        )
    }

    /// A place for one more GET stream of `principal` on this node; `None` for anonymous
    /// clients.
    pub fn stream_for(&self, principal: &str) -> Result<Option<Tallied>, Exhausted> {
        per_principal(
            &self.streams_per_principal,
            principal,
            "streams_per_principal",
            "GET streams one principal holds open on this node",
        )
    }

    /// Admits `n` client requests: one unit each of the node's budget and, for a session, of
    /// the session's. All or none.
    pub fn admit(
        &self,
        session: Option<&Arc<Gauge>>,
        n: usize,
    ) -> Result<Vec<Admitted>, Exhausted> {
        let mine = match session {
            Some(gauge) => Some(gauge.take_each(n).ok_or_else(|| {
                Exhausted::new(
                    "requests_per_session",
                    gauge.limit(),
                    "requests in flight in this session",
                    StatusCode::TOO_MANY_REQUESTS,
                )
            })?),
            None => None,
        };
        let node = self.requests.take_each(n).ok_or_else(|| {
            Exhausted::new(
                "requests",
                self.requests.limit(),
                "requests this node serves at once",
                StatusCode::SERVICE_UNAVAILABLE,
            )
        })?;
        let mut mine = mine.map(Vec::into_iter);
        Ok(node
            .into_iter()
            .map(|node| Admitted {
                _node: node,
                _session: mine.as_mut().and_then(Iterator::next),
            })
            .collect())
    }

    /// The refusal for a node that holds as many sessions as it may.
    pub fn sessions_exhausted(&self) -> Exhausted {
        Exhausted::new(
            "sessions",
            self.limits.sessions,
            "sessions this node holds",
            StatusCode::SERVICE_UNAVAILABLE,
        )
    }
}

fn per_principal(
    tally: &Arc<Tally>,
    principal: &str,
    key: &'static str,
    what: &'static str,
) -> Result<Option<Tallied>, Exhausted> {
    if principal == shardgate_protocol::internal::ANONYMOUS {
        return Ok(None);
    }
    tally
        .take(principal)
        .map(Some)
        .ok_or_else(|| Exhausted::new(key, tally.limit(), what, StatusCode::TOO_MANY_REQUESTS))
}

/// One admitted request, counted until it is dropped.
#[derive(Debug)]
pub struct Admitted {
    _node: Held,
    _session: Option<Held>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_gives_back_what_its_guards_held() {
        let g = Gauge::new(3);
        let two = g.take_each(2).expect("fits");
        assert!(g.take(2).is_none(), "all or none");
        let one = g.take(1).expect("fits");
        assert_eq!(g.used(), 3);
        drop(two);
        assert_eq!(g.used(), 1);
        drop(one);
        assert_eq!(g.used(), 0);
    }

    #[test]
    fn a_tally_counts_each_owner_on_its_own_and_forgets_idle_ones() {
        let t = Tally::new(2);
        let a = [t.take("a").expect("1"), t.take("a").expect("2")];
        assert!(t.take("a").is_none());
        let b = t.take("b").expect("another owner");
        assert_eq!(t.total(), 3);
        drop(a);
        drop(b);
        assert_eq!(t.total(), 0);
        assert!(t.lock().is_empty());
    }

    #[test]
    fn admission_is_all_or_none_and_names_the_limit() {
        let budgets = Budgets::new(&Limits {
            requests: 4,
            ..Limits::default()
        });
        let session = Gauge::new(2);
        let refused = budgets
            .admit(Some(&session), 3)
            .expect_err("over the session's");
        assert_eq!(refused.key, "requests_per_session");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((session.used(), budgets.requests.used()), (0, 0));
        let held = budgets.admit(Some(&session), 2).expect("fits");
        let other = budgets.admit(None, 2).expect("fits the node");
        let refused = budgets.admit(None, 1).expect_err("over the node's");
        assert_eq!(refused.key, "requests");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        let err = refused.error().to_json();
        assert_eq!(err["data"]["limit"], "limits.requests");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("limits.requests = 4"))
        );
        drop((held, other));
        assert_eq!((session.used(), budgets.requests.used()), (0, 0));
    }
}
