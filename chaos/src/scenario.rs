//! Scenarios: what the harness does to the cluster, and when, from a seed.
//!
//! - `smoke`: one of each kind of fault, spread over the run: a node killed with SIGKILL (up
//!   restarts it), a node frozen with SIGSTOP for a few seconds, one node added and one
//!   removed. Short enough for every test run.
//! - `mixed`: the same kinds in random order and at random gaps for the whole run, two kills
//!   for every freeze and every scale step; for long runs.
//!
//! The last part of every run (a sixth, at least 5 s) is quiet, so that the cluster settles
//! before the checks look at whether every session is usable again.

use crate::rng::Rng;
use anyhow::bail;
use std::time::Duration;

/// One thing the harness does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// SIGKILL of a node picked at random among those running.
    Kill,
    /// SIGSTOP of a node picked at random, SIGCONT after this long.
    Freeze(Duration),
    /// One more node (the next ordinal), as `shardgate scale` does.
    ScaleUp,
    /// One node fewer (the highest ordinal drains and leaves).
    ScaleDown,
}

/// A step and when it starts, from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub step: Step,
}

pub const NAMES: &str = "smoke, mixed";

/// The steps of scenario `name` for a run of `duration`, from `seed`.
pub fn plan(name: &str, seed: u64, duration: Duration) -> anyhow::Result<Vec<Planned>> {
    let mut rng = Rng::new(seed);
    let quiet = (duration / 6).max(Duration::from_secs(5));
    let Some(busy) = duration.checked_sub(quiet) else {
        bail!("a run needs more than {quiet:?}");
    };
    let at = |fraction: f64| busy.mul_f64(fraction);
    let freeze = |rng: &mut Rng| Step::Freeze(Duration::from_millis(rng.between(5000, 7000)));
    match name {
        "smoke" => {
            let mut steps = vec![
                Planned {
                    at: at(0.1),
                    step: Step::Kill,
                },
                Planned {
                    at: at(0.3),
                    step: freeze(&mut rng),
                },
                Planned {
                    at: at(0.65),
                    step: Step::ScaleUp,
                },
                Planned {
                    at: at(0.85),
                    step: Step::ScaleDown,
                },
            ];
            // The seed moves each step a little, never past the next.
            for p in &mut steps {
                p.at += Duration::from_millis(rng.below(500));
            }
            Ok(steps)
        }
        "mixed" => {
            let mut steps = Vec::new();
            let mut t = Duration::from_secs(3);
            let mut grown = false;
            while t < busy {
                let step = match rng.below(6) {
                    0..=2 => Step::Kill,
                    3 => freeze(&mut rng),
                    _ if grown => Step::ScaleDown,
                    _ => Step::ScaleUp,
                };
                if matches!(step, Step::ScaleUp | Step::ScaleDown) {
                    grown = !grown;
                }
                steps.push(Planned { at: t, step });
                t += Duration::from_millis(rng.between(4000, 10_000));
            }
            if grown {
                steps.push(Planned {
                    at: t.min(busy),
                    step: Step::ScaleDown,
                });
            }
            Ok(steps)
        }
        other => bail!("unknown scenario '{other}': {NAMES}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_has_one_of_each_in_order_and_leaves_the_end_quiet() {
        let d = Duration::from_secs(30);
        let steps = plan("smoke", 7, d).expect("a plan");
        let kinds: Vec<_> = steps
            .iter()
            .map(|p| std::mem::discriminant(&p.step))
            .collect();
        assert_eq!(kinds.len(), 4);
        assert!(steps.windows(2).all(|w| w[0].at < w[1].at));
        assert!(steps.iter().all(|p| p.at < d - Duration::from_secs(5)));
        assert_eq!(
            plan("smoke", 7, d).expect("again"),
            steps,
            "the seed decides"
        );
    }

    #[test]
    fn mixed_scales_back_to_where_it_started() {
        let steps = plan("mixed", 3, Duration::from_secs(600)).expect("a plan");
        let ups = steps.iter().filter(|p| p.step == Step::ScaleUp).count();
        let downs = steps.iter().filter(|p| p.step == Step::ScaleDown).count();
        assert_eq!(ups, downs);
        assert!(steps.iter().filter(|p| p.step == Step::Kill).count() > 20);
        assert!(plan("nope", 1, Duration::from_secs(60)).is_err());
    }
}
