//! The controller behind `shardgate up`: a local StatefulSet on one machine — nodes `node-0..node-N-1` and M gateways
//! as child processes of this one, started in order (node-0 first, which starts the Raft
//! cluster; the others join it; then the gateways), restarted with the same identity, data
//! directory and ports when one dies, and stopped together on Ctrl-C. With more than one
//! gateway, clients reach them through a [`Front`] on the published port, which serves each
//! gateway once it is ready and skips it while it is dead or restarting.
//!
//! Every process binds its own ports (port 0 unless told otherwise) and reports them in a ready
//! file, so no port is picked here and bound there. The cluster runs with throw-away
//! credentials: a development CA whose certificates every hop presents (mTLS), and a cluster
//! secret from which the `requestState` key is derived, all kept as files in the data
//! directory and passed by path, never on the command line. `shardgate status` and
//! `shardgate drain` find them through [`crate::local`]. Every node writes its sessions through
//! to one store ([`crate::store`]; by default a SQLite file in the data directory), so a node
//! that dies or leaves has its sessions taken over by their new owners. `shardgate scale`
//! changes the number of nodes while it runs ([`scale_step`]).

use crate::front::{self, Front};
use crate::store::StoreOptions;
use crate::{EXIT_WITH_PARENT, LOG_LEVEL, Timings, local, ready};
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardgate_protocol::cluster_client::ClusterClient;
use shardgate_raft::MemberState;
use shardgate_trust::Secret;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long a started process gets to bind its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster gets to list every node as an active member.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopped processes get to drain before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node removed by a scale-down gets to drain and leave before it is killed: its
/// own grace for calls in flight, then leaving the cluster.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process must run before its next death restarts the backoff from the shortest.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Shortest pause before restarting a process that died.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);

/// The variables by which `shardgate gateway` takes a token key. Gateways inherit `up`'s
/// environment: with one of these set (and `SHARDGATE_JWT_ISSUER`, `SHARDGATE_RESOURCE`),
/// they verify bearer tokens; without, a local cluster runs with `--auth-off`.
const AUTH_KEY_ENV: [&str; 4] = [
    "SHARDGATE_JWKS_URL",
    "SHARDGATE_JWKS_FILE",
    "SHARDGATE_JWT_SECRET_FILE",
    "JWT_SECRET",
];

fn auth_configured() -> bool {
    AUTH_KEY_ENV
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// What `shardgate up` takes on its command line.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Number of nodes (`node-0` … `node-N-1`).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Number of gateways. With more than one, a round-robin TCP front listens on `--port`
    /// and relays each connection to a live gateway, and the gateways take free ports.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Address every process binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port of the /mcp endpoint clients use (the gateway's, or the front's before several);
    /// 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Node configuration file (upstreams, limits) for every node; default: builtin upstream.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the nodes keep their Raft state (`<dir>/node-N`) and the cluster its credentials
    /// (`<dir>/credentials`); kept across runs. Default: a temporary directory, removed when
    /// the cluster stops.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Raft voters (1, 3 or 5); the other nodes are learners.
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// Consensus timings for every node; `relaxed` suits a starved machine (CI).
    #[arg(long, value_enum, default_value = "production")]
    pub timings: Timings,
    #[command(flatten)]
    pub store: StoreOptions,
    /// A cgroup v2 directory: every process runs in its own cgroup under it (`DIR/node-N`,
    /// `DIR/gateway-N`) from its first instruction, as each pod has its own network identity,
    /// so that packet filter rules can tell their traffic apart (the chaos harness cuts links
    /// this way).
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Serve clients HTTPS and HTTP/3: a development CA of its own (`<data dir>/edge/ca.pem`,
    /// for clients to trust) signs the gateways' certificate for `localhost` and the bind
    /// address.
    #[arg(long)]
    pub tls: bool,
}

/// What every process of the cluster is started with.
struct Plan {
    exe: PathBuf,
    data_dir: PathBuf,
    credentials: Vec<String>,
    voters: usize,
    timings: Timings,
    config: Option<PathBuf>,
    ip: IpAddr,
    /// The store configuration, in the environment of every node (never in its argv).
    node_env: Vec<(&'static str, String)>,
    /// `--cgroup`.
    cgroup: Option<PathBuf>,
    /// `--tls`: the gateways' certificate, apart from the cluster's own.
    edge: Option<shardgate_trust::TlsFiles>,
}

#[derive(Clone, Copy)]
enum Bound {
    Node(ready::Node),
    Gateway(ready::Gateway),
}

/// One process of the local StatefulSet, with what it takes to start it again.
struct Replica {
    name: String,
    /// Its place among the replicas of its kind: the N of `node-N`, `gateway-N`.
    ordinal: usize,
    ready_file: PathBuf,
    bound: Bound,
    child: Child,
    restarts: u32,
    /// When its current process started.
    started: Instant,
}

impl Plan {
    fn node_args(&self, i: usize, at: Option<ready::Node>, seeds: &[String]) -> Vec<String> {
        let id = format!("node-{i}");
        let port = |a: Option<SocketAddr>| SocketAddr::new(self.ip, a.map_or(0, |a| a.port()));
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.clone(),
            "--listen".into(),
            port(at.map(|a| a.session)).to_string(),
            "--internal-listen".into(),
            port(at.map(|a| a.internal)).to_string(),
            "--admin-listen".into(),
            port(at.map(|a| a.admin)).to_string(),
            "--data-dir".into(),
            self.data_dir.join(&id).display().to_string(),
            "--voters".into(),
            self.voters.to_string(),
            "--timings".into(),
            format!("{:?}", self.timings).to_lowercase(),
            "--ready-file".into(),
            self.ready_file(&id).display().to_string(),
        ];
        if !seeds.is_empty() {
            args.extend(["--seeds".into(), seeds.join(",")]);
        }
        if let Some(config) = &self.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        args.extend(self.credentials.iter().cloned());
        args
    }

    fn gateway_args(
        &self,
        name: &str,
        at: ready::Gateway,
        seeds: &[String],
        cluster_id: Option<&str>,
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--listen".into(),
            at.mcp.to_string(),
            "--admin-listen".into(),
            at.admin.to_string(),
            "--seeds".into(),
            seeds.join(","),
            "--ready-file".into(),
            self.ready_file(name).display().to_string(),
        ];
        if let Some(id) = cluster_id {
            args.extend(["--cluster-id".into(), id.to_owned()]);
        }
        if !auth_configured() {
            args.push("--auth-off".into());
        }
        if let Some(edge) = &self.edge {
            args.extend([
                "--tls-cert".into(),
                edge.cert.display().to_string(),
                "--tls-key".into(),
                edge.key.display().to_string(),
            ]);
        }
        args.extend(self.credentials.iter().cloned());
        args
    }

    fn ready_file(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{name}.ready"))
    }

    /// The environment of a process started with `args`: the store's for nodes.
    fn env_for(&self, args: &[String]) -> &[(&'static str, String)] {
        match args.first().map(String::as_str) {
            Some("node") => &self.node_env,
            _ => &[],
        }
    }

    /// Starts the process `name` with `args`; under `--cgroup`, in its own cgroup, which a
    /// shell joins before it becomes the process (same pid), so that every socket the
    /// process ever opens belongs to that cgroup.
    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let mut cmd = match &self.cgroup {
            Some(root) => {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                    .arg(&dir)
                    .arg(&self.exe);
                cmd
            }
            None => Command::new(&self.exe),
        };
        cmd.args(args)
            .envs(self.env_for(args).iter().map(|(k, v)| (k, v)))
            .env(EXIT_WITH_PARENT, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if std::env::var_os(LOG_LEVEL).is_none() {
            cmd.env(LOG_LEVEL, "warn,openraft=off");
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))
    }

    /// Starts a process and waits for its ready file.
    async fn start(
        &self,
        name: String,
        ordinal: usize,
        args: Vec<String>,
        parse: Parse,
    ) -> anyhow::Result<Replica> {
        let ready_file = self.ready_file(&name);
        let _ = std::fs::remove_file(&ready_file);
        let mut child = self.spawn(&name, &args)?;
        let bound = wait_until_bound(&ready_file, &mut child, &name, parse).await?;
        Ok(Replica {
            name,
            ordinal,
            ready_file,
            bound,
            child,
            restarts: 0,
            started: Instant::now(),
        })
    }
}

/// Reads a replica's ready file.
type Parse = fn(&Path) -> Option<Bound>;

fn parse_node(path: &Path) -> Option<Bound> {
    ready::read(path).map(Bound::Node)
}

fn parse_gateway(path: &Path) -> Option<Bound> {
    ready::read(path).map(Bound::Gateway)
}

async fn wait_until_bound(
    ready_file: &Path,
    child: &mut Child,
    name: &str,
    parse: Parse,
) -> anyhow::Result<Bound> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(bound) = parse(ready_file) {
            return Ok(bound);
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited while starting: {status}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not bind its ports within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the gateway `replica` knows a ring ([`front::ready`]), so that the cluster is
/// announced ready only once a client's first request can be routed.
async fn wait_until_ready(replica: &mut Replica) -> anyhow::Result<()> {
    let Bound::Gateway(at) = replica.bound else {
        return Ok(());
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while !front::ready(at.admin).await {
        if let Some(status) = replica.child.try_wait()? {
            bail!("{} exited while starting: {status}", replica.name);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not know a ring within {START_TIMEOUT:?}",
                replica.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The development CA and certificates (new each run), and the cluster secret (kept with a
/// kept data dir, so `requestState` handed out before a restart still opens).
fn credentials(data_dir: &Path, ip: IpAddr) -> anyhow::Result<(Vec<String>, local::Entry)> {
    let dir = data_dir.join("credentials");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let hosts = vec![ip.to_string(), "localhost".to_owned()];
    let files = shardgate_trust::devca::generate(&dir, &hosts)?;
    let secret_file = dir.join("cluster-secret");
    if Secret::from_file(&secret_file).is_err() {
        Secret::write_new(&secret_file)?;
    }
    let flags = vec![
        "--cluster-ca".into(),
        files.ca.display().to_string(),
        "--cluster-cert".into(),
        files.cert.display().to_string(),
        "--cluster-key".into(),
        files.key.display().to_string(),
        "--cluster-secret-file".into(),
        secret_file.display().to_string(),
    ];
    let entry = local::Entry {
        pid: std::process::id(),
        seeds: Vec::new(),
        cluster_ca: files.ca,
        cluster_cert: files.cert,
        cluster_key: files.key,
        cluster_secret_file: secret_file,
        data_dir: data_dir.to_owned(),
    };
    Ok((flags, entry))
}

/// Runs the local cluster until `shutdown` is cancelled (Ctrl-C), then stops every process.
pub async fn run(args: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.nodes == 0 || args.gateways == 0 {
        bail!("a cluster needs at least one node and one gateway");
    }
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("shardgate-up-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (credential_flags, mut entry) = credentials(&data_dir, args.bind)?;
    let plan = Plan {
        exe: std::env::current_exe().context("cannot find the shardgate binary")?,
        data_dir: data_dir.clone(),
        credentials: credential_flags,
        voters: args.voters,
        timings: args.timings,
        config: args.config.clone(),
        ip: args.bind,
        node_env: args.store.node_env(&data_dir),
        cgroup: args.cgroup.clone(),
        edge: match args.tls {
            true => {
                let hosts = [args.bind.to_string(), "localhost".to_owned()];
                Some(shardgate_trust::devca::generate(
                    &data_dir.join("edge"),
                    &hosts,
                )?)
            }
            false => None,
        },
    };
    let result = run_cluster(&args, &plan, &mut entry, shutdown).await;
    entry.remove();
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn run_cluster(
    args: &Options,
    plan: &Plan,
    entry: &mut local::Entry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut replicas: Vec<Replica> = Vec::new();
    // `--nodes` is the number wanted until `shardgate scale` asks for another.
    let _ = std::fs::remove_file(local::scale_file(&plan.data_dir));
    // One gateway is the endpoint itself: a front before it would add a hop and have nowhere
    // else to send a connection when it dies. Bound first, so a port in use fails the start
    // before any process runs.
    let published = SocketAddr::new(args.bind, args.port);
    let front = match args.gateways {
        1 => None,
        n => Some(Front::start(published, n, shutdown.clone()).await?),
    };
    // Ordered start, as a StatefulSet does: node-0 first, each one up before the next, each
    // joining through the ones before it. node-0 has no seeds, so it founds the cluster at once.
    for i in 0..args.nodes {
        let seeds = internal_addrs(&replicas);
        let args = plan.node_args(i, None, &seeds);
        replicas.push(plan.start(format!("node-{i}"), i, args, parse_node).await?);
    }
    let seeds = internal_addrs(&replicas);
    entry.seeds = seeds.clone();
    entry.record()?;
    let client = ClusterClient::new(&entry.mtls()?, START_TIMEOUT).map_err(anyhow::Error::msg)?;
    let cluster_id = wait_for_members(&client, &seeds, args.nodes).await?;
    for i in 0..args.gateways {
        // Behind a front, clients never dial a gateway, so any free port will do.
        let at = ready::Gateway {
            mcp: match front {
                Some(_) => SocketAddr::new(args.bind, 0),
                None => published,
            },
            admin: SocketAddr::new(args.bind, 0),
        };
        let name = format!("gateway-{i}");
        let gw_args = plan.gateway_args(&name, at, &seeds, cluster_id.as_deref());
        let mut gateway = plan.start(name, i, gw_args, parse_gateway).await?;
        wait_until_ready(&mut gateway).await?;
        if let (Some(front), Bound::Gateway(g)) = (&front, gateway.bound) {
            front.serve(i, g.mcp);
        }
        replicas.push(gateway);
    }
    let endpoint = front.as_ref().map(|f| f.addr);
    print_summary(
        &replicas,
        endpoint,
        &plan.data_dir,
        &args.store,
        plan.edge.as_ref(),
    )
    .await?;

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut changed = false;
        for i in 0..replicas.len() {
            changed |= restart_if_dead(
                plan,
                &mut replicas,
                i,
                cluster_id.as_deref(),
                front.as_ref(),
            )
            .await;
        }
        if let Some(front) = &front {
            serve_ready(front, &replicas).await;
        }
        match scale_step(plan, &mut replicas, &client).await {
            Ok(stepped) => changed |= stepped,
            Err(e) => tracing::error!(error = %e, "scaling failed"),
        }
        if changed {
            entry.seeds = internal_addrs(&replicas);
            if let Err(e) = entry.record() {
                tracing::warn!(error = %e, "could not record the local cluster");
            }
        }
    }
    stop_all(replicas).await;
    Ok(())
}

fn node_count(replicas: &[Replica]) -> usize {
    replicas
        .iter()
        .filter(|r| matches!(r.bound, Bound::Node(_)))
        .count()
}

/// One step towards the number of nodes `shardgate scale` asked for, as the Kubernetes
/// controller takes them: the next ordinal added once every node before it is an active member
/// (OrderedReady), or the highest ordinal drained and removed, one at a time. A removed node
/// gets SIGTERM, as a pod does: it drains, hands its sessions off and leaves the cluster; its
/// data directory goes with it, so that the ordinal starts afresh if it is added again. True
/// when the set of nodes changed.
async fn scale_step(
    plan: &Plan,
    replicas: &mut Vec<Replica>,
    client: &ClusterClient,
) -> anyhow::Result<bool> {
    let Some(wanted) = ready::read::<local::Scale>(&local::scale_file(&plan.data_dir)) else {
        return Ok(false);
    };
    let n = node_count(replicas);
    if wanted.nodes == 0 || wanted.nodes == n {
        return Ok(false);
    }
    let seeds = internal_addrs(replicas);
    if wanted.nodes > n {
        let name = format!("node-{n}");
        let node = plan
            .start(name.clone(), n, plan.node_args(n, None, &seeds), parse_node)
            .await?;
        // Nodes come before the gateways, in ordinal order.
        replicas.insert(n, node);
        wait_for_members(client, &seeds, n + 1).await?;
        println!("shardgate: {name} added ({} nodes)", n + 1);
        return Ok(true);
    }
    let mut leaving = replicas.remove(n - 1);
    if let Some(pid) = leaving.child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(LEAVE_TIMEOUT, leaving.child.wait())
        .await
        .is_err()
    {
        tracing::warn!(replica = %leaving.name, "did not leave in time; killing");
        let _ = leaving.child.kill().await;
    }
    let _ = std::fs::remove_file(&leaving.ready_file);
    let dir = plan.data_dir.join(&leaving.name);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the data directory");
    }
    println!("shardgate: {} removed ({} nodes)", leaving.name, n - 1);
    Ok(true)
}

fn internal_addrs(replicas: &[Replica]) -> Vec<String> {
    replicas
        .iter()
        .filter_map(|r| match r.bound {
            Bound::Node(n) => Some(n.internal.to_string()),
            Bound::Gateway(_) => None,
        })
        .collect()
}

/// Waits until the cluster lists `n` active members; returns the cluster's id.
async fn wait_for_members(
    client: &ClusterClient,
    seeds: &[String],
    n: usize,
) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        if let Ok(status) = crate::status(client, seeds).await {
            let active = status
                .membership
                .members
                .iter()
                .filter(|m| m.state == MemberState::Active)
                .count();
            if active >= n {
                return Ok(status.membership.cluster);
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not reach {n} active members within {FORM_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts each gateway that is ready and not yet served behind the front, as a Service adds a
/// pod once its readiness probe passes.
async fn serve_ready(front: &Front, replicas: &[Replica]) {
    for r in replicas {
        if let Bound::Gateway(at) = r.bound
            && front.serving(r.ordinal) != Some(at.mcp)
            && front::ready(at.admin).await
        {
            front.serve(r.ordinal, at.mcp);
            tracing::info!(replica = %r.name, at = %at.mcp, "served by the front again");
        }
    }
}

/// Restarts replica `i` if it exited, under the same identity and, if they are still free, the
/// same ports (else new ones: the node rejoins with its new address, the front learns the
/// gateway's). A dead gateway leaves the front at once, and comes back to it only once it is
/// ready ([`serve_ready`]). True if it restarted.
async fn restart_if_dead(
    plan: &Plan,
    replicas: &mut [Replica],
    i: usize,
    cluster_id: Option<&str>,
    front: Option<&Front>,
) -> bool {
    let Ok(Some(status)) = replicas[i].child.try_wait() else {
        return false;
    };
    if let (Some(front), Bound::Gateway(_)) = (front, replicas[i].bound) {
        front.withdraw(replicas[i].ordinal);
    }
    let others: Vec<String> = replicas
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, r)| match r.bound {
            Bound::Node(n) => Some(n.internal.to_string()),
            Bound::Gateway(_) => None,
        })
        .collect();
    let r = &mut replicas[i];
    // As Kubernetes forgets a crash loop once a container has run for a while, a process that
    // ran for a while before it died starts its backoff afresh.
    if r.started.elapsed() > STABLE_RUN {
        r.restarts = 0;
    }
    r.restarts += 1;
    tracing::warn!(replica = %r.name, %status, restarts = r.restarts, "process exited; restarting");
    tokio::time::sleep(RESTART_BACKOFF * r.restarts.min(10)).await;
    // The first attempt after a death takes the same ports, as a pod keeps its name; if one
    // was taken meanwhile that start fails, and the next attempt takes new ones.
    let same_ports = r.restarts % 2 == 1;
    let (args, parse): (Vec<String>, Parse) = match r.bound {
        Bound::Node(at) => {
            let at = same_ports.then_some(at);
            (plan.node_args(r.ordinal, at, &others), parse_node)
        }
        Bound::Gateway(at) => {
            let any = SocketAddr::new(plan.ip, 0);
            let at = match (same_ports, front) {
                (true, _) => at,
                // Clients dial this gateway itself: it must come back where it was.
                (false, None) => ready::Gateway {
                    mcp: at.mcp,
                    admin: any,
                },
                (false, Some(_)) => ready::Gateway {
                    mcp: any,
                    admin: any,
                },
            };
            (
                plan.gateway_args(&r.name, at, &others, cluster_id),
                parse_gateway,
            )
        }
    };
    let _ = std::fs::remove_file(&r.ready_file);
    match plan.spawn(&r.name, &args) {
        Ok(mut child) => {
            match wait_until_bound(&r.ready_file, &mut child, &r.name, parse).await {
                Ok(bound) => r.bound = bound,
                Err(e) => tracing::error!(replica = %r.name, error = %e, "restart failed"),
            }
            r.child = child;
            r.started = Instant::now();
            true
        }
        Err(e) => {
            tracing::error!(replica = %r.name, error = %e, "restart failed");
            false
        }
    }
}

/// SIGINT to everyone (gateways first, so no new traffic reaches stopping nodes): stop, and
/// stay members, as the whole cluster stops; then wait, and kill whoever is still running
/// after the grace period.
async fn stop_all(mut replicas: Vec<Replica>) {
    replicas.reverse();
    for r in &replicas {
        if let Some(pid) = r.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for r in &mut replicas {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, r.child.wait()).await.is_err() {
            tracing::warn!(replica = %r.name, "did not stop in time; killing");
            let _ = r.child.kill().await;
        }
    }
    println!("shardgate: stopped");
}

/// What the user (and the test harness, which reads these lines) needs: the one endpoint
/// first (the front's, else the only gateway's), then each gateway's own and its admin URL.
async fn print_summary(
    replicas: &[Replica],
    front: Option<SocketAddr>,
    data_dir: &Path,
    store: &StoreOptions,
    edge: Option<&shardgate_trust::TlsFiles>,
) -> anyhow::Result<()> {
    let scheme = if edge.is_some() { "https" } else { "http" };
    let (nodes, gateways): (Vec<_>, Vec<_>) = replicas
        .iter()
        .partition(|r| matches!(r.bound, Bound::Node(_)));
    let mut out = format!(
        "shardgate: {} nodes, {} gateways\n",
        nodes.len(),
        gateways.len()
    );
    let first = gateways.iter().find_map(|r| match r.bound {
        Bound::Gateway(g) => Some(g.mcp),
        Bound::Node(_) => None,
    });
    if let Some(endpoint) = front.or(first) {
        out.push_str(&format!("endpoint {scheme}://{endpoint}/mcp\n"));
    }
    for r in &gateways {
        if let Bound::Gateway(g) = r.bound {
            out.push_str(&format!("gateway {} {scheme}://{}/mcp\n", r.name, g.mcp));
            out.push_str(&format!("admin http://{}/metrics\n", g.admin));
        }
    }
    for r in &nodes {
        if let Bound::Node(n) = r.bound {
            out.push_str(&format!(
                "node {} session={} internal={} admin={}\n",
                r.name, n.session, n.internal, n.admin
            ));
        }
    }
    out.push_str(&format!(
        "credentials {}\n",
        data_dir.join("credentials").display()
    ));
    if let Some(edge) = edge {
        out.push_str(&format!(
            "edge-ca {} (clients trust it; HTTPS, and HTTP/3 on the same UDP port)\n",
            edge.ca.display()
        ));
    }
    out.push_str(&store.summary(data_dir));
    out.push_str("ready (Ctrl-C stops the cluster; `shardgate status` shows it)\n");
    let mut stdout = tokio::io::stdout();
    stdout.write_all(out.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}
