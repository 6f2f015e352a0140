//! One line on stderr, rewritten each second while the run goes: the phase, the time, and the
//! answers so far. Only on a terminal (the caller decides): a log file gets no carriage returns.

use crate::record::Live;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The progress line.
pub fn line(
    elapsed: Duration,
    warmup: Duration,
    planned: Duration,
    answered_last_second: u64,
    ok: u64,
    failed: u64,
) -> String {
    let phase = if elapsed < warmup {
        "warm-up"
    } else if elapsed < planned {
        "measuring"
    } else {
        "finishing"
    };
    format!(
        "{phase:<9} {:>6.1}/{:.1} s  {answered_last_second:>6} answers/s  ok {ok}  errors {failed}",
        elapsed.as_secs_f64(),
        planned.as_secs_f64()
    )
}

/// Rewrites the line every second from `t0` until `done` is cancelled, then clears it.
pub async fn show(
    live: Arc<Live>,
    t0: Instant,
    warmup: Duration,
    planned: Duration,
    done: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut before = 0;
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let ok = live.ok.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        let answered = ok + failed;
        let text = line(
            t0.elapsed(),
            warmup,
            planned,
            answered - before.min(answered),
            ok,
            failed,
        );
        before = answered;
        let _ = write!(stderr, "\r\x1b[2K{text}");
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_phase() {
        let s = Duration::from_secs;
        let l = line(s(1), s(2), s(12), 1000, 999, 1);
        assert!(l.starts_with("warm-up"), "{l}");
        assert!(l.contains("1.0/12.0 s"), "{l}");
        assert!(l.contains("1000 answers/s  ok 999  errors 1"), "{l}");
        assert!(line(s(5), s(2), s(12), 0, 0, 0).starts_with("measuring"));
        assert!(line(s(13), s(2), s(12), 0, 0, 0).starts_with("finishing"));
    }
}
