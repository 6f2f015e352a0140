//! The write-behind queue of a [`Tiered`](super::Tiered) store: the writes the hot tier has
//! taken, on their way to the durable one.
//!
//! One task owns the writing. Woken by a write, it lets writes gather for [`Limits::linger`]
//! (less when [`Limits::batch`] of them wait already), then hands each waiting session's writes
//! to a job that writes them in order; [`Limits::sessions_at_once`] jobs run at once. A session
//! is in at most one job at a time, so its writes reach the durable tier in the order the hot
//! tier took them; sessions do not wait for each other. The durable tier checks each write's
//! fence itself: a write refused as fenced is a stale owner's, and is dropped.
//!
//! Bounded: at most [`Limits::capacity`] writes are held, waiting or being written. Before a
//! new write takes a place, it absorbs what it makes redundant of its session's waiting writes:
//!
//! - a save replaces the session's waiting saves under the same fence that no claim or delete
//!   follows: a record is replaced whole, and it is stored apart from the events, so a save
//!   may move past the appends between them;
//! - an append joins the session's last waiting write when that is an append under the same
//!   fence and keep that forgets none of the streams the new one writes, as the durable tier
//!   would store the two one after the other;
//! - a claim repeats nothing when the last waiting write is the same claim.
//!
//! A write that finds no room waits for it: the hot tier's writers are slowed to the durable
//! tier's pace rather than letting the durable tier fall behind without bound. Coalescing keeps
//! that rare: a busy session holds a few places, not one per write. (A caller that gives up
//! while its write waits for room leaves that write out of the durable tier.)
//!
//! A write the durable tier cannot take right now ([`StoreError::Unavailable`]) is retried with
//! backoff for [`Limits::retry_for`], then dropped and logged: a write it will never take (a
//! record PostgreSQL cannot store) must not hold a job, and behind it a session, for ever. Any
//! other refusal (fenced, gone, corrupt) drops the write at once.

use crate::{Fence, SessionRecord, SessionStore, StoreError, StoredEvent, ordered};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How a write-behind queue batches, bounds and retries its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most writes held, waiting or being written; a write beyond waits for room.
    pub capacity: usize,
    /// Writes waiting that are written without waiting out `linger`.
    pub batch: usize,
    /// How long writes gather before they are written, so that a session's burst goes out as
    /// a few coalesced writes.
    pub linger: Duration,
    /// Sessions written at once, each in a job of its own.
    pub sessions_at_once: usize,
    /// How long a write the durable tier cannot take is retried before it is dropped.
    pub retry_for: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            capacity: 4096,
            batch: 256,
            linger: Duration::from_millis(5),
            // Half of a PgStore's pool, which the tiered store's reads share.
            sessions_at_once: 4,
            retry_for: Duration::from_secs(10),
        }
    }
}

/// The first wait before a failed write is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One write the hot tier took, to be repeated on the durable tier.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Write {
    Claim(Fence),
    Save(Box<SessionRecord>, Fence),
    Append {
        fence: Fence,
        events: Vec<StoredEvent>,
        keep: usize,
        forget: Vec<u64>,
    },
    Delete(Fence),
}

impl Write {
    fn name(&self) -> &'static str {
        match self {
            Write::Claim(_) => "claim",
            Write::Save(..) => "save",
            Write::Append { .. } => "append",
            Write::Delete(_) => "delete",
        }
    }

    async fn apply(&self, durable: &dyn SessionStore, id: &str) -> Result<(), StoreError> {
        match self {
            Write::Claim(fence) => durable.claim(id, fence).await.map(drop),
            Write::Save(record, fence) => durable.save(record, fence).await,
            Write::Append {
                fence,
                events,
                keep,
                forget,
            } => durable.append(id, fence, events, *keep, forget).await,
            Write::Delete(fence) => durable.delete(id, fence).await,
        }
    }
}

/// The handle the tiered store queues through. Dropping it closes the queue: the task writes
/// what is held, then ends.
pub(crate) struct WriteBehind {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writing task: a write was queued, a session is ready again, or the queue
    /// closed. `notify_one`, so that a wake-up while the task is busy is not lost.
    queued: Notify,
    /// Wakes whoever waits for writes to finish: for room, for a session, for everything.
    done: Notify,
    limits: Limits,
}

#[derive(Default)]
struct State {
    /// Sessions with writes held, waiting or being written; no entry for the others.
    sessions: HashMap<String, Session>,
    /// Sessions with writes waiting and no job writing them, in the order they became so.
    ready: VecDeque<String>,
    /// Writes held, waiting or being written.
    held: usize,
    /// Writes waiting.
    waiting: usize,
    closed: bool,
}

#[derive(Default)]
struct Session {
    waiting: VecDeque<Write>,
    /// How many of the session's writes a job is writing (none when no job has it).
    writing: usize,
    /// Whether the session is in [`State::ready`].
    ready: bool,
}

impl WriteBehind {
    /// Starts the writing task (on the current tokio runtime) over `durable`.
    pub(crate) fn start(durable: Arc<dyn SessionStore>, limits: Limits) -> WriteBehind {
        let limits = Limits {
            capacity: limits.capacity.max(1),
            batch: limits.batch.max(1),
            sessions_at_once: limits.sessions_at_once.max(1),
            ..limits
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            done: Notify::new(),
            limits,
        });
        tokio::spawn(run(shared.clone(), durable));
        WriteBehind { shared }
    }

    /// Queues a write of session `id`, waiting for room when the queue is full.
    pub(crate) async fn push(&self, id: &str, mut write: Write) {
        loop {
            let room = self.shared.done.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.shared.lock();
                match state.absorb(id, write) {
                    None => return,
                    Some(left) if state.held < self.shared.limits.capacity => {
                        state.queue(id, left);
                        drop(state);
                        self.shared.queued.notify_one();
                        return;
                    }
                    Some(left) => write = left,
                }
            }
            room.await;
        }
    }

    /// Returns once no write of session `id` is held: what this queue took of it is in the
    /// durable tier, or dropped.
    pub(crate) async fn settle(&self, id: &str) {
        self.wait_until(|state| !state.sessions.contains_key(id))
            .await;
    }

    /// Returns once no write is held. Waits as long as the durable tier keeps failing, up to
    /// [`Limits::retry_for`] per write.
    pub(crate) async fn flush(&self) {
        self.wait_until(|state| state.held == 0).await;
    }

    async fn wait_until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let progress = self.shared.done.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if done(&self.shared.lock()) {
                return;
            }
            progress.await;
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits out the linger, cut short by a full batch or a close.
    async fn linger(&self) {
        let deadline = Instant::now() + self.limits.linger;
        loop {
            let more = self.queued.notified();
            {
                let state = self.lock();
                if state.closed || state.waiting >= self.limits.batch {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                return;
            }
        }
    }
}

impl State {
    /// Folds `write` into the session's waiting writes where it makes some redundant; returns
    /// what still needs a place of its own.
    fn absorb(&mut self, id: &str, write: Write) -> Option<Write> {
        let Some(session) = self.sessions.get_mut(id) else {
            return Some(write);
        };
        let (left, dropped) = absorb(&mut session.waiting, write);
        self.held -= dropped;
        self.waiting -= dropped;
        left
    }

    fn queue(&mut self, id: &str, write: Write) {
        let session = self.sessions.entry(id.to_owned()).or_default();
        session.waiting.push_back(write);
        if session.writing == 0 && !session.ready {
            session.ready = true;
            self.ready.push_back(id.to_owned());
        }
        self.held += 1;
        self.waiting += 1;
    }

    /// The next ready session's waiting writes, now being written.
    fn take(&mut self) -> Option<(String, VecDeque<Write>)> {
        while let Some(id) = self.ready.pop_front() {
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            session.ready = false;
            if session.waiting.is_empty() {
                if session.writing == 0 {
                    self.sessions.remove(&id);
                }
                continue;
            }
            let writes = std::mem::take(&mut session.waiting);
            session.writing = writes.len();
            self.waiting -= writes.len();
            return Some((id, writes));
        }
        None
    }

    /// A job wrote (or dropped) the `count` writes it took of session `id`. Returns whether the
    /// session is ready again.
    fn finish(&mut self, id: &str, count: usize) -> bool {
        self.held -= count;
        let Some(session) = self.sessions.get_mut(id) else {
            return false;
        };
        session.writing = 0;
        if session.waiting.is_empty() {
            self.sessions.remove(id);
            return false;
        }
        if !session.ready {
            session.ready = true;
            self.ready.push_back(id.to_owned());
        }
        true
    }
}

/// Folds `write` into a session's waiting writes (see the module doc); returns what is left of
/// it to queue and how many waiting writes it dropped.
fn absorb(waiting: &mut VecDeque<Write>, write: Write) -> (Option<Write>, usize) {
    match write {
        Write::Save(record, fence) => {
            let before = waiting.len();
            // Back to front, through the saves and appends of the same fence.
            let mut at = waiting.len();
            while at > 0 {
                at -= 1;
                match &waiting[at] {
                    Write::Save(_, f) if *f == fence => {
                        waiting.remove(at);
                    }
                    Write::Append { fence: f, .. } if *f == fence => {}
                    _ => break,
                }
            }
            (Some(Write::Save(record, fence)), before - waiting.len())
        }
        Write::Append {
            fence,
            events,
            keep,
            forget,
        } => match waiting.back_mut() {
            Some(Write::Append {
                fence: f,
                events: queued,
                keep: k,
                forget: forgotten,
            }) if *f == fence
                && *k == keep
                && !events.iter().any(|e| forgotten.contains(&e.stream)) =>
            {
                join(queued, events, keep);
                // What the later append forgets goes, whichever of the two wrote it.
                queued.retain(|e| !forget.contains(&e.stream));
                forgotten.extend(forget);
                forgotten.sort_unstable();
                forgotten.dedup();
                (None, 0)
            }
            _ => (
                Some(Write::Append {
                    fence,
                    events,
                    keep,
                    forget,
                }),
                0,
            ),
        },
        Write::Claim(fence) => match waiting.back() {
            Some(Write::Claim(f)) if *f == fence => (None, 0),
            _ => (Some(Write::Claim(fence)), 0),
        },
        delete @ Write::Delete(_) => (Some(delete), 0),
    }
}

/// Adds the events of a later append, `more`, to a waiting append's, so that one append of the
/// result stores what the two appends would, one after the other (both keeping `keep`):
///
/// - per stream, an event of `more` not above the waiting append's last seq is dropped, as the
///   store would drop it once the waiting append is stored;
/// - per stream, only the newest `keep` events are kept: an older one is either not above the
///   stored tail (dropped by the store) or, with all those newer than it, above it, and then
///   trimmed away by the store anyway.
fn join(events: &mut Vec<StoredEvent>, more: Vec<StoredEvent>, keep: usize) {
    let mut tails: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events.iter() {
        let tail = tails.entry(e.stream).or_insert(e.seq);
        *tail = (*tail).max(e.seq);
    }
    let later: Vec<StoredEvent> = ordered(&more)
        .into_iter()
        .filter(|e| tails.get(&e.stream).is_none_or(|&tail| e.seq > tail))
        .cloned()
        .collect();
    events.extend(later);
    // In seq order per stream, a repeated (stream, seq) as its first occurrence: what the store
    // makes of one append.
    events.sort_by_key(|e| (e.stream, e.seq));
    events.dedup_by_key(|e| (e.stream, e.seq));
    let keep = keep.max(1);
    let mut kept: BTreeMap<u64, usize> = BTreeMap::new();
    let mut newest_first: Vec<StoredEvent> = std::mem::take(events).into_iter().rev().collect();
    newest_first.retain(|e| {
        let n = kept.entry(e.stream).or_insert(0);
        *n += 1;
        *n <= keep
    });
    newest_first.reverse();
    *events = newest_first;
}

/// The writing task: hands ready sessions to jobs until the queue is closed and empty.
async fn run(shared: Arc<Shared>, durable: Arc<dyn SessionStore>) {
    let mut jobs = JoinSet::new();
    loop {
        while jobs.len() < shared.limits.sessions_at_once {
            let Some((id, writes)) = shared.lock().take() else {
                break;
            };
            jobs.spawn(write_session(shared.clone(), durable.clone(), id, writes));
        }
        if jobs.is_empty() {
            let state = shared.lock();
            if state.closed && state.ready.is_empty() {
                return;
            }
        }
        tokio::select! {
            Some(joined) = jobs.join_next(), if !jobs.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "a write-behind job failed");
                }
            }
            () = shared.queued.notified() => shared.linger().await,
        }
    }
}

/// Writes one session's writes in order. What it took is released when it ends, however it
/// ends.
async fn write_session(
    shared: Arc<Shared>,
    durable: Arc<dyn SessionStore>,
    id: String,
    writes: VecDeque<Write>,
) {
    struct Release<'a> {
        shared: &'a Shared,
        id: &'a str,
        count: usize,
    }
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            let again = self.shared.lock().finish(self.id, self.count);
            if again {
                self.shared.queued.notify_one();
            }
            self.shared.done.notify_waiters();
        }
    }
    let _release = Release {
        shared: &shared,
        id: &id,
        count: writes.len(),
    };
    for write in &writes {
        write_one(&*durable, &id, write, shared.limits.retry_for).await;
    }
}

/// Writes one write, retrying while the durable tier is unavailable, for up to `retry_for`.
async fn write_one(durable: &dyn SessionStore, id: &str, write: &Write, retry_for: Duration) {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match write.apply(durable, id).await {
            Ok(()) => return,
            Err(e) => e,
        };
        match error {
            e if e.is_retryable() && started.elapsed() + backoff <= retry_for => {
                tracing::warn!(
                    session = id,
                    write = write.name(),
                    error = %e,
                    retry_in = ?backoff,
                    "durable store write failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            StoreError::Fenced { owner, epoch } => {
                // A later claim reached the durable tier: this write is a stale owner's.
                tracing::debug!(
                    session = id,
                    write = write.name(),
                    %owner,
                    epoch,
                    "stale write not written behind"
                );
                return;
            }
            e => {
                tracing::error!(
                    session = id,
                    write = write.name(),
                    error = %e,
                    "durable store write dropped"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
