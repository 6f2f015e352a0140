//! Every call (of `counter`, and of a stdio upstream's `echo`) got exactly one answer: a
//! result, or an explicit error (an HTTP status with a body, a JSON-RPC error). A call that
//! hung, was answered twice, or got no answer and no word why breaks it. A lost connection is an explicit failure only when a gateway kill explains it
//! ([`super::lost_to_gateway_kill`]).

use super::Verdict;
use crate::history::{History, Outcome};

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("every call got exactly one answer");
    for call in history.calls.iter().chain(&history.upstream_calls) {
        v.checked += 1;
        let unanswered = match call.outcome {
            Outcome::Hung | Outcome::Answered { .. } | Outcome::NoAnswer { .. } => true,
            Outcome::ConnectionLost { .. } => !super::lost_to_gateway_kill(call, &history.faults),
            _ => false,
        };
        if unanswered {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Fault, kind};

    fn lost(sent_ms: u64, done_ms: u64) -> Call {
        Call {
            session: 0,
            id: sent_ms as i64,
            sent_ms,
            done_ms,
            outcome: Outcome::ConnectionLost {
                message: "connection reset".into(),
            },
            healing: false,
        }
    }

    fn killed(kind: &str, at_ms: u64, until_ms: u64) -> Fault {
        Fault {
            kind: kind.into(),
            target: "gateway-1".into(),
            at_ms,
            until_ms,
            planned: false,
            moved: None,
        }
    }

    #[test]
    fn a_lost_connection_is_an_answer_only_under_a_gateway_kill() {
        let history = |faults: Vec<Fault>| History {
            sessions: vec!["s".into()],
            // Under way at the kill; sent just after the gateway was gone; sent long after.
            calls: vec![
                lost(9_900, 10_010),
                lost(10_500, 10_510),
                lost(20_000, 20_001),
            ],
            faults,
            ..History::default()
        };
        let v = check(&history(vec![killed(kind::GATEWAY_KILL, 10_000, 10_050)]));
        assert_eq!((v.checked, v.violations), (3, 1));
        assert!(v.first.is_some_and(|e| e.contains("sent at 20000 ms")));
        // A node's death does not excuse it: the gateway is there to answer.
        let v = check(&history(vec![killed(kind::KILL, 10_000, 10_000)]));
        assert_eq!(v.violations, 3);
    }
}
