//! A planned change (scale up, scale down: a drain) fails no call: every call that was under
//! way at any moment of the change got its value.

use super::Verdict;
use crate::history::{History, Outcome};

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("planned changes failed no call");
    for change in history.faults.iter().filter(|f| f.planned) {
        for call in &history.calls {
            let during = call.sent_ms <= change.until_ms && call.done_ms >= change.at_ms;
            if !during {
                continue;
            }
            v.checked += 1;
            if !matches!(call.outcome, Outcome::Value { .. }) {
                v.violated(|| {
                    format!(
                        "{} {} ({}–{} ms): session {} call {} got {:?}",
                        change.kind,
                        change.target,
                        change.at_ms,
                        change.until_ms,
                        history.sessions[call.session],
                        call.id,
                        call.outcome
                    )
                });
            }
        }
    }
    v
}
