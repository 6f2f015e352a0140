//! `shardgate`: one binary for every role. Parses the command line, sets up logging (and, for
//! the gateway and node roles, traces), and hands over to the subcommand in `commands/`.

use clap::{Parser, Subcommand};

mod commands;
mod credentials;
mod logging;
mod members;
mod traces;

/// jemalloc, with background threads that give freed memory back to the system: a gateway
/// or a node that held many streams returns to its size after they close (glibc's allocator
/// kept four to five times its size, its arenas fragmented by what stayed).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "shardgate",
    version,
    about = "Sharded, stateful MCP session gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway: the client-facing /mcp endpoint that routes to nodes.
    Gateway(commands::gateway::Args),
    /// Run a node: hosts sessions and their upstreams.
    Node(commands::node::Args),
    /// Run a local cluster (nodes and gateways as processes) until Ctrl-C.
    Up(commands::up::Args),
    /// Show the cluster's members, their states, the epoch, the leader and the voters, and
    /// each member's sessions, Raft role and store.
    Status(commands::status::Args),
    /// List the sessions every member holds, or show one session in detail.
    Sessions(commands::sessions::Args),
    /// Drain a node: its keys move to the others, then it leaves the cluster.
    Drain(commands::drain::Args),
    /// Change the number of nodes of the local cluster `shardgate up` runs.
    Scale(commands::scale::Args),
    /// Run a seeded chaos scenario against a local cluster under load, and check what held.
    Chaos(commands::chaos::Args),
    /// Apply the PostgreSQL session store's migrations (idempotent).
    Migrate(commands::migrate::Args),
    /// Measure an MCP endpoint: open-loop load at a fixed rate, latency percentiles, errors
    /// by kind, CPU per request.
    Bench(commands::bench::Args),
    /// Check a deployed cluster end to end: health, every member and its store, a session in
    /// each era, metrics. What a pipeline runs after a deploy.
    Smoke(commands::smoke::Args),
    /// Ask this container's own admin listener whether it is ready (its health check).
    Health(commands::health::Args),
}

impl Command {
    /// The service the traces of a role that serves requests are exported as.
    fn traced_as(&self) -> Option<&'static str> {
        match self {
            Command::Gateway(_) => Some("shardgate-gateway"),
            Command::Node(_) => Some("shardgate-node"),
            _ => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One crypto provider for every TLS client and server in the process (ring; reqwest and
    // rustls are built without one of their own), the traces exporter's client included.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let traces = logging::init(cli.command.traced_as(), runtime.handle())?;
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Gateway(args) => commands::gateway::run(args).await,
            Command::Node(args) => commands::node::run(args).await,
            Command::Up(args) => commands::up::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Sessions(args) => commands::sessions::run(args).await,
            Command::Drain(args) => commands::drain::run(args).await,
            Command::Scale(args) => commands::scale::run(args).await,
            Command::Chaos(args) => commands::chaos::run(args).await,
            Command::Migrate(args) => commands::migrate::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Smoke(args) => commands::smoke::run(args).await,
            Command::Health(args) => commands::health::run(args).await,
        }
    });
    // While the runtime still runs: the last batch is sent on it.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand's flags are consistent (clap checks this only when a command is used).
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
