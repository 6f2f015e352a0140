//! `shardgate up`: a local StatefulSet on one machine — nodes `node-0..node-N-1` and M gateways
//! as child processes of this one, started in order (node-0 first, which starts the Raft
//! cluster; the others join it; then the gateways), restarted with the same identity and data
//! directory when one dies, and stopped together on Ctrl-C.

use crate::commands::{EXIT_WITH_PARENT, cluster};
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardgate_raft::MemberState;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a started process gets to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long stopped processes get to drain before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest pause before restarting a process that died.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of nodes (`node-0` … `node-N-1`).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Number of gateways; gateway i listens on `--port` + i.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Address every process binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port of the first gateway's /mcp endpoint; 0 picks free ports.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Node configuration file (upstreams, limits) for every node; default: builtin upstream.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the nodes keep their Raft state (`<dir>/node-N`); kept across runs. Default: a
    /// temporary directory, removed when the cluster stops.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Raft voters (1, 3 or 5); the other nodes are learners.
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
}

/// One process of the local StatefulSet, with what it takes to start it again.
struct Replica {
    name: String,
    args: Vec<String>,
    /// The port that answers once the process is up.
    ready_port: SocketAddr,
    child: Child,
    restarts: u32,
}

fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn spawn(exe: &PathBuf, args: &[String]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(EXIT_WITH_PARENT, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if std::env::var_os(crate::logging::LOG_LEVEL).is_none() {
        cmd.env(crate::logging::LOG_LEVEL, "warn,openraft=off");
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

async fn wait_for_port(addr: SocketAddr, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited while starting: {status}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not open {addr} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(
    exe: &PathBuf,
    name: String,
    args: Vec<String>,
    ready_port: SocketAddr,
) -> anyhow::Result<Replica> {
    let mut child = spawn(exe, &args)?;
    wait_for_port(ready_port, &mut child, &name).await?;
    Ok(Replica {
        name,
        args,
        ready_port,
        child,
        restarts: 0,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.nodes == 0 || args.gateways == 0 {
        bail!("a cluster needs at least one node and one gateway");
    }
    if let Some(config) = &args.config {
        // Fail here, once, rather than in every node.
        shardgate_node::config::NodeFile::load(config)?;
    }
    let shutdown = super::shutdown_on_signal();
    let exe = std::env::current_exe().context("cannot find the shardgate binary")?;
    let ip = args.bind;
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("shardgate-up-{}", std::process::id())),
            true,
        ),
    };
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        nodes.push((format!("node-{i}"), SocketAddr::new(ip, free_port(ip)?)));
    }
    let seeds = nodes
        .iter()
        .map(|(_, addr)| addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).context("operating system random generator")?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();

    let mut replicas = Vec::new();
    // Ordered start, as a StatefulSet does: node-0 first, each one up before the next.
    for (id, addr) in &nodes {
        let mut node_args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.clone(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            data_dir.join(id).display().to_string(),
            "--seeds".into(),
            seeds.clone(),
            "--voters".into(),
            args.voters.to_string(),
            "--state-secret".into(),
            secret.clone(),
        ];
        if let Some(config) = &args.config {
            node_args.extend(["--config".into(), config.display().to_string()]);
        }
        replicas.push(start(&exe, id.clone(), node_args, *addr).await?);
    }
    let node_addrs: Vec<String> = nodes.iter().map(|(_, a)| a.to_string()).collect();
    wait_for_members(&node_addrs, args.nodes).await?;
    let mut endpoints = Vec::new();
    for i in 0..args.gateways {
        let port = if args.port == 0 {
            free_port(ip)?
        } else {
            args.port
                .checked_add(i as u16)
                .context("gateway port out of range")?
        };
        let listen = SocketAddr::new(ip, port);
        let admin = SocketAddr::new(ip, free_port(ip)?);
        let gw_args = vec![
            "gateway".into(),
            "--listen".into(),
            listen.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--seeds".into(),
            seeds.clone(),
        ];
        replicas.push(start(&exe, format!("gateway-{i}"), gw_args, listen).await?);
        endpoints.push((listen, admin));
    }
    print_summary(&nodes, &endpoints).await?;

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for r in &mut replicas {
            restart_if_dead(&exe, r).await;
        }
    }
    stop_all(replicas).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Waits until the cluster lists `n` active members.
async fn wait_for_members(seeds: &[String], n: usize) -> anyhow::Result<()> {
    let client = cluster::client()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(status) = cluster::status(&client, seeds).await {
            let active = status
                .membership
                .members
                .iter()
                .filter(|m| m.state == MemberState::Active)
                .count();
            if active >= n {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not reach {n} active members within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts a replica that exited, under the same identity and ports.
async fn restart_if_dead(exe: &PathBuf, r: &mut Replica) {
    let Ok(Some(status)) = r.child.try_wait() else {
        return;
    };
    r.restarts += 1;
    tracing::warn!(replica = %r.name, %status, restarts = r.restarts, "process exited; restarting");
    tokio::time::sleep(RESTART_BACKOFF * r.restarts.min(10)).await;
    match spawn(exe, &r.args) {
        Ok(mut child) => {
            if let Err(e) = wait_for_port(r.ready_port, &mut child, &r.name).await {
                tracing::error!(replica = %r.name, error = %e, "restart failed");
            }
            r.child = child;
        }
        Err(e) => tracing::error!(replica = %r.name, error = %e, "restart failed"),
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

/// What the user (and the test harness, which reads these lines) needs: the endpoint first.
async fn print_summary(
    nodes: &[(String, SocketAddr)],
    endpoints: &[(SocketAddr, SocketAddr)],
) -> anyhow::Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "shardgate: {} nodes, {} gateways\n",
        nodes.len(),
        endpoints.len()
    ));
    for (listen, admin) in endpoints {
        out.push_str(&format!("endpoint http://{listen}/mcp\n"));
        out.push_str(&format!("admin http://{admin}/metrics\n"));
    }
    for (id, addr) in nodes {
        out.push_str(&format!("node {id} {addr}\n"));
    }
    out.push_str("ready (Ctrl-C stops the cluster)\n");
    let mut stdout = tokio::io::stdout();
    stdout.write_all(out.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}
