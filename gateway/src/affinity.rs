//! Stateless-era routing: which node a 2026-07-28 request goes to, and the correlation keys
//! the gateway issues so that a client's upstream state is found again and never shared.
//!
//! A call needs one of three things ([`Placement`]), and only its upstream knows which: the
//! builtin's `counter` needs its client's state, its change triggers need the node everyone's
//! listen streams are on, `echo` needs nothing; a stdio upstream needs its client's process
//! for every call. Gateways do not read the nodes' configuration, so every node says it on
//! every answer (`x-shardgate-placement`), and the gateway remembers it per method and name.
//! A call it has not heard of yet goes where anything can be served: to its client's key, or
//! for a client without one, to the shared node under a key issued there.
//!
//! The decision ([`decide`]):
//! - **client**: by the authenticated principal; else by the key the client sent back (the
//!   header, the cookie, or inside the `requestState` of an `input_required` retry); else by
//!   a key issued now (`Shardgate-Client-Key` header and cookie on the answer).
//! - `tasks/*` with a task id (`Mcp-Name`, SEP-2663), unless the client's state holds it:
//!   by the task id, so that every request of one task reaches one node.
//! - **anywhere**: round-robin over the `Active` members, by weight (see [`Spread`]).
//! - **shared**: by one fixed key.
//!
//! The issued key is 192 bits from the OS CSPRNG, so one client cannot guess another's: it is
//! a bearer capability for that client's upstream state, as SEP-2567 advises for
//! unauthenticated handles, and its state is forgotten when idle. Any gateway takes any
//! well-formed key and needs no secret to do so; a key a client made up itself reaches a scope
//! nobody else has.

use crate::config::AffinityKey;
use http::{HeaderMap, HeaderValue, header};
use shardgate_protocol::internal::Placement;
use shardgate_protocol::internal::{CLIENT_SCOPE, key_in_request_state};
use shardgate_raft::Ring;
use shardgate_raft::membership::MemberState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The response header that issues a client its correlation key, and the request header it
/// sends it back in. SEP-2567 leaves the name to gateways ("a cookie / gateway-issued
/// header"); it is outside `x-shardgate-`, whose headers are stripped from clients.
pub const KEY_HEADER: &str = "shardgate-client-key";
/// The same key as a cookie, for clients that keep cookies (browsers, httpx) without knowing
/// about the header.
pub const KEY_COOKIE: &str = "shardgate_client_key";
/// The ring key of what a node's upstream shares between all its clients.
const SHARED: &str = "shared";
/// (method, name) pairs remembered; past this the table starts again, so that clients sending
/// made-up names cost spreading for a moment, never memory.
const MAX_LEARNED: usize = 1024;
/// Keys tried per member to find one a given node owns.
const TRIES_PER_MEMBER: usize = 64;

/// What the gateway knows of one stateless-era request.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// What `Mcp-Name` mirrors for methods that have one (the tool, prompt or resource).
    pub name: Option<&'a str>,
    /// The task a `tasks/*` request is about.
    pub task: Option<&'a str>,
    /// The verified principal; `None` for anonymous clients (every client, until auth).
    pub principal: Option<&'a str>,
    /// A well-formed key the client sent back.
    pub key: Option<&'a str>,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Anywhere,
    Shared,
    Task(&'a str),
    Principal(&'a str),
    Key(&'a str),
    /// A client without a key whose call needs client state: a key issued now.
    NewKey,
    /// A call not heard of yet from a client without a key: a key issued now that the shared
    /// node owns, so the call lands where it would be right whatever it turns out to need.
    NewSharedKey,
}

/// The pure routing decision; `placement` is what nodes said of this method and name.
pub fn decide<'a>(
    mode: AffinityKey,
    placement: Option<Placement>,
    req: &Request<'a>,
) -> Decision<'a> {
    let placement = match mode {
        AffinityKey::Always => Some(Placement::Client),
        AffinityKey::Needed => placement,
    };
    let correlated = req
        .principal
        .map(Decision::Principal)
        .or(req.key.map(Decision::Key));
    match (placement, req.task) {
        // A task of a client-state upstream lives in that state (a stdio process's tasks).
        (Some(Placement::Client), task) => correlated
            .or(task.map(Decision::Task))
            .unwrap_or(Decision::NewKey),
        (_, Some(task)) => Decision::Task(task),
        (Some(Placement::Anywhere), None) => Decision::Anywhere,
        (Some(Placement::Shared), None) => Decision::Shared,
        (None, None) => correlated.unwrap_or(Decision::NewSharedKey),
    }
}

/// Where a request goes, in the terms of the forwarder.
#[derive(Debug)]
pub struct Routed {
    /// The ring key.
    pub key: String,
    /// The correlation key whose upstream state the call runs in, if it needs one.
    pub scope: Option<String>,
    /// A key issued to the client with this answer.
    pub issued: Option<String>,
}

/// The gateway's stateless-era routing state: what nodes said, and the spread.
pub struct Affinity {
    mode: AffinityKey,
    /// method → name ("" for none) → placement.
    learned: RwLock<HashMap<String, HashMap<String, Placement>>>,
    spread: RwLock<Arc<Spread>>,
    next: AtomicUsize,
}

impl Affinity {
    pub fn new(mode: AffinityKey) -> Self {
        Affinity {
            mode,
            learned: RwLock::default(),
            spread: RwLock::new(Arc::new(Spread::default())),
            next: AtomicUsize::new(0),
        }
    }

    /// What nodes said of calls of `method` and `name`.
    pub fn placement(&self, method: &str, name: Option<&str>) -> Option<Placement> {
        let learned = self.learned.read().unwrap_or_else(PoisonError::into_inner);
        learned.get(method)?.get(name.unwrap_or("")).copied()
    }

    /// Remembers what a node said of calls of `method` and `name`.
    pub fn learn(&self, method: &str, name: Option<&str>, placement: Placement) {
        if self.placement(method, name) == Some(placement) {
            return;
        }
        let mut learned = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        if learned.values().map(HashMap::len).sum::<usize>() >= MAX_LEARNED {
            learned.clear();
        }
        learned
            .entry(method.to_owned())
            .or_default()
            .insert(name.unwrap_or("").to_owned(), placement);
    }

    /// Routes `req` under `ring`.
    pub fn route(&self, ring: &Ring, req: &Request<'_>) -> Routed {
        let placement = self.placement(req.method, req.name);
        let scoped = |scope: String| Routed {
            key: scope.clone(),
            scope: Some(scope),
            issued: None,
        };
        let unscoped = |key: String| Routed {
            key,
            scope: None,
            issued: None,
        };
        match decide(self.mode, placement, req) {
            Decision::Anywhere => unscoped(self.next_spread_key(ring)),
            Decision::Shared => unscoped(SHARED.to_owned()),
            Decision::Task(id) => unscoped(format!("task/{id}")),
            Decision::Principal(p) => scoped(format!("principal/{p}")),
            Decision::Key(k) => scoped(client_scope(k)),
            Decision::NewKey => issue(shardgate_protocol::session_id::mint()),
            Decision::NewSharedKey => issue(key_owned_with(ring, SHARED)),
        }
    }

    /// Routes a request any node can answer.
    pub fn route_anywhere(&self, ring: &Ring) -> Routed {
        Routed {
            key: self.next_spread_key(ring),
            scope: None,
            issued: None,
        }
    }

    fn next_spread_key(&self, ring: &Ring) -> String {
        let current = self
            .spread
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let spread = if current.epoch == ring.epoch() && !current.keys.is_empty() {
            current
        } else {
            let fresh = Arc::new(Spread::new(ring));
            *self.spread.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
            fresh
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match spread.keys.len() {
            // No member to spread over: the forwarder says so.
            0 => SHARED.to_owned(),
            len => spread.keys[n % len].clone(),
        }
    }
}

fn client_scope(key: &str) -> String {
    format!("{CLIENT_SCOPE}{key}")
}

fn issue(key: String) -> Routed {
    Routed {
        key: client_scope(&key),
        scope: Some(client_scope(&key)),
        issued: Some(key),
    }
}

/// A fresh client key that the owner of `anchor` owns too (or, if none turns up, any fresh
/// key: the call then simply runs at its owner).
fn key_owned_with(ring: &Ring, anchor: &str) -> String {
    let Some(owner) = ring.owner(anchor.as_bytes()).map(|m| m.id.clone()) else {
        return shardgate_protocol::session_id::mint();
    };
    let tries = TRIES_PER_MEMBER * ring.membership().members.len().max(1);
    let mut key = shardgate_protocol::session_id::mint();
    for _ in 0..tries {
        if ring.owns(&owner, client_scope(&key).as_bytes()) {
            break;
        }
        key = shardgate_protocol::session_id::mint();
    }
    key
}

/// One ring key per unit of weight of each `Active` member, owned by that member. Calls that
/// can run anywhere take them in turn: an exact spread, where random keys would follow the
/// ring's uneven shares (up to ~1.1× the mean with 256 virtual nodes). Because each key is
/// owned by its member, ownership checks, 421s and retries work for them as for any key: a
/// node that has left answers 421, and the retry goes to the key's new owner.
#[derive(Default)]
pub struct Spread {
    epoch: u64,
    keys: Vec<String>,
}

impl Spread {
    pub fn new(ring: &Ring) -> Spread {
        let active: Vec<_> = ring
            .membership()
            .members
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .collect();
        let mut found: HashMap<&str, String> = HashMap::new();
        for i in 0..TRIES_PER_MEMBER * active.len() {
            if found.len() == active.len() {
                break;
            }
            let key = format!("spread/{i}");
            if let Some(owner) = ring.owner(key.as_bytes()) {
                found.entry(owner.id.0.as_str()).or_insert(key);
            }
        }
        let keys = active
            .iter()
            .filter_map(|m| Some((found.get(m.id.0.as_str())?, m.weight)))
            .flat_map(|(key, weight)| std::iter::repeat_n(key.clone(), weight as usize))
            .collect();
        Spread {
            epoch: ring.epoch(),
            keys,
        }
    }
}

/// The well-formed key a client sent back: the header, else the cookie, else the one the
/// node put in the `requestState` of an `input_required` result this request retries.
pub fn presented_key<'a>(
    headers: &'a HeaderMap,
    request_state: Option<&'a str>,
) -> Option<&'a str> {
    let from_header = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let from_cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(KEY_COOKIE)?.strip_prefix('='))
    };
    from_header
        .filter(|k| well_formed(k))
        .or_else(|| from_cookie().filter(|k| well_formed(k)))
        .or_else(|| {
            request_state
                .and_then(key_in_request_state)
                .filter(|k| well_formed(k))
        })
}

/// Shaped as the keys we issue: 32 URL-safe base64 characters (192 bits). Anything else is
/// ignored, and the client is issued a key.
fn well_formed(key: &str) -> bool {
    key.len() == 32
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hands `key` to the client: as a header, and as a cookie (`Secure` when the client reached
/// us over TLS, so that it is not sent back in the clear).
pub fn hand_out(headers: &mut HeaderMap, key: &str, tls: bool) {
    if let Ok(v) = HeaderValue::from_str(key) {
        headers.insert(KEY_HEADER, v);
    }
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!("{KEY_COOKIE}={key}; Path=/mcp; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests;
