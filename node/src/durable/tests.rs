use super::*;
use crate::budget::Budgets;
use crate::config::Limits;
use crate::session::{Opening, STANDALONE_STREAM, Session};
use crate::upstream::UpstreamState;
use futures_util::future::BoxFuture;
use serde_json::json;
use shardgate_store::sqlite::SqliteStore;

const TTL: Duration = Duration::from_secs(300);

async fn store() -> Arc<dyn SessionStore> {
    Arc::new(SqliteStore::memory(TTL).await.expect("in-memory store"))
}

fn opening(id: &str) -> Opening {
    Opening {
        id: id.into(),
        principal: "p".into(),
        protocol_version: "2025-11-25".into(),
        initialize_params: shardgate_store::RawJson::new(&json!({"capabilities": {}})),
        upstream_state: UpstreamState::default(),
        counted: None,
    }
}

async fn held(durable: &Durable, store: &dyn SessionStore, id: &str, epoch: u64) -> Link {
    let fence = Fence::new("node-0", epoch);
    store.claim(id, &fence).await.expect("claimed");
    durable.link(id, fence)
}

/// A store, the writer in front of it at one acknowledgement level, and one session held
/// through it under epoch 1; `lost` hears of the sessions the writer reports lost.
struct Fixture {
    store: Arc<dyn SessionStore>,
    durable: Durable,
    budgets: Budgets,
    lost: mpsc::UnboundedReceiver<Lost>,
    session: Arc<Session>,
}

async fn fixture(id: &str, ack: Ack) -> Fixture {
    fixture_on(store().await, id, ack).await
}

async fn fixture_on(store: Arc<dyn SessionStore>, id: &str, ack: Ack) -> Fixture {
    let (lost_tx, lost) = mpsc::unbounded_channel();
    let durable = Durable::start(store.clone(), ack, 100, lost_tx);
    let budgets = Budgets::new(&Limits::default());
    let link = held(&durable, &*store, id, 1).await;
    let session = Arc::new(Session::new(opening(id), &budgets, Some(link)));
    Fixture {
        store,
        durable,
        budgets,
        lost,
        session,
    }
}

#[tokio::test]
async fn an_event_reaches_its_listener_only_once_the_store_has_it() {
    let Fixture { store, session, .. } = fixture("s1", Ack::Store).await;
    session.persist().await.expect("record written");
    let stream = session.open_stream();
    let (_, mut rx) = stream.attach_now();
    let id = stream.push("{\"n\":1}".into());
    let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("released")
        .expect("an event");
    assert_eq!(event.id, id);
    let stored = store.events("s1", stream.id(), 0).await.expect("events");
    assert_eq!(
        stored.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![id.seq],
        "the listener saw only what the store holds"
    );
}

#[tokio::test]
async fn memory_level_releases_at_once_and_writes_behind() {
    let Fixture {
        store,
        durable,
        session,
        ..
    } = fixture("s2", Ack::Memory).await;
    let stream = session.open_stream();
    let (_, mut rx) = stream.attach_now();
    stream.push("{}".into());
    assert!(rx.try_recv().is_ok(), "released without waiting");
    durable.flushed().await;
    let stored = store.events("s2", stream.id(), 0).await.expect("events");
    assert_eq!(stored.events.len(), 1, "and written behind");
}

#[tokio::test]
async fn a_write_refused_by_a_newer_claim_reports_the_session_lost() {
    let Fixture {
        store,
        mut lost,
        session,
        ..
    } = fixture("s3", Ack::Store).await;
    session.persist().await.expect("record written");
    store
        .claim("s3", &Fence::new("node-1", 2))
        .await
        .expect("a newer epoch takes it");
    let refused = session.persist().await.expect_err("refused");
    assert!(matches!(refused, StoreError::Fenced { ref owner, epoch: 2 } if owner == "node-1"));
    let report = lost.recv().await.expect("reported");
    assert_eq!(&*report.session, "s3");
    assert_eq!(*report.fence, Fence::new("node-0", 1));
}

#[tokio::test]
async fn a_continued_session_never_reuses_a_stream_or_an_event_id() {
    let Fixture {
        store,
        durable,
        budgets,
        session,
        ..
    } = fixture("s4", Ack::Store).await;
    let first = session.open_stream();
    let second = session.open_stream();
    let _serving = session.begin_request(&json!(7), second.id());
    first.push("{\"a\":1}".into());
    first.push("{\"a\":2}".into());
    session
        .upstream_state
        .with(|s| s.insert("counter".into(), 3.into()));
    session.persist().await.expect("written");

    let fence = Fence::new("node-1", 2);
    let claimed = store.claim("s4", &fence).await.expect("taken over");
    let record = claimed.record.clone().expect("a record");
    assert_eq!(record.in_flight.len(), 1, "the request in flight is stored");
    let continued = Session::continued(record, &claimed.tails, &budgets, durable.link("s4", fence));
    assert_eq!(
        continued.upstream_state.read(|s| s.get("counter").cloned()),
        Some(json!(3))
    );
    let resumed = continued
        .stream(first.id())
        .expect("the first stream continues");
    assert_eq!(resumed.stored_through(), 2);
    assert_eq!(resumed.push("{}".into()).seq, 3, "after the stored events");
    assert!(
        continued.stream(second.id()).is_some(),
        "the stream of the request in flight"
    );
    assert!(
        continued.open_stream().id() > second.id(),
        "no stream number twice"
    );
    assert_eq!(
        continued.stream(STANDALONE_STREAM).map(|s| s.id()),
        Some(STANDALONE_STREAM)
    );
}

#[tokio::test]
async fn the_store_keeps_only_the_streams_the_session_keeps() {
    let Fixture {
        store,
        durable,
        session,
        ..
    } = fixture("s5", Ack::Store).await;
    session.persist().await.expect("record written");
    let mut ids = Vec::new();
    for _ in 0..100 {
        let stream = session.open_stream();
        stream.push("{\"answer\":1}".into());
        session.finish_stream(&stream);
        ids.push(stream.id());
    }
    durable.flushed().await;
    let claimed = store
        .claim("s5", &Fence::new("node-0", 1))
        .await
        .expect("claimed again");
    let kept: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| session.stream(*id).is_some())
        .collect();
    assert!(kept.len() < ids.len(), "memory let the oldest streams go");
    assert_eq!(
        claimed.tails.keys().copied().collect::<Vec<_>>(),
        kept,
        "the store holds the streams memory holds, no more"
    );
}

#[tokio::test]
async fn an_answer_is_stored_in_one_write_with_what_its_call_changed() {
    let Fixture {
        store,
        durable,
        session,
        ..
    } = fixture("s6", Ack::Store).await;
    let stream = session.open_stream();
    let serving = session.begin_request(&json!(1), stream.id());
    session.persist().await.expect("in flight, written");
    let rounds = || durable.counts.batches.load(Ordering::Relaxed);
    let before = rounds();
    session
        .upstream_state
        .with(|s| s.insert("counter".into(), 1.into()));
    let (_, mut rx) = stream.attach_now();
    serving.answer(&stream, "{\"result\":1}".into());
    let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("released")
        .expect("the answer");
    while rounds() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rounds() - before, 1, "one store write");
    let (record, _) = store.load("s6").await.expect("loaded").expect("a record");
    assert!(
        record.in_flight.is_empty(),
        "answered, so no longer in flight"
    );
    assert_eq!(record.upstream_state.get("counter"), Some(&json!(1)));
    let stored = store.events("s6", stream.id(), 0).await.expect("events");
    assert_eq!(
        stored.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![event.id.seq]
    );
}

fn op(write: Write) -> Op {
    Op {
        session: "s".into(),
        fence: Arc::new(Fence::new("node-0", 1)),
        forgotten: Vec::new(),
        write,
        mark: Mark::default(),
        done: Done::Nothing,
    }
}

fn event(stream: u64, seq: u64) -> Write {
    Write::Append(
        StoredEvent {
            stream,
            seq,
            data: "{}".into(),
        },
        None,
    )
}

#[test]
fn one_store_write_takes_a_round_but_not_an_append_after_its_stream_is_forgotten() {
    let forgetting = |streams: &[u64], write| Op {
        forgotten: streams.to_vec(),
        ..op(write)
    };
    let ops: Vec<Op> = vec![
        op(event(1, 1)),
        forgetting(&[7], Write::Touch),
        op(event(2, 1)),
        forgetting(&[2], event(1, 2)),
        op(event(2, 2)),
        op(event(1, 3)),
    ];
    assert_eq!(
        run_length(&ops, true),
        4,
        "up to the append to forgotten stream 2"
    );
    assert_eq!(run_length(&ops[4..], true), 2);
    assert_eq!(run_length(&ops, false), 4, "whatever the store");
}

#[test]
fn a_change_of_the_upstream_state_waits_for_an_acceptance_before_it() {
    let marked = |accepts, changes, write| Op {
        mark: Mark { accepts, changes },
        ..op(write)
    };
    let ops: Vec<Op> = vec![
        marked(false, true, event(1, 1)),
        marked(true, false, Write::Touch),
        op(event(2, 1)),
        marked(true, false, Write::Touch),
        marked(false, true, event(3, 1)),
        marked(false, true, event(2, 2)),
    ];
    assert_eq!(
        run_length(&ops, true),
        4,
        "up to the change after an acceptance"
    );
    assert_eq!(
        run_length(&ops, false),
        6,
        "together where a failed write never lands"
    );
    assert_eq!(
        run_length(&ops[4..], true),
        2,
        "changes with no acceptance go together"
    );
    let ops: Vec<Op> = vec![
        marked(true, false, Write::Touch),
        marked(true, true, Write::Touch),
    ];
    assert_eq!(
        run_length(&ops, true),
        1,
        "an acceptance whose record carries a change is a change too"
    );
}

#[tokio::test]
async fn what_ready_tasks_write_before_a_round_starts_goes_in_its_store_write() {
    let Fixture {
        store,
        durable,
        session,
        ..
    } = fixture("s9", Ack::Store).await;
    let stream = session.open_stream();
    let (_, mut rx) = stream.attach_now();
    // A request accepted, and its call answered by another task that was ready already: the
    // round started by the acceptance lets it run first, and takes its answer along.
    let accepted = session.accept();
    let answering = tokio::spawn({
        let stream = stream.clone();
        async move { stream.push("{\"n\":1}".into()) }
    });
    accepted.wait().await.expect("accepted");
    let id = answering.await.expect("answered");
    let event = rx.recv().await.expect("released");
    assert_eq!(event.id, id);
    assert_eq!(
        durable.counts.writes.load(Ordering::Relaxed),
        1,
        "the acceptance and the answer in one store write"
    );
    let stored = store.events("s9", stream.id(), 0).await.expect("events");
    assert_eq!(stored.events.len(), 1);
}

/// A store whose failed writes may land, as a networked one's may: the SQLite store behind,
/// saying so.
struct Uncertain(Arc<dyn SessionStore>);

impl SessionStore for Uncertain {
    fn claim<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<shardgate_store::Claimed, StoreError>> {
        self.0.claim(id, fence)
    }

    fn write<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
        changes: Changes<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.write(id, fence, changes)
    }

    fn events<'a>(
        &'a self,
        id: &'a str,
        stream: u64,
        after: u64,
    ) -> BoxFuture<'a, Result<shardgate_store::Replay, StoreError>> {
        self.0.events(id, stream, after)
    }

    fn load<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(SessionRecord, Fence)>, StoreError>> {
        self.0.load(id)
    }

    fn delete<'a>(
        &'a self,
        id: &'a str,
        fence: &'a Fence,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.delete(id, fence)
    }

    fn replicate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.replicate(id)
    }

    fn failed_writes_may_land(&self) -> bool {
        true
    }
}

/// A `counter`-like call answered at once: accepted, then answered with a change of the
/// upstream state. Returns the store writes it took, and the counter as stored.
async fn a_changing_call_on(store: Arc<dyn SessionStore>) -> (u64, Option<serde_json::Value>) {
    let Fixture {
        store,
        durable,
        session,
        ..
    } = fixture_on(store, "s10", Ack::Store).await;
    let stream = session.open_stream();
    let serving = session.begin_request(&json!(1), stream.id());
    let accepted = session.accept();
    let answering = tokio::spawn({
        let (session, stream) = (session.clone(), stream.clone());
        async move {
            session
                .upstream_state
                .with(|s| s.insert("counter".into(), 1.into()));
            serving.answer(&stream, "{\"result\":1}".into());
        }
    });
    accepted.wait().await.expect("accepted");
    answering.await.expect("answered");
    session.persist().await.expect("everything written");
    let (record, _) = store.load("s10").await.expect("loaded").expect("a record");
    (
        durable.counts.writes.load(Ordering::Relaxed),
        record.upstream_state.get("counter").cloned(),
    )
}

#[tokio::test]
async fn an_answer_that_changed_the_upstream_state_is_stored_after_its_acceptance() {
    let (writes, counter) = a_changing_call_on(Arc::new(Uncertain(store().await))).await;
    assert_eq!(
        writes, 3,
        "the acceptance, then the answer with its change, then the last checkpoint"
    );
    assert_eq!(counter, Some(json!(1)));
}

#[tokio::test]
async fn where_failed_writes_never_land_an_acceptance_and_its_change_share_a_write() {
    let (writes, counter) = a_changing_call_on(store().await).await;
    assert_eq!(
        writes, 2,
        "the acceptance with the answer and its change, then the last checkpoint"
    );
    assert_eq!(counter, Some(json!(1)));
}
