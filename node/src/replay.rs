//! Replay memory: the bytes of event logs (what `Last-Event-ID` resumes from), counted per
//! session and per node.
//!
//! Every byte an [`EventStream`] logs is counted in its session's [`SessionReplay`] and in the
//! node's [`NodeReplay`] until it leaves the log. When a stream finishes, the budgets are
//! enforced: the session's oldest finished streams go first while it is over its own budget,
//! then the node's oldest finished streams (of any session) while the node is over its. A
//! dropped stream's log is emptied; a resume into it gets the explicit gap error. Streams still
//! running are not dropped: they are bounded by the per-stream log bound and the number of
//! requests a session and a node may have in flight.

use crate::stream::EventStream;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Below this many remembered finished streams, dead entries are not swept.
const SWEEP_FLOOR: usize = 1024;

/// The node's replay bytes and its finished streams, oldest first.
pub struct NodeReplay {
    limit: usize,
    used: AtomicUsize,
    finished: Mutex<Finished>,
}

#[derive(Default)]
struct Finished {
    streams: VecDeque<Weak<EventStream>>,
    /// Length after the last sweep of dropped streams.
    swept: usize,
}

impl NodeReplay {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(NodeReplay {
            limit,
            used: AtomicUsize::new(0),
            finished: Mutex::default(),
        })
    }

    /// A budget with no limit, for tests of what is not about replay.
    #[cfg(test)]
    pub fn unlimited() -> Arc<Self> {
        NodeReplay::new(usize::MAX)
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Remembers a finished stream, then drops the oldest finished streams while the node is
    /// over its budget.
    pub fn finished(&self, stream: &Arc<EventStream>) {
        let mut evict = Vec::new();
        {
            let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
            finished.streams.push_back(Arc::downgrade(stream));
            if finished.streams.len() > (2 * finished.swept).max(SWEEP_FLOOR) {
                finished.streams.retain(|s| s.strong_count() > 0);
                finished.swept = finished.streams.len();
            }
            let mut freed = 0;
            while self.used().saturating_sub(freed) > self.limit {
                let Some(oldest) = finished.streams.pop_front() else {
                    break;
                };
                if let Some(s) = oldest.upgrade() {
                    freed += s.log_bytes();
                    evict.push(s);
                }
            }
        }
        // Outside the lock: evicting takes each stream's own lock.
        for s in evict {
            s.evict();
        }
    }
}

/// One session's replay bytes, which also count towards its node's.
pub struct SessionReplay {
    limit: usize,
    used: AtomicUsize,
    node: Arc<NodeReplay>,
}

impl SessionReplay {
    pub fn new(limit: usize, node: Arc<NodeReplay>) -> Arc<Self> {
        Arc::new(SessionReplay {
            limit,
            used: AtomicUsize::new(0),
            node,
        })
    }

    pub fn node(&self) -> &Arc<NodeReplay> {
        &self.node
    }

    pub fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        self.node.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.node.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn finished_stream(id: u64, account: &Arc<SessionReplay>, bytes: usize) -> Arc<EventStream> {
        let s = EventStream::new(id, account.clone(), None);
        s.push(Bytes::from(vec![b'x'; bytes]));
        s.finish();
        s
    }

    #[test]
    fn the_node_drops_its_oldest_finished_streams_when_over_budget() {
        let node = NodeReplay::new(250);
        let a = SessionReplay::new(usize::MAX, node.clone());
        let b = SessionReplay::new(usize::MAX, node.clone());
        let first = finished_stream(1, &a, 100);
        node.finished(&first);
        let second = finished_stream(1, &b, 100);
        node.finished(&second);
        assert_eq!(node.used(), 200);
        let third = finished_stream(2, &a, 100);
        node.finished(&third);
        assert_eq!(node.used(), 200, "the oldest went");
        assert_eq!((a.used(), b.used()), (100, 100));
        assert!(first.attach(0).is_err(), "a resume into it is a gap");
        assert!(second.attach(0).is_ok() && third.attach(0).is_ok());
    }

    #[test]
    fn dropped_streams_give_back_their_bytes_and_are_swept() {
        let node = NodeReplay::new(usize::MAX);
        let a = SessionReplay::new(usize::MAX, node.clone());
        for i in 0..(3 * SWEEP_FLOOR as u64) {
            let s = finished_stream(i, &a, 10);
            node.finished(&s);
        }
        assert_eq!(node.used(), 0, "every stream was dropped");
        let remembered = node.finished.lock().expect("lock").streams.len();
        assert!(remembered <= 2 * SWEEP_FLOOR + 1, "{remembered}");
    }
}
