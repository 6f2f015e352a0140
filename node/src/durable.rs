//! Sessions written through to a store ([`shardgate_store`]), so that they outlive this node.
//!
//! Memory stays the hot path: a session is served from its [`crate::session::Session`], and
//! every change a new owner needs (the record, each stream's events) is handed to this node's
//! one [`Writer`] task, which writes them in batches: the operations that queue up while a batch
//! is written form the next one, one store call per session and kind. An event reaches its
//! client only once the acknowledgement level ([`Ack`]) holds for it.
//!
//! Every write carries the session's [`Fence`] (this node, and the membership epoch it claimed
//! the session under). A refused write means another node has claimed the session since: the
//! writer reports the session as lost, and the node drops it from memory without a word to the
//! store. A store that stays unreachable is reported the same way, and marks the node unready.

use crate::stream::EventStream;
use shardgate_store::{Fence, SessionRecord, SessionStore, StoreError, StoredEvent};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Operations one batch takes at most.
const BATCH: usize = 512;
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
    /// Starts the writer; sessions it can no longer write are sent to `lost`.
    pub fn start(
        store: Arc<dyn SessionStore>,
        ack: Ack,
        keep: usize,
        lost: mpsc::UnboundedSender<Lost>,
    ) -> Durable {
        let (tx, rx) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let counts = Arc::new(Counts::default());
        tokio::spawn(write_batches(
            Batches {
                store: store.clone(),
                ack,
                keep,
                lost,
                healthy: healthy.clone(),
                counts: counts.clone(),
            },
            rx,
        ));
        Durable {
            store,
            ack,
            writer: Writer { tx, ack },
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
        }
    }

    /// Waits until everything handed to the writer so far is written (or failed).
    pub async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        let op = Op {
            session: "".into(),
            fence: Arc::new(Fence::new("", 0)),
            write: Write::Barrier,
            done: Done::Tell(tx),
        };
        if self.writer.tx.send(op).is_ok() {
            let _ = rx.await;
        }
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

#[derive(Clone)]
struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    ack: Ack,
}

/// A session's way to its store: what it writes carries its fence.
#[derive(Clone)]
pub struct Link {
    writer: Writer,
    session: Arc<str>,
    fence: Arc<Fence>,
}

/// The outcome of a write, once the acknowledgement level holds (or cannot).
pub type Written = oneshot::Receiver<Result<(), StoreError>>;

impl Link {
    pub fn ack(&self) -> Ack {
        self.writer.ack
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    fn send(&self, write: Write, done: Done) {
        let op = Op {
            session: self.session.clone(),
            fence: self.fence.clone(),
            write,
            done,
        };
        if self.writer.tx.send(op).is_err() {
            tracing::warn!("the session writer has stopped; a write is lost");
        }
    }

    /// Saves the record; the answer says when it is written.
    pub fn save(&self, record: SessionRecord) -> Written {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Save(Box::new(record)), Done::Tell(tx));
        rx
    }

    /// Appends one event of `stream`; the writer releases it to the stream's listener once it
    /// is written (unless the level is `memory`, where the stream released it already).
    pub fn append(&self, event: StoredEvent, stream: Weak<EventStream>) {
        let seq = event.seq;
        let done = match self.writer.ack {
            Ack::Memory => Done::Nothing,
            Ack::Store | Ack::Replicated => Done::Release(stream, seq),
        };
        self.send(Write::Append(event), done);
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
    Append(StoredEvent),
    /// Writes nothing: done once everything queued before it is.
    Barrier,
}

enum Done {
    Nothing,
    Release(Weak<EventStream>, u64),
    Tell(oneshot::Sender<Result<(), StoreError>>),
}

struct Op {
    session: Arc<str>,
    fence: Arc<Fence>,
    write: Write,
    done: Done,
}

/// What the writer task works with.
struct Batches {
    store: Arc<dyn SessionStore>,
    ack: Ack,
    keep: usize,
    lost: mpsc::UnboundedSender<Lost>,
    healthy: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

async fn write_batches(w: Batches, mut rx: mpsc::UnboundedReceiver<Op>) {
    let Batches {
        store,
        ack,
        keep,
        lost,
        healthy,
        counts,
    } = w;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // One group per session and fence, each in the order its writes were made; barriers
        // are done once the whole batch is.
        let mut groups: Vec<Vec<Op>> = Vec::new();
        let mut index: HashMap<(Arc<str>, Arc<Fence>), usize> = HashMap::new();
        let mut barriers = Vec::new();
        for op in batch.drain(..) {
            if matches!(op.write, Write::Barrier) {
                barriers.push(op.done);
                continue;
            }
            let key = (op.session.clone(), op.fence.clone());
            let i = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(op);
        }
        let outcomes = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|ops| write_session(&*store, ack, keep, ops)),
        )
        .await;
        Counts::add(&counts.batches, 1);
        for (session, fence, writes, outcome) in outcomes {
            Counts::add(&counts.writes, writes);
            match outcome {
                Ok(()) => healthy.store(true, Ordering::Relaxed),
                Err(error) => {
                    if error.is_retryable() {
                        healthy.store(false, Ordering::Relaxed);
                    }
                    let _ = lost.send(Lost {
                        session,
                        fence,
                        error,
                    });
                }
            }
        }
        for done in barriers {
            if let Done::Tell(tx) = done {
                let _ = tx.send(Ok(()));
            }
        }
    }
}

/// Writes one session's operations of a batch in order: each run of saves as one save of the
/// newest record, each run of appends as one append. Then tells each operation how it went.
async fn write_session(
    store: &dyn SessionStore,
    ack: Ack,
    keep: usize,
    ops: Vec<Op>,
) -> (Arc<str>, Arc<Fence>, u64, Result<(), StoreError>) {
    let (session, fence) = (ops[0].session.clone(), ops[0].fence.clone());
    let mut outcome = Ok(());
    let mut writes = 0;
    let mut i = 0;
    while i < ops.len() && outcome.is_ok() {
        let run = ops[i..]
            .iter()
            .take_while(|op| same_kind(&op.write, &ops[i].write))
            .count();
        let slice = &ops[i..i + run];
        outcome = match &slice[0].write {
            Write::Barrier => Ok(()), // taken out of the batch before
            Write::Save(_) => {
                let newest = slice.iter().rev().find_map(|op| match &op.write {
                    Write::Save(r) => Some(r),
                    _ => None,
                });
                writes += 1;
                match newest {
                    Some(record) => retried(|| store.save(record, &fence)).await,
                    None => Ok(()),
                }
            }
            Write::Append(_) => {
                let events: Vec<StoredEvent> = slice
                    .iter()
                    .filter_map(|op| match &op.write {
                        Write::Append(e) => Some(e.clone()),
                        _ => None,
                    })
                    .collect();
                writes += 1;
                retried(|| store.append(&session, &fence, &events, keep)).await
            }
        };
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
    (session, fence, writes, outcome)
}

fn same_kind(a: &Write, b: &Write) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
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

#[cfg(test)]
mod tests;
