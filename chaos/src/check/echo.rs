//! Through a stdio upstream whose processes are killed, every call that got a value got its
//! own (the `echo` of its id, not another call's answer), and every session's `echo` answers
//! again once the faults are over (a new process, with the session's `initialize` replayed).

use super::Verdict;
use crate::history::History;
use std::collections::BTreeSet;

pub fn check(history: &History) -> Verdict {
    let invariant =
        "calls through the stdio upstream get their own answer, and work again after the faults";
    if history.upstream_calls.is_empty() {
        return Verdict::not_checked(invariant, "no stdio upstream in this run");
    }
    let mut v = Verdict::new(invariant);
    for call in &history.upstream_calls {
        v.checked += 1;
        if let Some(value) = call.outcome.value()
            && value != call.id
        {
            v.violated(|| {
                format!(
                    "session {} call {} sent at {} ms was answered {value}",
                    history.sessions[call.session], call.id, call.sent_ms
                )
            });
        }
    }
    let sessions: BTreeSet<usize> = history.upstream_calls.iter().map(|c| c.session).collect();
    for session in sessions {
        if !super::healed(&history.upstream_calls, session) {
            v.violated(|| {
                format!(
                    "session {}'s stdio upstream did not answer after the faults",
                    history.sessions[session]
                )
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Outcome};

    fn echo(id: i64, outcome: Outcome, healing: bool) -> Call {
        Call {
            session: 0,
            id,
            sent_ms: id as u64,
            done_ms: id as u64,
            outcome,
            healing,
        }
    }

    #[test]
    fn an_answer_must_be_the_calls_own_and_the_upstream_must_come_back() {
        let history = |upstream_calls: Vec<Call>| History {
            sessions: vec!["s".into()],
            upstream_calls,
            ..History::default()
        };
        let error = Outcome::Error {
            what: "JSON-RPC -32603".into(),
            message: "the upstream process exited".into(),
        };
        let good = history(vec![
            echo(1, Outcome::Value { value: 1 }, false),
            echo(2, error.clone(), false),
            echo(3, Outcome::Value { value: 3 }, true),
        ]);
        let v = check(&good);
        assert_eq!((v.checked, v.violations), (3, 0), "{v:?}");
        let crossed = history(vec![
            echo(1, Outcome::Value { value: 2 }, false),
            echo(3, Outcome::Value { value: 3 }, true),
        ]);
        let v = check(&crossed);
        assert_eq!(v.violations, 1);
        assert!(v.first.is_some_and(|e| e.contains("answered 2")));
        let never_back = history(vec![echo(9, error, true)]);
        assert_eq!(check(&never_back).violations, 1);
        assert!(check(&History::default()).not_checked.is_some());
    }
}
