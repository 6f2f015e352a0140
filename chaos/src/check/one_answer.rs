//! Every call got exactly one answer: a result, or an explicit error (an HTTP status with a
//! body, a JSON-RPC error). A call that hung, was answered twice, or lost its connection with
//! no answer at all breaks it.

use super::Verdict;
use crate::history::{History, Outcome};

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("every call got exactly one answer");
    for call in &history.calls {
        v.checked += 1;
        if matches!(
            call.outcome,
            Outcome::Hung | Outcome::Answered { .. } | Outcome::NoAnswer { .. }
        ) {
            v.violated(|| {
                format!(
                    "session {} call {} sent at {} ms: {:?}",
                    history.sessions[call.session], call.id, call.sent_ms, call.outcome
                )
            });
        }
    }
    v
}
