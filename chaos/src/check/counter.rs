//! Per session, `counter` never gives a value twice and skips values only where calls got the
//! explicit "interrupted" error, lost their connection, or were given up by the client (whose
//! effect may or may not have happened): at most one skipped value per such call. A value given twice is a lost update (two calls saw the same
//! state); a skip beyond the interrupted calls is an effect the client was never told of. Calls
//! of one session may run side by side, so values are compared as a set, not in call order.

use super::Verdict;
use crate::history::{History, Outcome};
use std::collections::BTreeMap;

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new(
        "counters give each value once, skipping only calls interrupted, cut off or given up",
    );
    let mut values: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(); history.sessions.len()];
    let mut interrupted = vec![0i64; history.sessions.len()];
    for call in &history.calls {
        match &call.outcome {
            Outcome::Value { value } => {
                if let Some(seen) = values.get_mut(call.session)
                    && let Some(first) = seen.insert(*value, call.id)
                {
                    v.violated(|| {
                        format!(
                            "session {} answered {value} twice: calls {first} and {} (sent at \
                             {} ms)",
                            history.sessions[call.session], call.id, call.sent_ms
                        )
                    });
                }
            }
            // A call the client gave up, or whose connection was lost after the gateway took
            // it, may have taken effect, like an interrupted one.
            Outcome::Interrupted { .. } | Outcome::Abandoned | Outcome::ConnectionLost { .. } => {
                if let Some(n) = interrupted.get_mut(call.session) {
                    *n += 1;
                }
            }
            _ => {}
        }
    }
    for (session, seen) in values.iter().enumerate() {
        v.checked += 1;
        // Each session counted to 1 before the run.
        let Some(&max) = seen.keys().next_back() else {
            continue;
        };
        let missing: Vec<i64> = (2..=max).filter(|n| !seen.contains_key(n)).collect();
        if missing.len() as i64 > interrupted[session] || seen.keys().any(|&n| n < 2) {
            v.violated(|| {
                format!(
                    "session {}: values {:?} never answered, with {} interrupted, cut-off or \
                     given-up calls",
                    history.sessions[session],
                    &missing[..missing.len().min(5)],
                    interrupted[session]
                )
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;

    fn history(outcomes: &[Outcome]) -> History {
        History {
            sessions: vec!["s".into()],
            calls: outcomes
                .iter()
                .enumerate()
                .map(|(i, outcome)| Call {
                    session: 0,
                    id: i as i64,
                    sent_ms: i as u64,
                    done_ms: i as u64,
                    outcome: outcome.clone(),
                    healing: false,
                })
                .collect(),
            ..History::default()
        }
    }

    fn value(value: i64) -> Outcome {
        Outcome::Value { value }
    }

    #[test]
    fn skips_need_interrupted_calls_and_repeats_are_lost_updates() {
        let interrupted = Outcome::Interrupted {
            message: "interrupted by failover".into(),
        };
        let refused = Outcome::Error {
            what: "HTTP 503".into(),
            message: String::new(),
        };
        assert!(check(&history(&[value(2), refused.clone(), value(3)])).held());
        assert!(check(&history(&[value(2), interrupted.clone(), value(4)])).held());
        assert!(check(&history(&[value(2), interrupted, value(3)])).held());
        let skipped = check(&history(&[value(2), refused, value(4)]));
        assert_eq!(skipped.violations, 1);
        assert!(
            skipped
                .first
                .is_some_and(|e| e.contains("values [3] never answered"))
        );
        let twice = check(&history(&[value(2), value(2)]));
        assert!(twice.first.is_some_and(|e| e.contains("answered 2 twice")));
        // Calls side by side may be answered out of order.
        assert!(check(&history(&[value(3), value(2)])).held());
    }
}
