//! The open-loop schedule: when each request is due, which session sends it, and which
//! requests are measured; and the pacer that releases each request when it is due.
//!
//! Requests are numbered `n = 0, 1, 2, …` over the whole run and fall due every `1/rate`
//! seconds: request `n` is due at `n / rate`. Request `n` belongs to session `n % sessions`, as
//! its turn `n / sessions`, so each session offers `rate / sessions` and the sessions are
//! staggered evenly. Requests due before the warm-up ends are sent and their answers thrown
//! away; the measured ones are those due in `[warmup, warmup + duration)`.
//!
//! The times never depend on how fast answers come back: that is what makes the load open.
//! The pacer is a thread of its own that sleeps on the operating system's timer (microseconds
//! late) rather than tokio's, which wakes on whole milliseconds and would add up to a
//! millisecond to every latency measured from the due time.

use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The longest single sleep of the pacer, so that it notices a stop soon.
const MAX_NAP: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    rate: f64,
    sessions: u64,
    warmup: Duration,
    duration: Duration,
}

impl Schedule {
    pub fn new(
        rate: f64,
        sessions: usize,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Schedule, String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("the rate must be above 0 requests/s, not {rate}"));
        }
        if rate > 1e7 {
            return Err(format!(
                "a rate of {rate} requests/s is beyond any one machine"
            ));
        }
        if sessions == 0 {
            return Err("at least one session is needed".into());
        }
        if duration.is_zero() {
            return Err("the measured duration must be above 0".into());
        }
        Ok(Schedule {
            rate,
            sessions: sessions as u64,
            warmup,
            duration,
        })
    }

    /// When request `n` is due, from the start of the run.
    pub fn at(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// The first request due at or after `t`.
    fn first_at_or_after(&self, t: Duration) -> u64 {
        // The float estimate can be one off either way; the loops settle it against `at`,
        // the one definition of a due time.
        let mut n = (t.as_secs_f64() * self.rate).ceil() as u64;
        while n > 0 && self.at(n - 1) >= t {
            n -= 1;
        }
        while self.at(n) < t {
            n += 1;
        }
        n
    }

    /// The first measured request (the warm-up is `0..first_measured()`).
    pub fn first_measured(&self) -> u64 {
        self.first_at_or_after(self.warmup)
    }

    /// One past the last request of the run.
    pub fn end(&self) -> u64 {
        self.first_at_or_after(self.warmup + self.duration)
    }

    /// How many requests are measured: about `rate × duration`.
    pub fn measured(&self) -> u64 {
        self.end() - self.first_measured()
    }

    pub fn is_measured(&self, n: u64) -> bool {
        n >= self.first_measured() && n < self.end()
    }

    /// The session that sends request `n`.
    pub fn session_of(&self, n: u64) -> usize {
        // Below `sessions`, which came from a usize.
        (n % self.sessions) as usize
    }

    /// Which of its session's requests `n` is: 0 for the session's first, and so on.
    pub fn turn_of(&self, n: u64) -> u64 {
        n / self.sessions
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn warmup(&self) -> Duration {
        self.warmup
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// Runs [`pace`] on a thread of its own; the receiver gets what it released. The queues go
/// with it: when it is done, the sessions finish what they hold and end.
pub fn start(
    schedule: Schedule,
    t0: Instant,
    queues: Vec<UnboundedSender<u64>>,
    stop: CancellationToken,
) -> std::io::Result<oneshot::Receiver<u64>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            // The kernel lets a sleeper wake up to its timer slack late (50 µs by default) to
            // group wake-ups; the pacer's lateness is every request's, so it asks for 1 µs.
            let _ = nix::sys::prctl::set_timerslack(1_000);
            let _ = tx.send(pace(&schedule, t0, &queues, &stop));
        })?;
    Ok(rx)
}

/// Releases every request of `schedule` to its session's queue when it falls due, counting
/// from `t0`, until the schedule ends or `stop` is cancelled; returns how many it released.
/// Blocking: run it on a thread of its own.
pub fn pace(
    schedule: &Schedule,
    t0: Instant,
    queues: &[UnboundedSender<u64>],
    stop: &CancellationToken,
) -> u64 {
    let end = schedule.end();
    let mut n = 0;
    while n < end && !stop.is_cancelled() {
        let now = Instant::now();
        let due = t0 + schedule.at(n);
        if due > now {
            std::thread::sleep((due - now).min(MAX_NAP));
            continue;
        }
        // Everything due by now goes at once: after a late wake-up, the requests that fell due
        // meanwhile are not spread out again (their lateness counts, as it would for a client).
        while n < end && t0 + schedule.at(n) <= now {
            if let Some(queue) = queues.get(schedule.session_of(n)) {
                // A session that has gone (its task ended) takes no more requests.
                let _ = queue.send(n);
            }
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_fall_due_evenly_and_rotate_over_the_sessions() {
        let s = Schedule::new(1000.0, 50, ms(2000), ms(10_000)).expect("valid");
        assert_eq!(s.at(0), Duration::ZERO);
        assert_eq!(s.at(1), ms(1));
        assert_eq!(s.at(2500), ms(2500));
        assert_eq!(s.session_of(0), 0);
        assert_eq!(s.session_of(49), 49);
        assert_eq!(s.session_of(50), 0);
        assert_eq!(s.turn_of(49), 0);
        assert_eq!(s.turn_of(50), 1);
        // Each session offers rate / sessions: its turns are 50 ms apart.
        assert_eq!(s.at(50 + 7) - s.at(7), ms(50));
    }

    #[test]
    fn the_warm_up_and_the_measured_phase_split_the_requests() {
        let s = Schedule::new(1000.0, 50, ms(2000), ms(10_000)).expect("valid");
        assert_eq!(s.first_measured(), 2000);
        assert_eq!(s.end(), 12_000);
        assert_eq!(s.measured(), 10_000);
        assert!(!s.is_measured(1999));
        assert!(s.is_measured(2000));
        assert!(s.is_measured(11_999));
        assert!(!s.is_measured(12_000));

        let none = Schedule::new(100.0, 5, Duration::ZERO, ms(2000)).expect("valid");
        assert_eq!(none.first_measured(), 0);
        assert_eq!(none.measured(), 200);
    }

    #[test]
    fn rates_that_do_not_divide_a_second_round_to_the_next_due_request() {
        // 3 requests/s: due at 0, 1/3, 2/3, 1, … s. The warm-up of 0.5 s takes 0 and 1/3; the
        // measured second [0.5, 1.5) takes 2/3, 1 and 4/3.
        let s = Schedule::new(3.0, 2, ms(500), ms(1000)).expect("valid");
        assert_eq!(s.first_measured(), 2);
        assert_eq!(s.end(), 5);
        assert_eq!(s.measured(), 3);
        // A boundary exactly on a due time: that request is in the later phase.
        let s = Schedule::new(4.0, 1, ms(500), ms(1000)).expect("valid");
        assert_eq!((s.first_measured(), s.end()), (2, 6));
        // Fractional rates.
        let s = Schedule::new(0.5, 1, Duration::ZERO, ms(10_000)).expect("valid");
        assert_eq!(s.measured(), 5);
        // Large counts stay exact.
        let s = Schedule::new(7919.0, 13, ms(3000), ms(3_600_000)).expect("valid");
        assert_eq!(s.measured(), 7919 * 3600);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(Schedule::new(0.0, 1, ms(0), ms(1000)).is_err());
        assert!(Schedule::new(-5.0, 1, ms(0), ms(1000)).is_err());
        assert!(Schedule::new(f64::NAN, 1, ms(0), ms(1000)).is_err());
        assert!(Schedule::new(10.0, 0, ms(0), ms(1000)).is_err());
        assert!(Schedule::new(10.0, 1, ms(0), Duration::ZERO).is_err());
    }

    #[test]
    fn the_pacer_releases_each_request_once_to_its_session() {
        let s = Schedule::new(2000.0, 3, ms(5), ms(10)).expect("valid");
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<u64>())
            .unzip();
        let released = pace(&s, Instant::now(), &txs, &CancellationToken::new());
        assert_eq!(released, s.end());
        for (i, rx) in rxs.iter_mut().enumerate() {
            let mut got = Vec::new();
            while let Ok(n) = rx.try_recv() {
                got.push(n);
            }
            let want: Vec<u64> = (0..s.end()).filter(|n| n % 3 == i as u64).collect();
            assert_eq!(got, want);
        }
        // A cancelled pacer releases nothing more.
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(pace(&s, Instant::now(), &txs, &stop), 0);
    }
}
