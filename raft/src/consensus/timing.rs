//! The timings of consensus and failure detection, checked together.

use super::error::ConsensusError;
use std::time::Duration;

/// The timings of consensus and failure detection, and the order between them that keeps two
/// nodes from owning one key.
///
/// A node cut off from the cluster must stop serving before the leader may mark it `Down`, which
/// hands its keys to others. It stops serving `lease` after it last heard from its leader (a
/// follower) or from a quorum (a leader), so at most `lease` after the cut. The leader marks a
/// member `Down` once `down_after` has passed since its last probe reply; that reply may be as
/// old as `probe_interval` plus the probe timeout at the cut, so the verdict comes at least
/// `down_after - probe_interval - probe_timeout` after it. Hence
///
/// ```text
/// down_after >= lease + probe_interval + probe_timeout + margin
/// ```
///
/// where the margin, a tenth of the lease plus 50 ms, covers clock drift between the two hosts
/// and timers that fire late. A cut-off leader is judged by its successor from the last
/// heartbeat it received, which needs `down_after >= lease + 5 × heartbeat + margin`. Last,
/// `lease >= 3 × heartbeat`, so that a late heartbeat does not stop a healthy node.
/// [`Timing::check`] enforces all three.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Leader → follower heartbeats.
    pub heartbeat: Duration,
    /// Election timeout range of a follower that hears no leader. openraft first waits out the
    /// old leader's lease (`election_max`), so a follower campaigns `election_max` plus a
    /// timeout from this range after the last heartbeat.
    pub election_min: Duration,
    pub election_max: Duration,
    /// How often the leader probes every member.
    pub probe_interval: Duration,
    /// How long a probe waits for its answer before it counts as silence.
    pub probe_timeout: Duration,
    /// A member silent this long is proposed `Down`.
    pub down_after: Duration,
    /// A node that has not heard from a quorum this long stops serving (fails closed).
    pub lease: Duration,
}

/// Drift between the clocks that time the lease and `down_after`, in hundredths of the lease.
/// Generous: NTP slews a monotonic clock by at most 0.05%.
const DRIFT_PERCENT: u32 = 10;

/// Lateness that does not grow with the lease: a detector tick or an openraft tick that fires
/// late, the fsync inside the append that refreshes a follower's lease.
const SCHEDULING_MARGIN: Duration = Duration::from_millis(50);

/// How long before the leader may mark a cut-off node `Down` that node must stop serving.
fn margin(lease: Duration) -> Duration {
    lease * DRIFT_PERCENT / 100 + SCHEDULING_MARGIN
}

impl Default for Timing {
    /// Failover in about `down_after` (1.5 s); the lease rides out a second of stalls on a
    /// loaded host, longer than an election takes.
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(250),
            down_after: Duration::from_millis(1500),
            lease: Duration::from_millis(1000),
        }
    }
}

impl Timing {
    /// Slower timings for hosts with starved CPUs (tests on shared machines), where the defaults
    /// would see stalls as silence.
    pub fn relaxed() -> Self {
        let mut timing = Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(600),
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(500),
            down_after: Duration::ZERO,
            lease: Duration::from_secs(3),
        };
        timing.down_after = timing.min_down_after();
        timing
    }

    /// How long a membership change (join, leave, state change) may take before it is reported
    /// as unavailable: a few leases covers an election plus a learner catching up.
    pub fn admin_timeout(&self) -> Duration {
        self.lease * 4
    }

    /// The shortest `down_after` for which a node cut off at time T stops serving, with the
    /// margin to spare, before the leader may mark it `Down`.
    ///
    /// A follower last heard its leader at C <= T and stops serving by C + lease. Probes go out
    /// every `probe_interval` and count as heard if answered within `probe_timeout`, so one sent
    /// in the interval before T - probe_timeout was answered: the last reply came at
    /// H > T - probe_interval - probe_timeout, and the verdict no sooner than H + down_after.
    ///
    /// A leader's quorum last acked a request it sent before T; it reads that age from openraft's
    /// metrics, which are refreshed every openraft tick (1.5 × heartbeat), so it stops by
    /// T + lease + 1.5 × heartbeat. Its successor counts `down_after` from the last heartbeat it
    /// received (`Detector::new`): heartbeats go out every tick and arrive within their timeout
    /// (2 × heartbeat), so at P > T - 3.5 × heartbeat.
    ///
    /// Both bounds assume links that carry traffic until the cut. A member whose probes fail
    /// while the leader's appends still reach it can be marked `Down` first, and learns it from
    /// the log; a successor that stopped hearing the old leader long before the others did
    /// counts from an earlier P than this.
    pub(crate) fn min_down_after(&self) -> Duration {
        let margin = margin(self.lease);
        let follower = self.lease + self.probe_interval + self.probe_timeout + margin;
        let leader = self.lease + self.heartbeat * 5 + margin;
        follower.max(leader)
    }

    pub(crate) fn check(&self) -> Result<(), ConsensusError> {
        let bad = |what: String| Err(ConsensusError::Config(what));
        if self.probe_interval.is_zero() || self.heartbeat.is_zero() || self.probe_timeout.is_zero()
        {
            return bad("heartbeat, probe_interval and probe_timeout must be positive".to_owned());
        }
        if self.lease < self.heartbeat * 3 {
            return bad(format!(
                "lease ({:?}) must be at least 3 × heartbeat ({:?}), or a late heartbeat stops \
                 a healthy node serving",
                self.lease, self.heartbeat
            ));
        }
        let min = self.min_down_after();
        if self.down_after < min {
            return bad(format!(
                "down_after ({:?}) must be at least {min:?}, so that a cut-off node stops \
                 serving before its keys move: lease ({:?}) + probe_interval ({:?}) + \
                 probe_timeout ({:?}) + margin ({:?}), and lease + 5 × heartbeat ({:?}) + \
                 margin for a cut-off leader",
                self.down_after,
                self.lease,
                self.probe_interval,
                self.probe_timeout,
                margin(self.lease),
                self.heartbeat,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn message(timing: &Timing) -> String {
        match timing.check() {
            Err(ConsensusError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_and_the_relaxed_timings_pass() {
        Timing::default().check().expect("defaults");
        let relaxed = Timing::relaxed();
        relaxed.check().expect("relaxed");
        assert!(relaxed.lease > Timing::default().lease);
    }

    #[test]
    fn the_old_defaults_let_a_cut_off_node_serve_after_its_keys_moved() {
        let old = Timing {
            down_after: ms(400),
            lease: ms(1500),
            ..Timing::default()
        };
        let m = message(&old);
        assert!(
            m.starts_with("down_after (400ms) must be at least 2.05s"),
            "{m}"
        );
        assert!(
            m.contains(
                "lease (1.5s) + probe_interval (100ms) + probe_timeout (250ms) + margin (200ms)"
            ),
            "{m}"
        );
    }

    #[test]
    fn down_after_must_cover_the_lease_the_probe_and_the_margin() {
        // lease 1s: margin 100 ms + 50 ms; 1000 + 100 + 250 + 150 = 1500.
        let at = |down_after| Timing {
            down_after: ms(down_after),
            ..Timing::default()
        };
        assert_eq!(Timing::default().min_down_after(), ms(1500));
        at(1500).check().expect("on the boundary");
        assert!(at(1499).check().is_err());
        // Without the margin, or without the probe timeout, the reasoning would pass.
        assert!(at(1350).check().is_err());
        assert!(at(1250).check().is_err());
    }

    #[test]
    fn the_margin_grows_with_the_lease_above_a_floor() {
        assert_eq!(margin(Duration::ZERO), SCHEDULING_MARGIN);
        assert_eq!(margin(ms(1000)), ms(150));
        assert_eq!(margin(ms(3000)), ms(350));
        let long = Timing {
            lease: ms(3000),
            down_after: ms(3700),
            ..Timing::default()
        };
        long.check().expect("3000 + 100 + 250 + 350");
        let short = Timing {
            down_after: ms(3699),
            ..long
        };
        assert!(short.check().is_err());
    }

    #[test]
    fn a_cut_off_leader_is_covered_when_heartbeats_are_slower_than_probes() {
        // 1000 + 10 + 250 + 150 = 1410 < 1000 + 5 × 300 + 150 = 2650.
        let slow_heartbeats = Timing {
            heartbeat: ms(300),
            election_min: ms(900),
            election_max: ms(1800),
            probe_interval: ms(10),
            down_after: ms(1410),
            ..Timing::default()
        };
        assert_eq!(slow_heartbeats.min_down_after(), ms(2650));
        assert!(slow_heartbeats.check().is_err());
    }

    #[test]
    fn a_lease_of_fewer_than_three_heartbeats_is_refused() {
        let at = |lease| {
            let mut timing = Timing {
                lease: ms(lease),
                ..Timing::default()
            };
            timing.down_after = timing.min_down_after();
            timing
        };
        at(150).check().expect("three heartbeats");
        let m = message(&at(149));
        assert!(
            m.starts_with("lease (149ms) must be at least 3 × heartbeat (50ms)"),
            "{m}"
        );
    }

    #[test]
    fn zero_heartbeat_or_probe_interval_is_refused() {
        let zero = Timing {
            probe_interval: Duration::ZERO,
            ..Timing::default()
        };
        assert!(message(&zero).contains("must be positive"));
    }
}
