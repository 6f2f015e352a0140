//! Every acknowledged event was delivered exactly once on the resumed stream, in order.
//!
//! On each GET holder's standalone stream: no event id comes twice and, within a stream,
//! event seqs only grow across every reconnection; a call's progress notifications come in
//! order, none twice; and every call that was answered (so everything it sent had been stored
//! before the answer) had all of its notifications delivered by the end of the run.

use super::Verdict;
use crate::history::{Heard, History};
use crate::listen::STEPS;
use std::collections::{BTreeMap, HashMap, HashSet};

const INVARIANT: &str =
    "GET streams resumed with Last-Event-ID deliver every stored event once, in order";

pub fn check(history: &History) -> Verdict {
    let listened = &history.listened;
    if listened.sessions.is_empty() {
        return Verdict::not_checked(
            INVARIANT,
            "no session held a GET stream (chaos --holders 0)",
        );
    }
    let mut v = Verdict::new(INVARIANT);
    let name = |s: usize| history.sessions.get(s).map_or("?", String::as_str);
    // Per session, per stream: the last seq heard.
    let mut tail: HashMap<(usize, String), u64> = HashMap::new();
    let mut ids: HashSet<(usize, &str)> = HashSet::new();
    let mut by_token: BTreeMap<(usize, &str), Vec<&Heard>> = BTreeMap::new();
    for h in &listened.heard {
        v.checked += 1;
        if !ids.insert((h.session, h.event.as_str())) {
            v.violated(|| {
                format!(
                    "session {}: event {} delivered twice (again at {} ms)",
                    name(h.session),
                    h.event,
                    h.at_ms
                )
            });
        }
        let Some((stream, seq)) = h
            .event
            .rsplit_once('-')
            .and_then(|(s, q)| Some((s.to_owned(), q.parse::<u64>().ok()?)))
        else {
            v.violated(|| {
                format!(
                    "session {}: event id {:?} is not <stream>-<seq>",
                    name(h.session),
                    h.event
                )
            });
            continue;
        };
        if let Some(before) = tail.insert((h.session, stream.clone()), seq)
            && seq <= before
        {
            v.violated(|| {
                format!(
                    "session {}: event {} at {} ms came after seq {before} of its stream",
                    name(h.session),
                    h.event,
                    h.at_ms
                )
            });
        }
        by_token
            .entry((h.session, h.token.as_str()))
            .or_default()
            .push(h);
    }
    for ((session, token), heard) in &by_token {
        let steps: Vec<i64> = heard.iter().map(|h| h.progress).collect();
        if !steps.windows(2).all(|w| w[0] < w[1]) {
            v.violated(|| {
                format!(
                    "session {}: call {token}'s progress came as {steps:?}",
                    name(*session)
                )
            });
        }
    }
    for call in listened.calls.iter().filter(|c| c.answered) {
        v.checked += 1;
        let heard: Vec<i64> = by_token
            .get(&(call.session, call.token.as_str()))
            .map(|h| h.iter().map(|h| h.progress).collect())
            .unwrap_or_default();
        if heard != STEPS {
            v.violated(|| {
                format!(
                    "session {}: call {} (sent at {} ms, answered at {} ms) stored progress \
                     {STEPS:?}, the stream delivered {heard:?}",
                    name(call.session),
                    call.token,
                    call.sent_ms,
                    call.done_ms
                )
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Listened, ProgressCall};

    fn heard(event: &str, token: &str, progress: i64) -> Heard {
        Heard {
            session: 0,
            event: event.into(),
            token: token.into(),
            progress,
            at_ms: 0,
        }
    }

    fn history(heard: Vec<Heard>) -> History {
        History {
            sessions: vec!["s".into()],
            listened: Listened {
                sessions: vec![0],
                heard,
                calls: vec![ProgressCall {
                    session: 0,
                    token: "0/1".into(),
                    sent_ms: 0,
                    done_ms: 1,
                    answered: true,
                }],
                refused: Vec::new(),
                resumed: 0,
            },
            ..History::default()
        }
    }

    #[test]
    fn a_call_heard_once_in_order_holds() {
        let h = history(vec![
            heard("0-1", "0/1", 0),
            heard("0-2", "0/1", 50),
            heard("0-3", "0/1", 100),
        ]);
        let v = check(&h);
        assert!(v.held(), "{v:?}");
    }

    #[test]
    fn a_replayed_event_is_a_violation() {
        let h = history(vec![
            heard("0-1", "0/1", 0),
            heard("0-2", "0/1", 50),
            heard("0-2", "0/1", 50),
            heard("0-3", "0/1", 100),
        ]);
        let v = check(&h);
        assert!(
            !v.held() && v.first.as_deref().is_some_and(|f| f.contains("twice")),
            "{v:?}"
        );
    }

    #[test]
    fn an_answered_call_missing_a_notification_is_a_violation() {
        let h = history(vec![heard("0-1", "0/1", 0), heard("0-3", "0/1", 100)]);
        let v = check(&h);
        assert_eq!(v.violations, 1, "{v:?}");
    }
}
