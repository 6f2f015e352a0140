//! The SQLite store's writer: session writes batched into one transaction, each session's
//! statements fenced by its own ownership.
//!
//! A batch is one query of fixed text, so SQLite compiles its statements once for the life of
//! the connection: the batch's writes travel as JSON parameters that the statements read with
//! `json_each` (a query whose text changed with the batch spent about as long being compiled
//! as being run).

use super::{check, now_ms};
use crate::{Fence, StoreError, to_sql};
use sqlx::Row;
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// Session writes taken into one transaction at most.
const BATCH: usize = 256;

/// The store's writes in process: every session write that queues while a transaction runs
/// goes into the next one (a group commit), so a commit's cost is shared by all of them. A
/// session has one write per transaction at most; a second one waits for the next.
///
/// No task waits for writes: the first write to find nobody leading starts the leader, a
/// task on the writer's own runtime, which writes batches until none is left. A write then
/// costs the trip to the database's thread and back, not two more between tasks that may
/// wait on other threads. The leader is a task, not the writer's future, so that a caller
/// that stops waiting cannot break a transaction off halfway.
#[derive(Debug)]
pub(super) struct Writes {
    pool: SqlitePool,
    /// Whether the pool is the writes' alone: its connection is then kept from one batch to
    /// the next rather than taken from the pool each time.
    dedicated: bool,
    /// Held for the length of a write transaction (claims take it too).
    writing: Arc<tokio::sync::Mutex<()>>,
    ttl_ms: i64,
    group: Mutex<Group>,
}

#[derive(Debug, Default)]
struct Group {
    queued: VecDeque<Queued>,
    leading: bool,
    kept: Option<PoolConnection<Sqlite>>,
}

impl Writes {
    pub(super) fn new(
        pool: SqlitePool,
        dedicated: bool,
        writing: Arc<tokio::sync::Mutex<()>>,
        ttl_ms: i64,
    ) -> Writes {
        Writes {
            pool,
            dedicated,
            writing,
            ttl_ms,
            group: Mutex::default(),
        }
    }

    /// Queues a write for the next transaction, starting a leader if none is at work.
    pub(super) fn queue(self: &Arc<Writes>, write: Queued) {
        let lead = {
            let mut group = self.lock();
            group.queued.push_back(write);
            !std::mem::replace(&mut group.leading, true)
        };
        if lead {
            tokio::spawn(self.clone().lead());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes batches until none is queued.
    async fn lead(self: Arc<Writes>) {
        // Whatever else ends the leader (its runtime stopping, say) lets the next write lead.
        let mut leading = Leading(Some(&self));
        let mut kept = self.lock().kept.take();
        loop {
            let batch: Vec<Queued> = {
                let mut group = self.lock();
                // The writes in order up to a session's second one, which waits for the next.
                let mut ids = HashSet::new();
                let take = (group.queued.iter().take(BATCH))
                    .take_while(|q| ids.insert(q.id.as_str()))
                    .count();
                if take == 0 {
                    group.kept = kept.take();
                    group.leading = false;
                    leading.0 = None;
                    return;
                }
                group.queued.drain(..take).collect()
            };
            let _writing = self.writing.lock().await;
            let written = async {
                let mut conn = match kept.take() {
                    Some(conn) => conn,
                    None => self.pool.acquire().await?,
                };
                let outcomes = write_all(&mut conn, self.ttl_ms, &batch).await?;
                // A connection whose transaction failed goes back (or is closed), and the
                // next batch takes one afresh.
                if self.dedicated {
                    kept = Some(conn);
                }
                Ok::<_, StoreError>(outcomes)
            }
            .await;
            let outcomes = written.unwrap_or_else(|e| vec![Err(e); batch.len()]);
            for (queued, outcome) in batch.into_iter().zip(outcomes) {
                let _ = queued.done.send(outcome);
            }
        }
    }
}

/// Held by the leader until it finds nothing left to write. Should the leader be dropped
/// before (its runtime stopping), the lead is free again and the writes it left fail (their
/// callers hear that the write was abandoned, and may try again), rather than wait for a
/// leader that is gone.
struct Leading<'a>(Option<&'a Writes>);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if let Some(writes) = self.0 {
            let mut group = writes.lock();
            group.leading = false;
            group.queued.clear();
        }
    }
}

/// Stores events not at or below their stream's stored tail.
const INSERT_EVENTS: &str = "INSERT INTO events (session_id, stream, seq, data)
    SELECT e.value ->> 0, e.value ->> 3, e.value ->> 4, e.value ->> 5 FROM json_each(?) e
    WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.id = e.value ->> 0
        AND s.owner = e.value ->> 1 AND s.epoch = e.value ->> 2 AND s.expires_at > ?)
    AND NOT EXISTS (SELECT 1 FROM events x WHERE x.session_id = e.value ->> 0
        AND x.stream = e.value ->> 3 AND x.seq >= e.value ->> 4);
";
/// Drops what a stream keeps beyond its bound, oldest first.
const TRIM_STREAMS: &str = "DELETE FROM events WHERE (session_id, stream, seq) IN (
    SELECT session_id, stream, seq FROM (
        SELECT x.session_id, x.stream, x.seq, t.value ->> 4 AS keep,
            row_number() OVER (PARTITION BY x.session_id, x.stream ORDER BY x.seq DESC) AS newer
        FROM json_each(?) t
        JOIN sessions s ON s.id = t.value ->> 0 AND s.owner = t.value ->> 1
            AND s.epoch = t.value ->> 2 AND s.expires_at > ?
        JOIN events x ON x.session_id = s.id AND x.stream = t.value ->> 3)
    WHERE newer > keep);
";
/// Drops the streams the session let go.
const FORGET_STREAMS: &str = "DELETE FROM events WHERE (session_id, stream) IN (
    SELECT s.id, f.value ->> 3 FROM json_each(?) f
    JOIN sessions s ON s.id = f.value ->> 0 AND s.owner = f.value ->> 1
        AND s.epoch = f.value ->> 2 AND s.expires_at > ?);
";
/// Replaces the record where one is given and moves the expiry when it is due; returns the
/// ids written.
const UPDATE_SESSIONS: &str =
    "UPDATE sessions SET record = coalesce(w.value ->> 3, sessions.record),
        expires_at = CASE WHEN sessions.expires_at < ? THEN ? ELSE sessions.expires_at END
    FROM json_each(?) w
    WHERE sessions.id = w.value ->> 0 AND sessions.owner = w.value ->> 1
        AND sessions.epoch = w.value ->> 2 AND sessions.expires_at > ?
    RETURNING sessions.id;
";

/// The statements of a batch: every statement applies to a session only while it is held under its write's
/// fence (owner, epoch, not expired), and the record's update, last, changes the row of every
/// write that held and returns its id. Events at or below their stream's stored tail are
/// already stored (or older than what is) and are skipped; a stream past its bound loses its
/// oldest events; a forgotten stream loses all of them. A batch with no
/// stream to trim or to forget leaves out that statement (each statement costs SQLite
/// temporary tables, even with nothing to do).
///
/// Their parameters, anonymous and bound in the order of their `?` across the statements (as sqlx
/// does; a numbered one would not do: sqlx binds a statement's gaps below its highest number
/// from the next arguments and stops at the last): events `[id, owner, epoch, stream, seq,
/// data]`, now; streams to trim `[id, owner, epoch, stream, keep]`, now; streams to forget
/// `[id, owner, epoch, stream]`, now; the expiry a write must leave at least, the expiry it
/// sets when the stored one is earlier, writes `[id, owner, epoch, record or null]`, now.
///
/// The query is chosen by which of the statements that may be left out it has: events to
/// insert, streams to trim, streams to forget.
fn batch_sql(events: bool, trims: bool, forgets: bool) -> &'static str {
    static SCRIPTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        (0..8)
            .map(|parts: usize| {
                let mut sql = String::from("BEGIN IMMEDIATE;\n");
                for (bit, statement) in [INSERT_EVENTS, TRIM_STREAMS, FORGET_STREAMS]
                    .into_iter()
                    .enumerate()
                {
                    if parts & (1 << bit) != 0 {
                        sql.push_str(statement);
                    }
                }
                sql.push_str(UPDATE_SESSIONS);
                sql.push_str("COMMIT;");
                sql
            })
            .collect()
    });
    let parts = usize::from(events) | usize::from(trims) << 1 | usize::from(forgets) << 2;
    SCRIPTS.get(parts).map_or("", String::as_str)
}

/// How much later than its ttl requires a write sets a session's expiry, so that the writes
/// of the next while leave it alone: an update that moves the expiry also rewrites the expiry
/// index, which cost about a quarter of a write's time in SQLite. A session is then gone
/// between one ttl and one ttl and this slack after its last write (at most a second, and a
/// quarter of a short ttl).
fn expiry_slack(ttl_ms: i64) -> i64 {
    (ttl_ms / 4).min(1000)
}

/// Writes a batch in one trip to the database's thread. A write whose fence does not hold is
/// refused alone; when the transaction fails, every write of the batch does.
async fn write_all(
    conn: &mut PoolConnection<Sqlite>,
    ttl_ms: i64,
    batch: &[Queued],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let now = now_ms();
    let expires = now.saturating_add(ttl_ms);
    let extended = expires.saturating_add(expiry_slack(ttl_ms));
    let params = Params::of(batch)?;
    let sql = batch_sql(
        params.events.is_some(),
        params.trims.is_some(),
        params.forgets.is_some(),
    );
    // Built from this module's constants only: every value is a parameter.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(events) = params.events {
        query = query.bind(events).bind(now);
    }
    if let Some(trims) = params.trims {
        query = query.bind(trims).bind(now);
    }
    if let Some(forgets) = params.forgets {
        query = query.bind(forgets).bind(now);
    }
    let done = query
        .bind(expires)
        .bind(extended)
        .bind(params.writes)
        .bind(now)
        .fetch_all(&mut **conn)
        .await;
    let rows = match done {
        Ok(rows) => rows,
        Err(e) => {
            // Nothing of the batch stays; a connection that cannot roll back is not handed to
            // anyone else.
            if sqlx::query("ROLLBACK").execute(&mut **conn).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e.into());
        }
    };
    let held = rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<HashSet<String>, _>>()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for queued in batch {
        outcomes.push(if held.contains(&queued.id) {
            Ok(())
        } else {
            // Its fence did not hold: the holder says why.
            match check(conn, &queued.id, &queued.fence, now).await {
                Err(e) => Err(e),
                Ok(()) => Err(StoreError::corrupt(
                    "a session write changed nothing, yet its fence holds",
                )),
            }
        });
    }
    Ok(outcomes)
}

/// A session's write waiting for the next transaction, its numbers already in SQL's terms.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) id: String,
    pub(super) fence: Fence,
    /// The record as JSON, when it is replaced.
    pub(super) record: Option<String>,
    /// Stream, seq, data, in order.
    pub(super) events: Vec<(i64, i64, String)>,
    /// Events kept per stream.
    pub(super) keep: i64,
    pub(super) forget: Vec<i64>,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// A batch as the JSON parameters of [`batch_sql`]; none for a statement left out.
struct Params {
    events: Option<String>,
    trims: Option<String>,
    forgets: Option<String>,
    writes: String,
}

impl Params {
    fn of(batch: &[Queued]) -> Result<Params, StoreError> {
        let (mut events, mut trims, mut forgets, mut writes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for queued in batch {
            let id = queued.id.as_str();
            let owner = queued.fence.owner.as_str();
            let epoch = to_sql(queued.fence.epoch, "epoch")?;
            let mut trimmed = Vec::new();
            for (stream, seq, data) in &queued.events {
                events.push((id, owner, epoch, *stream, *seq, data.as_str()));
                // Seqs start at 0 and never repeat: below `keep`, the stream cannot hold more.
                if *seq >= queued.keep && !trimmed.contains(stream) {
                    trimmed.push(*stream);
                    trims.push((id, owner, epoch, *stream, queued.keep));
                }
            }
            for &stream in &queued.forget {
                forgets.push((id, owner, epoch, stream));
            }
            writes.push((id, owner, epoch, queued.record.as_deref()));
        }
        Ok(Params {
            events: (!events.is_empty())
                .then(|| serde_json::to_string(&events))
                .transpose()?,
            trims: (!trims.is_empty())
                .then(|| serde_json::to_string(&trims))
                .transpose()?,
            forgets: (!forgets.is_empty())
                .then(|| serde_json::to_string(&forgets))
                .transpose()?,
            writes: serde_json::to_string(&writes)?,
        })
    }
}
