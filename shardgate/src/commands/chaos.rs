//! `shardgate chaos --scenario NAME --seed S --duration D`: runs a seeded scenario of faults
//! against a local cluster of this binary under load, checks the invariants on what the
//! clients saw, and writes the report. Fails when any invariant was violated.

use super::parse_duration;
use anyhow::{Context, bail};
use shardgate_chaos::{Options, scenario};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, help = format!("The scenario to run: {}", scenario::NAMES))]
    pub scenario: String,
    /// The seed that picks the faults' times and victims: the same seed, the same scenario.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long the run lasts: `30s`, `10m`, `1h`, or seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Nodes at the start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Gateways, behind `up`'s front when more than one; the scenario then kills gateways too.
    /// Default: 2 (the scenarios kill one of them).
    #[arg(long, default_value_t = 2)]
    pub gateways: usize,
    /// Sessions calling `counter` throughout.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Stateless-era clients calling `counter` throughout, each with the key it was issued.
    #[arg(long, default_value_t = 4)]
    pub stateless: usize,
    /// Sessions that also hold their standalone GET stream (resumed with `Last-Event-ID`) and
    /// make calls whose progress notifications travel on it.
    #[arg(long, default_value_t = 4)]
    pub holders: usize,
    /// Callers per session, each one call after another (calls side by side in a session).
    #[arg(long, default_value_t = 2)]
    pub callers: usize,
    /// Consensus timings of the cluster (`production` or `relaxed`).
    #[arg(long, default_value = "production")]
    pub timings: String,
    /// The session store of the cluster (`up --store`): `redis://…` or `postgres://…`.
    /// Default: `up`'s SQLite file, shared by the nodes of this machine.
    #[arg(long, conflicts_with = "postgres")]
    pub store: Option<String>,
    /// Run a throw-away PostgreSQL (from the installed binaries) as the session store, and
    /// restart it during the scenario too.
    #[arg(long)]
    pub postgres: bool,
    /// Run a throw-away Redis Cluster (three primaries with a replica each, from the
    /// installed binaries) as the session store at the `replicated` acknowledgement level,
    /// and kill its primaries during the scenario too.
    #[arg(long, conflicts_with_all = ["store", "postgres"])]
    pub redis: bool,
    /// Only check and report again on the history an earlier run left in `--out` (with the
    /// same `--scenario`, `--seed` and `--duration`); nothing is run.
    #[arg(long)]
    pub report_only: bool,
    /// Where the report (`REPORT.md`, `report.json`), the history and the cluster's data go.
    /// Default: `chaos-out/<scenario>-<seed>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("chaos-out").join(format!("{}-{}", args.scenario, args.seed))
    });
    let command = std::iter::once("shardgate".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let opts = Options {
        scenario: args.scenario,
        seed: args.seed,
        duration: args.duration,
        nodes: args.nodes,
        gateways: args.gateways,
        sessions: args.sessions,
        stateless: args.stateless,
        callers: args.callers,
        holders: args.holders,
        timings: args.timings,
        out: out.clone(),
        bin: std::env::current_exe().context("cannot find the shardgate binary")?,
        store: args.store,
        postgres: args.postgres,
        redis: args.redis,
        command,
    };
    let report = match args.report_only {
        true => shardgate_chaos::report_again(&opts)?,
        false => shardgate_chaos::run(&opts).await?,
    };
    for v in &report.verdicts {
        if let Some(why) = &v.not_checked {
            println!(" skipped  {} (not checked: {why})", v.invariant);
            continue;
        }
        let mark = if v.held() { "held" } else { "VIOLATED" };
        println!("{mark:>8}  {} ({} checked)", v.invariant, v.checked);
        if let Some(example) = &v.first {
            println!("          first: {example}");
        }
    }
    println!("report: {}", out.join("REPORT.md").display());
    println!("{} violations", report.violations);
    if report.violations > 0 {
        bail!("{} invariant violations", report.violations);
    }
    Ok(())
}
