//! What happened to each request, kept as histograms and counts. Sessions record into a few
//! shards (a session always into the same one), so that recording takes an uncontended lock
//! and memory does not grow with the number of sessions; the shards are added up at the end.
//!
//! Latency is recorded in microseconds, from the time the request was *due* to the time its
//! answer arrived: a request that waited for its session, its connection or the generator
//! counts that wait (no coordinated omission). The send lag (from due to actually sent) is
//! recorded apart, to show how much of it was the generator's.

use crate::mix::Op;
use anyhow::Context;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Significant figures of every histogram: 0.1 % resolution.
const SIGFIG: u8 = 3;
/// At most this many shards.
const MAX_SHARDS: usize = 16;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// An HTTP status other than 2xx.
    Http(u16),
    /// A JSON-RPC error answer, by its code.
    JsonRpc(i64),
    /// A tool result with `isError`.
    Tool,
    /// A 2xx answer without the JSON-RPC response (or SSE event) it should have carried.
    NoAnswer,
    /// The connection could not be opened, or broke.
    Transport,
    /// No answer by the request's due time plus the timeout (including requests that were
    /// still waiting to be sent by then, and those that had no answer when the run ended).
    Timeout,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Http(status) => write!(f, "HTTP {status}"),
            ErrorKind::JsonRpc(code) => write!(f, "JSON-RPC {code}"),
            ErrorKind::Tool => f.write_str("tool error"),
            ErrorKind::NoAnswer => f.write_str("no answer"),
            ErrorKind::Transport => f.write_str("transport"),
            ErrorKind::Timeout => f.write_str("timeout"),
        }
    }
}

/// A failed request: the kind and what was seen, for the report's first example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn timeout() -> Failure {
        Failure::new(ErrorKind::Timeout, "no answer within the timeout")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

/// How one request ended.
pub struct Done {
    pub op: Op,
    /// When it was due.
    pub due: Instant,
    /// When it was sent; `None` for one that timed out before it could be.
    pub sent: Option<Instant>,
    /// When its answer arrived (or it failed).
    pub at: Instant,
    pub outcome: Result<(), Failure>,
}

/// Errors of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCount {
    pub count: u64,
    pub first: String,
}

/// The measured requests of some sessions.
pub struct Tally {
    pub latency: Histogram<u64>,
    pub by_op: Vec<Histogram<u64>>,
    pub errors_by_op: [u64; 5],
    pub send_lag: Histogram<u64>,
    pub errors: BTreeMap<ErrorKind, ErrorCount>,
    /// The last answer to a measured request.
    pub last: Option<Instant>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new(SIGFIG).context("cannot make a histogram")
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency: histogram()?,
            by_op: Op::ALL
                .iter()
                .map(|_| histogram())
                .collect::<anyhow::Result<_>>()?,
            errors_by_op: [0; 5],
            send_lag: histogram()?,
            errors: BTreeMap::new(),
            last: None,
        })
    }

    fn record(&mut self, done: &Done) {
        self.last = self.last.max(Some(done.at));
        if let Some(sent) = done.sent {
            put(
                &mut self.send_lag,
                micros(sent.saturating_duration_since(done.due)),
            );
        }
        match &done.outcome {
            Ok(()) => {
                let us = micros(done.at.saturating_duration_since(done.due));
                put(&mut self.latency, us);
                if let Some(h) = self.by_op.get_mut(done.op.index()) {
                    put(h, us);
                }
            }
            Err(failure) => {
                self.errors_by_op[done.op.index()] += 1;
                let e = self.errors.entry(failure.kind).or_default();
                if e.count == 0 {
                    e.first = failure.message.clone();
                }
                e.count += 1;
            }
        }
    }

    fn add(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        for (a, b) in self.by_op.iter_mut().zip(&other.by_op) {
            a.add(b)?;
        }
        for (a, b) in self.errors_by_op.iter_mut().zip(other.errors_by_op) {
            *a += b;
        }
        self.send_lag.add(&other.send_lag)?;
        for (kind, count) in &other.errors {
            let e = self.errors.entry(*kind).or_default();
            if e.count == 0 {
                e.first = count.first.clone();
            }
            e.count += count.count;
        }
        self.last = self.last.max(other.last);
        Ok(())
    }

    pub fn completed(&self) -> u64 {
        self.latency.len()
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }
}

/// Records a value, growing the histogram as needed (only values beyond any duration fail to
/// fit: those are kept as its highest).
fn put(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// Microseconds, at least 1 (a histogram's lowest value).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Counts over the whole run, warm-up included, for the progress line.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Where every session records.
pub struct Recorder {
    shards: Vec<Mutex<Tally>>,
    pub live: Arc<Live>,
}

impl Recorder {
    pub fn new(sessions: usize) -> anyhow::Result<Recorder> {
        let shards = (0..sessions.clamp(1, MAX_SHARDS))
            .map(|_| Tally::new().map(Mutex::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Recorder {
            shards,
            live: Arc::new(Live::default()),
        })
    }

    /// Records how a request of `session` ended; only measured requests reach the tallies.
    pub fn record(&self, session: usize, measured: bool, done: &Done) {
        match done.outcome {
            Ok(()) => self.live.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.live.failed.fetch_add(1, Ordering::Relaxed),
        };
        if !measured {
            return;
        }
        if let Some(shard) = self.shards.get(session % self.shards.len()) {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(done);
        }
    }

    /// Every shard added up.
    pub fn total(&self) -> anyhow::Result<Tally> {
        let mut total = Tally::new()?;
        for shard in &self.shards {
            total.add(&shard.lock().unwrap_or_else(PoisonError::into_inner))?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(op: Op, due: Instant, lag_us: u64, took_us: u64, outcome: Result<(), Failure>) -> Done {
        Done {
            op,
            due,
            sent: Some(due + Duration::from_micros(lag_us)),
            at: due + Duration::from_micros(took_us),
            outcome,
        }
    }

    #[test]
    fn latency_counts_from_the_due_time_and_errors_by_kind() {
        let r = Recorder::new(40).expect("recorder");
        let t = Instant::now();
        // Sent 5 ms late, answered 1 ms after that: 6 ms of latency.
        r.record(3, true, &done(Op::Echo, t, 5000, 6000, Ok(())));
        r.record(20, true, &done(Op::List, t, 0, 1000, Ok(())));
        let http = Failure::new(ErrorKind::Http(503), "first");
        r.record(7, true, &done(Op::Echo, t, 0, 10, Err(http)));
        let again = Failure::new(ErrorKind::Http(503), "second");
        r.record(8, true, &done(Op::Counter, t, 0, 10, Err(again)));
        r.record(9, true, &done(Op::Echo, t, 0, 10, Err(Failure::timeout())));
        // Warm-up: live counts only.
        r.record(1, false, &done(Op::Echo, t, 0, 99_000, Ok(())));

        let total = r.total().expect("total");
        assert_eq!(total.completed(), 2);
        assert_eq!(total.failed(), 3);
        // Within the histogram's resolution (3 significant figures).
        assert!(total.latency.equivalent(total.latency.max(), 6000));
        assert_eq!(total.by_op[Op::Echo.index()].len(), 1);
        assert_eq!(total.errors_by_op, [2, 1, 0, 0, 0]);
        let http = &total.errors[&ErrorKind::Http(503)];
        assert_eq!((http.count, http.first.as_str()), (2, "first"));
        assert_eq!(total.errors[&ErrorKind::Timeout].count, 1);
        assert!(total.send_lag.equivalent(total.send_lag.max(), 5000));
        assert_eq!(r.live.ok.load(Ordering::Relaxed), 3);
        assert_eq!(r.live.failed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn error_kinds_read_as_the_report_prints_them() {
        assert_eq!(ErrorKind::Http(502).to_string(), "HTTP 502");
        assert_eq!(ErrorKind::JsonRpc(-32603).to_string(), "JSON-RPC -32603");
        assert_eq!(ErrorKind::Timeout.to_string(), "timeout");
    }
}
