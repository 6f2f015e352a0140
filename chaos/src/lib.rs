//! The chaos harness behind `shardgate chaos`: a seeded scenario of faults ([`scenario`])
//! against a local cluster under `shardgate up` ([`up`]), while long-lived sessions of both
//! eras (session-era sessions, stateless-era clients with their keys) call `counter` without
//! pause ([`workload`]). Every call and fault is recorded ([`history`]);
//! afterwards every session must answer again, and the invariants ([`check`]) are checked on
//! the history. With a PostgreSQL store, the store records who wrote each session under which
//! epoch ([`writers`]), and that record joins the history. The [`report`] (JSON and Markdown)
//! says what was injected, what the clients saw, how long sessions took to recover, how many
//! sessions each change moved against the ideal, and which invariants held, with the first
//! counter-example of any that did not.

#![forbid(unsafe_code)]

pub mod check;
pub mod history;
pub mod listen;
pub mod mcp;
pub mod net;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod services;
pub mod stdio;
pub mod timeline;
pub mod up;
pub mod workload;
pub mod writers;

use anyhow::{Context, bail};
use history::{Call, Fault, History, Moved, kind};
use mcp::Client;
use net::{Block, Net, Side};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use report::Report;
use rng::Rng;
use scenario::{Kinds, Planned, Step};
use shardgate_raft::{MemberState, Membership, Ring};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use up::Up;
use workload::{Pace, Tally, Target, Tool, ms};

/// How long a membership change may take before the run fails.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long each session gets to answer again once the faults are over.
const HEAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress is shown.
const PROGRESS: Duration = Duration::from_secs(5);

/// A reqwest builder with the process-wide TLS provider (ring) installed: reqwest is built
/// without a provider of its own, so that only one crypto library is compiled in.
pub fn http() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// What a run is made of.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: String,
    pub seed: u64,
    pub duration: Duration,
    /// Nodes at the start (and the end: scale steps come back).
    pub nodes: usize,
    /// Gateways (`up --gateways`); with two or more, clients go through `up`'s front and the
    /// scenario kills gateways too.
    pub gateways: usize,
    pub sessions: usize,
    /// Stateless-era clients calling `counter` throughout, each with its key.
    pub stateless: usize,
    /// Sessions (of the session era, the first ones) that also hold their standalone GET
    /// stream, coming back with `Last-Event-ID` whenever it ends, and make calls whose
    /// notifications travel on it.
    pub holders: usize,
    /// Callers per session, each one call after another: with more than one, a session has
    /// calls side by side, and every other caller gives a call up after a while and moves on,
    /// so a frozen owner's late writes meet its successor's.
    pub callers: usize,
    /// `up --timings`.
    pub timings: String,
    /// Where the report, the history and the cluster's data go.
    pub out: PathBuf,
    /// The `shardgate` binary that runs the cluster.
    pub bin: PathBuf,
    /// The session store every node writes through to (`up --store`); by default `up`'s
    /// SQLite file, which every node of this machine shares (one writer at a time).
    pub store: Option<String>,
    /// Runs a throw-away PostgreSQL as the store (instead of `store`), which the scenario
    /// restarts too.
    pub postgres: bool,
    /// Runs a throw-away Redis Cluster (three primaries with a replica each) as the store,
    /// at the `replicated` acknowledgement level, and kills its primaries too.
    pub redis: bool,
    /// The command line that started the run, for the report.
    pub command: String,
}

/// Runs the scenario; the report says whether every invariant held.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    // Dropped last: its rules and cgroups go once the cluster has stopped.
    let mut net = match Net::create() {
        Ok(net) => Some(net),
        Err(e) => {
            println!("chaos: no network faults (partitions, slow links): {e:#}");
            None
        }
    };
    let kinds = Kinds {
        gateways: opts.gateways,
        own_store: opts.postgres || opts.redis,
        network: net.is_some(),
    };
    let steps = scenario::plan(&opts.scenario, opts.seed, opts.duration, kinds)?;
    if (opts.postgres || opts.redis) && opts.store.is_some() {
        bail!("--postgres and --redis run the store themselves: no --store with them");
    }
    if opts.postgres && opts.redis {
        bail!("one store the harness runs at a time: --postgres or --redis");
    }
    if opts.nodes < 2 {
        bail!("a chaos run needs at least 2 nodes");
    }
    if opts.gateways == 0 {
        bail!("a chaos run needs at least 1 gateway");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let data_dir = opts.out.join("cluster");
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut args = vec![
        "--nodes".to_owned(),
        opts.nodes.to_string(),
        "--gateways".to_owned(),
        opts.gateways.to_string(),
        "--timings".to_owned(),
        opts.timings.clone(),
    ];
    if let Some(net) = &net {
        args.extend(["--cgroup".to_owned(), net.dir.display().to_string()]);
    }
    let stdio = match scenario::with_stdio(&opts.scenario) {
        true => {
            let (stdio, config) = stdio::Stdio::prepare(&opts.out)?;
            args.extend(["--config".to_owned(), config.display().to_string()]);
            Some(stdio)
        }
        false => None,
    };
    let mut own = if opts.postgres {
        Some(OwnStore::Postgres(services::Postgres::start().await?))
    } else if opts.redis {
        let redis = services::RedisCluster::start().await?;
        // A primary whose replica has not synced yet cannot be replaced.
        redis.replicas_online(Duration::from_secs(30)).await?;
        Some(OwnStore::Redis(redis))
    } else {
        None
    };
    let store = match &own {
        Some(OwnStore::Postgres(pg)) => Some(pg.url.clone()),
        Some(OwnStore::Redis(redis)) => {
            let seeds: Vec<String> = redis.nodes.iter().map(|a| a.to_string()).collect();
            // Replication is asynchronous: at the `store` level, a write its primary took just
            // before dying may be lost with it. `replicated` waits for the replica.
            args.extend(["--ack".to_owned(), "replicated".to_owned()]);
            Some(format!("redis://{}", seeds.join(",")))
        }
        None => opts.store.clone(),
    };
    if let Some(store) = &store {
        println!("chaos: session store {store}");
        args.extend(["--store".to_owned(), store.clone()]);
    }
    let recorder = writers::Recorder::install(store.as_deref()).await?;
    let up = Up::start(&opts.bin, &args, &data_dir).await?;
    let levers = Levers {
        own: own.as_mut(),
        net: net.as_mut(),
        stdio: stdio.as_ref(),
    };
    let outcome = drive(opts, &steps, &up, levers).await;
    let stopped = up.stop().await;
    let mut history = outcome?;
    // Read once the nodes are gone, so that the record holds every write.
    history.writers = Some(recorder.read().await);
    std::fs::write(opts.out.join("history.json"), serde_json::to_vec(&history)?)?;
    let report = write_report(opts, &history)?;
    stopped.context("stopping the cluster")?;
    Ok(report)
}

async fn drive(
    opts: &Options,
    steps: &[Planned],
    up: &Up,
    mut levers: Levers<'_>,
) -> anyhow::Result<History> {
    let client = Client::new(up.endpoint()?);
    let client = match levers.stdio {
        Some(_) => client.federated(stdio::BUILTIN),
        None => client,
    };
    let admins = &up.summary.admins;
    if admins.is_empty() {
        bail!("up printed no admin URL");
    }
    let mut targets = Vec::with_capacity(opts.sessions + opts.stateless);
    for _ in 0..opts.sessions {
        let sid = client.initialize().await?;
        let first = client.count(&sid, 1).await?;
        if first != 1 {
            bail!("a new session's counter started at {first}");
        }
        targets.push(Target::Session(sid));
    }
    for _ in 0..opts.stateless {
        let (first, key) = client.stateless_count(1, None).await?;
        let key = key.context("a new stateless-era client was issued no key")?;
        if first != 1 {
            bail!("a new stateless-era client's counter started at {first}");
        }
        targets.push(Target::Stateless(key));
    }
    let sessions: Vec<String> = targets.iter().map(Target::name).collect();
    println!(
        "chaos: scenario {} seed {} for {:?}: {} nodes, {} gateways, {} sessions and {} \
         stateless-era clients × {} callers, {} steps",
        opts.scenario,
        opts.seed,
        opts.duration,
        opts.nodes,
        opts.gateways,
        opts.sessions,
        opts.stateless,
        opts.callers.max(1),
        steps.len()
    );

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let callers = opts.callers.max(1);
    let spawn = |session: usize, target: &Target, k: usize, pace: Pace, tool: Tool| {
        let caller = workload::Caller {
            client: client.clone(),
            session,
            target: target.clone(),
            first_id: 1000 + 1_000_000 * k as i64,
            pace,
            tool,
        };
        tokio::spawn(workload::run_session(
            caller,
            t0,
            stop.clone(),
            tally.clone(),
        ))
    };
    let load: Vec<_> = targets
        .iter()
        .enumerate()
        .flat_map(|(i, target)| (0..callers).map(move |k| (i, target, k)))
        .map(|(i, target, k)| {
            let pace = match k % 2 {
                1 => Pace::Impatient,
                _ => Pace::Patient,
            };
            spawn(i, target, k, pace, Tool::Counter)
        })
        .collect();
    // With a stdio upstream, each session also calls it, patiently.
    let echo_targets: Vec<(usize, &Target)> = match levers.stdio {
        Some(_) => targets
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t, Target::Session(_)))
            .collect(),
        None => Vec::new(),
    };
    let echoing: Vec<_> = echo_targets
        .iter()
        .map(|&(i, target)| spawn(i, target, callers, Pace::Patient, Tool::Echo))
        .collect();
    let holders: Vec<(usize, String)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, target)| match target {
            Target::Session(sid) => Some((i, sid.clone())),
            Target::Stateless(_) => None,
        })
        .take(opts.holders)
        .collect();
    let finish = Arc::new(AtomicBool::new(false));
    let opened: Vec<Arc<tokio::sync::Notify>> = holders.iter().map(|_| Arc::default()).collect();
    let holding: Vec<_> = holders
        .iter()
        .zip(&opened)
        .map(|((i, sid), opened)| {
            let (opened, finish) = (opened.clone(), finish.clone());
            tokio::spawn(listen::hold(
                client.clone(),
                *i,
                sid.clone(),
                t0,
                opened,
                finish,
            ))
        })
        .collect();
    let notifying: Vec<_> = holders
        .iter()
        .zip(opened)
        .map(|((i, sid), opened)| {
            let calls =
                listen::call_progress(client.clone(), *i, sid.clone(), t0, opened, stop.clone());
            tokio::spawn(calls)
        })
        .collect();
    let progress = {
        let (tally, stop) = (tally.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(PROGRESS).await;
                println!(
                    "chaos: {:>5} s  {} calls, {} without a value",
                    t0.elapsed().as_secs(),
                    tally.calls.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed)
                );
            }
        })
    };

    let mut faults = Vec::new();
    let mut victims = Rng::new(opts.seed ^ 0x5eed_5eed);
    // The nodes asked for: a node being restarted is missing from the processes for a moment.
    let mut nodes = opts.nodes;
    let mut failed = None;
    for planned in steps {
        tokio::time::sleep_until((t0 + planned.at).into()).await;
        match apply(
            up,
            &sessions,
            planned.step,
            &mut victims,
            t0,
            &mut nodes,
            Levers {
                own: levers.own.as_deref_mut(),
                net: levers.net.as_deref_mut(),
                stdio: levers.stdio,
            },
        )
        .await
        {
            Ok(fault) => {
                println!(
                    "chaos: {:>5} s  {} {}",
                    fault.at_ms / 1000,
                    fault.kind,
                    fault.target
                );
                faults.push(fault);
            }
            Err(e) => {
                failed = Some(e.context(format!("{:?} at {:?}", planned.step, planned.at)));
                break;
            }
        }
    }
    if failed.is_none() {
        tokio::time::sleep_until((t0 + opts.duration).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let mut calls = Vec::new();
    for task in load {
        calls.extend(task.await?);
    }
    let mut upstream_calls = Vec::new();
    for task in echoing {
        upstream_calls.extend(task.await?);
    }
    let mut listened = history::Listened {
        sessions: holders.iter().map(|(i, _)| *i).collect(),
        ..history::Listened::default()
    };
    for task in notifying {
        listened.calls.extend(task.await?);
    }
    if let Some(e) = failed {
        for task in holding {
            task.abort();
        }
        return Err(e);
    }
    // Healing: each session calls until it answers, one call after another.
    for (i, target) in targets.iter().enumerate() {
        calls.extend(heal(&client, i, target, Tool::Counter, t0).await);
    }
    for &(i, target) in &echo_targets {
        upstream_calls.extend(heal(&client, i, target, Tool::Echo, t0).await);
    }
    // The holders catch up with what their sessions stored, then stop.
    finish.store(true, Ordering::Relaxed);
    for task in holding {
        let (heard, refused, resumed) = task.await?;
        listened.heard.extend(heard);
        listened.refused.extend(refused);
        listened.resumed += resumed;
    }
    let epoch_reached = membership(admins).await.ok().map(|m| m.epoch);
    Ok(History {
        sessions,
        calls,
        upstream_calls,
        faults,
        listened,
        writers: None,
        epoch_reached,
    })
}

/// Calls `tool` in the session until it answers, one call after another, for at most
/// [`HEAL_TIMEOUT`]; returns the calls.
async fn heal(c: &Client, session: usize, target: &Target, tool: Tool, t0: Instant) -> Vec<Call> {
    let until = Instant::now() + HEAL_TIMEOUT;
    let mut calls = Vec::new();
    let mut id = 900_000;
    loop {
        let made = workload::call(c, session, target, tool, id, t0, Pace::Healing).await;
        let answered = made.outcome.value().is_some();
        calls.push(made);
        if answered || Instant::now() > until {
            return calls;
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the harness makes faults with besides signals and `up`: the store it runs, the
/// packet filter that cuts links, and the stdio upstream whose processes it kills.
struct Levers<'a> {
    own: Option<&'a mut OwnStore>,
    net: Option<&'a mut Net>,
    stdio: Option<&'a stdio::Stdio>,
}

/// The session store the harness runs itself, which the scenario makes fail too.
pub enum OwnStore {
    Postgres(services::Postgres),
    Redis(services::RedisCluster),
}

/// SIGKILL of a Redis primary picked at random; once its replica has taken over (and no
/// sooner than `down`), the killed server starts again, empty, and joins as a replica. Over
/// when every primary has a replica in sync again. Returns what happened, for the report.
async fn kill_primary(
    redis: &mut services::RedisCluster,
    victims: &mut Rng,
    down: Duration,
) -> anyhow::Result<String> {
    let mut primaries = Vec::new();
    for (i, addr) in redis.nodes.iter().enumerate() {
        if services::redis_role(addr.port()).await? == "master" {
            primaries.push((i, addr.port()));
        }
    }
    let (victim, port) = *primaries
        .get(victims.below(primaries.len() as u64) as usize)
        .context("no Redis primary")?;
    let replica = services::replica_port(port).await?;
    redis.kill(victim)?;
    let killed = Instant::now();
    while !services::redis_role(replica)
        .await
        .is_ok_and(|r| r == "master")
    {
        if killed.elapsed() > CHANGE_TIMEOUT {
            bail!(
                "the replica of a killed Redis primary was not promoted within {CHANGE_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = killed.elapsed();
    tokio::time::sleep_until((killed + down).into()).await;
    redis.start_again(victim).await?;
    redis.replicas_online(CHANGE_TIMEOUT).await?;
    Ok(format!(
        "primary :{port} (its replica :{replica} promoted after {} ms; back as a replica after {} ms)",
        promoted.as_millis(),
        killed.elapsed().as_millis()
    ))
}

/// The timeline's file, next to the report.
const TIMELINE: &str = "timeline.png";

/// Checks the invariants on `history` and writes the report (and its timeline) next to it.
fn write_report(opts: &Options, history: &History) -> anyhow::Result<Report> {
    let verdicts = check::all(history);
    let mut report = Report::new(opts, history, verdicts);
    let drawn = timeline::draw(
        history,
        opts.duration.as_secs_f64(),
        &opts.out.join(TIMELINE),
    );
    report.timeline = match drawn {
        Ok(()) => Some(TIMELINE.to_owned()),
        Err(e) => {
            println!("chaos: no timeline: {e:#}");
            None
        }
    };
    std::fs::write(
        opts.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(opts.out.join("REPORT.md"), report.markdown())?;
    Ok(report)
}

/// Checks and reports again on the history a run left in `opts.out`, without running anything:
/// for a report of a long run made with an older harness.
pub fn report_again(opts: &Options) -> anyhow::Result<Report> {
    let path = opts.out.join("history.json");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let history: History = serde_json::from_slice(&bytes)?;
    write_report(opts, &history)
}

/// Does one step; returns it as recorded.
async fn apply(
    up: &Up,
    sessions: &[String],
    step: Step,
    victims: &mut Rng,
    t0: Instant,
    nodes: &mut usize,
    levers: Levers<'_>,
) -> anyhow::Result<Fault> {
    let Levers { own, net, stdio } = levers;
    let at_ms = ms(t0);
    let admins = &up.summary.admins;
    // A node's process as found once, signalled by its pid: `up` may restart a node between
    // two looks at its processes.
    let pick = |victims: &mut Rng| -> anyhow::Result<(u32, String)> {
        let nodes = up.nodes()?;
        nodes
            .get(victims.below(nodes.len() as u64) as usize)
            .cloned()
            .context("no node is running")
    };
    let fault = |kind: &str, target: String, planned: bool| Fault {
        kind: kind.into(),
        target,
        at_ms,
        until_ms: ms(t0),
        planned,
        moved: None,
    };
    match step {
        Step::Kill => {
            let (pid, id) = pick(victims)?;
            let target = leader_named(up, &id).await;
            let target = match signal(pid, &id, Signal::SIGKILL)? {
                true => target,
                false => format!("{target} (had exited already)"),
            };
            Ok(fault(kind::KILL, target, false))
        }
        Step::Partition { side, lasting } | Step::SlowLink { side, lasting } => {
            let net = net.context("links cannot be cut here")?;
            let (_, id) = pick(victims)?;
            let target = leader_named(up, &id).await;
            let (kind, loss) = match step {
                Step::Partition { .. } => (kind::PARTITION, None),
                _ => (kind::SLOW_LINK, Some(scenario::LOSS)),
            };
            let blocks = cut_off(up, &id, side, own.as_deref(), loss)?;
            let cut = net.cut(&blocks)?;
            tokio::time::sleep(lasting).await;
            let dropped = cut.heal()?;
            let what = match loss {
                None => format!("{target} cut off from {side} for {lasting:?}"),
                Some(p) => format!("{target}'s links to {side} losing {p}% for {lasting:?}"),
            };
            Ok(fault(
                kind,
                format!("{what}: {dropped} packets dropped"),
                false,
            ))
        }
        Step::UpstreamKill => {
            let stdio = stdio.context("this cluster has no stdio upstream")?;
            let target = stdio.kill_one(victims)?;
            Ok(fault(kind::UPSTREAM_KILL, target, false))
        }
        Step::GatewayKill => {
            let (pid, name) = gateway_victim(up, victims).await?;
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
                .with_context(|| format!("SIGKILL to {name}"))?;
            // Over once its sockets are closed: from then on the front refuses to relay to it.
            let deadline = Instant::now() + CHANGE_TIMEOUT;
            while !up::exited(pid) {
                if Instant::now() > deadline {
                    bail!("{name} was still running {CHANGE_TIMEOUT:?} after SIGKILL");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(fault(kind::GATEWAY_KILL, name, false))
        }
        Step::Freeze(how_long) => {
            let (pid, id) = pick(victims)?;
            if !signal(pid, &id, Signal::SIGSTOP)? {
                return Ok(fault(kind::FREEZE, format!("{id} (had exited)"), false));
            }
            tokio::time::sleep(how_long).await;
            let target = match signal(pid, &id, Signal::SIGCONT)? && !up::exited(pid) {
                true => format!("{id} for {how_long:?}"),
                // Only SIGKILL ends a stopped process: the report says so rather than the run
                // ending without a verdict.
                false => format!("{id} for {how_long:?}, killed while frozen (pid {pid})"),
            };
            Ok(fault(kind::FREEZE, target, false))
        }
        Step::StoreRestart(down) => match own {
            Some(OwnStore::Postgres(pg)) => {
                pg.restart(down).await?;
                Ok(fault(
                    kind::STORE_RESTART,
                    format!("postgresql down for {down:?}"),
                    false,
                ))
            }
            Some(OwnStore::Redis(redis)) => {
                let target = kill_primary(redis, victims, down).await?;
                Ok(fault(kind::REDIS_PRIMARY_KILL, target, false))
            }
            None => bail!("a store restart needs the store the harness runs"),
        },
        Step::ScaleUp | Step::ScaleDown => {
            let before = membership(admins).await?;
            let n = *nodes;
            let (wanted, changed) = match step {
                Step::ScaleUp => (n + 1, format!("node-{n}")),
                _ => (n - 1, format!("node-{}", n - 1)),
            };
            if wanted == 0 {
                bail!("cannot scale below one node");
            }
            up.scale(wanted)?;
            *nodes = wanted;
            let deadline = Instant::now() + CHANGE_TIMEOUT;
            let after = loop {
                let view = membership(admins).await.ok();
                let running = up.node_ids()?.len();
                if let Some(view) = view {
                    let state = view
                        .members
                        .iter()
                        .find(|m| m.id.0 == changed)
                        .map(|m| m.state);
                    let done = match step {
                        Step::ScaleUp => state == Some(MemberState::Active),
                        _ => state.is_none(),
                    };
                    if done && running == wanted {
                        break view;
                    }
                }
                if Instant::now() > deadline {
                    bail!("scaling to {wanted} nodes took over {CHANGE_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let moved = Some(moved(&before, &after, sessions, step, n));
            let kind = match step {
                Step::ScaleUp => kind::SCALE_UP,
                _ => kind::SCALE_DOWN,
            };
            let mut f = fault(kind, format!("{n} → {wanted} ({changed})"), true);
            f.moved = moved;
            Ok(f)
        }
    }
}

/// Sends `sig` to node `id`'s process; false when that process is gone.
fn signal(pid: u32, id: &str, sig: Signal) -> anyhow::Result<bool> {
    match kill(Pid::from_raw(pid as i32), sig) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{sig} to {id} (pid {pid})")),
    }
}

/// A node's id, with " (leader)" when it leads the Raft group.
async fn leader_named(up: &Up, id: &str) -> String {
    match up.leader().await.as_deref() == Some(id) {
        true => format!("{id} (leader)"),
        false => id.to_owned(),
    }
}

/// What to drop to cut node `id` off from `side` (`loss` percent of it, or all): its session
/// and internal listeners are what the others reach it on.
fn cut_off(
    up: &Up,
    id: &str,
    side: Side,
    own: Option<&OwnStore>,
    loss: Option<u8>,
) -> anyhow::Result<Vec<Block>> {
    let ports = |node: &str| -> anyhow::Result<Vec<u16>> {
        let file = up.data_dir.join(format!("{node}.ready"));
        let at: shardgate_statefulset::ready::Node = shardgate_statefulset::ready::read(&file)
            .with_context(|| format!("no ready file for {node}"))?;
        Ok(vec![at.session.port(), at.internal.port()])
    };
    let block = |from: &str, ports: Vec<u16>| Block {
        from: from.to_owned(),
        ports,
        loss,
    };
    let mine = ports(id)?;
    Ok(match side {
        Side::Peers => {
            let peers: Vec<String> = up.node_ids()?.into_iter().filter(|n| n != id).collect();
            let mut theirs = Vec::new();
            let mut blocks = Vec::new();
            for peer in &peers {
                theirs.extend(ports(peer)?);
                blocks.push(block(peer, mine.clone()));
            }
            blocks.push(block(id, theirs));
            blocks
        }
        Side::Gateways => up
            .gateways()?
            .iter()
            .map(|(_, name)| block(name, mine.clone()))
            .collect(),
        Side::Store => {
            let store = match own.context("the store is not the harness's: no ports to cut")? {
                OwnStore::Postgres(pg) => vec![pg.port],
                OwnStore::Redis(redis) => redis.nodes.iter().map(|a| a.port()).collect(),
            };
            vec![block(id, store)]
        }
    })
}

/// A gateway kill's victim, picked once every gateway runs (one restarted after the last kill
/// may still be coming back), so that one is always left: (pid, name).
async fn gateway_victim(up: &Up, victims: &mut Rng) -> anyhow::Result<(u32, String)> {
    let wanted = up.summary.gateways.len();
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let running = loop {
        let running = up.gateways()?;
        if running.len() >= wanted.max(2) {
            break running;
        }
        if Instant::now() > deadline {
            bail!("{wanted} gateways were not all running within {CHANGE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    running
        .get(victims.below(running.len() as u64) as usize)
        .cloned()
        .context("no gateway is running")
}

/// The view of the membership of the first gateway that answers (one may have been killed).
async fn membership(admins: &[String]) -> anyhow::Result<Membership> {
    let http = http().timeout(Duration::from_secs(3)).build()?;
    let mut last = None;
    for admin in admins {
        let answer = async {
            let resp = http.get(format!("{admin}/membership")).send().await?;
            anyhow::Ok(resp.error_for_status()?.json::<Membership>().await?)
        };
        match answer.await {
            Ok(view) => return Ok(view),
            Err(e) => last = Some(e.context(format!("gateway admin {admin}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no gateway admin URL")))
}

/// Sessions whose owner changed between two views, and the share a perfect ring would move.
fn moved(
    before: &Membership,
    after: &Membership,
    sessions: &[String],
    step: Step,
    n: usize,
) -> Moved {
    let (a, b) = (Ring::new(before.clone()), Ring::new(after.clone()));
    let owner = |ring: &Ring, sid: &String| ring.owner(sid.as_bytes()).map(|m| m.id.0.clone());
    let moved = sessions
        .iter()
        .filter(|sid| owner(&a, sid) != owner(&b, sid))
        .count();
    let ideal = match step {
        Step::ScaleUp => 1.0 / (n + 1) as f64,
        _ => 1.0 / n as f64,
    };
    Moved {
        sessions: moved,
        of: sessions.len(),
        ideal,
    }
}
