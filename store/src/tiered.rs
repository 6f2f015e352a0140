//! The production composition: a Redis Cluster hot, PostgreSQL durable behind it.
//!
//! Redis is the fencing authority and where every call goes first. A write (`save`, `append`,
//! `delete`) returns once Redis has it; the same write is queued for PostgreSQL and written
//! there in batches (`tiered/write_behind.rs`, tuned by [`Limits`]). PostgreSQL checks fences
//! too, and its fence follows Redis's: a session is claimed in PostgreSQL, with the fence of
//! its Redis claim, before any of that claim's writes reach it, so a stale owner's late writes
//! are refused there as well.
//!
//! PostgreSQL is read when Redis has lost a session (a failover that lost writes a replica had
//! not received, a flush, an eviction):
//!
//! - a claim that finds no record in Redis claims the session in PostgreSQL with the same fence
//!   and copies what PostgreSQL holds of it (record and events) back into Redis. If PostgreSQL
//!   names a later holder, that holder's claim is what Redis lost: the claim is refused, and
//!   leaves nothing in Redis;
//! - a load that finds no record, or a read of a stream that finds no events, in Redis reads
//!   PostgreSQL.
//!
//! Before reading PostgreSQL for a session, the store waits until its own queued writes of
//! that session are written, so that it reads what it has written (a delete especially). Other
//! nodes' queued writes it cannot wait for: within the write-behind delay (a few
//! milliseconds), a session deleted on one node and then lost by Redis can be found again in
//! PostgreSQL by another. The same delay separates the two tiers' expiry.
//!
//! Because a claim of a session Redis has no record of asks PostgreSQL, a new session is
//! claimed in both tiers before it is used, and such a claim (like a read that falls back)
//! fails while PostgreSQL is unavailable: without PostgreSQL's answer the store cannot tell a
//! new session from a lost one. Writes go on meanwhile, queued, until the queue is full.

mod write_behind;

pub use write_behind::Limits;

use crate::postgres::PgStore;
use crate::record::{Claimed, Fence, Replay, SessionRecord, StoredEvent};
use crate::redis::RedisStore;
use crate::{Changes, SessionStore, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use write_behind::{Write, WriteBehind};

/// Sessions in a Redis Cluster, written behind to PostgreSQL and recovered from it.
pub struct Tiered {
    hot: RedisStore,
    durable: PgStore,
    behind: WriteBehind,
}

impl std::fmt::Debug for Tiered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("hot", &self.hot)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Tiered {
    /// Redis `hot`, PostgreSQL `durable` (migrated) behind it, with the default
    /// [`Limits`]. Starts the write-behind task on the current tokio runtime; dropping the
    /// store lets the task write what it holds, then end.
    pub fn new(hot: RedisStore, durable: PgStore) -> Tiered {
        Tiered::with_limits(hot, durable, Limits::default())
    }

    /// As [`Tiered::new`], with the write-behind queue's limits.
    pub fn with_limits(hot: RedisStore, durable: PgStore, limits: Limits) -> Tiered {
        let behind = WriteBehind::start(Arc::new(durable.clone()), limits);
        Tiered {
            hot,
            durable,
            behind,
        }
    }

    /// Returns once every write this store has taken so far is in PostgreSQL, or dropped (as
    /// stale, or after [`Limits::retry_for`] of failures). For a node's shutdown, and for tests.
    pub async fn flush(&self) {
        self.behind.flush().await;
    }

    async fn claim_now(&self, id: &str, fence: &Fence) -> Result<Claimed, StoreError> {
        let hot = self.hot.claim(id, fence).await?;
        if hot.record.is_some() {
            self.behind.push(id, Write::Claim(fence.clone())).await;
            return Ok(hot);
        }
        self.behind.settle(id).await;
        let durable = match self.durable.claim(id, fence).await {
            Ok(durable) => durable,
            Err(refused @ StoreError::Fenced { .. }) => {
                // The hot claim goes again: Redis must not grant what PostgreSQL refused.
                if let Err(e) = self.hot.delete(id, fence).await {
                    tracing::warn!(
                        session = id,
                        error = %e,
                        "a claim PostgreSQL refused stays in Redis"
                    );
                }
                return Err(refused);
            }
            Err(e) => return Err(e),
        };
        self.restore(id, fence, &hot, &durable).await?;
        let mut tails = hot.tails;
        for (stream, seq) in durable.tails {
            let tail = tails.entry(stream).or_insert(seq);
            *tail = (*tail).max(seq);
        }
        Ok(Claimed {
            record: durable.record,
            tails,
        })
    }

    /// Copies into Redis what PostgreSQL holds of a session beyond what Redis does: the events
    /// past each stream's hot tail, then the record. The record goes last, so that a copy
    /// broken off is taken up again by the next claim, which finds no record in Redis.
    async fn restore(
        &self,
        id: &str,
        fence: &Fence,
        hot: &Claimed,
        durable: &Claimed,
    ) -> Result<(), StoreError> {
        let behind = durable
            .tails
            .iter()
            .any(|(stream, seq)| hot.tails.get(stream).is_none_or(|hot| hot < seq));
        if behind {
            let missing: Vec<StoredEvent> = self
                .durable
                .session_events(id)
                .await?
                .into_iter()
                .filter(|e| hot.tails.get(&e.stream).is_none_or(|&hot| e.seq > hot))
                .collect();
            // As many as the longest stream holds, so that the copy trims nothing of it.
            let mut per_stream: BTreeMap<u64, usize> = BTreeMap::new();
            for e in &missing {
                *per_stream.entry(e.stream).or_default() += 1;
            }
            let keep = per_stream.values().copied().max().unwrap_or(1);
            self.hot.append(id, fence, &missing, keep, &[]).await?;
        }
        if let Some(record) = &durable.record {
            self.hot.save(record, fence).await?;
        }
        Ok(())
    }

    async fn write_now(
        &self,
        id: &str,
        fence: &Fence,
        changes: Changes<'_>,
    ) -> Result<(), StoreError> {
        self.hot.write(id, fence, changes).await?;
        if let Some(record) = changes.record {
            let write = Write::Save(Box::new(record.clone()), fence.clone());
            self.behind.push(id, write).await;
        }
        if changes.logs() || changes.record.is_none() {
            let write = Write::Append {
                fence: fence.clone(),
                events: changes.events.to_vec(),
                keep: changes.keep,
                forget: changes.forget.to_vec(),
            };
            self.behind.push(id, write).await;
        }
        Ok(())
    }

    async fn events_now(&self, id: &str, stream: u64, after: u64) -> Result<Replay, StoreError> {
        let hot = self.hot.events(id, stream, after).await?;
        if hot.oldest.is_some() {
            return Ok(hot);
        }
        self.behind.settle(id).await;
        self.durable.events(id, stream, after).await
    }

    async fn load_now(&self, id: &str) -> Result<Option<(SessionRecord, Fence)>, StoreError> {
        if let Some(found) = self.hot.load(id).await? {
            return Ok(Some(found));
        }
        self.behind.settle(id).await;
        self.durable.load(id).await
    }

    /// Deleted from Redis, then from PostgreSQL behind it. A session Redis no longer holds is
    /// deleted from PostgreSQL all the same, where it may still be.
    async fn delete_now(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        self.hot.delete(id, fence).await?;
        self.behind.push(id, Write::Delete(fence.clone())).await;
        Ok(())
    }

    /// Redis's: PostgreSQL is written behind, so replication is what protects a write until
    /// then.
    async fn replicate_now(&self, id: &str) -> Result<(), StoreError> {
        self.hot.replicate(id).await
    }
}

crate::session_store_by_inherent_methods!(Tiered, None, {
    fn flush(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(Tiered::flush(self))
    }

    /// PostgreSQL's: the audit is written there directly, not behind Redis.
    fn auditor(&self) -> Option<crate::Auditor> {
        Some(self.durable.auditor())
    }
});
