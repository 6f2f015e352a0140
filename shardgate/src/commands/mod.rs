//! One module per subcommand.

pub mod chaos;
pub mod cluster;
pub mod drain;
pub mod gateway;
pub mod migrate;
pub mod node;
pub mod scale;
pub mod status;
pub mod up;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

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
