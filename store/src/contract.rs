//! The contract every [`SessionStore`] keeps, as checks to run against a real instance of each:
//! SQLite in this crate's unit tests, PostgreSQL and Redis Cluster in the end-to-end tests
//! (`tests/tests/t85_stores.rs`, through the `contract` feature).
//!
//! Each check uses session ids of its own, so the checks can share one store (and one store can
//! hold other data). A check panics, naming what broke, when the store breaks the contract.

use crate::{
    Changes, Fence, InFlightRecord, RawJson, Replay, SessionRecord, SessionStore, StoreError,
    StoredEvent,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every check but [`expiry`], which needs a store built with a short ttl. [`replicated`] comes
/// last: a Redis Cluster just started may still be connecting its replicas.
pub async fn run_all(store: Arc<dyn SessionStore>) {
    round_trip(&*store).await;
    unclaimed(&*store).await;
    append_and_replay(&*store).await;
    trim(&*store).await;
    forget(&*store).await;
    write_at_once(&*store).await;
    takeover(&*store).await;
    same_epoch(&*store).await;
    concurrent_claims(store.clone(), 200).await;
    replicated(&*store).await;
}

/// A session id no other check (or run) uses.
pub fn unique(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "contract-{label}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record with something in every field.
pub fn record(id: &str) -> SessionRecord {
    let mut upstream_state = serde_json::Map::new();
    upstream_state.insert("everything".into(), serde_json::json!({"session": "up-1"}));
    SessionRecord {
        id: id.to_owned(),
        principal: "tenant-a/alice".into(),
        protocol_version: "2025-11-25".into(),
        initialize_params: RawJson::new(&serde_json::json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "contract", "version": "1"},
        })),
        upstream_state,
        next_stream: 3,
        next_request: 17,
        in_flight: vec![
            InFlightRecord {
                request_id: "7".into(),
                stream: 1,
            },
            InFlightRecord {
                request_id: "\"7\"".into(),
                stream: 2,
            },
        ],
    }
}

fn event(stream: u64, seq: u64) -> StoredEvent {
    StoredEvent {
        stream,
        seq,
        data: format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"stream":{stream},"seq":{seq}}}}}"#
        ),
    }
}

fn fenced(owner: &str, epoch: u64) -> StoreError {
    StoreError::Fenced {
        owner: owner.into(),
        epoch,
    }
}

fn seqs(replay: &Replay) -> Vec<u64> {
    replay.events.iter().map(|e| e.seq).collect()
}

/// Claim, save, load, replace; a record survives a repeated claim.
pub async fn round_trip(store: &dyn SessionStore) {
    let id = unique("round-trip");
    let a = Fence::new("node-a", 1);
    assert_eq!(store.load(&id).await, Ok(None), "an unknown session loads");
    let claimed = store.claim(&id, &a).await.expect("first claim");
    assert_eq!(claimed.record, None, "a new session has no record");
    assert!(claimed.tails.is_empty(), "a new session has no events");
    assert_eq!(
        store.load(&id).await,
        Ok(None),
        "a claimed session without a record loads as none"
    );

    let mut rec = record(&id);
    store.save(&rec, &a).await.expect("save");
    assert_eq!(store.load(&id).await, Ok(Some((rec.clone(), a.clone()))));

    rec.next_request = 18;
    rec.in_flight.pop();
    rec.upstream_state
        .insert("stdio".into(), serde_json::json!(["ü", 1, null]));
    store.save(&rec, &a).await.expect("save replaces");
    assert_eq!(store.load(&id).await, Ok(Some((rec.clone(), a.clone()))));

    let again = store.claim(&id, &a).await.expect("a repeated claim");
    assert_eq!(
        again.record,
        Some(rec.clone()),
        "a repeated claim finds the record"
    );

    let later = Fence::new("node-a", 2);
    store
        .claim(&id, &later)
        .await
        .expect("own claim in a later epoch");
    assert_eq!(
        store.save(&rec, &a).await,
        Err(fenced("node-a", 2)),
        "the writer must hold the latest claim, even of the same node"
    );
    assert_eq!(
        store.events(&id, 1, 0).await,
        Ok(Replay::default()),
        "a stream without events"
    );
    store.delete(&id, &later).await.expect("delete");
}

/// Writes to a session nobody claimed are refused; deleting it succeeds.
pub async fn unclaimed(store: &dyn SessionStore) {
    let id = unique("unclaimed");
    let a = Fence::new("node-a", 1);
    assert_eq!(store.save(&record(&id), &a).await, Err(StoreError::Gone));
    assert_eq!(
        store.append(&id, &a, &[event(1, 1)], 10, &[]).await,
        Err(StoreError::Gone)
    );
    assert_eq!(store.delete(&id, &a).await, Ok(()));
    assert_eq!(store.load(&id).await, Ok(None));
    assert_eq!(store.events(&id, 1, 0).await, Ok(Replay::default()));
}

/// Events come back exactly, in order, per stream and per session, and a repeated append
/// stores nothing twice.
pub async fn append_and_replay(store: &dyn SessionStore) {
    let id = unique("append");
    let other = unique("append-other");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    store.claim(&other, &a).await.expect("claim the other");

    let priming = StoredEvent {
        stream: 1,
        seq: 0,
        data: String::new(),
    };
    let odd = StoredEvent {
        stream: 1,
        seq: 3,
        data: "{\"text\":\"line\\nbreak ünïcode 🦀\"}\n: not a comment".into(),
    };
    // Out of order on purpose: one batch is stored in seq order per stream.
    let batch = vec![
        event(2, 2),
        event(1, 5),
        priming.clone(),
        event(1, 2),
        odd.clone(),
        event(2, 1),
        event(1, 1),
        event(1, 4),
    ];
    store
        .append(&id, &a, &batch, 100, &[])
        .await
        .expect("append");
    store
        .append(&other, &a, &[event(1, 1), event(1, 9)], 100, &[])
        .await
        .expect("append to the other session");

    let all = store.events(&id, 1, 0).await.expect("events");
    assert_eq!(all.oldest, Some(0), "the priming event is stored");
    assert_eq!(
        all.events,
        vec![
            event(1, 1),
            event(1, 2),
            odd.clone(),
            event(1, 4),
            event(1, 5)
        ],
        "events after the priming event, exactly and in order"
    );
    assert!(!all.has_gap(0));
    let after = store.events(&id, 1, 3).await.expect("events after 3");
    assert_eq!(after.events, vec![event(1, 4), event(1, 5)]);
    assert_eq!(after.oldest, Some(0));
    let none = store
        .events(&id, 1, 5)
        .await
        .expect("events after the last");
    assert!(none.events.is_empty());
    assert_eq!(none.oldest, Some(0));
    let second = store.events(&id, 2, 0).await.expect("the second stream");
    assert_eq!(second.events, vec![event(2, 1), event(2, 2)]);
    assert_eq!(second.oldest, Some(1));

    // The same batch again, and a straggler with other data: nothing changes.
    store
        .append(&id, &a, &batch, 100, &[])
        .await
        .expect("append again");
    let straggler = StoredEvent {
        stream: 1,
        seq: 2,
        data: "other".into(),
    };
    store
        .append(&id, &a, &[straggler], 100, &[])
        .await
        .expect("append a straggler");
    assert_eq!(
        store.events(&id, 1, 0).await,
        Ok(all.clone()),
        "no duplicates"
    );

    store
        .append(&id, &a, &[event(1, 6)], 100, &[])
        .await
        .expect("append more");
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2, 3, 4, 5, 6]
    );

    let elsewhere = store.events(&other, 1, 0).await.expect("the other session");
    assert_eq!(
        elsewhere.events,
        vec![event(1, 1), event(1, 9)],
        "sessions do not mix"
    );

    let claimed = store.claim(&id, &a).await.expect("claim again");
    assert_eq!(
        claimed.tails.into_iter().collect::<Vec<_>>(),
        vec![(1, 6), (2, 2)],
        "a claim finds where each stream continues"
    );
    store.delete(&id, &a).await.expect("delete");
    store.delete(&other, &a).await.expect("delete the other");
}

/// Each stream keeps its newest `keep` events; a resume before them sees the gap.
pub async fn trim(store: &dyn SessionStore) {
    let id = unique("trim");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    let first: Vec<StoredEvent> = (1..=10).map(|seq| event(1, seq)).collect();
    store.append(&id, &a, &first, 3, &[]).await.expect("append");
    let kept = store.events(&id, 1, 0).await.expect("events");
    assert_eq!(seqs(&kept), vec![8, 9, 10], "the newest three");
    assert_eq!(kept.oldest, Some(8));
    assert!(kept.has_gap(0) && kept.has_gap(6) && !kept.has_gap(7));

    store
        .append(&id, &a, &[event(1, 11)], 3, &[])
        .await
        .expect("append one");
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![9, 10, 11]
    );

    for seq in 1..=20 {
        store
            .append(&id, &a, &[event(2, seq)], 5, &[])
            .await
            .expect("append one by one");
    }
    let other = store.events(&id, 2, 17).await.expect("events");
    assert_eq!(seqs(&other), vec![18, 19, 20]);
    assert_eq!(other.oldest, Some(16));
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![9, 10, 11],
        "trimming one stream leaves the others"
    );

    store
        .append(&id, &a, &[event(1, 12)], 0, &[])
        .await
        .expect("append keeping none");
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![12],
        "at least the newest event is kept"
    );
    // A repeat of a trimmed event is not stored again.
    store
        .append(&id, &a, &[event(1, 10)], 3, &[])
        .await
        .expect("append a trimmed one");
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![12]
    );
    store.delete(&id, &a).await.expect("delete");
}

/// Forgotten streams go whole, in the same call as the events appended before them; the
/// others stay, and a claim no longer lists them.
pub async fn forget(store: &dyn SessionStore) {
    let id = unique("forget");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    let both = [event(1, 1), event(1, 2), event(2, 1), event(3, 1)];
    store.append(&id, &a, &both, 10, &[]).await.expect("append");
    store
        .append(&id, &a, &[event(1, 3), event(2, 2)], 10, &[2, 3, 9])
        .await
        .expect("append and forget");
    let gone = store
        .events(&id, 2, 0)
        .await
        .expect("events of a forgotten stream");
    assert_eq!(gone, Replay::default(), "a forgotten stream holds nothing");
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2, 3],
        "the other streams stay"
    );
    let claimed = store.claim(&id, &a).await.expect("claim again");
    assert_eq!(
        claimed.tails.into_iter().collect::<Vec<_>>(),
        vec![(1, 3)],
        "a claim lists only the streams kept"
    );
    // A forgotten stream written again starts afresh.
    store
        .append(&id, &a, &[event(2, 1)], 10, &[])
        .await
        .expect("append to a forgotten stream");
    assert_eq!(
        seqs(&store.events(&id, 2, 0).await.expect("events")),
        vec![1]
    );
    // Refused like any write to a session held by another.
    let b = Fence::new("node-b", 2);
    store.claim(&id, &b).await.expect("claim by b");
    assert!(matches!(
        store.append(&id, &a, &[], 10, &[1]).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2, 3]
    );
    store.delete(&id, &b).await.expect("delete");
}

/// One write carries a record, events and forgotten streams together, or nothing of them.
pub async fn write_at_once(store: &dyn SessionStore) {
    let id = unique("write");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    store
        .append(&id, &a, &[event(2, 1)], 10, &[])
        .await
        .expect("append");
    let mut rec = record(&id);
    let events = [event(1, 1), event(1, 2)];
    let changes = Changes {
        record: Some(&rec),
        events: &events,
        keep: 10,
        forget: &[2],
    };
    store.write(&id, &a, changes).await.expect("write");
    assert_eq!(
        store.load(&id).await.expect("load"),
        Some((rec.clone(), a.clone()))
    );
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2]
    );
    assert_eq!(
        store.events(&id, 2, 0).await.expect("events"),
        Replay::default()
    );

    // A write without a record keeps the one stored.
    store
        .write(&id, &a, Changes::default())
        .await
        .expect("a write of nothing");
    assert_eq!(
        store.load(&id).await.expect("load"),
        Some((rec.clone(), a.clone()))
    );

    // Refused whole: neither the record nor the events of a stale owner's write are stored.
    let b = Fence::new("node-b", 2);
    store.claim(&id, &b).await.expect("claim by b");
    rec.next_request += 1;
    let stale = Changes {
        record: Some(&rec),
        events: &[event(1, 3)],
        keep: 10,
        forget: &[1],
    };
    assert_eq!(store.write(&id, &a, stale).await, Err(fenced("node-b", 2)));
    let (kept, _) = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(kept.next_request, rec.next_request - 1);
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2]
    );
    store.delete(&id, &b).await.expect("delete");
}

/// A later epoch takes a session over; the old owner's writes are refused, naming the new one.
pub async fn takeover(store: &dyn SessionStore) {
    let id = unique("takeover");
    let a = Fence::new("node-a", 1);
    let b = Fence::new("node-b", 2);
    store.claim(&id, &a).await.expect("claim");
    let rec = record(&id);
    store.save(&rec, &a).await.expect("save");
    store
        .append(&id, &a, &[event(1, 1), event(1, 2), event(4, 1)], 10, &[])
        .await
        .expect("append");

    let taken = store.claim(&id, &b).await.expect("take over");
    assert_eq!(
        taken.record,
        Some(rec.clone()),
        "the new owner finds the record"
    );
    assert_eq!(
        taken.tails.into_iter().collect::<Vec<_>>(),
        vec![(1, 2), (4, 1)]
    );

    let mut stale = rec.clone();
    stale.next_request = 99;
    assert_eq!(store.save(&stale, &a).await, Err(fenced("node-b", 2)));
    assert_eq!(
        store.append(&id, &a, &[event(1, 3)], 10, &[]).await,
        Err(fenced("node-b", 2))
    );
    assert_eq!(store.delete(&id, &a).await, Err(fenced("node-b", 2)));
    assert_eq!(store.claim(&id, &a).await.err(), Some(fenced("node-b", 2)));
    assert_eq!(
        store.load(&id).await,
        Ok(Some((rec.clone(), b.clone()))),
        "the stale owner wrote nothing"
    );
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2]
    );

    store
        .append(&id, &b, &[event(1, 3)], 10, &[])
        .await
        .expect("the new owner appends");
    store.save(&stale, &b).await.expect("the new owner saves");

    let back = Fence::new("node-a", 3);
    store.claim(&id, &back).await.expect("a later epoch again");
    assert_eq!(store.save(&stale, &b).await, Err(fenced("node-a", 3)));
    assert_eq!(store.delete(&id, &b).await, Err(fenced("node-a", 3)));

    store.delete(&id, &back).await.expect("delete");
    assert_eq!(store.load(&id).await, Ok(None));
    assert_eq!(store.events(&id, 1, 0).await, Ok(Replay::default()));
    assert_eq!(store.delete(&id, &back).await, Ok(()), "a repeated delete");
    assert_eq!(store.save(&stale, &back).await, Err(StoreError::Gone));

    let fresh = store
        .claim(&id, &Fence::new("node-c", 1))
        .await
        .expect("a deleted session is claimed anew, in any epoch");
    assert_eq!(fresh.record, None);
    assert!(fresh.tails.is_empty());
    store
        .delete(&id, &Fence::new("node-c", 1))
        .await
        .expect("delete");
}

/// Within one epoch only the holder claims again; an earlier epoch never does.
pub async fn same_epoch(store: &dyn SessionStore) {
    let id = unique("same-epoch");
    let a = Fence::new("node-a", 5);
    store.claim(&id, &a).await.expect("claim");
    assert_eq!(
        store.claim(&id, &Fence::new("node-b", 5)).await.err(),
        Some(fenced("node-a", 5))
    );
    assert_eq!(
        store.claim(&id, &Fence::new("node-b", 4)).await.err(),
        Some(fenced("node-a", 5))
    );
    assert_eq!(
        store.claim(&id, &Fence::new("node-a", 4)).await.err(),
        Some(fenced("node-a", 5))
    );
    store.claim(&id, &a).await.expect("the holder claims again");
    store.save(&record(&id), &a).await.expect("and writes");
    store.delete(&id, &a).await.expect("delete");
}

/// Two nodes claim one session at once in the same epoch, `rounds` times (a new session on even
/// rounds, a takeover from an earlier epoch on odd ones): exactly one wins each time, and only
/// the winner writes.
pub async fn concurrent_claims(store: Arc<dyn SessionStore>, rounds: usize) {
    for round in 0..rounds {
        let id = unique("race");
        let rec = record(&id);
        if round % 2 == 1 {
            let old = Fence::new("node-old", 1);
            store.claim(&id, &old).await.expect("the earlier claim");
            store.save(&rec, &old).await.expect("the earlier save");
        }
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = ["node-a", "node-b"]
            .into_iter()
            .map(|owner| {
                let (store, id, start) = (store.clone(), id.clone(), start.clone());
                tokio::spawn(async move {
                    let fence = Fence::new(owner, 2);
                    start.wait().await;
                    (store.claim(&id, &fence).await, fence)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.expect("a claim task"));
        }
        let (won, lost): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(r, _)| r.is_ok());
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one claim wins: {lost:?}"
        );
        let (claimed, winner) = &won[0];
        let (refusal, loser) = &lost[0];
        assert_eq!(
            refusal.as_ref().err(),
            Some(&fenced(&winner.owner, 2)),
            "round {round}: the loser is told who won"
        );
        if round % 2 == 1 {
            let record = claimed.as_ref().ok().and_then(|c| c.record.clone());
            assert_eq!(
                record,
                Some(rec.clone()),
                "round {round}: the winner finds the record"
            );
        }
        assert_eq!(
            store.save(&rec, loser).await,
            Err(fenced(&winner.owner, 2)),
            "round {round}: the loser cannot write"
        );
        store.save(&rec, winner).await.expect("the winner writes");
        store.delete(&id, winner).await.expect("delete");
    }
}

/// A healthy store confirms a session's writes replicated (for a Redis Cluster: on a replica
/// of the session's primary; for the others, committed).
pub async fn replicated(store: &dyn SessionStore) {
    let id = unique("replicated");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    store.save(&record(&id), &a).await.expect("save");
    store
        .append(&id, &a, &[event(1, 1), event(1, 2)], 10, &[])
        .await
        .expect("append");
    assert_eq!(
        store.replicate(&id).await,
        Ok(()),
        "the writes so far are replicated"
    );
    assert_eq!(
        store.replicate(&id).await,
        Ok(()),
        "and again, with nothing new"
    );
    store.delete(&id, &a).await.expect("delete");
    assert_eq!(
        store.replicate(&id).await,
        Ok(()),
        "a delete replicates too"
    );
}

/// A session not written for `ttl` is gone: record, events and ownership. `store` must be built
/// with `ttl` (a second or so: the check sleeps about three times that).
pub async fn expiry(store: Arc<dyn SessionStore>, ttl: Duration) {
    let id = unique("expiry");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await.expect("claim");
    let rec = record(&id);
    store.save(&rec, &a).await.expect("save");
    store
        .append(&id, &a, &[event(1, 1)], 10, &[])
        .await
        .expect("append");

    tokio::time::sleep(ttl / 2).await;
    store
        .append(&id, &a, &[event(1, 2)], 10, &[])
        .await
        .expect("a write before the ttl");
    tokio::time::sleep(ttl * 3 / 4).await;
    assert_eq!(
        store.load(&id).await,
        Ok(Some((rec.clone(), a.clone()))),
        "each write restarts the ttl"
    );
    assert_eq!(
        seqs(&store.events(&id, 1, 0).await.expect("events")),
        vec![1, 2]
    );

    tokio::time::sleep(ttl + ttl / 2).await;
    assert_eq!(store.load(&id).await, Ok(None), "the record expired");
    assert_eq!(
        store.events(&id, 1, 0).await,
        Ok(Replay::default()),
        "the events expired"
    );
    assert_eq!(
        store.save(&rec, &a).await,
        Err(StoreError::Gone),
        "the ownership expired"
    );
    let b = Fence::new("node-b", 1);
    let fresh = store
        .claim(&id, &b)
        .await
        .expect("an expired session has no owner");
    assert_eq!(
        fresh.record, None,
        "nothing of the expired session comes back"
    );
    assert!(fresh.tails.is_empty());
    assert_eq!(store.events(&id, 1, 0).await, Ok(Replay::default()));
    store.delete(&id, &b).await.expect("delete");
}
