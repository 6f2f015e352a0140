//! The embedded store: SQLite through sqlx, the default when no Redis or PostgreSQL is
//! configured. The nodes of one machine share one database file (WAL mode), so a killed node's
//! sessions can be taken over by its neighbours.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction: it takes the database's write lock
//! before it reads the ownership it checks, so the check and the write cannot interleave with
//! another process's (`busy_timeout` makes a second writer wait rather than fail). Within one
//! process, writers queue on a lock of their own first: SQLite's busy handler waits by sleeping,
//! which made concurrent writers of one node take turns at a few hundred commits a second.
//! Session writes are batched: every write that queued while the last transaction ran goes
//! into the next one (a group commit, led by the first write to find none under way): each
//! is checked against its own fence, and the batch commits once, in one trip to the
//! database's thread. Expiry is a
//! unix-millisecond `expires_at` per session, set from this process's clock at each write and
//! compared at each read; [`SqliteStore::purge_expired`] deletes what has expired.

use crate::record::{Claimed, Fence, Replay, SessionRecord, StoredEvent};
use crate::{Changes, StoreError, from_sql, ordered, to_sql, ttl_millis};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use writer::{Queued, Writes};

mod writer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions in one SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held by this process's writer for the length of a write transaction.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Session writes, a batch per transaction.
    writes: Arc<Writes>,
    ttl_ms: i64,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `location` — a file path, a `sqlite:` URL,
    /// or `sqlite::memory:` for a private in-memory database — and applies its migrations.
    pub async fn open(location: &str, ttl: Duration) -> Result<SqliteStore, StoreError> {
        // Opening a file another process has open can meet a lock SQLite does not wait on
        // (`SQLITE_BUSY` at once, "database is locked": while it recovers or checkpoints the
        // WAL, say). Nodes sharing a file start while others write: try again, for as long as
        // a writer would wait.
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        loop {
            match SqliteStore::open_once(location, ttl).await {
                Err(StoreError::Unavailable(why))
                    if why.contains("database is locked") && started.elapsed() < BUSY_TIMEOUT =>
                {
                    tracing::debug!(%why, "opening the session store; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                opened => return opened,
            }
        }
    }

    async fn open_once(location: &str, ttl: Duration) -> Result<SqliteStore, StoreError> {
        let options = if location.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(location)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(location))
        };
        let memory = options.get_filename() == Path::new(":memory:");
        let options = options
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // A connection kept for the pool's life: for `:memory:` (each connection to it is a
        // database of its own) the whole store; for a file, the writer's, whose page cache
        // then stays valid from one transaction to the next (a connection that another one
        // wrote past reads its pages again).
        let kept = || {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        };
        let (pool, writer) = if memory {
            let pool = kept().connect_with(options).await?;
            (pool.clone(), pool)
        } else {
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            // A connection of this pool is only ever handed back idle, so it needs no test.
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            let writer = kept()
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            (pool, writer)
        };
        migrate(&pool).await?;
        let ttl_ms = to_sql(ttl_millis(ttl), "ttl")?;
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let writes = Arc::new(Writes::new(writer, !memory, writing.clone(), ttl_ms));
        Ok(SqliteStore {
            pool,
            writing,
            writes,
            ttl_ms,
        })
    }

    /// A private in-memory database, for tests and single-process use.
    pub async fn memory(ttl: Duration) -> Result<SqliteStore, StoreError> {
        SqliteStore::open("sqlite::memory:", ttl).await
    }

    /// Deletes every expired session with its events; returns how many sessions went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn claim_now(&self, id: &str, fence: &Fence) -> Result<Claimed, StoreError> {
        let now = now_ms();
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held = holder(&mut tx, id, now).await?;
        if let Some(held) = &held
            && !fence.may_take(held)
        {
            return Err(fenced(held));
        }
        let expires = now.saturating_add(self.ttl_ms);
        let epoch = to_sql(fence.epoch, "epoch")?;
        // An expired row is what is left of a gone session: its record and events go with it.
        sqlx::query("DELETE FROM sessions WHERE id = ?1 AND expires_at <= ?2")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id, owner, epoch, record, expires_at) \
             VALUES (?1, ?2, ?3, NULL, ?4) \
             ON CONFLICT (id) DO UPDATE \
             SET owner = excluded.owner, epoch = excluded.epoch, expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(&fence.owner)
        .bind(epoch)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        let claimed = match held {
            None => Claimed::default(),
            Some(_) => read_claimed(&mut tx, id).await?,
        };
        tx.commit().await?;
        Ok(claimed)
    }

    /// Hands the write to the store's writer and waits for its outcome.
    async fn write_now(
        &self,
        id: &str,
        fence: &Fence,
        changes: Changes<'_>,
    ) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        let queued = Queued {
            id: id.to_owned(),
            fence: fence.clone(),
            record: changes.record.map(serde_json::to_string).transpose()?,
            events: ordered(changes.events)
                .into_iter()
                .map(|e| {
                    let (stream, seq) = (to_sql(e.stream, "stream")?, to_sql(e.seq, "seq")?);
                    Ok((stream, seq, e.data.clone()))
                })
                .collect::<Result<_, StoreError>>()?,
            keep: to_sql(changes.keep.max(1) as u64, "keep")?,
            forget: changes
                .forget
                .iter()
                .map(|&s| to_sql(s, "stream"))
                .collect::<Result<_, StoreError>>()?,
            done,
        };
        self.writes.queue(queued);
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the write was abandoned".into())))
    }

    async fn events_now(&self, id: &str, stream: u64, after: u64) -> Result<Replay, StoreError> {
        // One statement, one snapshot: the oldest stored event and those after the resume point.
        let rows = sqlx::query(
            "SELECT seq, data FROM events WHERE session_id = ?1 AND stream = ?2 \
             AND (seq > ?3 OR seq = (SELECT min(seq) FROM events \
                  WHERE session_id = ?1 AND stream = ?2)) \
             AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND expires_at > ?4) \
             ORDER BY seq",
        )
        .bind(id)
        .bind(to_sql(stream, "stream")?)
        .bind(to_sql(after, "seq").unwrap_or(i64::MAX))
        .bind(now_ms())
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
             WHERE id = ?1 AND expires_at > ?2 AND record IS NOT NULL",
        )
        .bind(id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let record: String = row.try_get(0)?;
        let fence = Fence {
            owner: row.try_get(1)?,
            epoch: from_sql(row.try_get(2)?, "epoch")?,
        };
        Ok(Some((serde_json::from_str(&record)?, fence)))
    }

    async fn delete_now(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        let now = now_ms();
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match check(&mut tx, id, fence, now).await {
            Ok(()) | Err(StoreError::Gone) => {}
            Err(e) => return Err(e),
        }
        // The session's events go with it (ON DELETE CASCADE); so does an expired row.
        sqlx::query("DELETE FROM sessions WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Nothing to wait for: SQLite has no replicas, and a committed write is as durable as this
    /// store makes it (WAL, `synchronous = NORMAL`).
    async fn replicate_now(&self, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Applies the embedded migrations. Nodes sharing a file may start together: a migration that
/// loses the race to another process finds it applied on the next try (a lock SQLite will not
/// wait on is [`SqliteStore::open`]'s to retry).
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(_) if tries < 3 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Who holds a session that has not expired.
async fn holder(
    conn: &mut SqliteConnection,
    id: &str,
    now: i64,
) -> Result<Option<Fence>, StoreError> {
    let row = sqlx::query("SELECT owner, epoch FROM sessions WHERE id = ?1 AND expires_at > ?2")
        .bind(id)
        .bind(now)
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

/// Fails unless `fence` is exactly the stored ownership of a live session.
async fn check(
    conn: &mut SqliteConnection,
    id: &str,
    fence: &Fence,
    now: i64,
) -> Result<(), StoreError> {
    match holder(conn, id, now).await? {
        None => Err(StoreError::Gone),
        Some(held) if held == *fence => Ok(()),
        Some(held) => Err(fenced(&held)),
    }
}

fn fenced(held: &Fence) -> StoreError {
    StoreError::Fenced {
        owner: held.owner.clone(),
        epoch: held.epoch,
    }
}

async fn read_claimed(conn: &mut SqliteConnection, id: &str) -> Result<Claimed, StoreError> {
    let record: Option<String> = sqlx::query_scalar("SELECT record FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    let rows =
        sqlx::query("SELECT stream, max(seq) FROM events WHERE session_id = ?1 GROUP BY stream")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let mut tails = BTreeMap::new();
    for row in rows {
        tails.insert(
            from_sql(row.try_get(0)?, "stream")?,
            from_sql(row.try_get(1)?, "seq")?,
        );
    }
    Ok(Claimed {
        record: record.map(|r| serde_json::from_str(&r)).transpose()?,
        tails,
    })
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

crate::session_store_by_inherent_methods!(SqliteStore, Some("sqlite"), {
    /// A transaction that reports failure was rolled back: SQLite commits atomically on this
    /// machine's own disk, with nothing between the writer and the file to lose an answer.
    /// (A write abandoned as the process stops is the exception, heard by nobody.)
    fn failed_writes_may_land(&self) -> bool {
        false
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionStore;

    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "shardgate-store-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDb(dir)
        }

        fn path(&self) -> String {
            self.0.join("sessions.db").display().to_string()
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_contract_holds_on_a_file() {
        let db = TempDb::new("contract");
        let store = SqliteStore::open(&db.path(), Duration::from_secs(60))
            .await
            .expect("open");
        crate::contract::run_all(Arc::new(store)).await;
        let short = SqliteStore::open(&db.path(), Duration::from_secs(1))
            .await
            .expect("open again");
        crate::contract::expiry(Arc::new(short), Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_contract_holds_in_memory() {
        let store = SqliteStore::memory(Duration::from_secs(60))
            .await
            .expect("open");
        crate::contract::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn two_handles_on_one_file_share_sessions_and_fences() {
        let db = TempDb::new("shared");
        let ttl = Duration::from_secs(60);
        let first = SqliteStore::open(&db.path(), ttl).await.expect("open");
        let second = SqliteStore::open(&db.path(), ttl).await.expect("open");
        let old = Fence::new("node-0", 1);
        first.claim("s", &old).await.expect("claim");
        second
            .claim("s", &Fence::new("node-1", 2))
            .await
            .expect("take over");
        let refused = first.append("s", &old, &[], 10, &[]).await;
        assert_eq!(
            refused,
            Err(StoreError::Fenced {
                owner: "node-1".into(),
                epoch: 2
            })
        );
    }

    #[tokio::test]
    async fn purge_removes_expired_sessions_and_their_events() {
        let store = SqliteStore::memory(Duration::from_millis(50))
            .await
            .expect("open");
        let fence = Fence::new("node-0", 1);
        store.claim("s", &fence).await.expect("claim");
        let event = StoredEvent {
            stream: 1,
            seq: 1,
            data: "{}".into(),
        };
        store
            .append("s", &fence, std::slice::from_ref(&event), 10, &[])
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(store.purge_expired().await.expect("purge"), 1);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&store.pool)
            .await
            .expect("count");
        assert_eq!(left, 0);
    }
}
