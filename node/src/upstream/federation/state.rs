//! What the federation keeps per session (or affinity key), all of it in the session's
//! [`UpstreamState`] under `"federation"`, so that it moves with the session:
//!
//! - `members.<name>`: each member's own state. Members share one session, but their keys
//!   clash (two builtins both keep `counter`), so each member is handed a separate
//!   [`UpstreamState`] (a *view*) and what it holds is copied back after every call.
//! - `resources` / `templates`: which member listed a URI or URI template, so that a later
//!   `resources/read` of the session can go straight to it.
//! - `excluded`: members whose `initialize` failed; the session goes on without them.

use crate::upstream::{Scope, UpstreamState};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

const ROOT: &str = "federation";
const MEMBERS: &str = "members";
const EXCLUDED: &str = "excluded";

/// A bound on remembered URIs per kind, as the state is persisted with the session: past it,
/// routing falls back to asking the members in turn.
const MAX_REMEMBERED: usize = 10_000;

/// Which URIs a note is about.
#[derive(Clone, Copy)]
pub(super) enum Owned {
    Resources,
    Templates,
}

impl Owned {
    fn key(self) -> &'static str {
        match self {
            Owned::Resources => "resources",
            Owned::Templates => "templates",
        }
    }
}

/// Runs `f` on the object under `key` in `map`, created (or replacing whatever else is there).
fn in_object<R>(
    map: &mut Map<String, Value>,
    key: &str,
    f: impl FnOnce(&mut Map<String, Value>) -> R,
) -> R {
    let mut object = match map.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let r = f(&mut object);
    map.insert(key.into(), Value::Object(object));
    r
}

/// The members whose `initialize` failed in this scope.
pub(super) fn excluded(state: &UpstreamState) -> Vec<String> {
    state.with(|s| {
        s.get(ROOT)
            .and_then(|r| r.get(EXCLUDED))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    })
}

pub(super) fn set_excluded(state: &UpstreamState, names: Vec<String>) {
    state.with(|s| {
        in_object(s, ROOT, |root| {
            if names.is_empty() {
                root.remove(EXCLUDED);
            } else {
                root.insert(EXCLUDED.into(), names.into());
            }
        })
    });
}

/// Notes that `member` owns each of `uris` (later notes win: the newest list is right).
pub(super) fn remember(state: &UpstreamState, kind: Owned, member: &str, uris: &[String]) {
    if uris.is_empty() {
        return;
    }
    state.with(|s| {
        in_object(s, ROOT, |root| {
            in_object(root, kind.key(), |notes| {
                for uri in uris {
                    if notes.len() >= MAX_REMEMBERED && !notes.contains_key(uri) {
                        break;
                    }
                    notes.insert(uri.clone(), member.into());
                }
            })
        })
    });
}

/// Every `(uri, member)` note of one kind.
pub(super) fn remembered(state: &UpstreamState, kind: Owned) -> Vec<(String, String)> {
    state.with(|s| {
        s.get(ROOT)
            .and_then(|r| r.get(kind.key()))
            .and_then(Value::as_object)
            .map(|notes| {
                notes
                    .iter()
                    .filter_map(|(uri, m)| Some((uri.clone(), m.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The live views of this node, by scope and member index. A view is reused while the
/// session's copy is what we last wrote (so concurrent calls of a session share it and none
/// loses the other's changes), and rebuilt from the session's copy when that changed under us
/// (the session came from another node, or its state was restored).
#[derive(Default)]
pub(super) struct Views(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    live: HashMap<(Scope, usize), View>,
    next_generation: u64,
}

struct View {
    state: UpstreamState,
    /// What the session's copy held when we last read or wrote it.
    synced: Map<String, Value>,
    generation: u64,
}

/// A view handed to one call of a member; given back with [`Views::sync_back`].
pub(super) struct Lease {
    pub state: UpstreamState,
    generation: u64,
}

impl Views {
    // The session's state is only ever locked inside this lock, never the other way round.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn open(&self, scope: &Scope, index: usize, name: &str, session: &UpstreamState) -> Lease {
        let mut views = self.lock();
        let stored = session.read(|s| {
            s.get(ROOT)
                .and_then(|r| r.get(MEMBERS))
                .and_then(|m| m.get(name))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        });
        let key = (scope.clone(), index);
        if let Some(view) = views.live.get(&key)
            && view.synced == stored
        {
            return Lease {
                state: view.state.clone(),
                generation: view.generation,
            };
        }
        let state = UpstreamState::default();
        state.with(|s| *s = stored.clone());
        views.next_generation += 1;
        let generation = views.next_generation;
        views.live.insert(
            key,
            View {
                state: state.clone(),
                synced: stored,
                generation,
            },
        );
        Lease { state, generation }
    }

    /// Copies what a member holds back into the session, unless the view was replaced meanwhile
    /// (then the newer view is the one in charge) or the scope was closed.
    pub fn sync_back(
        &self,
        scope: &Scope,
        index: usize,
        name: &str,
        session: &UpstreamState,
        lease: &Lease,
    ) {
        let current = lease.state.snapshot();
        let mut views = self.lock();
        let Some(view) = views.live.get_mut(&(scope.clone(), index)) else {
            return;
        };
        if view.generation != lease.generation {
            return;
        }
        view.synced = current.clone();
        session.with(|s| {
            in_object(s, ROOT, |root| {
                in_object(root, MEMBERS, |members| {
                    members.insert(name.into(), Value::Object(current));
                })
            })
        });
    }

    pub fn close(&self, scope: &Scope) {
        self.lock().live.retain(|(s, _), _| s != scope);
    }
}
