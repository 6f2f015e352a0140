//! The session store: where a session outlives the node that hosts it.
//!
//! A node writes each session's durable part through to a store; when the ring moves a session
//! to another node (a death, a drain, a scale-out), the new owner claims it there and continues
//! from what it finds. Every write is fenced by the `(owner, epoch)` of the latest claim, so a
//! stale owner's writes are refused and at most one node writes a session at a time.
//!
//! Layout, in the order a session meets it:
//!
//! - [`record`]: the durable session ([`SessionRecord`]), a stream event ([`StoredEvent`]) and
//!   the ownership a write is checked against ([`Fence`]).
//! - [`SessionStore`] (here): claim, write (save, append), events, load, delete.
//! - [`sqlite`]: the embedded default; one file that the nodes of one machine share.
//! - [`postgres`]: durable, for recovery and the audit of tool calls.
//! - [`audit`]: the audit's rows and their one writer per store ([`Auditor`]), batched into
//!   PostgreSQL off the request path.
//! - [`redis`]: hot, on a Redis Cluster; one hash slot and one Lua script per write.
//! - [`tiered`]: Redis Cluster hot and PostgreSQL durable, written behind; the production
//!   composition.
//! - [`open()`]: a store from its URL, as configured.
//! - [`error`]: [`StoreError`]: fenced, gone, unavailable (retry), corrupt, misconfigured.
//! - [`measured`]: each operation's latency and failures, by store, for the node's `/metrics`.
//! - `contract`: the checks every implementation passes (feature `contract`).
//!
//! Idle sessions expire: each store is built with a ttl, and a session not written for that long
//! is gone from it (records, events and ownership alike).

#![forbid(unsafe_code)]

pub mod audit;
pub mod error;
pub mod measured;
mod open;
pub mod postgres;
pub mod record;
pub mod redis;
pub mod sqlite;
pub mod tiered;

#[cfg(any(test, feature = "contract"))]
pub mod contract;

pub use audit::Auditor;
pub use error::StoreError;
pub use open::open;
pub use record::{Claimed, Fence, InFlightRecord, RawJson, Replay, SessionRecord, StoredEvent};

use futures_util::future::BoxFuture;

/// A store of sessions, shared by the nodes of a cluster.
///
/// Writes (`save`, `append`, `delete`) succeed only for the holder of the latest claim: its
/// fence must be exactly the stored one, else the call fails with [`StoreError::Fenced`] naming
/// who holds the session. Reads are not fenced.
pub trait SessionStore: Send + Sync {
    /// Takes ownership of a session, creating it when it is not stored. Succeeds when the
    /// session has no owner, when its owner claimed it in an earlier epoch, or when `fence`'s
    /// owner already holds it at the same or an earlier epoch; otherwise fails with
    /// [`StoreError::Fenced`] naming the holder. Atomic: of concurrent claims in one epoch,
    /// exactly one wins. Returns what the store holds of the session.
    fn claim<'a>(
        &'a self,
        session_id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>>;

    /// Writes a session's changes at once, all or nothing: replaces its record (when `changes`
    /// has one), appends events to their streams, then trims each stream it touched to its
    /// newest `changes.keep` events (at least one is kept), then drops the streams in
    /// `changes.forget` whole: their events and their tails, as if they had never been written
    /// (the session no longer keeps them for replay). Per stream, an event whose seq is not
    /// above the stream's last stored seq is ignored, so a repeated append stores nothing
    /// twice. Like every write it restarts the session's ttl; a write of no changes does only
    /// that.
    fn write<'a>(
        &'a self,
        session_id: &'a str,
        fence: &'a Fence,
        changes: Changes<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Creates or replaces the session's record: a [`SessionStore::write`] of the record alone.
    fn save<'a>(
        &'a self,
        record: &'a SessionRecord,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let changes = Changes {
            record: Some(record),
            ..Changes::default()
        };
        self.write(&record.id, fence, changes)
    }

    /// Appends events and drops streams: a [`SessionStore::write`] without a record.
    fn append<'a>(
        &'a self,
        session_id: &'a str,
        fence: &'a Fence,
        events: &'a [StoredEvent],
        keep: usize,
        forget: &'a [u64],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let changes = Changes {
            record: None,
            events,
            keep,
            forget,
        };
        self.write(session_id, fence, changes)
    }

    /// The events of one stream with a seq above `after_seq`, in seq order, and the oldest seq
    /// still stored (to tell a trimmed log from a complete one), read at one point in time.
    fn events<'a>(
        &'a self,
        session_id: &'a str,
        stream: u64,
        after_seq: u64,
    ) -> BoxFuture<'a, Result<Replay, StoreError>>;

    /// The session's record and who holds it; none when it has no saved record.
    fn load<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(SessionRecord, Fence)>, StoreError>>;

    /// Removes the session: record, events and ownership. Deleting a session that is not
    /// stored succeeds (a repeated delete).
    fn delete<'a>(
        &'a self,
        session_id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Returns once the session's writes so far, made through this handle, are on at least one
    /// replica: the `replicated` acknowledgement level, for a write that must survive the loss
    /// of the server that took it. Fails with [`StoreError::Unavailable`] when no replica
    /// confirms them in time; the writes themselves stand either way.
    fn replicate<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Returns once every write this handle accepted so far is in every tier of the store. Only
    /// a store that writes a tier behind the caller's back ([`tiered::Tiered`]) has anything to
    /// wait for; a node calls it before it exits, so that the durable tier is not left behind.
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Whether a write this store reports failed may still have landed: a request that timed
    /// out on its way back, a connection lost after the write went out. A caller that tells
    /// its client "not done, try again" on a failed write must then never put an effect in
    /// one write with what it accepted (a node writes them one after the other). A store that
    /// answers false reports a failure only for a write that did not land.
    fn failed_writes_may_land(&self) -> bool {
        true
    }

    /// The writer of the audit of tool calls this store keeps, if it keeps one: only a store
    /// with PostgreSQL does. One writer per store, whichever handle is asked (it starts, on
    /// the current tokio runtime, the first time one is).
    fn auditor(&self) -> Option<Auditor> {
        None
    }
}

/// Implements [`SessionStore`] for a store whose inherent `async fn`s `claim_now`, `write_now`,
/// `events_now`, `load_now`, `delete_now` and `replicate_now` do the work: each
/// implementation writes its operations once, as plain async methods, and this boxes them,
/// measured under the store kind given ([`measured`]; `None` for a store made of others).
/// Items in an optional `{ … }` after the kind (a provided method overridden) go into the impl
/// as they are.
macro_rules! session_store_by_inherent_methods {
    ($store:ty, $kind:expr) => {
        $crate::session_store_by_inherent_methods!($store, $kind, {});
    };
    ($store:ty, $kind:expr, { $($more:tt)* }) => {
        impl $crate::SessionStore for $store {
            fn claim<'a>(
                &'a self,
                session_id: &'a str,
                fence: &'a $crate::Fence,
            ) -> futures_util::future::BoxFuture<'a, Result<$crate::Claimed, $crate::StoreError>>
            {
                Box::pin($crate::measured::op($kind, "claim", self.claim_now(session_id, fence)))
            }

            fn write<'a>(
                &'a self,
                session_id: &'a str,
                fence: &'a $crate::Fence,
                changes: $crate::Changes<'a>,
            ) -> futures_util::future::BoxFuture<'a, Result<(), $crate::StoreError>> {
                Box::pin($crate::measured::op(
                    $kind,
                    "write",
                    self.write_now(session_id, fence, changes),
                ))
            }

            fn events<'a>(
                &'a self,
                session_id: &'a str,
                stream: u64,
                after_seq: u64,
            ) -> futures_util::future::BoxFuture<'a, Result<$crate::Replay, $crate::StoreError>>
            {
                Box::pin($crate::measured::op(
                    $kind,
                    "events",
                    self.events_now(session_id, stream, after_seq),
                ))
            }

            fn load<'a>(
                &'a self,
                session_id: &'a str,
            ) -> futures_util::future::BoxFuture<
                'a,
                Result<Option<($crate::SessionRecord, $crate::Fence)>, $crate::StoreError>,
            > {
                Box::pin($crate::measured::op($kind, "load", self.load_now(session_id)))
            }

            fn delete<'a>(
                &'a self,
                session_id: &'a str,
                fence: &'a $crate::Fence,
            ) -> futures_util::future::BoxFuture<'a, Result<(), $crate::StoreError>> {
                Box::pin($crate::measured::op($kind, "delete", self.delete_now(session_id, fence)))
            }

            fn replicate<'a>(
                &'a self,
                session_id: &'a str,
            ) -> futures_util::future::BoxFuture<'a, Result<(), $crate::StoreError>> {
                Box::pin($crate::measured::op(
                    $kind,
                    "replicate",
                    self.replicate_now(session_id),
                ))
            }

            $($more)*
        }
    };
}
pub(crate) use session_store_by_inherent_methods;

/// A ttl in whole milliseconds, at least one.
pub(crate) fn ttl_millis(ttl: std::time::Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A number as the signed 64-bit integer SQL stores it.
pub(crate) fn to_sql(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::corrupt(format!("{what} {n} is out of range")))
}

/// A signed 64-bit integer read from SQL, as the number it stands for.
pub(crate) fn from_sql(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::corrupt(format!("{what} {n} is negative")))
}

/// One write of a session (see [`SessionStore::write`]); the default changes nothing and
/// only restarts the ttl.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes<'a> {
    /// The record, replaced whole.
    pub record: Option<&'a SessionRecord>,
    /// Events to append, in any order.
    pub events: &'a [StoredEvent],
    /// How many events each stream written keeps, the newest.
    pub keep: usize,
    /// Streams dropped whole, after the events are appended.
    pub forget: &'a [u64],
}

impl Changes<'_> {
    /// Whether the write touches the event log (appends or forgets anything).
    pub fn logs(&self) -> bool {
        !self.events.is_empty() || !self.forget.is_empty()
    }
}

/// What one append stores: per stream, its events in seq order, each above the one before
/// (the store then drops those not above its stored tail).
pub(crate) fn ordered(events: &[StoredEvent]) -> Vec<&StoredEvent> {
    let mut sorted: Vec<&StoredEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (e.stream, e.seq));
    sorted.dedup_by_key(|e| (e.stream, e.seq));
    sorted
}
