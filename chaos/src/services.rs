//! Throw-away backing services for tests and chaos runs: a Redis Cluster of six `redis-server` processes and a
//! PostgreSQL instance, each on free ports in a directory of its own, from the installed
//! binaries (`scripts/install-test-peers` installs the Debian packages when missing). Dropping
//! one stops exactly the processes it started, by pid, and removes its directory: no test
//! depends on a Redis or PostgreSQL that a machine happens to run.
//!
//! Ports are picked free and may be taken by someone else before the server binds them (tests
//! run in parallel): a server that dies of that is started again on another port.

use anyhow::{Context, bail};
use nix::unistd::{User, geteuid};
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// How often a server may lose its port to someone else before the start gives up.
const PORT_ATTEMPTS: usize = 5;

/// Six `redis-server` processes in cluster mode: three primaries, three replicas.
pub struct RedisCluster {
    /// Every node's address, in the order `redis-cli --cluster create` got them.
    pub nodes: Vec<SocketAddr>,
    servers: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts six nodes, joins them into one cluster and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let server = need("redis-server", "redis-server")?;
        let cli = need("redis-cli", "redis-tools")?;
        // Built before the first process starts, so that a failed start stops what it started.
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            servers: Vec::new(),
            dir: scratch_dir("redis-cluster")?,
        };
        for _ in 0..6 {
            cluster.start_node(&server, &cli).await?;
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(|a| a.to_string()).collect();
        run(
            Command::new(&cli)
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"]),
            "redis-cli --cluster create",
        )
        .await?;
        for addr in &cluster.nodes {
            let port = addr.port().to_string();
            wait_for(Duration::from_secs(20), || async {
                run(
                    Command::new(&cli).args(["-p", &port, "cluster", "info"]),
                    "redis-cli cluster info",
                )
                .await
                .is_ok_and(|out| out.contains("cluster_state:ok"))
            })
            .await
            .with_context(|| format!("the Redis Cluster is not ok at {addr}"))?;
        }
        Ok(cluster)
    }

    /// Starts one node on a free port pair (client port and cluster bus port, +10000), and
    /// again on another pair if the server dies because one was taken meanwhile.
    async fn start_node(&mut self, server: &Path, cli: &Path) -> anyhow::Result<()> {
        let taken: HashSet<u16> = self.nodes.iter().map(SocketAddr::port).collect();
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_cluster_port(&taken)?;
            let dir = self.dir.join(port.to_string());
            std::fs::create_dir_all(&dir)?;
            let conf = dir.join("redis.conf");
            std::fs::write(&conf, redis_config(port, &dir))?;
            let child = spawn_redis(server, &conf)?;
            // The node answering is ours only if it reports our pid: another test's server
            // may hold the port while ours is still failing to bind it.
            let pid = child.id();
            // Held by the cluster from now on, so that any early return stops it on drop.
            self.servers.push(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            let exited = loop {
                let child = self.servers.last_mut().context("the node just started")?;
                if let Some(status) = child.try_wait()? {
                    break Some(status);
                }
                if answers_as(cli, port, pid).await {
                    break None;
                }
                if Instant::now() > deadline {
                    bail!(
                        "redis-server on port {port} did not answer within 10s: {}",
                        log_tail(&dir.join("redis.log"))
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Some(status) = exited else {
                self.nodes.push(SocketAddr::from(([127, 0, 0, 1], port)));
                return Ok(());
            };
            self.servers.pop(); // exited, and reaped by try_wait
            let log = log_tail(&dir.join("redis.log"));
            if !log.contains("Address already in use") || attempt == PORT_ATTEMPTS {
                bail!("redis-server on port {port} exited ({status}): {log}");
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|a| format!("redis://{a}")).collect()
    }

    /// Waits until every primary streams to its replica. A cluster is `ok` before that: a
    /// replica's first sync starts a moment later, and until it is done a primary's death
    /// cannot be survived (nor `WAIT` counted).
    pub async fn replicas_online(&self, within: Duration) -> anyhow::Result<()> {
        let cli = need("redis-cli", "redis-tools")?;
        for addr in &self.nodes {
            let port = addr.port().to_string();
            wait_for(within, || async {
                let info = run(
                    Command::new(&cli).args(["-p", &port, "info", "replication"]),
                    "redis-cli info replication",
                )
                .await
                .unwrap_or_default();
                let primary = info.lines().any(|l| l.trim() == "role:master");
                info.contains("role:") && (!primary || info.contains("state=online"))
            })
            .await
            .with_context(|| format!("the replica of {addr} is not online"))?;
        }
        Ok(())
    }

    /// SIGKILL of the node at `index` (reaped before this returns).
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let server = self.servers.get_mut(index).context("no such Redis node")?;
        server.kill().context("SIGKILL to redis-server")?;
        server.wait()?;
        Ok(())
    }

    /// Starts the node at `index` again on its port, with its cluster configuration (and no
    /// data: these servers keep nothing on disk), and waits until it answers.
    pub async fn start_again(&mut self, index: usize) -> anyhow::Result<()> {
        let server = need("redis-server", "redis-server")?;
        let cli = need("redis-cli", "redis-tools")?;
        let addr = *self.nodes.get(index).context("no such Redis node")?;
        let conf = self.dir.join(addr.port().to_string()).join("redis.conf");
        let child = spawn_redis(&server, &conf)?;
        let pid = child.id();
        if let Some(slot) = self.servers.get_mut(index) {
            *slot = child;
        }
        wait_for(Duration::from_secs(10), || {
            answers_as(&cli, addr.port(), pid)
        })
        .await
        .with_context(|| format!("redis-server at {addr} did not answer after its restart"))
    }

    /// The pids of the six `redis-server` processes, in the order of [`RedisCluster::nodes`].
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Child::id).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // SIGKILL to our own children only; waiting reaps them, so no pid outlives the drop.
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` with the configuration file `conf`, its output discarded (it logs to a file).
fn spawn_redis(server: &Path, conf: &Path) -> anyhow::Result<Child> {
    std::process::Command::new(server)
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server")
}

/// Whether the server on `port` answers, as the process `pid`.
async fn answers_as(cli: &Path, port: u16, pid: u32) -> bool {
    redis_cli(cli, port, &["info", "server"])
        .await
        .is_ok_and(|out| out.contains(&format!("process_id:{pid}")))
}

async fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> anyhow::Result<String> {
    run(
        Command::new(cli).arg("-p").arg(port.to_string()).args(args),
        "redis-cli",
    )
    .await
}

/// What the Redis server on `port` says it is now: `master` or `slave` (`ROLE`).
pub async fn redis_role(port: u16) -> anyhow::Result<String> {
    let cli = need("redis-cli", "redis-tools")?;
    let answer = redis_cli(&cli, port, &["role"]).await?;
    Ok(answer.lines().next().unwrap_or_default().trim().to_owned())
}

/// The port of the replica of the Redis primary on `port`, as the primary says.
pub async fn replica_port(port: u16) -> anyhow::Result<u16> {
    let cli = need("redis-cli", "redis-tools")?;
    let info = redis_cli(&cli, port, &["info", "replication"]).await?;
    info.lines()
        .filter(|l| l.starts_with("slave0:"))
        .flat_map(|l| l.split(','))
        .find_map(|kv| kv.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no replica of the primary on port {port}: {info}"))
}

fn redis_config(port: u16, dir: &Path) -> String {
    format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout 2000\n\
         repl-diskless-sync-delay 0\n\
         appendonly no\n\
         save \"\"\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {dir}/redis.log\n",
        dir = dir.display()
    )
}

/// A port that is free now, whose cluster-bus port (+10000) is free too, and neither of which
/// a node of this cluster already uses (`taken` holds their client ports).
fn free_cluster_port(taken: &HashSet<u16>) -> anyhow::Result<u16> {
    let used: HashSet<u16> = taken.iter().flat_map(|&p| [p, p + 10000]).collect();
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let fresh = !used.contains(&port) && !used.contains(&bus);
        if fresh && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (port and port + 10000) for a Redis Cluster node")
}

/// A PostgreSQL instance of its own, trusting every local connection.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    /// `runuser`, when PostgreSQL's commands run as the `postgres` user (the tests run as root,
    /// where initdb refuses to run) rather than as the current user.
    runuser: Option<PathBuf>,
    started: bool,
}

impl Postgres {
    /// Creates a database cluster in a directory of its own and starts it on a free port.
    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = postgres_bin()?;
        // initdb refuses to run as root: then PostgreSQL runs as the postgres user.
        let owner = match geteuid().is_root() {
            true => Some((need("runuser", "util-linux")?, postgres_user()?)),
            false => None,
        };
        let dir = scratch_dir("postgres")?;
        // Built before anything else can fail, so that drop removes the directory.
        let mut pg = Postgres {
            url: String::new(),
            port: 0,
            bin,
            data: dir.join("data"),
            dir,
            runuser: None,
            started: false,
        };
        if let Some((runuser, user)) = owner {
            std::os::unix::fs::chown(&pg.dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .with_context(|| format!("cannot hand {} to postgres", pg.dir.display()))?;
            pg.runuser = Some(runuser);
        }
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"]);
        run(&mut initdb, "initdb").await?;
        for attempt in 1..=PORT_ATTEMPTS {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let log = pg.log(port);
            // Marked before it can have started, so that drop stops a half-started server.
            pg.started = true;
            match run(&mut pg.pg_ctl_start(port), "pg_ctl start").await {
                Ok(_) => {
                    pg.port = port;
                    pg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                    return Ok(pg);
                }
                Err(e) => {
                    let log = log_tail(&log);
                    if !log.contains("Address already in use") || attempt == PORT_ATTEMPTS {
                        return Err(e.context(format!("postgres log: {log}")));
                    }
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Where the server started on `port` logs.
    fn log(&self, port: u16) -> PathBuf {
        self.dir.join(format!("postgres-{port}.log"))
    }

    /// `pg_ctl start` of this instance's data directory on `port`, waiting until it accepts
    /// connections.
    fn pg_ctl_start(&self, port: u16) -> Command {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-l"])
            .arg(self.log(port))
            .args(["-o", &options, "start"]);
        start
    }

    /// Stops the server (`pg_ctl stop -m fast`: open connections are cut, what is committed
    /// stays), keeping its data directory and port for [`Postgres::start_again`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        run(&mut stop, "pg_ctl stop").await?;
        Ok(())
    }

    /// Starts the stopped server again on the same port and data directory.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.started = true;
        run(&mut self.pg_ctl_start(self.port), "pg_ctl start")
            .await
            .map_err(|e| e.context(format!("postgres log: {}", log_tail(&self.log(self.port)))))?;
        Ok(())
    }

    /// Stops the server and starts it again on the same port and data directory, down for at
    /// least `down`.
    pub async fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        self.stop().await?;
        tokio::time::sleep(down).await;
        self.start_again().await
    }

    /// A PostgreSQL command, run as the user that owns the data.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match &self.runuser {
            Some(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// `psql` of this instance's version.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// The postmaster's pid, from its pid file; `None` once it has stopped.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            // pg_ctl signals the pid in the data directory's postmaster.pid: ours, by pid.
            let mut stop = self.command("pg_ctl").into_std();
            let _ = stop
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let missing = "PostgreSQL's initdb is missing: install the Debian package postgresql \
                   (scripts/install-test-peers)";
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(missing)?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    Ok(dirs.pop().context(missing)?.1)
}

fn postgres_user() -> anyhow::Result<User> {
    User::from_name("postgres")?.context(
        "the postgres user is missing: install the Debian package postgresql \
         (scripts/install-test-peers)",
    )
}

fn need(binary: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{binary} is missing: install the Debian package {package} \
                 (scripts/install-test-peers)"
            )
        })
}

/// A directory no other start, in this process or another, uses.
fn scratch_dir(kind: &str) -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shardgate-{kind}-{}-{n}", std::process::id()));
    // Left over only by a killed process whose pid this one reuses.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last lines of a server's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

async fn wait_for<F, Fut>(within: Duration, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not ready within {within:?}")
}
