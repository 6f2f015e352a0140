//! Runs `shardgate chaos` with a throw-away PostgreSQL as the cluster's session store, so that
//! no lock is shared by every node (as `up`'s SQLite file is): a frozen node then stalls only
//! its own sessions, and what fencing prevents can happen when it is defeated.
//!
//! `cargo run --release -p shardgate-tests --bin chaos-pg -- SHARDGATE_BINARY CHAOS_ARGS…`

use shardgate_tests::services::Postgres;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(bin) = args.next() else {
        anyhow::bail!("usage: chaos-pg SHARDGATE_BINARY CHAOS_ARGS…");
    };
    let pg = Postgres::start().await?;
    println!("chaos-pg: session store {}", pg.url);
    let status = tokio::process::Command::new(&bin)
        .arg("chaos")
        .args(args)
        .args(["--store", &pg.url])
        .status()
        .await?;
    drop(pg);
    std::process::exit(status.code().unwrap_or(1));
}
