//! Sessions in the store: what writing sessions through to a store costs, how fast a dead
//! node's sessions are taken over, and what a session costs in memory, active and passivated.
//! Real processes (`shardgate up`), one store per cluster (SQLite in a scratch directory, a
//! throw-away Redis Cluster with `--redis`, or a throw-away PostgreSQL with `--postgres`, which
//! also audits every tool call).
//!
//! `cargo run --release -p shardgate-tests --bin store-bench -- [--only latency,takeover,memory]
//! [--calls N] [--rounds R] [--concurrency C] [--secs T] [--tool counter|echo]
//! [--takeover-sessions S] [--takeover-runs K] [--active N] [--passivate-secs P] [--big N]
//! [--configs none,memory,store,replicated] [--redis | --postgres]`
//!
//! The `shardgate` binary is `SHARDGATE_BIN`, else the one of this build's profile (which the
//! harness builds with `cargo build --workspace --bins --release` first when run under cargo):
//! run the bench with `--release`, or point `SHARDGATE_BIN` at a release binary.
//!
//! - latency: one single-node cluster per configuration (no store; store with `--ack memory`,
//!   `store`, `replicated`), all running at once. Each round visits every configuration in a
//!   rotated order: N sequential `tools/call` on one session (SSE answers: their events go
//!   through the store), then C sessions calling in parallel loops for T seconds, then a wait
//!   until the node is idle again (at `memory` it still writes its backlog to the store; the
//!   "sustained" rate counts that time too).
//! - takeover: three nodes; S sessions call `counter` 3 times; `node-1` is killed with
//!   SIGKILL; every session it owned calls `counter` in a loop until it succeeds. Time from
//!   the kill to each session's first success; the counter must say 4. Twice: under `up`,
//!   which starts the node again after 0.5 s, and with nodes started one by one
//!   (`RaftCluster`), where it stays dead and the others take its sessions over once the
//!   membership marks it `Down`.
//! - memory: one node; RSS before and after N active sessions; then after they are passivated
//!   (the node's `shardgate_node_sessions` gauge at 0); then the growth while `--big` sessions
//!   are created with passivation after 1 s from the start. A sample of each set answers
//!   `counter` with the next value.

use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use shardgate_raft::{Membership, Ring};
use shardgate_tests::mcp::Client;
use shardgate_tests::services::{Postgres, RedisCluster};
use shardgate_tests::{Cluster, rss_bytes, scratch, shardgate_bin};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one request may take before the bench counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The node's session gauge.
const SESSIONS: &str = "shardgate_node_sessions";
/// The node killed in the takeover runs.
const VICTIM: &str = "node-1";

struct Options {
    only: Vec<String>,
    calls: usize,
    rounds: usize,
    concurrency: usize,
    secs: f64,
    tool: String,
    takeover_sessions: usize,
    takeover_runs: usize,
    active: usize,
    big: usize,
    /// Passivation delay of the active-then-passivated memory run.
    passivate_secs: u64,
    redis: bool,
    postgres: bool,
    /// The latency configurations to run, by name (`none` for no store).
    configs: Vec<String>,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut o = Options {
            only: vec!["latency".into(), "takeover".into(), "memory".into()],
            calls: 2000,
            rounds: 3,
            concurrency: 32,
            secs: 10.0,
            tool: "counter".into(),
            takeover_sessions: 300,
            takeover_runs: 3,
            active: 10_000,
            big: 100_000,
            passivate_secs: 120,
            redis: false,
            postgres: false,
            configs: vec![
                "none".into(),
                "memory".into(),
                "store".into(),
                "replicated".into(),
            ],
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--redis" {
                o.redis = true;
                continue;
            }
            if flag == "--postgres" {
                o.postgres = true;
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            match flag.as_str() {
                "--only" => o.only = value.split(',').map(String::from).collect(),
                "--calls" => o.calls = value.parse()?,
                "--rounds" => o.rounds = value.parse()?,
                "--concurrency" => o.concurrency = value.parse()?,
                "--secs" => o.secs = value.parse()?,
                "--tool" => o.tool = value,
                "--takeover-sessions" => o.takeover_sessions = value.parse()?,
                "--takeover-runs" => o.takeover_runs = value.parse()?,
                "--active" => o.active = value.parse()?,
                "--big" => o.big = value.parse()?,
                "--passivate-secs" => o.passivate_secs = value.parse()?,
                "--configs" => o.configs = value.split(',').map(String::from).collect(),
                other => anyhow::bail!("unknown flag {other}"),
            }
        }
        anyhow::ensure!(
            o.tool == "counter" || o.tool == "echo",
            "--tool is counter or echo"
        );
        anyhow::ensure!(!(o.redis && o.postgres), "--redis or --postgres, not both");
        Ok(o)
    }

    fn runs(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }
}

/// Where the clusters' sessions are stored.
enum Backend {
    /// One SQLite file per cluster, in this directory.
    Sqlite(PathBuf),
    Redis(RedisCluster),
    /// One database for every cluster (session ids never collide).
    Postgres(Postgres),
}

impl Backend {
    fn url(&self, name: &str) -> String {
        match self {
            Backend::Sqlite(dir) => format!("sqlite:{}", dir.join(format!("{name}.db")).display()),
            Backend::Redis(r) => format!(
                "redis://{}",
                r.nodes
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Backend::Postgres(pg) => pg.url.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            Backend::Redis(_) => "Redis Cluster",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse()?;
    let bin = shardgate_bin()?;
    let profile = if bin.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else {
        "NOT a release build"
    };
    println!("shardgate binary: {} ({profile})", bin.display());
    let dir = scratch("store-bench")?;
    let backend = if opts.redis {
        Backend::Redis(RedisCluster::start().await?)
    } else if opts.postgres {
        Backend::Postgres(Postgres::start().await?)
    } else {
        Backend::Sqlite(dir.clone())
    };
    println!("store: {}", backend.name());
    if opts.runs("latency") {
        latency(&opts, &backend).await?;
    }
    if opts.runs("takeover") {
        takeover(&opts, &backend).await?;
    }
    if opts.runs("memory") {
        memory(&opts, &backend, &dir).await?;
    }
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// One `tools/call` of `tool` in session `sid`; `counter` answers its new value, `echo` 0.
async fn call(c: &Client, sid: &str, id: i64, tool: &str) -> anyhow::Result<i64> {
    let work = async {
        if tool == "counter" {
            return c.count(sid, id).await;
        }
        let answer = c
            .request(
                sid,
                id,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "hello"}}),
            )
            .await?;
        anyhow::ensure!(
            answer["result"]["content"][0]["text"] == "hello",
            "echo answered {answer}"
        );
        Ok(0)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn initialize(c: &Client) -> anyhow::Result<String> {
    tokio::time::timeout(REQUEST_TIMEOUT, c.initialize())
        .await
        .map_err(|_| anyhow::anyhow!("initialize: no answer within {REQUEST_TIMEOUT:?}"))?
}

/// `n` new sessions, each having called `counter` `calls` times (checked), `parallel` at once.
async fn sessions(
    c: &Client,
    n: usize,
    calls: i64,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    futures_util::stream::iter(0..n)
        .map(|_| async {
            let sid = initialize(c).await?;
            for i in 1..=calls {
                let v = call(c, &sid, i, "counter").await?;
                anyhow::ensure!(v == i, "counter said {v} at call {i}");
            }
            anyhow::Ok(sid)
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Every session of `sample` answers `counter` with `expected`; returns how many did not.
async fn check_counters(c: &Client, sample: &[String], expected: i64) -> usize {
    futures_util::stream::iter(sample)
        .map(|sid| async move {
            match call(c, sid, 1000, "counter").await {
                Ok(v) if v == expected => 0,
                Ok(v) => {
                    println!("  session answered counter {v}, expected {expected}");
                    1
                }
                Err(e) => {
                    println!("  session failed: {e:#}");
                    1
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum()
}

fn write_config(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The pid of the one node of a single-node cluster.
fn only_node(cluster: &Cluster) -> anyhow::Result<u32> {
    let pids = cluster.node_pids()?;
    anyhow::ensure!(pids.len() == 1, "expected one node, found {pids:?}");
    Ok(pids[0])
}

/// Waits until the node's session gauge satisfies `done`, up to `within`; returns the gauge.
async fn gauge_until(
    cluster: &Cluster,
    http: &reqwest::Client,
    within: Duration,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let g = cluster.metric_of(http, 0, SESSIONS).await?;
        if done(g) || Instant::now() > deadline {
            return Ok(g);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU time a process has used, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    Ok(field(11)? + field(12)?)
}

/// Waits until the process uses less than a tenth of a core (over half a second), up to
/// `within`; returns how long that took. A node writing a backlog to its store keeps busy
/// after its clients have stopped.
async fn settle(pid: u32, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut before = cpu_ticks(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_ticks(pid)?;
        // 100 ticks a second: under 5 ticks in half a second is under a tenth of a core.
        if now - before < 5 || started.elapsed() > within {
            return Ok(started.elapsed().saturating_sub(Duration::from_millis(500)));
        }
        before = now;
    }
}

// ---------------------------------------------------------------------------------------------
// a. Latency and throughput by acknowledgement level

struct Config {
    /// As `--configs` names it.
    key: &'static str,
    name: &'static str,
    /// `SHARDGATE_ACK`, or no store at all.
    ack: Option<&'static str>,
}

const CONFIGS: [Config; 4] = [
    Config {
        key: "none",
        name: "no store",
        ack: None,
    },
    Config {
        key: "memory",
        name: "memory",
        ack: Some("memory"),
    },
    Config {
        key: "store",
        name: "store",
        ack: Some("store"),
    },
    Config {
        key: "replicated",
        name: "replicated",
        ack: Some("replicated"),
    },
];

#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    /// Calls per second, one per round.
    throughput: Vec<f64>,
    /// How long the node stayed busy after each throughput phase.
    catch_up: Vec<Duration>,
    /// Calls per second over the phase and the node's catch-up after it, one per round.
    sustained: Vec<f64>,
    errors: usize,
}

async fn latency(opts: &Options, backend: &Backend) -> anyhow::Result<()> {
    let configs: Vec<&Config> = CONFIGS
        .iter()
        .filter(|c| opts.configs.iter().any(|k| k == c.key))
        .collect();
    println!(
        "\n## Latency and throughput by acknowledgement level\n\n{} rounds; per round and \
         configuration {} sequential `tools/call {}` on one session, then {} sessions calling \
         in parallel for {} s",
        opts.rounds,
        opts.calls / opts.rounds.max(1),
        opts.tool,
        opts.concurrency,
        opts.secs
    );
    let mut clusters = Vec::new();
    for config in &configs {
        let mut b = Cluster::builder()
            .nodes(1)
            .env("SHARDGATE_PASSIVATE_AFTER_SECS", "3600");
        b = match config.ack {
            Some(ack) => b
                .env(
                    "SHARDGATE_STORE",
                    &backend.url(&format!("latency-{}", config.key)),
                )
                .env("SHARDGATE_ACK", ack),
            None => b.env("SHARDGATE_STORE", "none"),
        };
        let cluster = b.start().await?;
        println!(
            "  {}: node pid {:?}, up pid {:?}",
            config.name,
            cluster.node_pids()?,
            cluster.pid()
        );
        let c = Client::new(&cluster.endpoint);
        let one = initialize(&c).await?;
        let many = sessions(&c, opts.concurrency, 0, opts.concurrency).await?;
        // Warm up: connections, allocator, the store's pages.
        for i in 0..100 {
            call(&c, &one, i, &opts.tool).await?;
        }
        clusters.push((cluster, c, one, many));
    }
    let mut measured: Vec<Measured> = configs.iter().map(|_| Measured::default()).collect();
    let per_round = opts.calls / opts.rounds.max(1);
    let mut next_id = 1000i64;
    for round in 0..opts.rounds {
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let (cluster, c, one, many) = &clusters[i];
            let m = &mut measured[i];
            for _ in 0..per_round {
                next_id += 1;
                let started = Instant::now();
                match call(c, one, next_id, &opts.tool).await {
                    Ok(_) => m.latencies.push(started.elapsed()),
                    Err(e) => {
                        m.errors += 1;
                        println!("  {}: {e:#}", configs[i].name);
                    }
                }
            }
            let done = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(opts.secs);
            let tasks: Vec<_> = many
                .iter()
                .map(|sid| {
                    let (c, sid, tool) = (c.clone(), sid.clone(), opts.tool.clone());
                    let (done, failed) = (done.clone(), failed.clone());
                    tokio::spawn(async move {
                        let mut id = 1_000_000i64;
                        while Instant::now() < deadline {
                            id += 1;
                            match call(&c, &sid, id, &tool).await {
                                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            m.throughput.push(rate);
            m.errors += failed.load(Ordering::Relaxed) as usize;
            let pid = only_node(cluster)?;
            let rss = mib(rss_bytes(pid)? as f64);
            let busy = settle(pid, Duration::from_secs(600)).await?;
            m.catch_up.push(busy);
            m.sustained
                .push(rate * opts.secs / (opts.secs + busy.as_secs_f64()));
            println!(
                "  round {} {:10}: latency p50 {:.3} ms so far, throughput {:.0} calls/s, \
                 node RSS {rss} after the load, busy {:.1} s more, RSS {} then",
                round + 1,
                configs[i].name,
                {
                    let mut l = m.latencies.clone();
                    l.sort();
                    ms(quantile(&l, 0.5))
                },
                rate,
                busy.as_secs_f64(),
                mib(rss_bytes(pid)? as f64)
            );
        }
    }
    // What a node with PostgreSQL audited of all that (nothing, with another store or a
    // build before the audit).
    let http = shardgate_tests::http().build()?;
    for (config, (cluster, ..)) in configs.iter().zip(&clusters) {
        let mut audit = Vec::new();
        for metric in [
            "shardgate_node_audit_written_total",
            "shardgate_node_audit_dropped_total",
        ] {
            audit.push(cluster.metric_of(&http, 0, metric).await?);
        }
        if audit.iter().any(|&n| n > 0) {
            println!(
                "  {}: audit rows written {}, dropped {}",
                config.name, audit[0], audit[1]
            );
        }
    }
    for (cluster, ..) in clusters {
        cluster.stop().await?;
    }

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let stats: Vec<(Duration, Duration, f64)> = measured
        .iter_mut()
        .map(|m| {
            m.latencies.sort();
            (
                quantile(&m.latencies, 0.5),
                quantile(&m.latencies, 0.99),
                median(&m.throughput),
            )
        })
        .collect();
    let baseline = |key: &str| {
        configs
            .iter()
            .position(|c| c.key == key)
            .map(|i| (stats[i].0, stats[i].2))
    };
    let (none, memory) = (baseline("none"), baseline("memory"));
    let added = |p50: Duration, base: Option<(Duration, f64)>| match base {
        Some((b, _)) => format!("{:+.3} ms", ms(p50) - ms(b)),
        None => "–".into(),
    };
    let ratio = |rate: f64, base: Option<(Duration, f64)>| match base {
        Some((_, b)) if b > 0.0 => format!("{:.2}", rate / b),
        _ => "–".into(),
    };
    println!(
        "\n| configuration | calls | p50 | p99 | p50 added vs no store | p50 added vs memory | \
         calls/s, median (rounds) | × memory | × no store | node busy after the load | \
         sustained calls/s (with the catch-up) | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, config) in configs.iter().enumerate() {
        let (p50, p99, rate) = stats[i];
        let rounds: Vec<String> = measured[i]
            .throughput
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        println!(
            "| {} | {} | {:.3} ms | {:.3} ms | {} | {} | {:.0} ({}) | {} | {} | {} | {:.0} | {} |",
            config.name,
            measured[i].latencies.len(),
            ms(p50),
            ms(p99),
            added(p50, none),
            if config.ack.is_some() {
                added(p50, memory)
            } else {
                "–".into()
            },
            rate,
            rounds.join(", "),
            ratio(rate, memory),
            ratio(rate, none),
            measured[i]
                .catch_up
                .iter()
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            median(&measured[i].sustained),
            measured[i].errors
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// b. Takeover after kill -9

struct Outcome {
    took: Duration,
    counter: i64,
    attempts: usize,
}

/// How the killed node comes back.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// `shardgate up` starts it again after 0.5 s: it takes its sessions back itself, unless
    /// the membership marked it `Down` first.
    Restarted,
    /// Nobody restarts it: the membership marks it `Down` and the others take its sessions.
    StaysDead,
}

/// A three-node cluster of either kind, with what the takeover run needs of it.
struct Three {
    endpoint: String,
    /// The gateway's admin base URL.
    gateway_admin: String,
    admins: Vec<std::net::SocketAddr>,
    up: Option<Cluster>,
    raft: Option<shardgate_tests::raft::RaftCluster>,
}

impl Three {
    async fn start(victim: Victim, url: &str, dir: &Path) -> anyhow::Result<Three> {
        match victim {
            Victim::Restarted => {
                let cluster = Cluster::builder()
                    .nodes(3)
                    .production_timings()
                    .env("SHARDGATE_STORE", url)
                    .env("SHARDGATE_ACK", "store")
                    .start()
                    .await?;
                Ok(Three {
                    endpoint: cluster.endpoint.clone(),
                    gateway_admin: cluster.admin.clone(),
                    admins: cluster.nodes.iter().map(|(_, a)| a.admin).collect(),
                    up: Some(cluster),
                    raft: None,
                })
            }
            Victim::StaysDead => {
                let flags = ["--timings", "production", "--store", url, "--ack", "store"];
                let mut raft =
                    shardgate_tests::raft::RaftCluster::new(dir.to_path_buf(), 3, &flags)?;
                raft.start(3).await?;
                let gateway = raft.start_gateway().await?;
                raft.until_gateway(Duration::from_secs(30), |m| {
                    shardgate_tests::raft::active(m) == 3
                })
                .await?;
                let admins = (0..3)
                    .map(|i| raft.addrs(i).map(|a| a.admin))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| anyhow::anyhow!("a node did not start"))?;
                Ok(Three {
                    endpoint: format!("http://{}/mcp", gateway.mcp),
                    gateway_admin: format!("http://{}", gateway.admin),
                    admins,
                    up: None,
                    raft: Some(raft),
                })
            }
        }
    }

    async fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        if let Some(up) = &self.up {
            let pid = up.node_pid(id)?;
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
        }
        if let Some(raft) = &mut self.raft {
            let i: usize = id.trim_start_matches("node-").parse()?;
            raft.kill(i).await?;
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some(up) = self.up {
            up.stop().await?;
        }
        drop(self.raft);
        Ok(())
    }
}

async fn gauge_at(http: &reqwest::Client, admin: std::net::SocketAddr) -> Option<u64> {
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(SESSIONS)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `counter` in session `sid`, its new value; a failure says what the client got (status and
/// body), for the run's summary of errors.
async fn count_telling(c: &Client, sid: &str, id: i64) -> Result<i64, String> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "counter", "arguments": {}}});
    let work = async {
        let resp = c
            .session_post(sid, &body)
            .send()
            .await
            .map_err(|e| format!("no response: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("HTTP {}: {}", status.as_u16(), text.trim()));
        }
        let answer = shardgate_tests::mcp::response_of(resp, &json!(id))
            .await
            .map_err(|e| format!("{e:#}"))?;
        answer["result"]["content"][0]["text"]
            .as_str()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| format!("answer: {answer}"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn takeover(opts: &Options, backend: &Backend) -> anyhow::Result<()> {
    println!(
        "\n## Takeover after kill -9\n\n3 nodes (production timings), {} sessions, {} runs \
         of each kind; {VICTIM} killed",
        opts.takeover_sessions, opts.takeover_runs
    );
    let mut rows = Vec::new();
    for (kind, victim) in [
        ("restarted by up", Victim::Restarted),
        ("stays dead", Victim::StaysDead),
    ] {
        let mut all: Vec<Duration> = Vec::new();
        for run in 0..opts.takeover_runs {
            let dir = scratch(&format!("store-bench-raft-{}-{run}", kind.len()))?;
            let url = backend.url(&format!("takeover-{}-{run}", kind.len()));
            let mut three = Three::start(victim, &url, &dir).await?;
            let row = takeover_run(opts, &mut three, run, &mut all).await;
            three.stop().await?;
            let _ = std::fs::remove_dir_all(&dir);
            rows.push(format!("| {kind}, run {}", row?));
        }
        all.sort();
        rows.push(format!(
            "| {kind}, all runs | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | | | | |",
            all.len(),
            ms(quantile(&all, 0.0)),
            ms(quantile(&all, 0.5)),
            ms(quantile(&all, 0.99)),
            ms(quantile(&all, 1.0)),
        ));
    }
    println!(
        "\n| victim, run | sessions of {VICTIM} | min | median | p99 | max | counter wrong or \
         failed | other nodes' sessions wrong (of 30) | attempts per session | epoch, {VICTIM} \
         after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// One run: sessions, the kill, the sessions of the victim until each succeeds. Returns the
/// rest of its table row.
async fn takeover_run(
    opts: &Options,
    three: &mut Three,
    run: usize,
    all: &mut Vec<Duration>,
) -> anyhow::Result<String> {
    let c = Client::new(&three.endpoint);
    let http = shardgate_tests::http().build()?;
    let ids = sessions(&c, opts.takeover_sessions, 3, 32).await?;
    let url = format!("{}/membership", three.gateway_admin);
    let membership =
        || async { anyhow::Ok(http.get(&url).send().await?.json::<Membership>().await?) };
    let view = membership().await?;
    let epoch_before = view.epoch;
    let ring = Ring::new(view);
    let (victims, others): (Vec<String>, Vec<String>) = ids
        .into_iter()
        .partition(|sid| ring.owner(sid.as_bytes()).is_some_and(|m| m.id.0 == VICTIM));
    // What the sessions wrote after their answers (the records' checkpoints) is stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    three.kill(VICTIM).await?;
    let killed = Instant::now();
    let errors: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Default::default();
    let outcomes: Vec<anyhow::Result<Outcome>> =
        futures_util::future::join_all(victims.iter().map(|sid| {
            let (c, errors) = (c.clone(), errors.clone());
            async move {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match count_telling(&c, sid, 100 + attempts as i64).await {
                        Ok(counter) => {
                            return Ok(Outcome {
                                took: killed.elapsed(),
                                counter,
                                attempts,
                            });
                        }
                        Err(e) => {
                            let kind: String = e.chars().take(160).collect();
                            *errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(kind)
                                .or_default() += 1;
                        }
                    }
                    if killed.elapsed() > Duration::from_secs(60) {
                        anyhow::bail!("no success within 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }))
        .await;
    let mut times = Vec::new();
    let (mut wrong, mut attempts) = (0, 0);
    for o in outcomes {
        match o {
            Ok(o) => {
                times.push(o.took);
                attempts += o.attempts;
                if o.counter != 4 {
                    wrong += 1;
                    println!("  counter said {} instead of 4", o.counter);
                }
            }
            Err(e) => {
                wrong += 1;
                println!("  {e:#}");
            }
        }
    }
    times.sort();
    // The sessions of the other nodes continue too.
    let sample: Vec<String> = others.iter().take(30).cloned().collect();
    let others_wrong = check_counters(&c, &sample, 4).await;
    let after = membership().await?;
    let victim_state = after
        .members
        .iter()
        .find(|m| m.id.0 == VICTIM)
        .map(|m| format!("{:?}", m.state))
        .unwrap_or_else(|| "absent".into());
    let mut gauges = Vec::new();
    for admin in &three.admins {
        gauges.push(gauge_at(&http, *admin).await);
    }
    println!(
        "  run {}: {} sessions on {VICTIM}; epoch {epoch_before} → {} ({VICTIM} \
         {victim_state}); sessions per node now {gauges:?}; attempts {attempts}",
        run + 1,
        victims.len(),
        after.epoch,
    );
    for (kind, n) in errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("    {n} × {kind}");
    }
    all.extend(times.iter().copied());
    Ok(format!(
        "{} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} | {:.2} | {epoch_before} → \
         {}, {victim_state} |",
        run + 1,
        times.len(),
        ms(quantile(&times, 0.0)),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.99)),
        ms(quantile(&times, 1.0)),
        wrong,
        others_wrong,
        attempts as f64 / times.len().max(1) as f64,
        after.epoch,
    ))
}

// ---------------------------------------------------------------------------------------------
// c. Memory per session, active and passivated

/// Sessions created before the first RSS reading, so that pools and caches are warm.
const WARM: usize = 200;

async fn memory(opts: &Options, backend: &Backend, dir: &Path) -> anyhow::Result<()> {
    let n = opts.active;
    println!("\n## Memory per session\n\n{n} sessions, each with one `counter` call");
    let config = write_config(
        dir,
        "memory",
        &format!("[limits]\nsessions = {}\n", (n + opts.big) * 2 + 10_000),
    )?;
    let http = shardgate_tests::http().build()?;
    let mut rows = Vec::new();

    // Without a store: the reference.
    let cluster = Cluster::builder()
        .nodes(1)
        .config(&config)
        .env("SHARDGATE_STORE", "none")
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let pid = only_node(&cluster)?;
    sessions(&c, WARM, 1, 64).await?;
    let empty = rss_bytes(pid)?;
    let started = Instant::now();
    sessions(&c, n, 1, 64).await?;
    let creation = started.elapsed();
    let full = rss_bytes(pid)?;
    let gauge = cluster.metric_of(&http, 0, SESSIONS).await?;
    rows.push(format!(
        "| no store, active | {} | {} | {} | {:.0} |",
        gauge,
        mib(empty as f64),
        mib(full as f64),
        (full as f64 - empty as f64) / n as f64
    ));
    println!(
        "  no store: {n} sessions created in {:.1} s",
        creation.as_secs_f64()
    );
    cluster.stop().await?;

    // With a store: active, then passivated. Passivation must not start before the last
    // session is created: the gauge column shows whether it did.
    let passivate = opts.passivate_secs;
    let cluster = Cluster::builder()
        .nodes(1)
        .config(&config)
        .env("SHARDGATE_STORE", &backend.url("memory"))
        .env("SHARDGATE_ACK", "store")
        .env("SHARDGATE_PASSIVATE_AFTER_SECS", &passivate.to_string())
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let pid = only_node(&cluster)?;
    sessions(&c, WARM, 1, 64).await?;
    let empty = rss_bytes(pid)?;
    let started = Instant::now();
    let ids = sessions(&c, n, 1, 64).await?;
    let took = started.elapsed();
    let full = rss_bytes(pid)?;
    let gauge = cluster.metric_of(&http, 0, SESSIONS).await?;
    println!(
        "  store: {n} sessions created in {:.1} s; passivation after {passivate} s",
        took.as_secs_f64()
    );
    rows.push(format!(
        "| store, active | {} | {} | {} | {:.0} |",
        gauge,
        mib(empty as f64),
        mib(full as f64),
        (full as f64 - empty as f64) / n as f64
    ));
    let waited = Instant::now();
    let gauge = gauge_until(&cluster, &http, Duration::from_secs(passivate + 120), |g| {
        g == 0
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let passivated = rss_bytes(pid)?;
    println!(
        "  store: gauge {gauge} after {:.1} s more",
        waited.elapsed().as_secs_f64()
    );
    rows.push(format!(
        "| store, passivated | {} | {} | {} | {:.0} |",
        gauge,
        mib(empty as f64),
        mib(passivated as f64),
        (passivated as f64 - empty as f64) / n as f64
    ));
    let sample: Vec<String> = ids.iter().step_by((n / 100).max(1)).cloned().collect();
    let wrong = check_counters(&c, &sample, 2).await;
    let reloaded = cluster.metric_of(&http, 0, SESSIONS).await?;
    println!(
        "  store: {} sampled sessions answered counter, {wrong} wrong; gauge now {reloaded}",
        sample.len()
    );
    cluster.stop().await?;

    // Passivation after 1 s from the start: memory stays near its empty size.
    let big = opts.big;
    let mut big_rows = Vec::new();
    if big > 0 {
        let cluster = Cluster::builder()
            .nodes(1)
            .config(&config)
            .env("SHARDGATE_STORE", &backend.url("memory-big"))
            .env("SHARDGATE_ACK", "store")
            .env("SHARDGATE_PASSIVATE_AFTER_SECS", "1")
            .start()
            .await?;
        let c = Client::new(&cluster.endpoint);
        let pid = only_node(&cluster)?;
        sessions(&c, WARM, 1, 64).await?;
        gauge_until(&cluster, &http, Duration::from_secs(30), |g| g == 0).await?;
        let empty = rss_bytes(pid)?;
        let peak = Arc::new(AtomicU64::new(empty));
        let peak_gauge = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (peak, peak_gauge, stop) = (peak.clone(), peak_gauge.clone(), stop.clone());
            let (http, admin) = (http.clone(), cluster.nodes[0].1.admin);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    if let Ok(text) = http.get(format!("http://{admin}/metrics")).send().await
                        && let Ok(text) = text.text().await
                        && let Some(g) = text.lines().find_map(|l| {
                            l.strip_prefix(SESSIONS)?
                                .strip_prefix(' ')?
                                .trim()
                                .parse::<u64>()
                                .ok()
                        })
                    {
                        peak_gauge.fetch_max(g, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let started = Instant::now();
        let mut ids = Vec::new();
        let mut readings = Vec::new();
        let step = (big / 10).max(1);
        let mut made = 0;
        while made < big {
            let now = step.min(big - made);
            ids.extend(sessions(&c, now, 1, 64).await?);
            made += now;
            readings.push((made, rss_bytes(pid)?));
        }
        let took = started.elapsed();
        let gauge = gauge_until(&cluster, &http, Duration::from_secs(60), |g| g == 0).await?;
        stop.store(true, Ordering::Relaxed);
        watcher.await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let end = rss_bytes(pid)?;
        let sample: Vec<String> = ids.iter().step_by((big / 100).max(1)).cloned().collect();
        let wrong = check_counters(&c, &sample, 2).await;
        println!(
            "  passivation after 1 s: {big} sessions in {:.1} s ({:.0}/s); most held at once \
             {}; gauge at the end {gauge}; {} sampled, {wrong} wrong",
            took.as_secs_f64(),
            big as f64 / took.as_secs_f64(),
            peak_gauge.load(Ordering::Relaxed),
            sample.len()
        );
        let readings: Vec<String> = readings
            .iter()
            .map(|(k, rss)| format!("{k}: {}", mib(*rss as f64)))
            .collect();
        println!("  RSS as sessions were created: {}", readings.join(", "));
        let peak = peak.load(Ordering::Relaxed);
        big_rows.push(format!(
            "| {big} | {} | {} | {} | {} | {:.0} | {} |",
            peak_gauge.load(Ordering::Relaxed),
            mib(empty as f64),
            mib(peak as f64),
            mib(end as f64),
            (end as f64 - empty as f64) / big as f64,
            wrong
        ));
        cluster.stop().await?;
    }

    println!("\n| sessions | node sessions gauge | RSS before | RSS after | bytes per session |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    if !big_rows.is_empty() {
        println!(
            "\n| sessions created (passivate after 1 s) | most held at once | RSS empty | RSS \
             peak | RSS at the end | bytes per session at the end | sampled counters wrong |"
        );
        println!("|---|---|---|---|---|---|---|");
        for row in big_rows {
            println!("{row}");
        }
    }
    Ok(())
}
