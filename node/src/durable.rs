//! Sessions written through to a store ([`shardgate_store`]), so that they outlive this node.
//!
//! Memory stays the hot path: a session is served from its [`crate::session::Session`], and
//! every change a new owner needs (the record, each stream's events) is handed to this node's
//! [`Writer`]. Each session's writes go to the store in order, different sessions' side by side
//! ([`queue`]): the writes of a session that queue up while its last round is with the store
//! form its next round, written as one atomic store write. A round is a task of its own, on the
//! runtime of the request that started it, so that the request, its round and the answer's
//! stream wake each other on one thread: only the store's own trips cross to another. An event
//! reaches its client only once the acknowledgement level ([`Ack`]) holds for it.
//!
//! Every write carries the session's [`Fence`] (this node, and the membership epoch it claimed
//! the session under). A refused write means another node has claimed the session since: the
//! writer reports the session as lost, and the node drops it from memory without a word to the
//! store. A store that stays unreachable is reported the same way, and marks the node unready.

use crate::stream::EventStream;
use queue::{Key, Queue};
use shardgate_store::{Changes, Fence, SessionRecord, SessionStore, StoreError, StoredEvent};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use tracing::field::Empty;

/// Writes the writer may be behind by before `memory` stops letting events out at once: then
/// clients wait for the store, as at the `store` level, and the backlog cannot grow without
/// bound.
const MEMORY_BACKLOG: usize = 10_000;
/// Rounds (one session's writes each) with the store at once.
const ROUNDS_AT_ONCE: usize = 64;
/// Pauses between the attempts at a write the store could not take; after the last one the
/// write fails.
const RETRY: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(400),
];
/// Locks that keep two requests from taking over one session at once (by hash of its id).
const TAKEOVER_LOCKS: usize = 64;

/// When a client may see what a session did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ack {
    /// At once: the store is written behind, and a node's death may lose the newest events.
    Memory,
    /// Once the store has it (Redis or SQLite or PostgreSQL took the write).
    #[default]
    Store,
    /// Once it is on a replica too (Redis `WAIT 1`; a SQL commit is already durable).
    Replicated,
}

impl FromStr for Ack {
    type Err = String;

    fn from_str(s: &str) -> Result<Ack, String> {
        match s {
            "memory" => Ok(Ack::Memory),
            "store" => Ok(Ack::Store),
            "replicated" => Ok(Ack::Replicated),
            other => Err(format!(
                "unknown acknowledgement level '{other}': memory, store or replicated"
            )),
        }
    }
}

/// A session this node may no longer write: the fence it held and why.
pub struct Lost {
    pub session: Arc<str>,
    pub fence: Arc<Fence>,
    pub error: StoreError,
}

/// What the node's store path has done since start, for `/metrics`.
#[derive(Default)]
pub struct Counts {
    /// Batches the writer wrote.
    pub batches: AtomicU64,
    /// Store calls those batches made (saves, appends, replication waits).
    pub writes: AtomicU64,
    /// Sessions (and stateless keys) taken over from the store.
    pub takeovers: AtomicU64,
    /// Sessions dropped because the store refused or could not take their writes.
    pub lost: AtomicU64,
    /// Sessions that left memory idle, to be loaded again on their next request.
    pub passivated: AtomicU64,
}

impl Counts {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The store behind this node's sessions, and the writer in front of it.
pub struct Durable {
    pub store: Arc<dyn SessionStore>,
    pub ack: Ack,
    writer: Writer,
    /// False while the store cannot be written: readiness reports it.
    healthy: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
    takeovers: Vec<tokio::sync::Mutex<()>>,
}

impl Durable {
    /// The writer in front of `store`; sessions it can no longer write are sent to `lost`.
    pub fn start(
        store: Arc<dyn SessionStore>,
        ack: Ack,
        keep: usize,
        lost: mpsc::UnboundedSender<Lost>,
    ) -> Durable {
        let healthy = Arc::new(AtomicBool::new(true));
        let counts = Arc::new(Counts::default());
        let writer = Writer(Arc::new(Rounds {
            store: store.clone(),
            ack,
            keep,
            lost,
            healthy: healthy.clone(),
            counts: counts.clone(),
            backlog: AtomicUsize::new(0),
            queue: Mutex::default(),
            at_once: tokio::sync::Semaphore::new(ROUNDS_AT_ONCE),
            home: tokio::runtime::Handle::current(),
        }));
        Durable {
            store,
            ack,
            writer,
            healthy,
            counts,
            takeovers: (0..TAKEOVER_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Whether the last write the store was asked for succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The link through which a session held under `fence` writes.
    pub fn link(&self, session: &str, fence: Fence) -> Link {
        Link {
            writer: self.writer.clone(),
            session: session.into(),
            fence: Arc::new(fence),
            forgotten: Arc::default(),
        }
    }

    /// Waits until everything handed to the writer so far is written (or failed).
    pub async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        let op = Op {
            session: "".into(),
            fence: Arc::new(Fence::new("", 0)),
            forgotten: Vec::new(),
            write: Write::Barrier,
            mark: Mark::default(),
            done: Done::Tell(tx),
        };
        self.writer.send(op);
        let _ = rx.await;
    }

    /// Held while a session is being taken over, so that one request does it and the others
    /// find it done.
    pub async fn takeover_lock(&self, session: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let hash = session
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.takeovers[hash % self.takeovers.len()].lock().await
    }
}

/// Where the node's sessions hand their writes.
#[derive(Clone)]
struct Writer(Arc<Rounds>);

/// The writes waiting and under way, and what their rounds work with.
struct Rounds {
    store: Arc<dyn SessionStore>,
    ack: Ack,
    keep: usize,
    lost: mpsc::UnboundedSender<Lost>,
    healthy: Arc<AtomicBool>,
    counts: Arc<Counts>,
    /// Writes handed to the writer and not done yet.
    backlog: AtomicUsize,
    queue: Mutex<Queue>,
    /// Rounds with the store at once; the others wait for a turn.
    at_once: tokio::sync::Semaphore,
    /// Where a round goes when it is not started from a runtime.
    home: tokio::runtime::Handle,
}

impl Writer {
    /// Queues a write, and starts a round for its session if none is under way.
    fn send(&self, op: Op) {
        if !matches!(op.write, Write::Barrier) {
            self.0.backlog.fetch_add(1, Ordering::Relaxed);
        }
        let ready: Vec<Key> = {
            let mut queue = self.0.lock();
            queue.push(op);
            std::iter::from_fn(|| queue.next_ready()).collect()
        };
        for key in ready {
            let rounds = write_rounds(UnderWay::of(&self.0, key));
            match tokio::runtime::Handle::try_current() {
                Ok(here) => here.spawn(rounds),
                Err(_) => self.0.home.spawn(rounds),
            };
        }
    }
}

impl Rounds {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes a session's round, then the next session's while one is ready.
///
/// A round starts once the tasks ready on its runtime have run: what the request that wrote
/// does next (its call, when the node answers it at once) and what other requests of the
/// session do meanwhile goes in the same store write, rather than in one after it.
async fn write_rounds(mut round: UnderWay) {
    let rounds = round.rounds.clone();
    tokio::task::yield_now().await;
    loop {
        let writes = {
            let _turn = rounds.at_once.acquire().await;
            let ops = round.take();
            write_round(&rounds, ops).await
        };
        round.finish();
        Counts::add(&rounds.counts.batches, 1);
        match writes {
            Ok(writes) => {
                Counts::add(&rounds.counts.writes, writes);
                rounds.healthy.store(true, Ordering::Relaxed);
            }
            Err((writes, error)) => {
                Counts::add(&rounds.counts.writes, writes);
                if error.is_retryable() {
                    rounds.healthy.store(false, Ordering::Relaxed);
                }
                let (session, fence) = round.key.clone();
                let _ = rounds.lost.send(Lost {
                    session,
                    fence,
                    error,
                });
            }
        }
        // The session's writes that queued meanwhile, or another session's, if no other
        // round took them.
        match rounds.lock().next_ready() {
            Some(next) => round = UnderWay::of(&rounds, next),
            None => return,
        }
    }
}

/// A session's round, from the queue's choosing it until it is done. Should it be dropped
/// before (its task never run, or its runtime stopping), its writes count as done, failed
/// (their callers hear that the writer stopped), so that nothing waits for them for ever.
struct UnderWay {
    rounds: Arc<Rounds>,
    key: Key,
    stage: Stage,
    seqs: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Chosen; its writes still wait in the queue.
    Chosen,
    /// Its writes taken.
    Taken,
    /// Done: its session may go again.
    Finished,
}

impl UnderWay {
    fn of(rounds: &Arc<Rounds>, key: Key) -> UnderWay {
        UnderWay {
            rounds: rounds.clone(),
            key,
            stage: Stage::Chosen,
            seqs: Vec::new(),
        }
    }

    /// The session's writes waiting now, taken from the queue as the round's.
    fn take(&mut self) -> Vec<Op> {
        let (seqs, ops) = self.rounds.lock().take(&self.key);
        self.seqs = seqs;
        self.stage = Stage::Taken;
        ops
    }

    /// The round is done: its session may go again, and barriers behind it may be done.
    fn finish(&mut self) {
        if self.stage == Stage::Finished {
            return;
        }
        if self.stage == Stage::Chosen {
            // Never started: what waits goes, failed, with it.
            drop(self.take());
        }
        self.stage = Stage::Finished;
        let seqs = std::mem::take(&mut self.seqs);
        self.rounds.lock().finished(&self.key, &seqs);
        self.rounds.backlog.fetch_sub(seqs.len(), Ordering::Relaxed);
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A session's way to its store: what it writes carries its fence.
#[derive(Clone)]
pub struct Link {
    writer: Writer,
    session: Arc<str>,
    fence: Arc<Fence>,
    /// Streams let go since the session's last write, dropped from the store with its next.
    forgotten: Arc<std::sync::Mutex<Vec<u64>>>,
}

/// The outcome of a write, once the acknowledgement level holds (or cannot).
pub type Written = oneshot::Receiver<Result<(), StoreError>>;

impl Link {
    pub fn ack(&self) -> Ack {
        self.writer.0.ack
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    fn send(&self, write: Write, mark: Mark, done: Done) {
        let forgotten = std::mem::take(
            &mut *self
                .forgotten
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.writer.send(Op {
            session: self.session.clone(),
            fence: self.fence.clone(),
            forgotten,
            write,
            mark,
            done,
        });
    }

    /// Restarts the session's time to live in the store: a session held here is alive though
    /// nothing was written for a while (a long call, a client listening).
    pub fn touch(&self) {
        self.send(Write::Touch, Mark::default(), Done::Nothing);
    }

    /// Drops a stream the session no longer keeps for replay from the store too, so that what
    /// the store holds of a session stays as bounded as what memory does: with the session's
    /// next write (a stream is let go as another opens, whose write follows at once), not in a
    /// store write of its own.
    pub fn forget(&self, stream: u64) {
        self.forgotten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(stream);
    }

    /// Saves the record (`changed`: its upstream state changed since the session's last
    /// write); the answer says when it is written.
    pub fn save(&self, record: SessionRecord, changed: bool) -> Written {
        let (tx, rx) = oneshot::channel();
        let mark = Mark {
            accepts: false,
            changes: changed,
        };
        self.send(Write::Save(Box::new(record)), mark, Done::Tell(tx));
        rx
    }

    /// Saves the record of requests just accepted. A later write of the session that changes
    /// its upstream state goes in one store write with it only where a write reported failed
    /// never lands ([`SessionStore::failed_writes_may_land`]): the client of a request whose
    /// acceptance failed hears that it may try again, which must not find the request's
    /// effect stored.
    /// `changed` as for [`Link::save`]: the record may carry what an earlier call changed.
    pub fn accept(&self, record: SessionRecord, changed: bool) -> Written {
        let (tx, rx) = oneshot::channel();
        let mark = Mark {
            accepts: true,
            changes: changed,
        };
        self.send(Write::Save(Box::new(record)), mark, Done::Tell(tx));
        rx
    }

    /// Appends one event of `stream`, in one write with `record` (and whether its upstream
    /// state changed) when one is given; the writer releases the event to the stream's
    /// listener once it is written. True when the caller releases it now instead: at the
    /// `memory` level, while the writer keeps up.
    pub fn append(
        &self,
        event: StoredEvent,
        record: Option<(SessionRecord, bool)>,
        stream: Weak<EventStream>,
    ) -> bool {
        let seq = event.seq;
        let at_once = self.writer.0.ack == Ack::Memory
            && self.writer.0.backlog.load(Ordering::Relaxed) < MEMORY_BACKLOG;
        let done = if at_once {
            Done::Nothing
        } else {
            Done::Release(stream, seq)
        };
        let mark = Mark {
            accepts: false,
            changes: matches!(record, Some((_, true))),
        };
        let record = record.map(|(r, _)| Box::new(r));
        self.send(Write::Append(event, record), mark, done);
        at_once
    }
}

/// Waits for a write at the session's level: `memory` does not wait.
pub async fn settled(link: &Link, written: Written) -> Result<(), StoreError> {
    if link.ack() == Ack::Memory {
        return Ok(());
    }
    written
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the session writer stopped".into())))
}

enum Write {
    Save(Box<SessionRecord>),
    /// An event, and the record as it is once the event is stored.
    Append(StoredEvent, Option<Box<SessionRecord>>),
    /// Restarts the time to live.
    Touch,
    /// Writes nothing: done once everything queued before it is.
    Barrier,
}

/// What a write means for the store writes it may share.
#[derive(Clone, Copy, Default)]
struct Mark {
    /// The record of requests just accepted.
    accepts: bool,
    /// A record whose upstream state changed since the session's last write.
    changes: bool,
}

enum Done {
    Nothing,
    Release(Weak<EventStream>, u64),
    Tell(oneshot::Sender<Result<(), StoreError>>),
}

struct Op {
    session: Arc<str>,
    fence: Arc<Fence>,
    /// Streams the session let go since its last write: dropped whole, before `write`.
    forgotten: Vec<u64>,
    write: Write,
    mark: Mark,
    done: Done,
}

/// Writes one round of a session's writes; the store calls it made, and the error it met.
async fn write_round(w: &Rounds, ops: Vec<Op>) -> Result<u64, (u64, StoreError)> {
    // A trace of its own: a round carries the writes of many requests of its session.
    let span = shardgate_protocol::exported_span!(
        "node.store.write",
        shardgate.writes = ops.len(),
        shardgate.store_calls = Empty,
        otel.status_code = Empty,
    );
    let (writes, outcome) = write_session(&*w.store, w.ack, w.keep, ops)
        .instrument(span.clone())
        .await;
    span.record("shardgate.store_calls", writes);
    if outcome.is_err() {
        span.record("otel.status_code", "error");
    }
    outcome.map(|()| writes).map_err(|e| (writes, e))
}

/// Writes one round of a session's writes as one store write: the newest record, every event,
/// every forgotten stream (two writes in the rare round that appends to a stream after it
/// forgot it). One write is atomic, so it stores what the writes one after the other would.
/// Then tells each write how it went; returns the store calls made and the outcome.
async fn write_session(
    store: &dyn SessionStore,
    ack: Ack,
    keep: usize,
    ops: Vec<Op>,
) -> (u64, Result<(), StoreError>) {
    let Some(first) = ops.first() else {
        return (0, Ok(()));
    };
    let (session, fence) = (first.session.clone(), first.fence.clone());
    let mut outcome = Ok(());
    let mut writes = 0;
    let mut i = 0;
    let split = store.failed_writes_may_land();
    while i < ops.len() && outcome.is_ok() {
        let run = run_length(&ops[i..], split);
        let (mut record, mut events, mut forget) = (None, Vec::new(), Vec::new());
        for op in &ops[i..i + run] {
            forget.extend_from_slice(&op.forgotten);
            match &op.write {
                Write::Save(r) => record = Some(&**r),
                Write::Append(e, r) => {
                    if let Some(r) = r {
                        record = Some(&**r);
                    }
                    events.push(e.clone());
                }
                Write::Touch | Write::Barrier => {}
            }
        }
        let changes = Changes {
            record,
            events: &events,
            keep,
            forget: &forget,
        };
        writes += 1;
        outcome = retried(|| store.write(&session, &fence, changes)).await;
        #[cfg(feature = "unfenced")]
        if let Err(StoreError::Fenced { .. }) = outcome {
            outcome = unfenced::overwrite(store, &session, &fence, changes).await;
        }
        i += run;
    }
    if writes > 0 && outcome.is_ok() && ack == Ack::Replicated {
        writes += 1;
        outcome = retried(|| store.replicate(&session)).await;
    }
    for op in ops {
        match op.done {
            Done::Nothing => {}
            Done::Release(stream, seq) => {
                if outcome.is_ok()
                    && let Some(stream) = stream.upgrade()
                {
                    stream.release(seq);
                }
            }
            Done::Tell(tx) => {
                let _ = tx.send(outcome.clone());
            }
        }
    }
    (writes, outcome)
}

/// How many of `ops` (at least one) one store write takes: all of them, but that it appends
/// before it forgets, so a run ends before an append to a stream it forgot, and, on a store
/// whose failed writes may land (`split`), that a change of the upstream state waits for an
/// acceptance before it ([`Link::accept`]), so a run ends before it too.
fn run_length(ops: &[Op], split: bool) -> usize {
    let mut forgotten = Vec::new();
    let mut accepting = false;
    ops.iter()
        .take_while(|op| {
            if split && accepting && op.mark.changes {
                return false;
            }
            accepting |= op.mark.accepts;
            forgotten.extend_from_slice(&op.forgotten);
            match &op.write {
                Write::Append(e, _) => !forgotten.contains(&e.stream),
                _ => true,
            }
        })
        .count()
        .max(1)
}

/// A write, tried again after a pause while the store is unavailable.
async fn retried<'a, F>(mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> futures_util::future::BoxFuture<'a, Result<(), StoreError>>,
{
    let mut outcome = write().await;
    for pause in RETRY {
        match &outcome {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(pause).await;
                outcome = write().await;
            }
            _ => break,
        }
    }
    outcome
}

mod queue;
#[cfg(test)]
mod tests;

/// A deliberately broken build, for showing that the chaos harness catches what fencing
/// prevents: a node serves whatever reaches it, cut off from the quorum or not and whatever its
/// view (`server::misdirected`), and a write refused because another node
/// claimed the session since is forced through by claiming the session back under an epoch one
/// above the holder's, one the membership never gave it. Never built by default
/// (`--features unfenced`).
#[cfg(feature = "unfenced")]
mod unfenced {
    use super::*;

    pub async fn overwrite(
        store: &dyn SessionStore,
        session: &str,
        fence: &Fence,
        changes: Changes<'_>,
    ) -> Result<(), StoreError> {
        let held = match store.load(session).await? {
            Some((_, held)) => held.epoch,
            None => fence.epoch,
        };
        tracing::warn!(%session, "unfenced build: overwriting a session another node holds");
        let stolen = Fence::new(fence.owner.clone(), held.saturating_add(1));
        store.claim(session, &stolen).await?;
        store.write(session, &stolen, changes).await
    }
}
