//! The timings of consensus and failure detection, checked together.

use super::error::ConsensusError;
use std::time::Duration;

/// The timings of consensus and failure detection.
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
    /// A member silent this long is proposed `Down`.
    pub down_after: Duration,
    /// A node that has not heard from a quorum this long stops serving (fails closed).
    pub lease: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            probe_interval: Duration::from_millis(100),
            down_after: Duration::from_millis(400),
            lease: Duration::from_millis(1500),
        }
    }
}

impl Timing {
    /// How long a membership change (join, leave, state change) may take before it is reported
    /// as unavailable: a few leases covers an election plus a learner catching up.
    pub(crate) fn admin_timeout(&self) -> Duration {
        self.lease * 4
    }

    pub(crate) fn check(&self) -> Result<(), ConsensusError> {
        let bad = |what: &str| Err(ConsensusError::Config(what.to_owned()));
        if self.probe_interval.is_zero() || self.heartbeat.is_zero() {
            return bad("heartbeat and probe_interval must be positive");
        }
        if self.down_after <= self.probe_interval {
            return bad("down_after must be longer than probe_interval");
        }
        if self.lease <= self.heartbeat {
            return bad("lease must be longer than heartbeat");
        }
        Ok(())
    }
}
