//! At most one node wrote a session per epoch, and a session's epoch never went back, as the
//! store itself recorded its writers ([`crate::writers`]): the fence of every accepted write,
//! not what the clients made of the answers. Two owners in one epoch is a split brain the store
//! let through (a claim must win with a later epoch; within one epoch only its holder may claim
//! again); a write under an earlier epoch than the session's previous one is a stale owner
//! writing over its successor. Every session of the run must show at least one recorded write,
//! else the record missed writes and proves nothing.
//!
//! A write under an epoch the membership never reached is a claim no ring made: a node made its
//! epoch up. (The compare-and-set alone lets such a claim through: a later epoch always wins.)
//!
//! Only a PostgreSQL store keeps the record; with another store, or a history made before it
//! was kept, the verdict says it was not checked.

use super::Verdict;
use crate::history::History;
use crate::writers::{Writer, Writers};
use std::collections::{BTreeMap, BTreeSet};

const INVARIANT: &str =
    "at most one node wrote a session per epoch, and no epoch went back (the store's record)";

pub fn check(history: &History) -> Verdict {
    let (writers, regressions) = match &history.writers {
        Some(Writers::Recorded {
            writers,
            regressions,
        }) => (writers, regressions),
        Some(Writers::NotRecorded { why }) => return Verdict::not_checked(INVARIANT, why),
        None => {
            return Verdict::not_checked(
                INVARIANT,
                "the history has no writers' record (made before the harness kept one)",
            );
        }
    };
    let mut v = Verdict::new(INVARIANT);
    let mut by_epoch: BTreeMap<(&str, i64), Vec<&Writer>> = BTreeMap::new();
    for w in writers {
        by_epoch.entry((&w.session, w.epoch)).or_default().push(w);
    }
    let recorded: BTreeSet<&str> = writers.iter().map(|w| w.session.as_str()).collect();
    let missing: Vec<String> = history
        .sessions
        .iter()
        .map(|name| stored_as(name))
        .filter(|sid| !recorded.contains(sid.as_str()))
        .collect();
    v.checked = recorded.len() + missing.len();
    for ((session, epoch), owners) in &by_epoch {
        if owners.len() > 1 {
            v.violated(|| {
                let who: Vec<String> = owners
                    .iter()
                    .map(|w| format!("{} ({} writes from {})", w.owner, w.writes, w.first_at))
                    .collect();
                format!(
                    "session {session}: epoch {epoch} written by {} owners: {}",
                    owners.len(),
                    who.join(", ")
                )
            });
        }
    }
    if let Some(reached) = history.epoch_reached {
        for w in writers.iter().filter(|w| w.epoch > reached as i64) {
            v.violated(|| {
                format!(
                    "session {}: written by {} at epoch {}, beyond any epoch the membership reached ({reached})",
                    w.session, w.owner, w.epoch
                )
            });
        }
    }
    for r in regressions {
        v.violated(|| {
            format!(
                "session {}: epoch went back from {} ({}) to {} ({}) at {}",
                r.session, r.from_epoch, r.from_owner, r.to_epoch, r.to_owner, r.at
            )
        });
    }
    for sid in missing {
        v.violated(|| format!("session {sid}: the store recorded no write of it"));
    }
    v
}

/// The id the store keeps a history's session under: a session's own id, or for a
/// stateless-era client (named by its routing scope `client/<key>`) the record of its scope,
/// `affinity/client/<key>` (node/src/stateless_era/kept.rs).
fn stored_as(name: &str) -> String {
    match name.starts_with("client/") {
        true => format!("affinity/{name}"),
        false => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writers::Regression;

    fn writer(session: &str, epoch: i64, owner: &str) -> Writer {
        Writer {
            session: session.into(),
            epoch,
            owner: owner.into(),
            first_at: "2026-12-06T10:00:00.000Z".into(),
            writes: 3,
        }
    }

    fn history(writers: Vec<Writer>, regressions: Vec<Regression>) -> History {
        History {
            sessions: vec!["a".into(), "b".into()],
            writers: Some(Writers::Recorded {
                writers,
                regressions,
            }),
            ..History::default()
        }
    }

    #[test]
    fn one_owner_per_epoch_holds() {
        let v = check(&history(
            vec![
                writer("a", 3, "node-0"),
                writer("a", 5, "node-1"),
                writer("a", 7, "node-0"),
                writer("b", 3, "node-2"),
            ],
            Vec::new(),
        ));
        assert!(v.held(), "{v:?}");
        assert_eq!(v.checked, 2);
        assert_eq!(v.not_checked, None);
    }

    #[test]
    fn an_epoch_no_membership_reached_is_a_claim_made_up() {
        let mut h = history(
            vec![writer("a", 3, "node-0"), writer("b", 9, "node-2")],
            Vec::new(),
        );
        h.epoch_reached = Some(8);
        let v = check(&h);
        assert_eq!(v.violations, 1);
        assert!(v.first.unwrap_or_default().contains("beyond"));
        h.epoch_reached = Some(9);
        assert!(check(&h).held());
    }

    #[test]
    fn two_owners_in_one_epoch_are_a_violation_named_with_both() {
        let v = check(&history(
            vec![
                writer("a", 3, "node-0"),
                writer("a", 5, "node-1"),
                writer("a", 5, "node-2"),
                writer("b", 3, "node-2"),
            ],
            Vec::new(),
        ));
        assert_eq!(v.violations, 1);
        let example = v.first.unwrap_or_default();
        assert!(
            example.contains("session a: epoch 5 written by 2 owners")
                && example.contains("node-1 (3 writes from 2026-12-06T10:00:00.000Z)")
                && example.contains("node-2"),
            "{example}"
        );
    }

    #[test]
    fn an_epoch_that_went_back_is_a_violation() {
        let v = check(&history(
            vec![
                writer("a", 3, "node-0"),
                writer("a", 5, "node-1"),
                writer("b", 3, "node-2"),
            ],
            vec![Regression {
                session: "a".into(),
                from_epoch: 5,
                from_owner: "node-1".into(),
                to_epoch: 3,
                to_owner: "node-0".into(),
                at: "2026-12-06T10:00:01.000Z".into(),
            }],
        ));
        assert_eq!(v.violations, 1);
        assert_eq!(
            v.first.as_deref(),
            Some(
                "session a: epoch went back from 5 (node-1) to 3 (node-0) at \
                 2026-12-06T10:00:01.000Z"
            )
        );
    }

    #[test]
    fn a_session_with_no_recorded_write_means_the_record_missed_it() {
        let v = check(&history(vec![writer("a", 3, "node-0")], Vec::new()));
        assert_eq!(v.violations, 1);
        assert_eq!(
            v.first.as_deref(),
            Some("session b: the store recorded no write of it")
        );
    }

    #[test]
    fn a_stateless_client_is_found_under_its_scopes_record() {
        let mut h = history(
            vec![
                writer("a", 3, "node-0"),
                writer("b", 3, "node-0"),
                writer("affinity/client/k", 3, "node-1"),
            ],
            Vec::new(),
        );
        h.sessions.push("client/k".into());
        assert_eq!(check(&h).violations, 0);
    }

    #[test]
    fn without_a_record_it_says_it_did_not_check() {
        let not_pg = History {
            writers: Some(Writers::NotRecorded {
                why: "the store is not PostgreSQL".into(),
            }),
            ..History::default()
        };
        let v = check(&not_pg);
        assert_eq!(
            (v.checked, v.violations, v.not_checked.as_deref()),
            (0, 0, Some("the store is not PostgreSQL"))
        );
        // An older history.json, without the field, still loads and is not checked.
        let old: History = serde_json::from_str(r#"{"sessions":["a"],"calls":[],"faults":[]}"#)
            .unwrap_or_default();
        assert_eq!(old.sessions, ["a"]);
        assert!(check(&old).not_checked.is_some());
    }
}
