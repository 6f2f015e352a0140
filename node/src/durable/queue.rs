//! The queue of the node's writes: each session's writes in order, different sessions' side by side.
//!
//! A session's writes wait while an earlier round of its writes is with the store, and then go
//! as one round (so they batch up behind a slow write instead of making more calls); a slow
//! session holds up no other. A barrier is done once every write queued before it is.

use super::{Done, Op, Write};
use shardgate_store::Fence;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Whose writes go in order: a session under one fence.
pub(super) type Key = (Arc<str>, Arc<Fence>);

/// Writes waiting for the store, and the barriers waiting for them.
#[derive(Default)]
pub(super) struct Queue {
    next_seq: u64,
    /// Per session, the writes not started yet, with their sequence numbers.
    waiting: HashMap<Key, Vec<(u64, Op)>>,
    /// Sessions with waiting writes and no round with the store, oldest first.
    ready: VecDeque<Key>,
    /// Sessions with a round with the store.
    busy: HashSet<Key>,
    /// Sequence numbers of the writes not done yet.
    outstanding: BTreeSet<u64>,
    /// Barriers, by the sequence number every write before which must be done.
    barriers: Vec<(u64, Done)>,
}

impl Queue {
    pub(super) fn push(&mut self, op: Op) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if matches!(op.write, Write::Barrier) {
            self.barriers.push((seq, op.done));
            self.complete_barriers();
            return;
        }
        self.outstanding.insert(seq);
        let key = (op.session.clone(), op.fence.clone());
        let waiting = self.waiting.entry(key.clone()).or_default();
        if waiting.is_empty() && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
        waiting.push((seq, op));
    }

    /// The next session with waiting writes, busy from now on until [`Queue::finished`]: its
    /// round takes what it has waiting when it starts ([`Queue::take`]), so that the writes
    /// queued meanwhile go with it.
    pub(super) fn next_ready(&mut self) -> Option<Key> {
        let key = self.ready.pop_front()?;
        self.busy.insert(key.clone());
        Some(key)
    }

    /// A busy session's waiting writes, as one round: their sequence numbers and the writes.
    pub(super) fn take(&mut self, key: &Key) -> (Vec<u64>, Vec<Op>) {
        self.waiting
            .remove(key)
            .unwrap_or_default()
            .into_iter()
            .unzip()
    }

    /// A round is done: its session may go again, and barriers behind it may be done.
    pub(super) fn finished(&mut self, key: &Key, seqs: &[u64]) {
        for seq in seqs {
            self.outstanding.remove(seq);
        }
        self.busy.remove(key);
        if self.waiting.get(key).is_some_and(|w| !w.is_empty()) {
            self.ready.push_back(key.clone());
        }
        self.complete_barriers();
    }

    /// Whether nothing waits or runs.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }

    fn complete_barriers(&mut self) {
        let oldest = self.outstanding.first().copied();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.barriers)
            .into_iter()
            .partition(|(seq, _)| oldest.is_none_or(|o| o > *seq));
        self.barriers = waiting;
        for (_, done) in done {
            if let Done::Tell(tx) = done {
                let _ = tx.send(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{Mark, Write};
    use shardgate_store::StoredEvent;
    use tokio::sync::oneshot;

    fn op(session: &str, fence: &Arc<Fence>) -> Op {
        Op {
            session: session.into(),
            fence: fence.clone(),
            forgotten: Vec::new(),
            write: Write::Append(
                StoredEvent {
                    stream: 1,
                    seq: 1,
                    data: String::new(),
                },
                None,
            ),
            mark: Mark::default(),
            done: Done::Nothing,
        }
    }

    fn barrier(
        fence: &Arc<Fence>,
    ) -> (
        Op,
        oneshot::Receiver<Result<(), shardgate_store::StoreError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        let op = Op {
            session: "".into(),
            fence: fence.clone(),
            forgotten: Vec::new(),
            write: Write::Barrier,
            mark: Mark::default(),
            done: Done::Tell(tx),
        };
        (op, rx)
    }

    #[test]
    fn a_busy_session_batches_up_and_holds_no_other_back() {
        let fence = Arc::new(Fence::new("n", 1));
        let mut q = Queue::default();
        q.push(op("a", &fence));
        let a = q.next_ready().expect("a goes");
        q.push(op("a", &fence));
        let (first, ops) = q.take(&a);
        assert_eq!(
            ops.len(),
            2,
            "what queued before the round started goes with it"
        );
        q.push(op("a", &fence));
        q.push(op("b", &fence));
        q.push(op("a", &fence));
        let b = q.next_ready().expect("b goes while a is busy");
        assert_eq!(&*b.0, "b");
        let (b_seqs, _) = q.take(&b);
        assert!(q.next_ready().is_none(), "a waits for its round");
        q.finished(&a, &first);
        let again = q.next_ready().expect("a goes again");
        let (second, ops) = q.take(&again);
        assert_eq!((&*again.0, ops.len()), ("a", 2), "as one round");
        q.finished(&b, &b_seqs);
        q.finished(&again, &second);
        assert!(q.is_idle());
    }

    #[test]
    fn a_barrier_waits_for_every_write_before_it_only() {
        let fence = Arc::new(Fence::new("n", 1));
        let mut q = Queue::default();
        q.push(op("a", &fence));
        q.push(op("b", &fence));
        let (b1, mut done) = barrier(&fence);
        q.push(b1);
        q.push(op("c", &fence));
        let mut round = || {
            let key = q.next_ready().expect("a session is ready");
            let (seqs, _) = q.take(&key);
            (key, seqs)
        };
        let (a, b, c) = (round(), round(), round());
        q.finished(&c.0, &c.1);
        q.finished(&a.0, &a.1);
        assert!(done.try_recv().is_err(), "b is not written yet");
        q.finished(&b.0, &b.1);
        assert!(done.try_recv().is_ok(), "everything before it is");
        let (b2, mut at_once) = barrier(&fence);
        q.push(b2);
        assert!(
            at_once.try_recv().is_ok(),
            "nothing outstanding: done at once"
        );
    }
}
