//! A gateway kill leaves every session usable through the front: each session's first call
//! sent once the kill is over (the gateway gone, and [`NOTICE_MS`] for clients to see its
//! connections close) gets its value. So the front sends no connection to the dead gateway,
//! nor to its successor before that knows a ring.

use super::{NOTICE_MS, Verdict};
use crate::history::{Call, History, kind};

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("after a gateway kill, each session's next call gets its value");
    // Each session's calls of the run (not the healing ones) in the order they were sent.
    let mut by_session: Vec<Vec<&Call>> = vec![Vec::new(); history.sessions.len()];
    for call in history.calls.iter().filter(|c| !c.healing) {
        if let Some(calls) = by_session.get_mut(call.session) {
            calls.push(call);
        }
    }
    for calls in &mut by_session {
        calls.sort_by_key(|c| c.sent_ms);
    }
    for kill in history
        .faults
        .iter()
        .filter(|f| f.kind == kind::GATEWAY_KILL)
    {
        let after = kill.until_ms + NOTICE_MS;
        for (session, calls) in by_session.iter().enumerate() {
            // None when the run ended first.
            let Some(next) = calls.get(calls.partition_point(|c| c.sent_ms <= after)) else {
                continue;
            };
            v.checked += 1;
            if next.outcome.value().is_none() {
                v.violated(|| {
                    format!(
                        "{} {} ({} ms): session {}'s next call {} (sent at {} ms) got {:?}",
                        kill.kind,
                        kill.target,
                        kill.at_ms,
                        history.sessions[session],
                        next.id,
                        next.sent_ms,
                        next.outcome
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
    use crate::history::{Fault, Outcome};

    fn call(sent_ms: u64, outcome: Outcome) -> Call {
        Call {
            session: 0,
            id: sent_ms as i64,
            sent_ms,
            done_ms: sent_ms + 5,
            outcome,
            healing: false,
        }
    }

    #[test]
    fn the_first_call_after_the_kill_must_answer() {
        let kill = Fault {
            kind: kind::GATEWAY_KILL.into(),
            target: "gateway-0".into(),
            at_ms: 10_000,
            until_ms: 10_020,
            planned: false,
            moved: None,
        };
        let lost = Outcome::ConnectionLost {
            message: "reset".into(),
        };
        let refused = Outcome::Error {
            what: "HTTP 503".into(),
            message: String::new(),
        };
        let history = |calls: Vec<Call>| History {
            sessions: vec!["s".into()],
            calls,
            faults: vec![kill.clone()],
            ..History::default()
        };
        let held = check(&history(vec![
            call(10_010, lost.clone()),
            call(10_500, lost),
            call(11_100, Outcome::Value { value: 5 }),
        ]));
        assert_eq!((held.checked, held.violations), (1, 0));
        let broken = check(&history(vec![
            call(11_100, refused),
            call(11_200, Outcome::Value { value: 5 }),
        ]));
        assert_eq!(broken.violations, 1);
        assert!(broken.first.is_some_and(|e| e.contains("HTTP 503")));
        assert_eq!(
            check(&history(Vec::new())).checked,
            0,
            "the run ended first"
        );
    }
}
