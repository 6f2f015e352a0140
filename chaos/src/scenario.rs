//! Scenarios: what the harness does to the cluster, and when, from a seed.
//!
//! - `smoke`: one of each kind of fault, spread over the run: a node killed with SIGKILL (up
//!   restarts it), a node frozen with SIGSTOP for a few seconds, one node added and one
//!   removed, and with two or more gateways one gateway killed with SIGKILL last. Short enough
//!   for every test run.
//! - `mixed`: the same kinds in random order for the whole run, each 3 to 8 s after the last
//!   one is over; half the draws are node kills, the rest freezes, scale steps and (where
//!   links can be cut) partitions and slow links. Scale steps go up two nodes, down two, and so
//!   on (3→5→3 from three), and the run ends at the size it started with; with two or more
//!   gateways, every eighth step is a gateway kill. For long runs.
//! - `network`: network faults alone, each side and kind in turn (a node cut off from its peers,
//!   from the gateways, from the store when the harness runs it; then the same links lossy),
//!   every 4 to 10 s after the last one healed, to see what each does.
//! - `upstreams`: the nodes federate the builtin with a stdio upstream ([`crate::stdio`]), one
//!   process per session, which the sessions call too; every 2 to 5 s one of those processes
//!   is killed with SIGKILL, and every fourth step a node instead (its sessions' processes
//!   start again on the new owner).
//!
//! With `--postgres` or `--redis` (the harness runs the store), both also make the store fail:
//! smoke once, mixed every tenth step (PostgreSQL restarted; a Redis primary killed).
//!
//! Where the harness can cut links ([`crate::net`]), smoke also cuts a node off from its peers
//! for a few seconds, and mixed draws partitions and lossy (slow) links too: a node cut off from
//! its peers, from the gateways or (when the harness runs it) from the store.
//!
//! A gateway kill comes at least [`SETTLE`] after the fault before it is over, so that what the
//! next calls get is the front's doing, not a node fault's aftermath.
//!
//! The last part of every run (a sixth, at least 5 s) is quiet, so that the cluster settles
//! before the checks look at whether every session is usable again.

use crate::net::Side;
use crate::rng::Rng;
use anyhow::bail;
use std::time::Duration;

/// One thing the harness does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// SIGKILL of a node picked at random among those running.
    Kill,
    /// SIGKILL of a gateway picked at random, once every gateway runs (so one is left).
    GatewayKill,
    /// SIGSTOP of a node picked at random, SIGCONT after this long.
    Freeze(Duration),
    /// One more node (the next ordinal), as `shardgate scale` does.
    ScaleUp,
    /// One node fewer (the highest ordinal drains and leaves).
    ScaleDown,
    /// A server of the store fails and comes back, no sooner than after this long; only when
    /// the harness runs the store itself. PostgreSQL is stopped (open connections cut) and
    /// started again; a Redis Cluster primary is killed and starts again as a replica once
    /// its own replica has taken over.
    StoreRestart(Duration),
    /// A node picked at random cut off from one side, healed after this long.
    Partition { side: Side, lasting: Duration },
    /// A node's links to one side drop [`LOSS`] percent of their packets for this long.
    SlowLink { side: Side, lasting: Duration },
    /// SIGKILL of a stdio upstream process picked at random.
    UpstreamKill,
}

/// The share of packets a slow link drops, in percent: enough that TCP's retransmissions (200
/// ms at the least, doubling) slow most exchanges, not so many that connections break.
pub const LOSS: u8 = 20;

/// What the cluster of a run can be put through, besides node kills, freezes and scaling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kinds {
    /// Gateways: with two or more, gateways are killed too.
    pub gateways: usize,
    /// The harness runs the store: it restarts it, and cuts nodes off from it.
    pub own_store: bool,
    /// The harness can cut links ([`crate::net`]).
    pub network: bool,
}

impl Step {
    /// How long the fault lasts once it starts (the time a change takes is not known ahead).
    pub fn lasting(&self) -> Duration {
        match *self {
            Step::Freeze(d) | Step::StoreRestart(d) => d,
            Step::Partition { lasting, .. } | Step::SlowLink { lasting, .. } => lasting,
            Step::Kill
            | Step::GatewayKill
            | Step::ScaleUp
            | Step::ScaleDown
            | Step::UpstreamKill => Duration::ZERO,
        }
    }
}

/// A step and when it starts, from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub step: Step,
}

pub const NAMES: &str = "smoke, mixed, network, upstreams";

/// Whether the scenario's cluster runs a stdio upstream beside the builtin.
pub fn with_stdio(name: &str) -> bool {
    name == "upstreams"
}

/// Nodes `mixed` adds at most above the starting size.
const MAX_EXTRA: usize = 2;

/// Room `mixed` keeps at the end of its busy part to scale back to the starting size: a second
/// after the last fault is over (a freeze lasts up to 7 s), then one step every 5 s.
const FINAL_SCALE_DOWNS: Duration = Duration::from_secs(15);

/// How long after the fault before it is over a gateway kill may come.
pub const SETTLE: Duration = Duration::from_secs(4);

/// The steps of scenario `name` for a run of `duration` with faults of `kinds`, from `seed`.
pub fn plan(
    name: &str,
    seed: u64,
    duration: Duration,
    kinds: Kinds,
) -> anyhow::Result<Vec<Planned>> {
    let Kinds {
        gateways,
        own_store: store_restarts,
        network,
    } = kinds;
    let mut rng = Rng::new(seed);
    let quiet = (duration / 6).max(Duration::from_secs(5));
    let Some(busy) = duration.checked_sub(quiet) else {
        bail!("a run needs more than {quiet:?}");
    };
    let at = |fraction: f64| busy.mul_f64(fraction);
    let freeze = |rng: &mut Rng| Step::Freeze(Duration::from_millis(rng.between(5000, 7000)));
    let restart =
        |rng: &mut Rng| Step::StoreRestart(Duration::from_millis(rng.between(1000, 4000)));
    let sides: &[Side] = match store_restarts {
        true => &[Side::Peers, Side::Gateways, Side::Store],
        false => &[Side::Peers, Side::Gateways],
    };
    let side = |rng: &mut Rng| sides[rng.below(sides.len() as u64) as usize];
    let lasting = |rng: &mut Rng| Duration::from_millis(rng.between(3000, 8000));
    match name {
        "smoke" => {
            let mut steps = vec![
                Planned {
                    at: at(0.08),
                    step: Step::Kill,
                },
                Planned {
                    at: at(0.2),
                    step: freeze(&mut rng),
                },
                Planned {
                    at: at(0.68),
                    step: Step::ScaleUp,
                },
                Planned {
                    at: at(0.86),
                    step: Step::ScaleDown,
                },
            ];
            if network {
                // After the freeze (over by 0.48 of a 30 s run), over before the scale-up.
                steps.push(Planned {
                    at: at(0.5),
                    step: Step::Partition {
                        side: Side::Peers,
                        lasting: Duration::from_secs(3),
                    },
                });
            }
            if store_restarts {
                steps.push(Planned {
                    at: at(0.77),
                    step: restart(&mut rng),
                });
            }
            steps.sort_by_key(|p| p.at);
            // Last, when the drain is over and the cluster is calm.
            if gateways > 1 {
                steps.push(Planned {
                    at: at(0.95),
                    step: Step::GatewayKill,
                });
            }
            // The seed moves each step a little, never past the next.
            for p in &mut steps {
                p.at += Duration::from_millis(rng.below(500));
            }
            Ok(steps)
        }
        "mixed" => {
            let mut steps = Vec::new();
            let mut t = Duration::from_secs(3);
            // Nodes above the starting size, and whether scale steps add nodes or remove them:
            // up to MAX_EXTRA, down to none, and so on (3→5→3 from three nodes).
            let mut extra = 0;
            let mut rising = true;
            // When the last step's fault is over.
            let mut over = Duration::ZERO;
            while t + FINAL_SCALE_DOWNS < busy {
                // Every eighth step a gateway kill and every tenth a store restart, rather than
                // a draw, so that a short run has its share too.
                let step = if gateways > 1 && steps.len() % 8 == 7 {
                    Step::GatewayKill
                } else if store_restarts && steps.len() % 10 == 4 {
                    restart(&mut rng)
                } else {
                    // Half of the draws are kills either way.
                    match rng.below(if network { 10 } else { 6 }) {
                        0..=2 | 6 | 9 => Step::Kill,
                        3 => freeze(&mut rng),
                        4 | 5 => {
                            rising = (rising && extra < MAX_EXTRA) || extra == 0;
                            if rising {
                                Step::ScaleUp
                            } else {
                                Step::ScaleDown
                            }
                        }
                        7 => Step::Partition {
                            side: side(&mut rng),
                            lasting: lasting(&mut rng),
                        },
                        _ => Step::SlowLink {
                            side: side(&mut rng),
                            lasting: lasting(&mut rng),
                        },
                    }
                };
                if step == Step::GatewayKill {
                    t = t.max(over + SETTLE);
                    if t + FINAL_SCALE_DOWNS >= busy {
                        break;
                    }
                }
                match step {
                    Step::ScaleUp => extra += 1,
                    Step::ScaleDown => extra -= 1,
                    _ => {}
                }
                over = t + step.lasting();
                steps.push(Planned { at: t, step });
                // The next one comes a few seconds after this one is over.
                t += step.lasting() + Duration::from_millis(rng.between(3000, 8000));
            }
            // Back to the starting size before the quiet end.
            let mut at = over + Duration::from_secs(1);
            for _ in 0..extra {
                steps.push(Planned {
                    at,
                    step: Step::ScaleDown,
                });
                at += Duration::from_secs(5);
            }
            Ok(steps)
        }
        "network" => {
            if !network {
                bail!("links cannot be cut here: the network scenario has nothing to do");
            }
            let mut steps = Vec::new();
            let mut t = Duration::from_secs(3);
            for k in 0.. {
                let side = sides[k % sides.len()];
                let lasting = lasting(&mut rng);
                let step = match (k / sides.len()) % 2 {
                    0 => Step::Partition { side, lasting },
                    _ => Step::SlowLink { side, lasting },
                };
                if t + lasting >= busy {
                    break;
                }
                steps.push(Planned { at: t, step });
                t += lasting + Duration::from_millis(rng.between(4000, 10_000));
            }
            Ok(steps)
        }
        "upstreams" => {
            let mut steps = Vec::new();
            let mut t = Duration::from_secs(3);
            while t < busy {
                let step = match steps.len() % 4 {
                    3 => Step::Kill,
                    _ => Step::UpstreamKill,
                };
                steps.push(Planned { at: t, step });
                t += Duration::from_millis(rng.between(2000, 5000));
            }
            Ok(steps)
        }
        other => bail!("unknown scenario '{other}': {NAMES}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(gateways: usize, own_store: bool) -> Kinds {
        Kinds {
            gateways,
            own_store,
            network: false,
        }
    }

    fn kinds(steps: &[Planned]) -> Vec<std::mem::Discriminant<Step>> {
        steps
            .iter()
            .map(|p| std::mem::discriminant(&p.step))
            .collect()
    }

    #[test]
    fn smoke_has_one_of_each_in_order_and_leaves_the_end_quiet() {
        let d = Duration::from_secs(30);
        for gateways in [1, 2] {
            let steps = plan("smoke", 7, d, k(gateways, false)).expect("a plan");
            let unique: std::collections::HashSet<_> = kinds(&steps).into_iter().collect();
            assert_eq!(unique.len(), steps.len(), "one of each");
            assert!(steps.windows(2).all(|w| w[0].at < w[1].at));
            assert!(steps.iter().all(|p| p.at < d - Duration::from_secs(5)));
            assert_eq!(
                plan("smoke", 7, d, k(gateways, false)).expect("again"),
                steps,
                "the seed decides"
            );
            let gateway_kills = steps.iter().filter(|p| p.step == Step::GatewayKill);
            assert_eq!(gateway_kills.count(), gateways - 1);
        }
        let two = plan("smoke", 7, d, k(2, false)).expect("a plan");
        assert_eq!(two.last().map(|p| p.step), Some(Step::GatewayKill));
        assert_eq!(
            &plan("smoke", 7, d, k(1, false)).expect("a plan")[..],
            &two[..4]
        );
    }

    #[test]
    fn mixed_scales_up_two_and_back_and_ends_where_it_started() {
        let steps = plan("mixed", 3, Duration::from_secs(600), k(1, false)).expect("a plan");
        let mut extra = 0i32;
        let mut sizes = Vec::new();
        for p in &steps {
            match p.step {
                Step::ScaleUp => extra += 1,
                Step::ScaleDown => extra -= 1,
                _ => continue,
            }
            sizes.push(extra);
        }
        assert!(sizes.iter().all(|e| (0..=2).contains(e)), "{sizes:?}");
        assert!(sizes.contains(&2), "reaches two above the start: {sizes:?}");
        assert_eq!(extra, 0, "ends where it started");
        assert!(steps.windows(2).all(|w| w[0].at < w[1].at));
        assert!(steps.iter().filter(|p| p.step == Step::Kill).count() > 20);
        assert!(!steps.iter().any(|p| p.step == Step::GatewayKill));
        assert!(plan("nope", 1, Duration::from_secs(60), k(1, false)).is_err());
    }

    #[test]
    fn a_store_the_harness_runs_is_restarted_too() {
        let d = Duration::from_secs(600);
        let restarts = |steps: &[Planned]| {
            steps
                .iter()
                .filter(|p| matches!(p.step, Step::StoreRestart(_)))
                .count()
        };
        let mixed = plan("mixed", 3, d, k(2, true)).expect("a plan");
        assert!(restarts(&mixed) >= mixed.len() / 10, "{mixed:?}");
        assert!(mixed.windows(2).all(|w| w[0].at < w[1].at));
        assert_eq!(
            restarts(&plan("mixed", 3, d, k(2, false)).expect("a plan")),
            0
        );
        let smoke = plan("smoke", 7, Duration::from_secs(30), k(2, true)).expect("a plan");
        assert_eq!(restarts(&smoke), 1);
        assert!(smoke.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn mixed_kills_a_gateway_every_eighth_step_once_the_cluster_has_settled() {
        let d = Duration::from_secs(3600);
        let steps = plan("mixed", 3, d, k(2, false)).expect("a plan");
        let gateway_kills = steps.iter().filter(|p| p.step == Step::GatewayKill).count();
        assert_eq!(
            gateway_kills,
            steps.len() / 8,
            "{gateway_kills} of {}",
            steps.len()
        );
        let short = plan("mixed", 5, Duration::from_secs(180), k(2, false)).expect("a plan");
        assert!(short.iter().any(|p| p.step == Step::GatewayKill));
        for w in steps.windows(2) {
            assert!(w[0].at < w[1].at);
            if w[1].step == Step::GatewayKill {
                let over = w[0].at + w[0].step.lasting();
                assert!(w[1].at >= over + SETTLE, "{w:?}");
            }
        }
        let ups = steps.iter().filter(|p| p.step == Step::ScaleUp).count();
        let downs = steps.iter().filter(|p| p.step == Step::ScaleDown).count();
        assert_eq!(ups, downs);
        assert!(steps.iter().all(|p| p.at <= d - d / 6));
    }

    #[test]
    fn network_faults_come_where_links_can_be_cut() {
        let network = Kinds {
            network: true,
            ..k(2, true)
        };
        let smoke = plan("smoke", 7, Duration::from_secs(30), network).expect("a plan");
        let partitions: Vec<_> = smoke
            .iter()
            .filter(|p| matches!(p.step, Step::Partition { .. }))
            .collect();
        assert_eq!(partitions.len(), 1, "{smoke:?}");
        // Between the freeze and the scale-up, overlapping neither.
        let i = smoke
            .iter()
            .position(|p| matches!(p.step, Step::Partition { .. }))
            .expect("a partition");
        assert!(matches!(smoke[i - 1].step, Step::Freeze(_)), "{smoke:?}");
        assert_eq!(smoke[i + 1].step, Step::ScaleUp, "{smoke:?}");
        for w in smoke[i - 1..=i + 1].windows(2) {
            assert!(w[0].at + w[0].step.lasting() < w[1].at, "{w:?}");
        }
        let mixed = plan("mixed", 3, Duration::from_secs(1800), network).expect("a plan");
        let count = |f: fn(&Step) -> bool| mixed.iter().filter(|p| f(&p.step)).count();
        assert!(count(|s| matches!(s, Step::Partition { .. })) > 5);
        assert!(count(|s| matches!(s, Step::SlowLink { .. })) > 5);
        assert!(
            count(|s| matches!(
                s,
                Step::Partition {
                    side: Side::Store,
                    ..
                }
            )) > 0
        );
        assert!(count(|s| *s == Step::Kill) > 50);
        assert!(
            mixed
                .windows(2)
                .all(|w| w[0].at + w[0].step.lasting() < w[1].at)
        );
        let without = plan("mixed", 3, Duration::from_secs(1800), k(2, true)).expect("a plan");
        assert!(
            !without
                .iter()
                .any(|p| matches!(p.step, Step::Partition { .. } | Step::SlowLink { .. }))
        );
        let alone = plan("network", 1, Duration::from_secs(120), network).expect("a plan");
        assert!(alone.len() >= 6, "{alone:?}");
        assert!(alone.iter().all(|p| p.step.lasting() > Duration::ZERO));
        assert!(matches!(
            alone[3].step,
            Step::SlowLink {
                side: Side::Peers,
                ..
            }
        ));
        assert!(
            alone
                .windows(2)
                .all(|w| w[0].at + w[0].step.lasting() < w[1].at)
        );
        assert!(plan("network", 1, Duration::from_secs(120), k(2, true)).is_err());
    }

    #[test]
    fn upstreams_kills_stdio_processes_and_every_fourth_step_a_node() {
        let d = Duration::from_secs(60);
        let steps = plan("upstreams", 3, d, k(1, false)).expect("a plan");
        assert!(steps.len() >= 8, "{steps:?}");
        for (i, p) in steps.iter().enumerate() {
            let expected = match i % 4 {
                3 => Step::Kill,
                _ => Step::UpstreamKill,
            };
            assert_eq!(p.step, expected, "{steps:?}");
        }
        assert!(steps.windows(2).all(|w| w[0].at < w[1].at));
        assert!(steps.iter().all(|p| p.at < d - d / 6));
        assert!(with_stdio("upstreams") && !with_stdio("mixed"));
    }
}
