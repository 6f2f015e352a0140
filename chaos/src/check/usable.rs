//! Once the faults are over, every session answers again: its healing calls end with a value.

use super::Verdict;
use crate::history::History;

pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::new("every session is usable once the faults heal");
    for (session, sid) in history.sessions.iter().enumerate() {
        v.checked += 1;
        if !super::healed(&history.calls, session) {
            v.violated(|| format!("session {sid} did not answer after the faults"));
        }
    }
    v
}
