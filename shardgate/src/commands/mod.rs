//! One module per subcommand.

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod drain;
pub mod gateway;
pub mod health;
pub mod migrate;
pub mod node;
pub mod scale;
pub mod sessions;
pub mod smoke;
pub mod status;
pub mod up;

use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// `30s`, `10m`, `1h`, `500ms`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 30s, 10m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("'{text}': the unit is ms, s, m or h")),
    }
}

/// Waits for a signal; forever if its handler could not be installed.
async fn recv(signal: &mut std::io::Result<Signal>) {
    match signal {
        Ok(s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

use shardgate_statefulset::EXIT_WITH_PARENT;

/// A token cancelled on SIGINT or SIGTERM (the drain signal for every long-running command),
/// or, under `up`, when the parent process is gone.
pub fn shutdown_on_signal() -> CancellationToken {
    let signals = signals();
    let either = CancellationToken::new();
    let trigger = either.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = signals.stop.cancelled() => {}
            _ = signals.leave.cancelled() => {}
        }
        trigger.cancel();
    });
    either
}

/// What a node is asked to do by signals.
pub struct Signals {
    /// SIGINT, or under `up` the parent gone: stop, and stay a member (a restart comes back).
    pub stop: CancellationToken,
    /// SIGTERM, what an orchestrator sends a pod it removes: leave the cluster, then stop.
    pub leave: CancellationToken,
}

pub fn signals() -> Signals {
    let token = CancellationToken::new();
    let leave = CancellationToken::new();
    if std::env::var_os(EXIT_WITH_PARENT).is_some() {
        let orphaned = token.clone();
        let parent = nix::unistd::getppid();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            while nix::unistd::getppid() == parent {
                tick.tick().await;
            }
            tracing::warn!("parent process is gone; stopping");
            orphaned.cancel();
        });
    }
    // The handlers are installed before this returns, so a signal that arrives right after
    // start-up is a drain, never the default (immediate) termination.
    let mut interrupt = signal(SignalKind::interrupt());
    let mut terminate = signal(SignalKind::terminate());
    let (stop, go) = (token.clone(), leave.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = recv(&mut interrupt) => stop.cancel(),
            _ = recv(&mut terminate) => go.cancel(),
        }
    });
    Signals { stop: token, leave }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
