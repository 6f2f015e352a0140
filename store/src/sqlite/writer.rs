//! The SQLite store's writer: session writes batched into one transaction, each session's
//! statements fenced by its own ownership.

use super::{check, now_ms};
use crate::{Fence, StoreError, from_sql, to_sql};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Session writes taken into one transaction at most.
const BATCH: usize = 256;

/// The store's writer: every session write that queued while the last transaction ran goes
/// into the next one (a group commit), so a commit's cost is shared by all of them. Ends when
/// every handle of the store is dropped.
pub(super) async fn write_queued(
    pool: SqlitePool,
    writing: Arc<tokio::sync::Mutex<()>>,
    ttl_ms: i64,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        let _writing = writing.lock().await;
        let outcomes = match write_all(&pool, ttl_ms, &batch).await {
            Ok(outcomes) => outcomes,
            Err(e) => vec![Err(e); batch.len()],
        };
        for (queued, outcome) in batch.drain(..).zip(outcomes) {
            let _ = queued.done.send(outcome);
        }
    }
}

/// Writes a batch as one script on one connection: `BEGIN IMMEDIATE`, every session's
/// statements, `COMMIT`, in one trip to the database's thread (more only for a batch too
/// large for one statement's parameters). A write whose fence does not hold is refused alone;
/// when the transaction fails, every write of the batch does.
async fn write_all(
    pool: &SqlitePool,
    ttl_ms: i64,
    batch: &[Queued],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let now = now_ms();
    let expires = now.saturating_add(ttl_ms);
    let mut conn = pool.acquire().await?;
    let mut written = vec![false; batch.len()];
    let mut script = Script::default();
    script.push("BEGIN IMMEDIATE;", []);
    for (i, queued) in batch.iter().enumerate() {
        script.session(i, queued, now, expires)?;
        let last = i + 1 == batch.len();
        if last {
            script.push("COMMIT;", []);
        }
        if last || script.args.len() >= SCRIPT_ARGS {
            match std::mem::take(&mut script).run(&mut conn).await {
                Ok(held) => {
                    for i in held {
                        if let Some(w) = written.get_mut(i) {
                            *w = true;
                        }
                    }
                }
                Err(e) => {
                    // Nothing of the batch stays; a connection that cannot roll back is not
                    // handed to anyone else.
                    if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                        conn.close_on_drop();
                    }
                    return Err(e);
                }
            }
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for (queued, written) in batch.iter().zip(written) {
        outcomes.push(if written {
            Ok(())
        } else {
            // Its fence did not hold: the holder says why.
            match check(&mut conn, &queued.id, &queued.fence, now).await {
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

/// Parameters past which a batch's script is run and the next one begun (SQLite allows 32,766
/// in one statement; a script of a few statements per session stays well below).
const SCRIPT_ARGS: usize = 4096;

/// Sessions' writes as one query of several statements, run in one trip to the database's
/// thread, and its parameters in the order of their `?` in the text (sqlx binds a query's
/// anonymous parameters one after the other across its statements).
#[derive(Default)]
struct Script<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

enum Arg<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
}

impl<'a> Script<'a> {
    fn push(&mut self, sql: &str, args: impl IntoIterator<Item = Arg<'a>>) {
        self.sql.push_str(sql);
        self.args.extend(args);
    }

    /// A condition: the session is held under `queued`'s fence.
    fn held(&mut self, queued: &'a Queued, epoch: i64, now: i64) {
        self.push(
            "EXISTS (SELECT 1 FROM sessions \
             WHERE id = ? AND owner = ? AND epoch = ? AND expires_at > ?)",
            [
                Arg::Text(&queued.id),
                Arg::Text(&queued.fence.owner),
                Arg::Int(epoch),
                Arg::Int(now),
            ],
        );
    }

    /// Adds the `index`th write of the batch. Each of its statements applies only while the
    /// session is held under its fence, and the record's update, last, then always changes
    /// its row and returns `index`: the writes whose index comes back are those that held.
    fn session(
        &mut self,
        index: usize,
        queued: &'a Queued,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let epoch = to_sql(queued.fence.epoch, "epoch")?;
        let id = || Arg::Text(&queued.id);
        let mut trimmed = Vec::new();
        for (stream, seq, data) in &queued.events {
            // Not above the stream's stored tail: already stored, or older than what is.
            self.push(
                "INSERT INTO events (session_id, stream, seq, data) SELECT ?, ?, ?, ? WHERE ",
                [id(), Arg::Int(*stream), Arg::Int(*seq), Arg::Text(data)],
            );
            self.held(queued, epoch, now);
            self.push(
                " AND NOT EXISTS (SELECT 1 FROM events \
                 WHERE session_id = ? AND stream = ? AND seq >= ?);",
                [id(), Arg::Int(*stream), Arg::Int(*seq)],
            );
            // Seqs start at 0 and never repeat: below `keep`, the stream cannot hold more.
            if *seq >= queued.keep && !trimmed.contains(stream) {
                trimmed.push(*stream);
            }
        }
        for &stream in &trimmed {
            self.push("DELETE FROM events WHERE ", []);
            self.held(queued, epoch, now);
            self.push(
                " AND session_id = ? AND stream = ? AND seq <= (SELECT seq FROM events \
                 WHERE session_id = ? AND stream = ? ORDER BY seq DESC LIMIT 1 OFFSET ?);",
                [
                    id(),
                    Arg::Int(stream),
                    id(),
                    Arg::Int(stream),
                    Arg::Int(queued.keep),
                ],
            );
        }
        for &stream in &queued.forget {
            self.push("DELETE FROM events WHERE ", []);
            self.held(queued, epoch, now);
            self.push(
                " AND session_id = ? AND stream = ?;",
                [id(), Arg::Int(stream)],
            );
        }
        self.push(
            "UPDATE sessions SET record = coalesce(?, record), expires_at = ? \
             WHERE id = ? AND owner = ? AND epoch = ? AND expires_at > ? RETURNING ?;",
            [
                Arg::MaybeText(queued.record.as_deref()),
                Arg::Int(expires),
                id(),
                Arg::Text(&queued.fence.owner),
                Arg::Int(epoch),
                Arg::Int(now),
                Arg::Int(to_sql(index as u64, "index")?),
            ],
        );
        Ok(())
    }

    /// Runs the script; returns the indexes of the writes whose fence held.
    async fn run(self, conn: &mut SqliteConnection) -> Result<Vec<usize>, StoreError> {
        if self.sql.is_empty() {
            return Ok(Vec::new());
        }
        // Built from this module's constants only: every value is a parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for arg in self.args {
            query = match arg {
                Arg::Text(v) => query.bind(v),
                Arg::MaybeText(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| Ok(from_sql(row.try_get(0)?, "index")? as usize))
            .collect()
    }
}
