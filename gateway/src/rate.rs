//! Rate limits at the edge: a token bucket (GCRA, the `governor` crate) per client IP, taken
//! before anything else is done with a request (token verification included), and one per
//! verified principal, taken once the token is verified. A request over either gets 429 with
//! `Retry-After`.
//!
//! Both are per gateway: every request passes through exactly one gateway, and counting it
//! there costs no round trip, where a cluster-wide count would put a store on every request's
//! path. With G gateways behind a balancer, a client may get up to G times the rate; an
//! operator sets the rate per gateway accordingly. Anonymous clients (`--auth-off`) are one
//! principal, so only their IP is limited.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// How often buckets that have refilled are forgotten, so that the tables hold only clients
/// seen lately.
pub const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A rate: requests per minute, with a burst of up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_minute` requests a minute (0: unlimited), with bursts of `burst` (0: a tenth of a
    /// minute's worth, at least one).
    pub fn new(per_minute: u32, burst: u32) -> Option<Rate> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst)
            .unwrap_or_else(|| NonZeroU32::new(per_minute.get() / 10).unwrap_or(NonZeroU32::MIN));
        Some(Rate { per_minute, burst })
    }

    fn quota(&self) -> Quota {
        Quota::per_minute(self.per_minute).allow_burst(self.burst)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RateConfig {
    pub per_principal: Option<Rate>,
    pub per_ip: Option<Rate>,
}

pub struct RateLimits {
    principal: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

/// A request refused for its rate: when it may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// What it was limited by: `ip` or `principal`.
    pub by: &'static str,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up: never 0, which would invite a retry that
    /// is refused again.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl RateLimits {
    pub fn new(config: &RateConfig) -> RateLimits {
        RateLimits {
            principal: config.per_principal.map(|r| RateLimiter::keyed(r.quota())),
            ip: config.per_ip.map(|r| RateLimiter::keyed(r.quota())),
            clock: DefaultClock::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.principal.is_some() || self.ip.is_some()
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Limited> {
        match &self.ip {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
                by: "ip",
            }),
            None => Ok(()),
        }
    }

    pub fn check_principal(&self, principal: &str) -> Result<(), Limited> {
        match &self.principal {
            Some(limiter) => limiter
                .check_key(&Arc::from(principal))
                .map_err(|not_until| Limited {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                    by: "principal",
                }),
            None => Ok(()),
        }
    }

    /// Forgets the buckets that have refilled: a client that comes back starts full, as it
    /// would have been.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.principal {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_principal: Option<Rate>, per_ip: Option<Rate>) -> RateLimits {
        RateLimits::new(&RateConfig {
            per_principal,
            per_ip,
        })
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limits = limits(Rate::new(60, 3), None);
        for _ in 0..3 {
            assert_eq!(limits.check_principal("alice"), Ok(()));
        }
        let limited = limits.check_principal("alice").expect_err("over the burst");
        assert_eq!(limited.by, "principal");
        assert!(limited.retry_after <= Duration::from_secs(1), "{limited:?}");
        assert!(limited.retry_after_secs() >= 1);
        // Another principal has its own bucket.
        assert_eq!(limits.check_principal("bob"), Ok(()));
    }

    #[test]
    fn ips_are_limited_apart_from_principals() {
        let limits = limits(None, Rate::new(600, 1));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(limits.check_ip(a), Ok(()));
        assert_eq!(limits.check_ip(a).map_err(|l| l.by), Err("ip"));
        assert_eq!(limits.check_ip(b), Ok(()));
        assert_eq!(
            limits.check_principal("anyone"),
            Ok(()),
            "no principal limit"
        );
    }

    #[test]
    fn unlimited_when_not_configured() {
        assert!(Rate::new(0, 5).is_none());
        let limits = limits(None, None);
        assert!(!limits.is_on());
        for _ in 0..1000 {
            assert_eq!(limits.check_ip([127, 0, 0, 1].into()), Ok(()));
        }
    }

    #[test]
    fn the_default_burst_is_a_tenth_of_a_minute() {
        assert_eq!(Rate::new(600, 0).map(|r| r.burst.get()), Some(60));
        assert_eq!(Rate::new(5, 0).map(|r| r.burst.get()), Some(1));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |ms| {
            Limited {
                retry_after: Duration::from_millis(ms),
                by: "ip",
            }
            .retry_after_secs()
        };
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(999), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(2500), 3);
    }
}
