//! One module per subcommand.

pub mod gateway;
pub mod node;
pub mod up;

use tokio_util::sync::CancellationToken;

/// Set by `up` on the processes it starts: they stop when `up` is gone, however it ended.
pub const EXIT_WITH_PARENT: &str = "SHARDGATE_EXIT_WITH_PARENT";

/// A token cancelled on SIGINT or SIGTERM (the drain signal for every long-running command),
/// or, under `up`, when the parent process is gone.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
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
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        trigger.cancel();
    });
    token
}
