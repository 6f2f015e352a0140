//! A planned change (scale up, scale down: a drain) fails no call: every call that was under
//! way at any moment of the change got its value.
//!
//! A call that was also under way during an unplanned fault, or within [`AFTERMATH`] of its
//! end, is that fault's to explain, not the change's: a call held by a frozen node, say, may
//! fail as the change begins. The other invariants still check it; so does a run of planned
//! changes alone (`t91_scale`), where nothing else could explain a failure.

use super::Verdict;
use crate::history::{History, Outcome};
use crate::scenario::SETTLE;

/// How long after an unplanned fault is over its effects may still reach a call.
const AFTERMATH: std::time::Duration = SETTLE;

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("planned changes failed no call");
    let aftermath = u64::try_from(AFTERMATH.as_millis()).unwrap_or(u64::MAX);
    let unplanned: Vec<(u64, u64)> = history
        .faults
        .iter()
        .filter(|f| !f.planned)
        .map(|f| (f.at_ms, f.until_ms.saturating_add(aftermath)))
        .collect();
    for change in history.faults.iter().filter(|f| f.planned) {
        for call in &history.calls {
            let during = call.sent_ms <= change.until_ms && call.done_ms >= change.at_ms;
            let faulted = unplanned
                .iter()
                .any(|&(at, until)| call.sent_ms <= until && call.done_ms >= at);
            if !during || faulted {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Fault, kind};

    fn fault(kind: &str, at_ms: u64, until_ms: u64, planned: bool) -> Fault {
        Fault {
            kind: kind.into(),
            target: "node-1".into(),
            at_ms,
            until_ms,
            planned,
            moved: None,
        }
    }

    fn failed(sent_ms: u64, done_ms: u64) -> Call {
        Call {
            session: 0,
            id: sent_ms as i64,
            sent_ms,
            done_ms,
            outcome: Outcome::Error {
                what: "HTTP 502".into(),
                message: String::new(),
            },
            healing: false,
        }
    }

    #[test]
    fn a_failure_during_a_change_is_the_changes_unless_a_fault_explains_it() {
        let history = |calls: Vec<Call>| History {
            sessions: vec!["s".into()],
            calls,
            faults: vec![
                fault(kind::FREEZE, 10_000, 16_000, false),
                fault(kind::SCALE_DOWN, 16_000, 18_000, true),
                fault(kind::SCALE_UP, 40_000, 42_000, true),
            ],
            ..History::default()
        };
        // Sent to the frozen node, failed as the drain began: the freeze's.
        let held = check(&history(vec![failed(15_000, 16_100)]));
        assert_eq!((held.checked, held.violations), (0, 0));
        // Sent long after the freeze, failed during the join: the join's.
        let own = check(&history(vec![failed(41_000, 41_500)]));
        assert_eq!((own.checked, own.violations), (1, 1));
        assert!(own.first.is_some_and(|e| e.contains("HTTP 502")));
    }
}
