//! One SSE stream of a session: its bounded event log and its current listener.
//!
//! Event ids are `<stream>-<seq>`: unique within the session and naming the stream they belong
//! to, so a `Last-Event-ID` resumes exactly that stream and nothing of another one. `seq` 0 is
//! the priming event (an id and an empty `data`), so a client that saw nothing else can still
//! resume from it.
//!
//! Writers never wait for a reader: an event goes to the log and, if a listener is attached and
//! keeping up, to the listener. A listener that falls behind is detached; its client resumes
//! from the log with `Last-Event-ID`.
//!
//! A stream of a session written through to a store holds each event back from its listener
//! until the writer has it in the store ([`crate::durable`]): a client never sees an event a new
//! owner would not have. A stream continued after a takeover has its earlier events only in the
//! store: a resume from before them reads them there ([`EventStream::stored_through`]).
//!
//! The log's bytes count towards the session's and the node's replay budgets
//! ([`crate::replay`]), which may drop a finished stream's log: a resume into it is then a gap.

use crate::durable::Link;
use crate::replay::SessionReplay;
use bytes::Bytes;
use shardgate_store::{SessionRecord, StoredEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;

/// Events a stream keeps for replay.
pub const LOG_CAPACITY: usize = 1024;
/// Bytes of event data a stream keeps for replay: a few large results (images, resources)
/// must not hold a session's memory hostage. The newest event is kept whatever its size.
pub const LOG_BYTES: usize = 4 * 1024 * 1024;
/// Events buffered towards a live listener before it counts as fallen behind.
const LISTENER_BUFFER: usize = 256;

pub use shardgate_protocol::sse::EventId;

/// One SSE event: an id and a serialized JSON-RPC message (empty for the priming event).
#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    pub data: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Events after the given id have already left the bounded log.
    Gap { oldest: EventId },
    /// The id is ahead of anything this stream has sent.
    Unknown,
}

struct State {
    log: VecDeque<Event>,
    /// Bytes of data in `log`.
    log_bytes: usize,
    next_seq: u64,
    listener: Option<mpsc::Sender<Event>>,
    /// The newest seq a listener may see: what the acknowledgement level holds for.
    released: u64,
    /// Events up to this seq were sent before a takeover: they are in the store, not here.
    stored_through: u64,
    finished: bool,
    /// The stream finished with a listener that was handed every event: its client has had
    /// its whole answer, so of the streams kept for replay this one is the first to go.
    delivered: bool,
    /// The replay budget dropped the log: nothing before `next_seq` can be resumed.
    evicted: bool,
}

pub struct EventStream {
    id: u64,
    state: Mutex<State>,
    account: Arc<SessionReplay>,
    /// Where its events are written through to, if anywhere.
    link: Option<Link>,
    me: Weak<EventStream>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let st = self.lock();
        self.account.sub(st.log_bytes);
    }
}

impl EventStream {
    /// A new stream; its priming event takes `seq` 0.
    pub fn new(id: u64, account: Arc<SessionReplay>, link: Option<Link>) -> Arc<Self> {
        EventStream::continued(id, 0, account, link)
    }

    /// A stream continued from a store that holds its events up to `stored_through`: the next
    /// event takes the seq after it.
    pub fn continued(
        id: u64,
        stored_through: u64,
        account: Arc<SessionReplay>,
        link: Option<Link>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| EventStream {
            id,
            state: Mutex::new(State {
                log: VecDeque::new(),
                log_bytes: 0,
                next_seq: stored_through + 1,
                listener: None,
                released: stored_through,
                stored_through,
                finished: false,
                delivered: false,
                evicted: false,
            }),
            account,
            link,
            me: me.clone(),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent log (pushes are single
        // operations), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a message, hands it to the listener if one keeps up, and returns its id.
    pub fn push(&self, data: Bytes) -> EventId {
        self.push_recorded(data, None)
    }

    /// [`EventStream::push`], stored in one write with `record` (the session as it is once
    /// this event is stored, and whether its upstream state changed) when one is given.
    pub fn push_recorded(&self, data: Bytes, record: Option<(SessionRecord, bool)>) -> EventId {
        let mut st = self.lock();
        let id = EventId {
            stream: self.id,
            seq: st.next_seq,
        };
        st.next_seq += 1;
        let added = data.len();
        let text = self
            .link
            .as_ref()
            .map(|_| String::from_utf8_lossy(&data).into_owned());
        st.log_bytes += added;
        st.log.push_back(Event { id, data });
        self.account.add(added);
        match (&self.link, text) {
            (Some(link), Some(data)) => {
                // Sent under the lock, so the writer sees a stream's events in seq order.
                let stored = StoredEvent {
                    stream: self.id,
                    seq: id.seq,
                    data,
                };
                if link.append(stored, record, self.me.clone()) {
                    release(&mut st, id.seq);
                }
            }
            _ => release(&mut st, id.seq),
        }
        self.account.sub(trim(&mut st));
        id
    }

    /// Lets listeners see the events up to `seq`: the store holds them.
    pub fn release(&self, seq: u64) {
        let mut st = self.lock();
        release(&mut st, seq);
        self.account.sub(trim(&mut st));
    }

    /// The id of the newest event sent on it: the priming event's while there is no other.
    pub fn last_event_id(&self) -> EventId {
        EventId {
            stream: self.id,
            seq: self.lock().next_seq - 1,
        }
    }

    /// Events up to this seq are only in the store (sent before a takeover).
    pub fn stored_through(&self) -> u64 {
        self.lock().stored_through
    }

    /// Marks the stream complete: the listener's body ends once it has every event.
    pub fn finish(&self) {
        let mut st = self.lock();
        st.finished = true;
        let_go_when_done(&mut st);
    }

    /// Ends the stream now (its session is gone here): the listener is let go at once.
    pub fn close(&self) {
        let mut st = self.lock();
        st.finished = true;
        st.listener = None;
    }

    /// Drops the current listener, ending its connection; the stream itself goes on.
    pub fn detach(&self) {
        self.lock().listener = None;
    }

    /// Whether a client is connected to this stream right now.
    pub fn has_listener(&self) -> bool {
        self.lock()
            .listener
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Finished, and its last listener was handed every event.
    pub fn is_delivered(&self) -> bool {
        self.lock().delivered
    }

    /// Whether its last listener was handed every event, if it is finished.
    pub fn finished_and_delivered(&self) -> Option<bool> {
        let st = self.lock();
        st.finished.then_some(st.delivered)
    }

    /// Bytes of event data in the log.
    pub fn log_bytes(&self) -> usize {
        self.lock().log_bytes
    }

    /// The session no longer keeps this stream: the store drops it too.
    pub fn forget(&self) {
        if let Some(link) = &self.link {
            link.forget(self.id);
        }
    }

    /// Drops the log (the replay budget needs the memory); later resumes get a gap.
    pub fn evict(&self) {
        let mut st = self.lock();
        st.log.clear();
        st.evicted = true;
        self.account.sub(std::mem::take(&mut st.log_bytes));
    }

    /// Attaches a listener for events from now on; returns the id to resume from (the id of the
    /// priming event the caller sends first).
    pub fn attach_now(&self) -> (EventId, mpsc::Receiver<Event>) {
        self.attach_now_with_room(0)
    }

    /// [`EventStream::attach_now`], with room for `answers` events beyond the usual buffer:
    /// a batch's answers are written at once, and each must reach its client on this stream
    /// rather than push the listener off it.
    pub fn attach_now_with_room(&self, answers: usize) -> (EventId, mpsc::Receiver<Event>) {
        let mut st = self.lock();
        let resume = EventId {
            stream: self.id,
            seq: st.released,
        };
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER + answers);
        st.listener = if st.finished { None } else { Some(tx) };
        (resume, rx)
    }

    /// Attaches a new listener (replacing any previous one), first replaying every logged event
    /// after `after`. A finished stream yields its replay and then ends.
    pub fn attach(&self, after: u64) -> Result<mpsc::Receiver<Event>, ReplayError> {
        self.attach_after_stored(after, Vec::new())
    }

    /// [`EventStream::attach`] for a stream continued from a store: `stored` are the events
    /// after `after` read from the store, those up to [`EventStream::stored_through`].
    pub fn attach_after_stored(
        &self,
        after: u64,
        stored: Vec<Event>,
    ) -> Result<mpsc::Receiver<Event>, ReplayError> {
        let mut st = self.lock();
        if after > st.released {
            return Err(ReplayError::Unknown);
        }
        let from = after.max(st.stored_through);
        let oldest = st.log.front().map_or(
            EventId {
                stream: self.id,
                seq: st.next_seq,
            },
            |e| e.id,
        );
        if (st.evicted || !st.log.is_empty()) && oldest.seq > from + 1 {
            return Err(ReplayError::Gap { oldest });
        }
        let stored_through = st.stored_through;
        let missed: Vec<Event> = stored
            .into_iter()
            .filter(|e| e.id.seq > after && e.id.seq <= stored_through)
            .chain(
                st.log
                    .iter()
                    .filter(|e| e.id.seq > from && e.id.seq <= st.released)
                    .cloned(),
            )
            .collect();
        let (tx, rx) = mpsc::channel(missed.len() + LISTENER_BUFFER);
        for e in missed {
            // Capacity was sized for the replay, so this cannot fail.
            let _ = tx.try_send(e);
        }
        st.listener = Some(tx);
        let_go_when_done(&mut st);
        Ok(rx)
    }
}

/// Keeps the log within its bounds, dropping the oldest released events (the newest is kept
/// whatever its size, and an event a listener has not been let see yet is never dropped);
/// returns the bytes dropped.
fn trim(st: &mut State) -> usize {
    let mut removed = 0;
    while st.log.len() > 1
        && (st.log.len() > LOG_CAPACITY || st.log_bytes > LOG_BYTES)
        && st.log.front().is_some_and(|e| e.id.seq <= st.released)
    {
        if let Some(old) = st.log.pop_front() {
            st.log_bytes -= old.data.len();
            removed += old.data.len();
        }
    }
    removed
}

/// Lets the listener see the events after the last released one, up to `seq`; a finished
/// stream lets its listener go once it has them all.
fn release(st: &mut State, seq: u64) {
    if seq <= st.released {
        return;
    }
    let from = std::mem::replace(&mut st.released, seq);
    if let Some(tx) = &st.listener {
        let fresh: Vec<&Event> = st
            .log
            .iter()
            .rev()
            .take_while(|e| e.id.seq > from)
            .filter(|e| e.id.seq <= seq)
            .collect();
        if fresh
            .into_iter()
            .rev()
            .any(|e| tx.try_send(e.clone()).is_err())
        {
            st.listener = None;
        }
    }
    let_go_when_done(st);
}

/// A finished stream lets its listener go once the listener has every event: that listener's
/// client has had the whole stream.
fn let_go_when_done(st: &mut State) {
    if st.finished
        && st.released + 1 == st.next_seq
        && let Some(tx) = st.listener.take()
    {
        st.delivered |= !tx.is_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::NodeReplay;

    fn stream(id: u64) -> Arc<EventStream> {
        EventStream::new(
            id,
            SessionReplay::new(usize::MAX, NodeReplay::unlimited()),
            None,
        )
    }

    fn data(i: u64) -> Bytes {
        Bytes::from(format!("{{\"n\":{i}}}"))
    }

    fn drain(rx: &mut mpsc::Receiver<Event>) -> Vec<u64> {
        let mut out = vec![];
        while let Ok(e) = rx.try_recv() {
            out.push(e.id.seq);
        }
        out
    }

    #[test]
    fn event_ids_round_trip() {
        let id = EventId { stream: 7, seq: 42 };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(EventId::parse("x-1"), None);
        assert_eq!(EventId::parse("1"), None);
    }

    #[test]
    fn replays_exactly_the_missed_events_then_follows_live() {
        let s = stream(3);
        for i in 1..=5 {
            s.push(data(i));
        }
        let mut rx = s.attach(2).expect("within log");
        assert_eq!(drain(&mut rx), vec![3, 4, 5]);
        s.push(data(6));
        assert_eq!(drain(&mut rx), vec![6]);
    }

    #[test]
    fn priming_id_resumes_from_the_start() {
        let s = stream(1);
        let (resume, _live) = s.attach_now();
        assert_eq!(resume.to_string(), "1-0");
        s.push(data(1));
        let mut rx = s.attach(resume.seq).expect("from priming");
        assert_eq!(drain(&mut rx), vec![1]);
    }

    #[test]
    fn finished_stream_replays_and_ends() {
        let s = stream(1);
        s.push(data(1));
        s.finish();
        let mut rx = s.attach(0).expect("replay");
        assert_eq!(drain(&mut rx), vec![1]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_log_is_bounded_in_bytes_too() {
        let s = stream(1);
        let big = Bytes::from(vec![b'x'; LOG_BYTES / 3]);
        for _ in 0..5 {
            s.push(big.clone());
        }
        assert!(
            matches!(s.attach(0), Err(ReplayError::Gap { oldest }) if oldest.seq == 3),
            "only the newest three fit"
        );
        let mut rx = s.attach(2).expect("within the log");
        assert_eq!(drain(&mut rx), vec![3, 4, 5]);
        let huge = Bytes::from(vec![b'x'; LOG_BYTES * 2]);
        let id = s.push(huge);
        let mut rx = s
            .attach(id.seq - 1)
            .expect("the newest is kept, however large");
        assert_eq!(drain(&mut rx), vec![id.seq]);
    }

    #[test]
    fn gap_and_unknown_ids_are_errors() {
        let s = stream(1);
        for i in 0..(LOG_CAPACITY as u64 + 10) {
            s.push(data(i));
        }
        assert!(matches!(s.attach(1), Err(ReplayError::Gap { .. })));
        assert_eq!(
            s.attach(1_000_000).expect_err("refused"),
            ReplayError::Unknown
        );
    }

    #[test]
    fn a_batch_fits_its_listener() {
        let s = stream(1);
        let answers = LISTENER_BUFFER + 44;
        let (_, mut rx) = s.attach_now_with_room(answers);
        for i in 0..answers as u64 {
            s.push(data(i));
        }
        assert!(s.has_listener(), "all answers fit; the listener stays");
        assert_eq!(drain(&mut rx).len(), answers);
    }

    #[test]
    fn a_listener_that_falls_behind_is_detached_not_waited_for() {
        let s = stream(1);
        let rx = s.attach(0).expect("attach");
        for i in 0..(LISTENER_BUFFER as u64 + 5) {
            s.push(data(i));
        }
        drop(rx);
        // The writer never blocked, and the log still holds everything for a resume.
        let mut rx = s.attach(0).expect("resume");
        assert_eq!(drain(&mut rx).len(), LISTENER_BUFFER + 5);
    }
}
