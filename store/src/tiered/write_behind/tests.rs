use super::*;
use crate::sqlite::SqliteStore;
use crate::{Changes, Claimed, Replay};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;
use tokio::time::timeout;

const TTL: Duration = Duration::from_secs(60);

fn fence(owner: &str, epoch: u64) -> Fence {
    Fence::new(owner, epoch)
}

fn record(id: &str, next_request: u64) -> SessionRecord {
    let mut record = crate::contract::record(id);
    record.next_request = next_request;
    record
}

fn save(id: &str, next_request: u64, fence: &Fence) -> Write {
    Write::Save(Box::new(record(id, next_request)), fence.clone())
}

fn event(stream: u64, seq: u64, data: &str) -> StoredEvent {
    StoredEvent {
        stream,
        seq,
        data: data.to_owned(),
    }
}

fn append(fence: &Fence, events: &[StoredEvent], keep: usize) -> Write {
    Write::Append {
        fence: fence.clone(),
        events: events.to_vec(),
        keep,
        forget: Vec::new(),
    }
}

fn limits() -> Limits {
    Limits {
        capacity: 64,
        batch: 8,
        linger: Duration::from_millis(1),
        sessions_at_once: 2,
        retry_for: Duration::from_secs(2),
    }
}

#[test]
fn a_save_replaces_the_waiting_saves_it_makes_redundant() {
    let a = fence("node-a", 1);
    let mut waiting = VecDeque::from([
        Write::Claim(a.clone()),
        save("s", 1, &a),
        append(&a, &[event(1, 1, "x")], 10),
        save("s", 2, &a),
    ]);
    let (left, dropped) = absorb(&mut waiting, save("s", 3, &a));
    assert_eq!(dropped, 2);
    assert_eq!(left, Some(save("s", 3, &a)));
    assert_eq!(
        waiting,
        [Write::Claim(a.clone()), append(&a, &[event(1, 1, "x")], 10)]
    );

    // Not past a claim or a delete, and not a save under another fence.
    let b = fence("node-b", 2);
    for before in [Write::Claim(b.clone()), Write::Delete(b.clone())] {
        let mut waiting = VecDeque::from([save("s", 1, &b), before]);
        assert_eq!(absorb(&mut waiting, save("s", 2, &b)).1, 0);
        assert_eq!(waiting.len(), 2);
    }
    let mut waiting = VecDeque::from([save("s", 1, &a)]);
    assert_eq!(absorb(&mut waiting, save("s", 2, &b)).1, 0);
    assert_eq!(waiting, [save("s", 1, &a)]);
}

#[test]
fn a_joined_append_forgets_what_either_forgets_unless_it_writes_a_forgotten_stream() {
    let a = fence("node-a", 1);
    let forgetting = |events: &[StoredEvent], forget: &[u64]| Write::Append {
        fence: a.clone(),
        events: events.to_vec(),
        keep: 10,
        forget: forget.to_vec(),
    };
    let mut waiting = VecDeque::from([forgetting(&[event(1, 1, "x"), event(2, 1, "y")], &[3])]);
    let (left, _) = absorb(&mut waiting, forgetting(&[event(1, 2, "z")], &[2]));
    assert_eq!(left, None);
    assert_eq!(
        waiting,
        [forgetting(&[event(1, 1, "x"), event(1, 2, "z")], &[2, 3])]
    );
    // A stream written again after it was forgotten: the two stay apart, in order.
    let next = forgetting(&[event(3, 1, "again")], &[]);
    let (left, _) = absorb(&mut waiting, next.clone());
    assert_eq!(left, Some(next));
}

#[test]
fn an_append_joins_the_last_waiting_append_of_its_fence_and_keep() {
    let a = fence("node-a", 1);
    let mut waiting = VecDeque::from([append(&a, &[event(1, 1, "x")], 10)]);
    let (left, _) = absorb(&mut waiting, append(&a, &[event(1, 2, "y")], 10));
    assert_eq!(left, None);
    assert_eq!(
        waiting,
        [append(&a, &[event(1, 1, "x"), event(1, 2, "y")], 10)]
    );
    for (last, next) in [
        (
            append(&a, &[event(1, 1, "x")], 10),
            append(&a, &[event(1, 2, "y")], 5),
        ),
        (
            append(&a, &[event(1, 1, "x")], 10),
            append(&fence("node-a", 2), &[event(1, 2, "y")], 10),
        ),
        (save("s", 1, &a), append(&a, &[event(1, 2, "y")], 10)),
    ] {
        let mut waiting = VecDeque::from([last]);
        let (left, _) = absorb(&mut waiting, next.clone());
        assert_eq!(left, Some(next));
        assert_eq!(waiting.len(), 1);
    }
    let mut waiting = VecDeque::from([Write::Claim(a.clone())]);
    assert_eq!(absorb(&mut waiting, Write::Claim(a.clone())).0, None);
    assert_eq!(
        absorb(&mut waiting, Write::Claim(fence("node-a", 2))).0,
        Some(Write::Claim(fence("node-a", 2)))
    );
}

/// A small deterministic generator (Knuth's MMIX LCG), for reproducible cases.
struct Cases(u64);

impl Cases {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn events(&mut self, tag: &str) -> Vec<StoredEvent> {
        (0..self.below(7))
            .map(|_| {
                let (stream, seq) = (self.below(3), self.below(12));
                event(stream, seq, &format!("{tag}-{stream}-{seq}"))
            })
            .collect()
    }
}

/// What a store holds of a session's streams 0 to 2: each stream's oldest seq and events.
async fn streams(store: &SqliteStore, id: &str) -> Vec<(Option<u64>, Vec<StoredEvent>)> {
    let mut out = Vec::new();
    for stream in 0..3 {
        let Replay { oldest, events } = store.events(id, stream, 0).await.expect("events");
        out.push((oldest, events));
    }
    out
}

#[tokio::test]
async fn joined_appends_store_what_the_appends_store_one_after_the_other() {
    let one_by_one = SqliteStore::memory(TTL).await.expect("open");
    let joined = SqliteStore::memory(TTL).await.expect("open");
    let a = fence("node-a", 1);
    let mut cases = Cases(7);
    for case in 0..300 {
        let id = format!("case-{case}");
        let keep = 1 + cases.below(4) as usize;
        let stored = cases.events("stored");
        let first = cases.events("first");
        let second = cases.events("second");
        for store in [&one_by_one, &joined] {
            store.claim(&id, &a).await.expect("claim");
            store
                .append(&id, &a, &stored, keep, &[])
                .await
                .expect("append");
        }
        one_by_one
            .append(&id, &a, &first, keep, &[])
            .await
            .expect("first");
        one_by_one
            .append(&id, &a, &second, keep, &[])
            .await
            .expect("second");
        let mut both = first.clone();
        join(&mut both, second.clone(), keep);
        joined
            .append(&id, &a, &both, keep, &[])
            .await
            .expect("joined");
        assert_eq!(
            streams(&joined, &id).await,
            streams(&one_by_one, &id).await,
            "case {case}: keep {keep}, stored {stored:?}, then {first:?}, then {second:?}"
        );
    }
}

/// A store over SQLite whose writes can be held at a gate or made to fail.
struct Faulty {
    inner: SqliteStore,
    /// Writes wait here for a permit while it has none.
    gate: Semaphore,
    /// Writes still to fail as unavailable.
    failures: AtomicUsize,
    /// Writes tried, failed or not.
    tries: AtomicUsize,
}

/// The permits of an open gate: more than any test has writes waiting at once.
const OPEN: u32 = 1 << 20;

impl Faulty {
    async fn new() -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: SqliteStore::memory(TTL).await.expect("open"),
            gate: Semaphore::new(OPEN as usize),
            failures: AtomicUsize::new(0),
            tries: AtomicUsize::new(0),
        })
    }

    async fn close_gate(&self) {
        self.gate
            .acquire_many(OPEN)
            .await
            .expect("the gate")
            .forget();
    }

    fn open_gate(&self) {
        self.gate.add_permits(OPEN as usize);
    }

    fn tries(&self) -> usize {
        self.tries.load(Ordering::SeqCst)
    }

    async fn before_write(&self) -> Result<(), StoreError> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        drop(self.gate.acquire().await);
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failed {
            Ok(_) => Err(StoreError::Unavailable("injected".into())),
            Err(_) => Ok(()),
        }
    }
}

impl SessionStore for Faulty {
    fn claim<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        Box::pin(async move {
            self.before_write().await?;
            self.inner.claim(id, fence).await
        })
    }

    fn write<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
        changes: Changes<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.before_write().await?;
            self.inner.write(id, fence, changes).await
        })
    }

    fn events<'a>(
        &'a self,
        id: &'a str,
        stream: u64,
        after: u64,
    ) -> BoxFuture<'a, Result<Replay, StoreError>> {
        self.inner.events(id, stream, after)
    }

    fn load<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(SessionRecord, Fence)>, StoreError>> {
        self.inner.load(id)
    }

    fn delete<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.before_write().await?;
            self.inner.delete(id, fence).await
        })
    }

    fn replicate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.replicate(id)
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within 5s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_session_s_writes_arrive_in_order() {
    let store = Faulty::new().await;
    let queue = WriteBehind::start(store.clone(), limits());
    let (a, b) = (fence("node-a", 1), fence("node-b", 2));
    for write in [
        Write::Claim(a.clone()),
        save("s", 1, &a),
        append(&a, &[event(1, 1, "x"), event(1, 2, "y")], 10),
        Write::Delete(a.clone()),
        Write::Claim(b.clone()),
        save("s", 2, &b),
        append(&b, &[event(2, 5, "z")], 10),
    ] {
        queue.push("s", write).await;
    }
    queue.push("t", Write::Claim(a.clone())).await;
    queue.push("t", save("t", 9, &a)).await;
    timeout(Duration::from_secs(5), queue.flush())
        .await
        .expect("flushed");
    assert_eq!(store.inner.load("s").await, Ok(Some((record("s", 2), b))));
    assert_eq!(
        store.inner.events("s", 1, 0).await,
        Ok(Replay::default()),
        "the delete came between"
    );
    assert_eq!(
        store.inner.events("s", 2, 0).await.map(|r| r.events),
        Ok(vec![event(2, 5, "z")])
    );
    assert_eq!(store.inner.load("t").await, Ok(Some((record("t", 9), a))));
}

#[tokio::test]
async fn an_unavailable_store_is_retried_and_a_stale_write_dropped() {
    let store = Faulty::new().await;
    let queue = WriteBehind::start(store.clone(), limits());
    let a = fence("node-a", 1);
    store.failures.store(2, Ordering::SeqCst);
    queue.push("s", Write::Claim(a.clone())).await;
    queue.push("s", save("s", 1, &a)).await;
    timeout(Duration::from_secs(5), queue.flush())
        .await
        .expect("flushed");
    assert_eq!(
        store.tries(),
        4,
        "two failures, then the claim and the save"
    );
    assert_eq!(
        store.inner.load("s").await,
        Ok(Some((record("s", 1), a.clone())))
    );

    // A later claim reached the store first: the stale save is refused once, not retried.
    let b = fence("node-b", 2);
    store.inner.claim("s", &b).await.expect("take over");
    queue.push("s", save("s", 2, &a)).await;
    timeout(Duration::from_secs(5), queue.flush())
        .await
        .expect("flushed");
    assert_eq!(store.tries(), 5);
    assert_eq!(store.inner.load("s").await, Ok(Some((record("s", 1), b))));
}

#[tokio::test]
async fn a_write_that_keeps_failing_is_dropped_after_retry_for() {
    let store = Faulty::new().await;
    let queue = WriteBehind::start(
        store.clone(),
        Limits {
            retry_for: Duration::from_millis(100),
            ..limits()
        },
    );
    store.failures.store(usize::MAX, Ordering::SeqCst);
    let a = fence("node-a", 1);
    queue.push("s", Write::Claim(a.clone())).await;
    let started = Instant::now();
    timeout(Duration::from_secs(5), queue.flush())
        .await
        .expect("flushed");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(store.tries() >= 2, "retried: {}", store.tries());
    assert_eq!(
        store.inner.save(&record("s", 1), &a).await,
        Err(StoreError::Gone),
        "the claim never arrived"
    );
}

#[tokio::test]
async fn a_full_queue_makes_writers_wait_unless_a_save_supersedes() {
    let store = Faulty::new().await;
    store.close_gate().await;
    let a = fence("node-a", 1);
    store.inner.claim("s2", &a).await.expect("claim");
    let queue = WriteBehind::start(
        store.clone(),
        Limits {
            capacity: 2,
            sessions_at_once: 1,
            ..limits()
        },
    );
    // s1's write is taken and held at the gate; s2's waits behind it.
    queue.push("s1", Write::Claim(a.clone())).await;
    until("s1's write reaches the store", || store.tries() == 1).await;
    queue.push("s2", save("s2", 1, &a)).await;

    // Full, but a save of s2 replaces the waiting one.
    timeout(Duration::from_secs(1), queue.push("s2", save("s2", 2, &a)))
        .await
        .expect("a superseding save finds room");
    let third = queue.push("s3", Write::Claim(a.clone()));
    tokio::pin!(third);
    assert!(
        timeout(Duration::from_millis(100), &mut third)
            .await
            .is_err(),
        "a third write waits for room"
    );
    // Neither may the session that is full wait out its writes meanwhile.
    assert!(
        timeout(Duration::from_millis(50), queue.settle("s1"))
            .await
            .is_err()
    );
    timeout(Duration::from_millis(50), queue.settle("s3"))
        .await
        .expect("a session with nothing held is settled");

    store.open_gate();
    timeout(Duration::from_secs(5), third)
        .await
        .expect("room after the gate opens");
    timeout(Duration::from_secs(5), queue.flush())
        .await
        .expect("flushed");
    assert_eq!(store.tries(), 3, "s1's claim, s2's one save, s3's claim");
    assert_eq!(store.inner.load("s2").await, Ok(Some((record("s2", 2), a))));
}

#[tokio::test]
async fn a_dropped_queue_writes_what_it_holds() {
    let store = Faulty::new().await;
    let a = fence("node-a", 1);
    {
        let queue = WriteBehind::start(store.clone(), limits());
        queue.push("s", Write::Claim(a.clone())).await;
        queue.push("s", save("s", 1, &a)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.inner.load("s").await != Ok(Some((record("s", 1), a.clone()))) {
        assert!(Instant::now() < deadline, "the held writes arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
