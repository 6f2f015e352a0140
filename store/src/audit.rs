//! The audit of tool calls: one row per `tools/call` a node served (who called which tool, in
//! which session, when, for how long, and how it ended), in PostgreSQL's `audit` table.
//!
//! Never on the request path: [`Auditor::record`] puts the row in a bounded queue and returns
//! at once. One task per auditor writes what has gathered as one multi-row `INSERT`, after
//! [`Limits::linger`] or as soon as [`Limits::batch`] rows wait. When PostgreSQL is down, or
//! slower than the calls, the queue fills and further rows are dropped and counted
//! ([`Auditor::dropped`]) rather than waited for: an audit that cannot keep up costs rows, never
//! calls, and what it holds stays bounded, [`Limits::capacity`] rows of at most
//! [`MAX_FIELD_BYTES`] per text. A batch PostgreSQL cannot take right now is retried for
//! [`Limits::retry_for`], then dropped and counted as well.
//!
//! Only a store with PostgreSQL keeps an audit ([`SessionStore::auditor`](crate::SessionStore::auditor)):
//! with SQLite or Redis alone, nothing is queued.

use sqlx::postgres::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The most bytes of a principal, session id or tool name the audit keeps: they come from
/// clients, so a longer one is cut (at a character boundary).
pub const MAX_FIELD_BYTES: usize = 256;

/// The first wait before a failed batch is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a tool call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It answered with a result.
    Ok,
    /// It answered with a JSON-RPC error, or with a result that says `isError`.
    Error,
    /// It answered that it needs more input from its client (stateless era, `input_required`);
    /// the client's retry is a call of its own.
    InputRequired,
    /// Its client cancelled it (`notifications/cancelled`, or went away before the answer).
    Cancelled,
    /// It was stopped without an answer because its session ended here (lost to another
    /// node, handed over, deleted).
    Interrupted,
}

impl Outcome {
    /// The word stored in `audit.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::InputRequired => "input_required",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One tool call, for the audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub principal: String,
    /// The session the call belonged to; none in the stateless era.
    pub session: Option<String>,
    pub tool: String,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub outcome: Outcome,
}

impl AuditEntry {
    /// The entry as it is stored: every text at most [`MAX_FIELD_BYTES`], without NUL (which a
    /// PostgreSQL `text` cannot hold, and which would fail the whole batch).
    pub fn bounded(mut self) -> AuditEntry {
        bound(&mut self.principal);
        bound(&mut self.tool);
        if let Some(session) = &mut self.session {
            bound(session);
        }
        self
    }
}

/// At most [`MAX_FIELD_BYTES`] of `s`, cut at a character boundary: what the audit keeps of a
/// text a client sent, copied without copying the rest.
pub fn field(s: &str) -> String {
    let mut kept = s[..boundary(s, MAX_FIELD_BYTES)].to_owned();
    bound(&mut kept);
    kept
}

fn bound(s: &mut String) {
    s.truncate(boundary(s, MAX_FIELD_BYTES));
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
        s.truncate(boundary(s, MAX_FIELD_BYTES));
    }
}

/// The largest character boundary of `s` at or below `max`.
fn boundary(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// How an [`Auditor`] batches, bounds and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most rows waiting to be written; a row beyond is dropped.
    pub capacity: usize,
    /// The most rows of one `INSERT`; that many waiting are written without waiting out
    /// `linger`.
    pub batch: usize,
    /// How long rows gather before they are written.
    pub linger: Duration,
    /// How long a batch PostgreSQL cannot take is retried before it is dropped.
    pub retry_for: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // A few seconds of a busy node's calls; at most about 7 MiB, with every text of
            // every row at its longest.
            capacity: 8192,
            batch: 512,
            linger: Duration::from_millis(100),
            retry_for: Duration::from_secs(10),
        }
    }
}

/// The way into one audit writer: cheap to clone, and every clone feeds the same queue. When
/// the last clone is dropped, the writer writes what it holds, then ends.
#[derive(Clone, Debug)]
pub struct Auditor {
    queue: mpsc::Sender<Queued>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
enum Queued {
    Row(AuditEntry),
    /// Answered once every row queued before it is written or dropped.
    Flush(oneshot::Sender<()>),
}

impl Auditor {
    /// Starts a writer into `pool`'s `audit` table, on the current tokio runtime.
    pub(crate) fn start(pool: PgPool, limits: Limits) -> Auditor {
        let limits = Limits {
            capacity: limits.capacity.max(1),
            batch: limits.batch.max(1),
            ..limits
        };
        let (queue, rows) = mpsc::channel(limits.capacity);
        let counts = Arc::new(Counts::default());
        tokio::spawn(write_batches(pool, rows, counts.clone(), limits));
        Auditor { queue, counts }
    }

    /// Queues one call's row, cut to size; never waits. A row that finds the queue full is
    /// dropped and counted.
    pub fn record(&self, entry: AuditEntry) {
        if self.queue.try_send(Queued::Row(entry.bounded())).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns once every row recorded before it is written or dropped (waiting for room in
    /// the queue if need be): for a node's shutdown, and for tests.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Rows written since start.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Rows dropped since start: the queue was full, or PostgreSQL did not take their batch
    /// within [`Limits::retry_for`].
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Rows waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The writer: gathers rows for `linger` (or until a batch is full, or a flush asks), writes
/// them as one statement, and again, until every [`Auditor`] is gone and the queue is empty.
async fn write_batches(
    pool: PgPool,
    mut queue: mpsc::Receiver<Queued>,
    counts: Arc<Counts>,
    limits: Limits,
) {
    let mut taken = Vec::with_capacity(limits.batch);
    let mut rows = Vec::with_capacity(limits.batch);
    let mut flushes = Vec::new();
    while queue.recv_many(&mut taken, limits.batch).await > 0 {
        let deadline = Instant::now() + limits.linger;
        loop {
            for queued in taken.drain(..) {
                match queued {
                    Queued::Row(row) => rows.push(row),
                    Queued::Flush(done) => flushes.push(done),
                }
            }
            if rows.len() >= limits.batch || !flushes.is_empty() {
                break;
            }
            let more = queue.recv_many(&mut taken, limits.batch - rows.len());
            match tokio::time::timeout_at(deadline, more).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !rows.is_empty() {
            write(&pool, &rows, &counts, limits.retry_for).await;
            rows.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes one batch, retrying while PostgreSQL is unavailable, for up to `retry_for`; counts
/// its rows as written or dropped.
async fn write(pool: &PgPool, rows: &[AuditEntry], counts: &Counts, retry_for: Duration) {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match crate::postgres::insert_audit(pool, rows).await {
            Ok(()) => {
                counts
                    .written
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(e) => e,
        };
        if error.is_retryable() && started.elapsed() + backoff <= retry_for {
            tracing::debug!(rows = rows.len(), %error, retry_in = ?backoff, "audit write failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        counts
            .dropped
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        tracing::warn!(rows = rows.len(), %error, "audit rows dropped: PostgreSQL did not take them");
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(principal: &str, tool: &str) -> AuditEntry {
        AuditEntry {
            principal: principal.into(),
            session: Some("s".repeat(1000)),
            tool: tool.into(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn client_texts_are_cut_to_size_at_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES); // two bytes each
        let e = entry(&long, "add").bounded();
        assert_eq!(e.principal.len(), MAX_FIELD_BYTES);
        assert!(e.principal.chars().all(|c| c == 'é'));
        assert_eq!(e.session.as_deref().map(str::len), Some(MAX_FIELD_BYTES));
        assert_eq!(e.tool, "add", "a short text stays as it is");
        // 255 ASCII bytes and a 2-byte character that would end past the limit.
        let odd = format!("{}é", "a".repeat(MAX_FIELD_BYTES - 1));
        assert_eq!(field(&odd), "a".repeat(MAX_FIELD_BYTES - 1));
        assert_eq!(field("counter"), "counter");
    }

    #[test]
    fn nul_never_reaches_postgres() {
        let e = entry("alice\0", "to\0ol").bounded();
        assert_eq!(e.principal, "alice\u{FFFD}");
        assert_eq!(e.tool, "to\u{FFFD}ol");
        let nuls = "\0".repeat(MAX_FIELD_BYTES * 2);
        let cut = field(&nuls);
        assert!(
            cut.len() <= MAX_FIELD_BYTES && !cut.contains('\0'),
            "{cut:?}"
        );
    }

    #[test]
    fn outcomes_are_a_small_fixed_vocabulary() {
        let words: Vec<&str> = [
            Outcome::Ok,
            Outcome::Error,
            Outcome::InputRequired,
            Outcome::Cancelled,
            Outcome::Interrupted,
        ]
        .map(Outcome::as_str)
        .to_vec();
        assert_eq!(
            words,
            ["ok", "error", "input_required", "cancelled", "interrupted"]
        );
    }
}
