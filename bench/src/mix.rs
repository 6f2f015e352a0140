//! What the requests are: the operations a session can make, and the weighted mix that picks
//! one for each request (`echo=8,counter=1,list=1`).
//!
//! The pick is a fixed rotation, not a random draw: over every stretch of `total weight`
//! requests each operation comes exactly its weight's times, interleaved (the smooth weighted
//! round-robin of nginx), so short runs get the mix they asked for and two runs get the same
//! requests. A session's turn `k` takes the rotation's entry `session + k`, so at any moment
//! the sessions are at different places in it.

use crate::Era;
use std::fmt;
use std::str::FromStr;

/// One operation of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `tools/call` of the builtin `echo` with a short text.
    Echo,
    /// `tools/call` of the builtin `counter` (state kept per session or client key).
    Counter,
    /// `tools/list`.
    List,
    /// A GET of the session's standalone SSE stream, read until its first event, then closed.
    Stream,
    /// A GET with `Last-Event-ID` that replays the session's last answered call.
    Resume,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Echo, Op::Counter, Op::List, Op::Stream, Op::Resume];

    pub fn name(self) -> &'static str {
        match self {
            Op::Echo => "echo",
            Op::Counter => "counter",
            Op::List => "list",
            Op::Stream => "stream",
            Op::Resume => "resume",
        }
    }

    /// Its place in [`Op::ALL`], for per-operation tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether it needs a session: GET streams exist only in the session era.
    pub fn session_only(self) -> bool {
        matches!(self, Op::Stream | Op::Resume)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most the weights may add up to: the rotation holds that many entries.
const MAX_TOTAL: u64 = 10_000;

/// The weighted mix of operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Each operation's weight, by [`Op::index`].
    weights: [u32; 5],
    /// The rotation, one entry per unit of weight.
    rotation: Vec<Op>,
}

impl Mix {
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    pub fn has(&self, op: Op) -> bool {
        self.weight(op) > 0
    }

    /// The operation of a session's turn.
    pub fn op_for(&self, session: usize, turn: u64) -> Op {
        let len = self.rotation.len() as u64;
        let at = (session as u64 % len + turn % len) % len;
        // `at` is below the rotation's length, which is at least 1.
        self.rotation.get(at as usize).copied().unwrap_or(Op::Echo)
    }

    /// Refuses operations the era has no way to make.
    pub fn check_era(&self, era: Era) -> Result<(), String> {
        if era == Era::Stateless
            && let Some(op) = Op::ALL
                .into_iter()
                .find(|op| op.session_only() && self.has(*op))
        {
            return Err(format!(
                "'{op}' needs a session's GET stream, which the stateless era does not have: \
                 use --era session, or a mix of echo, counter and list"
            ));
        }
        Ok(())
    }

    fn from_weights(weights: [u32; 5]) -> Mix {
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut current = [0i64; 5];
        let mut rotation = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            // The first of the largest: ties go to the operation listed first.
            let mut pick = 0;
            for i in 1..current.len() {
                if current[i] > current[pick] {
                    pick = i;
                }
            }
            current[pick] -= total;
            rotation.push(Op::ALL[pick]);
        }
        Mix { weights, rotation }
    }
}

impl Default for Mix {
    /// `echo=8,counter=1,list=1`.
    fn default() -> Mix {
        Mix::from_weights([8, 1, 1, 0, 0])
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let names = Op::ALL.map(Op::name).join(", ");
        let mut weights = [0u32; 5];
        let mut seen = [false; 5];
        if text.trim().is_empty() {
            return Err(format!(
                "the mix is empty: give NAME=WEIGHT pairs of {names}"
            ));
        }
        for part in text.split(',') {
            let part = part.trim();
            let Some((name, weight)) = part.split_once('=') else {
                return Err(format!(
                    "'{part}' in the mix is not NAME=WEIGHT (as in echo=8,counter=1,list=1)"
                ));
            };
            let name = name.trim();
            let Some(op) = Op::ALL.into_iter().find(|op| op.name() == name) else {
                return Err(format!(
                    "unknown operation '{name}' in the mix: the operations are {names}"
                ));
            };
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("'{part}': the weight must be a whole number from 0 up"))?;
            if std::mem::replace(&mut seen[op.index()], true) {
                return Err(format!("'{name}' appears twice in the mix"));
            }
            weights[op.index()] = weight;
        }
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return Err("every weight of the mix is 0".into());
        }
        if total > MAX_TOTAL {
            return Err(format!(
                "the weights add up to {total}; keep them at most {MAX_TOTAL} (only their ratios matter)"
            ));
        }
        Ok(Mix::from_weights(weights))
    }
}

impl fmt::Display for Mix {
    /// The canonical form: operations in their order, weight 0 left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Op::ALL
            .into_iter()
            .filter(|op| self.has(*op))
            .map(|op| format!("{op}={}", self.weight(op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(text: &str) -> Mix {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn mixes_parse_with_every_operation_and_print_canonically() {
        let m = mix("echo=8,counter=1,list=1");
        assert_eq!(m, Mix::default());
        assert_eq!(m.to_string(), "echo=8,counter=1,list=1");
        let m = mix(" resume=1 , stream = 2,echo=3,list=0 ");
        assert_eq!(m.weight(Op::Stream), 2);
        assert!(!m.has(Op::List));
        assert_eq!(m.to_string(), "echo=3,stream=2,resume=1");
    }

    #[test]
    fn mistakes_in_a_mix_are_named() {
        let err = |t: &str| t.parse::<Mix>().expect_err(t);
        assert!(err("echo=8,ping=1").contains("unknown operation 'ping'"));
        assert!(err("echo=8,ping=1").contains("echo, counter, list, stream, resume"));
        assert!(err("echo=x").contains("whole number"));
        assert!(err("echo=-1").contains("whole number"));
        assert!(err("echo=1.5").contains("whole number"));
        assert!(err("echo").contains("NAME=WEIGHT"));
        assert!(err("echo=1,").contains("NAME=WEIGHT"));
        assert!(err("").contains("empty"));
        assert!(err("echo=1,echo=2").contains("twice"));
        assert!(err("echo=0,list=0").contains("every weight"));
        assert!(err("echo=20000").contains("at most"));
    }

    #[test]
    fn the_rotation_gives_each_operation_its_weight_interleaved() {
        let m = mix("echo=8,counter=1,list=1");
        let ops: Vec<Op> = (0..10).map(|t| m.op_for(0, t)).collect();
        assert_eq!(ops.iter().filter(|o| **o == Op::Echo).count(), 8);
        assert_eq!(ops.iter().filter(|o| **o == Op::Counter).count(), 1);
        assert_eq!(ops.iter().filter(|o| **o == Op::List).count(), 1);
        // Interleaved: the two rare ones are not next to each other.
        let rare: Vec<usize> = (0..10).filter(|i| ops[*i] != Op::Echo).collect();
        assert!(rare[1] - rare[0] > 1, "{ops:?}");

        // Over many turns of many sessions, the proportions hold exactly.
        let m = mix("echo=2,counter=1,stream=1");
        let mut counts = [0u64; 5];
        for session in 0..7 {
            for turn in 0..400 {
                counts[m.op_for(session, turn).index()] += 1;
            }
        }
        assert_eq!(counts, [1400, 700, 0, 700, 0]);
        // Sessions start at different places in the rotation.
        assert_ne!(m.op_for(0, 0), m.op_for(1, 0));
    }

    #[test]
    fn get_streams_need_the_session_era() {
        assert!(
            mix("echo=1,counter=1,list=1")
                .check_era(Era::Stateless)
                .is_ok()
        );
        let err = mix("echo=1,resume=1")
            .check_era(Era::Stateless)
            .expect_err("no resume without a session");
        assert!(err.contains("'resume'"), "{err}");
        assert!(
            mix("echo=1,stream=1,resume=1")
                .check_era(Era::Session)
                .is_ok()
        );
    }
}
