//! The invariants a run must keep, one file each, checked on the recorded [`History`].
//!
//! - [`one_answer`]: every call got exactly one answer, a result or an explicit error; none
//!   hung, none was answered twice, none lost its connection without a word. A lost connection
//!   is an answer only when a gateway kill explains it ([`lost_to_gateway_kill`]).
//! - [`counter`]: per session, `counter` never gives a value twice, and skips a value only where
//!   a call got the explicit "interrupted" error, lost its connection, or was given up by its
//!   client (its effect may or may not have happened).
//! - [`planned`]: no call failed while a planned change (scale up, scale down) was under way.
//! - [`front`]: after a gateway kill, each session's next call through the front gets its
//!   value.
//! - [`usable`]: once the faults are over, every session answers again.
//! - [`one_writer`]: at most one node wrote a session per epoch, and no session's epoch went
//!   back, from the store's own record of its writers (PostgreSQL stores only; otherwise the
//!   verdict says it was not checked).
//! - [`delivery`]: on each GET holder's resumed stream, every event came once and in order,
//!   and every answered call's notifications came.
//! - [`echo`]: through a stdio upstream whose processes are killed, every answer is the
//!   call's own, and each session's upstream answers again after the faults.

pub mod counter;
pub mod delivery;
pub mod echo;
pub mod front;
pub mod one_answer;
pub mod one_writer;
pub mod planned;
pub mod usable;

use crate::history::{Call, Fault, History, kind};
use serde::Serialize;

/// How long after a killed gateway is gone a client may still send on a connection to it that
/// it has not yet seen close (the front closes each one as its gateway's end goes).
pub const NOTICE_MS: u64 = 1000;

/// The one rule by which a lost connection (one that failed before the call had an event id
/// to resume from) is not a violation: a gateway was killed while the call was under way —
/// sent no later than [`NOTICE_MS`] after the gateway was gone, and ended after the kill. The
/// client sees its connection reset and knows it has no answer, as it would know from a 502.
/// Nothing else excuses it: when a node fails, the gateway stays to give an explicit error.
pub fn lost_to_gateway_kill(call: &Call, faults: &[Fault]) -> bool {
    faults.iter().any(|f| {
        f.kind == kind::GATEWAY_KILL
            && call.sent_ms <= f.until_ms + NOTICE_MS
            && call.done_ms >= f.at_ms
    })
}

/// Whether `session` got a value from one of its healing calls among `calls`.
pub fn healed(calls: &[Call], session: usize) -> bool {
    calls
        .iter()
        .filter(|c| c.healing && c.session == session)
        .any(|c| c.outcome.value().is_some())
}

/// What one invariant made of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub invariant: &'static str,
    /// What it looked at (calls, sessions).
    pub checked: usize,
    pub violations: usize,
    /// The first counter-example, when there is one.
    pub first: Option<String>,
    /// Why the invariant was not checked at all (nothing recorded what it needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
}

impl Verdict {
    fn new(invariant: &'static str) -> Verdict {
        Verdict {
            invariant,
            checked: 0,
            violations: 0,
            first: None,
            not_checked: None,
        }
    }

    fn not_checked(invariant: &'static str, why: impl Into<String>) -> Verdict {
        Verdict {
            not_checked: Some(why.into()),
            ..Verdict::new(invariant)
        }
    }

    fn violated(&mut self, example: impl FnOnce() -> String) {
        self.violations += 1;
        if self.first.is_none() {
            self.first = Some(example());
        }
    }

    pub fn held(&self) -> bool {
        self.violations == 0
    }
}

/// Every invariant, in the order above.
pub fn all(history: &History) -> Vec<Verdict> {
    vec![
        one_answer::check(history),
        counter::check(history),
        planned::check(history),
        front::check(history),
        usable::check(history),
        one_writer::check(history),
        delivery::check(history),
        echo::check(history),
    ]
}
