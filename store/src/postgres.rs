//! The durable store: PostgreSQL through sqlx. Sessions, their stream events and the audit of
//! tool calls (its rows and writer are [`crate::audit`]); the source of truth when a hot store
//! lost data.
//!
//! Fencing is in the statements themselves. A claim is one upsert whose `ON CONFLICT … DO
//! UPDATE … WHERE` admits only a later epoch or the same owner; a write is an `UPDATE … WHERE
//! owner = … AND epoch = …` on the session's row, and zero rows means the writer is fenced (then
//! the row is read to name who holds it). The updated row stays locked until the write's
//! transaction commits, so a takeover waits for a write in progress and never interleaves with
//! it. Expiry is the database's clock: `expires_at` is set to `now() + ttl` at each write and
//! compared with `now()` at each read.
//!
//! The schema is `migrations/postgres/`, numbered and append-only, applied by [`migrate`]
//! (`shardgate migrate`), never implicitly by [`PgStore::connect`].

use crate::audit::{self, Auditor};
use crate::record::{Claimed, Fence, Replay, SessionRecord, StoredEvent};
use crate::{Changes, StoreError, from_sql, ordered, to_sql, ttl_millis};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

pub use crate::audit::AuditEntry;

/// Where sqlx records applied migrations (its default).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

fn migrator() -> Migrator {
    sqlx::migrate!("../migrations/postgres")
}

/// A migration, by its number and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations this run applied, in order.
    pub applied: Vec<Migration>,
    /// How many migrations this build knows of.
    pub known: usize,
}

/// Brings the database's schema up to this build's migrations. Idempotent: what is applied is
/// not applied again. Concurrent runs serialize on the database's migration lock.
pub async fn migrate(url: &str) -> Result<Migrated, StoreError> {
    let mut conn = PgConnection::connect(url).await?;
    conn.lock().await?;
    let outcome = migrate_locked(&mut conn).await;
    let unlocked = conn.unlock().await;
    let migrated = outcome?;
    unlocked?;
    let _ = conn.close().await;
    Ok(migrated)
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<Migrated, StoreError> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    let before: HashSet<i64> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await?
        .iter()
        .map(|m| m.version)
        .collect();
    let mut migrator = migrator();
    // This connection holds the lock already.
    migrator.set_locking(false);
    migrator.run(&mut *conn).await?;
    Ok(Migrated {
        applied: migrator
            .iter()
            .filter(|m| !before.contains(&m.version))
            .map(|m| Migration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect(),
        known: migrator.iter().count(),
    })
}

/// Sessions in one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    ttl_ms: i64,
    /// The audit's writer, shared by every clone; started when first asked for.
    auditor: Arc<OnceLock<Auditor>>,
}

impl PgStore {
    /// Connects to a migrated database (see [`migrate`]).
    pub async fn connect(url: &str, ttl: Duration) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(PgStore {
            pool,
            ttl_ms: to_sql(ttl_millis(ttl), "ttl")?,
            auditor: Arc::default(),
        })
    }

    /// Deletes every expired session with its events; returns how many sessions went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Records one tool call now, cut to size ([`AuditEntry::bounded`]). A node does not wait
    /// for this: it records through [`PgStore::auditor`].
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        insert_audit(&self.pool, std::slice::from_ref(&entry.clone().bounded())).await
    }

    /// The writer that records tool calls into this database in batches, off the caller's
    /// path: one per store, shared by its clones (see [`crate::audit`]).
    pub fn auditor(&self) -> Auditor {
        self.auditor
            .get_or_init(|| Auditor::start(self.pool.clone(), audit::Limits::default()))
            .clone()
    }

    /// A writer of its own, with `limits`, beside the shared one: for tests of the bounds.
    pub fn new_auditor(&self, limits: audit::Limits) -> Auditor {
        Auditor::start(self.pool.clone(), limits)
    }

    async fn claim_now(&self, id: &str, fence: &Fence) -> Result<Claimed, StoreError> {
        let epoch = to_sql(fence.epoch, "epoch")?;
        // A claim that finds no holder after being refused raced a delete: it tries again.
        for _ in 0..3 {
            let mut tx = self.pool.begin().await?;
            // What is left of an expired session goes first: nobody holds it, so this claim
            // cannot be refused for it, and its record and events must not come back.
            sqlx::query("DELETE FROM sessions WHERE id = $1 AND expires_at <= now()")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(
                "INSERT INTO sessions (id, owner, epoch, record, expires_at) \
                 VALUES ($1, $2, $3, NULL, now() + $4 * interval '1 millisecond') \
                 ON CONFLICT (id) DO UPDATE \
                 SET owner = excluded.owner, epoch = excluded.epoch, \
                     expires_at = excluded.expires_at \
                 WHERE sessions.epoch < excluded.epoch \
                    OR (sessions.owner = excluded.owner AND sessions.epoch <= excluded.epoch) \
                 RETURNING record",
            )
            .bind(id)
            .bind(&fence.owner)
            .bind(epoch)
            .bind(self.ttl_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                match holder(&mut tx, id).await? {
                    Some(held) => return Err(fenced(held)),
                    None => continue,
                }
            };
            let record: Option<Json<SessionRecord>> = row.try_get(0)?;
            let tails = tails(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(Claimed {
                record: record.map(|r| r.0),
                tails,
            });
        }
        Err(StoreError::Unavailable(
            "the claim kept racing a delete".into(),
        ))
    }

    /// The fence check of a write: stores the record (when there is one) and restarts the ttl
    /// if `fence` holds the session; false if it does not.
    async fn hold<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        id: &str,
        fence: &Fence,
        record: Option<Json<&SessionRecord>>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET record = coalesce($4, record), \
             expires_at = now() + $5 * interval '1 millisecond' \
             WHERE id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
        )
        .bind(id)
        .bind(&fence.owner)
        .bind(to_sql(fence.epoch, "epoch")?)
        .bind(record)
        .bind(self.ttl_ms)
        .execute(executor)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn write_now(
        &self,
        id: &str,
        fence: &Fence,
        changes: Changes<'_>,
    ) -> Result<(), StoreError> {
        let record = changes.record.map(Json);
        if !changes.logs() {
            // The fence check and the record in one statement: no transaction needed.
            if !self.hold(&self.pool, id, fence, record).await? {
                let mut conn = self.pool.acquire().await?;
                return Err(refusal(&mut conn, id).await?);
            }
            return Ok(());
        }
        let (keep, forget) = (changes.keep, changes.forget);
        let events = ordered(changes.events);
        let mut streams = Vec::with_capacity(events.len());
        let mut seqs = Vec::with_capacity(events.len());
        let mut data = Vec::with_capacity(events.len());
        for e in &events {
            streams.push(to_sql(e.stream, "stream")?);
            seqs.push(to_sql(e.seq, "seq")?);
            data.push(e.data.as_str());
        }
        let mut tx = self.pool.begin().await?;
        // The fence check; the row stays locked, so no claim can slip in before the commit.
        if !self.hold(&mut *tx, id, fence, record).await? {
            return Err(refusal(&mut tx, id).await?);
        }
        if !events.is_empty() {
            // Per stream the batch is in seq order, so comparing with what was stored before
            // this statement is enough to drop repeats and stragglers.
            sqlx::query(
                "INSERT INTO events (session_id, stream, seq, data) \
                 SELECT $1, e.stream, e.seq, e.data \
                 FROM UNNEST($2::bigint[], $3::bigint[], $4::text[]) AS e(stream, seq, data) \
                 WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.session_id = $1 \
                       AND x.stream = e.stream AND x.seq >= e.seq) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&streams)
            .bind(&seqs)
            .bind(&data)
            .execute(&mut *tx)
            .await?;
            streams.dedup();
            sqlx::query(
                "DELETE FROM events e USING UNNEST($2::bigint[]) AS t(stream) \
                 WHERE e.session_id = $1 AND e.stream = t.stream AND e.seq <= \
                 (SELECT x.seq FROM events x WHERE x.session_id = $1 AND x.stream = t.stream \
                  ORDER BY x.seq DESC OFFSET $3 LIMIT 1)",
            )
            .bind(id)
            .bind(&streams)
            .bind(to_sql(keep.max(1) as u64, "keep")?)
            .execute(&mut *tx)
            .await?;
        }
        if !forget.is_empty() {
            let forget = forget
                .iter()
                .map(|&s| to_sql(s, "stream"))
                .collect::<Result<Vec<_>, _>>()?;
            sqlx::query("DELETE FROM events WHERE session_id = $1 AND stream = ANY($2::bigint[])")
                .bind(id)
                .bind(&forget)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn events_now(&self, id: &str, stream: u64, after: u64) -> Result<Replay, StoreError> {
        // One statement, one snapshot: the oldest stored event and those after the resume point.
        let rows = sqlx::query(
            "SELECT seq, data FROM events WHERE session_id = $1 AND stream = $2 \
             AND (seq > $3 OR seq = (SELECT min(seq) FROM events \
                  WHERE session_id = $1 AND stream = $2)) \
             AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND expires_at > now()) \
             ORDER BY seq",
        )
        .bind(id)
        .bind(to_sql(stream, "stream")?)
        .bind(to_sql(after, "seq").unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut replay = Replay::default();
        for row in rows {
            let seq = from_sql(row.try_get(0)?, "seq")?;
            replay.oldest.get_or_insert(seq);
            if seq > after {
                replay.events.push(StoredEvent {
                    stream,
                    seq,
                    data: row.try_get(1)?,
                });
            }
        }
        Ok(replay)
    }

    async fn load_now(&self, id: &str) -> Result<Option<(SessionRecord, Fence)>, StoreError> {
        let row = sqlx::query(
            "SELECT record, owner, epoch FROM sessions \
             WHERE id = $1 AND expires_at > now() AND record IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let record: Json<SessionRecord> = row.try_get(0)?;
        let fence = Fence {
            owner: row.try_get(1)?,
            epoch: from_sql(row.try_get(2)?, "epoch")?,
        };
        Ok(Some((record.0, fence)))
    }

    async fn delete_now(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        // The session's events go with it (ON DELETE CASCADE); so does an expired row.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id = $1 \
             AND ((owner = $2 AND epoch = $3) OR expires_at <= now())",
        )
        .bind(id)
        .bind(&fence.owner)
        .bind(to_sql(fence.epoch, "epoch")?)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let mut conn = self.pool.acquire().await?;
            return match refusal(&mut conn, id).await? {
                StoreError::Gone => Ok(()),
                refused => Err(refused),
            };
        }
        Ok(())
    }

    /// Nothing to wait for: a commit is PostgreSQL's durability point. Standbys, if any, are the
    /// server's own business (`synchronous_commit`, `synchronous_standby_names`).
    async fn replicate_now(&self, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every event of a live session, each stream's from its oldest stored seq (a priming event
    /// at seq 0 included, which [`SessionStore::events`](crate::SessionStore::events) cannot
    /// return), in stream then seq order: what a tier above copies back when it lost the session.
    pub(crate) async fn session_events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream, seq, data FROM events WHERE session_id = $1 \
             AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND expires_at > now()) \
             ORDER BY stream, seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredEvent {
                    stream: from_sql(row.try_get(0)?, "stream")?,
                    seq: from_sql(row.try_get(1)?, "seq")?,
                    data: row.try_get(2)?,
                })
            })
            .collect()
    }
}

/// Writes audit rows as one statement: a batch of any size is one round trip and one
/// transaction.
pub(crate) async fn insert_audit(pool: &PgPool, rows: &[AuditEntry]) -> Result<(), StoreError> {
    let n = rows.len();
    let (mut principals, mut sessions, mut tools) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut started, mut durations, mut outcomes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        let since_epoch = row
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        principals.push(row.principal.as_str());
        sessions.push(row.session.as_deref());
        tools.push(row.tool.as_str());
        started.push(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX));
        durations.push(i64::try_from(row.duration.as_millis()).unwrap_or(i64::MAX));
        outcomes.push(row.outcome.as_str());
    }
    sqlx::query(
        "INSERT INTO audit (principal, session, tool, started_at, duration_ms, outcome) \
         SELECT a.principal, a.session, a.tool, \
                'epoch'::timestamptz + a.started_us * interval '1 microsecond', \
                a.duration_ms, a.outcome \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                     $6::text[]) AS a(principal, session, tool, started_us, duration_ms, outcome)",
    )
    .bind(&principals)
    .bind(&sessions)
    .bind(&tools)
    .bind(&started)
    .bind(&durations)
    .bind(&outcomes)
    .execute(pool)
    .await?;
    Ok(())
}

/// Who holds a session that has not expired.
async fn holder(conn: &mut PgConnection, id: &str) -> Result<Option<Fence>, StoreError> {
    let row = sqlx::query("SELECT owner, epoch FROM sessions WHERE id = $1 AND expires_at > now()")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(Fence {
            owner: row.try_get(0)?,
            epoch: from_sql(row.try_get(1)?, "epoch")?,
        })
    })
    .transpose()
}

/// Why a fenced write matched no row: another holder, or no session at all.
async fn refusal(conn: &mut PgConnection, id: &str) -> Result<StoreError, StoreError> {
    Ok(match holder(conn, id).await? {
        Some(held) => fenced(held),
        None => StoreError::Gone,
    })
}

fn fenced(held: Fence) -> StoreError {
    StoreError::Fenced {
        owner: held.owner,
        epoch: held.epoch,
    }
}

async fn tails(conn: &mut PgConnection, id: &str) -> Result<BTreeMap<u64, u64>, StoreError> {
    let rows =
        sqlx::query("SELECT stream, max(seq) FROM events WHERE session_id = $1 GROUP BY stream")
            .bind(id)
            .fetch_all(conn)
            .await?;
    let mut tails = BTreeMap::new();
    for row in rows {
        tails.insert(
            from_sql(row.try_get(0)?, "stream")?,
            from_sql(row.try_get(1)?, "seq")?,
        );
    }
    Ok(tails)
}

crate::session_store_by_inherent_methods!(PgStore, Some("postgres"), {
    fn auditor(&self) -> Option<Auditor> {
        Some(PgStore::auditor(self))
    }
});
