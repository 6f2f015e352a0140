//! Throw-away backing services for tests: a Redis Cluster of six `redis-server` processes and a
//! PostgreSQL instance, each on free ports in a directory of its own, from the installed
//! binaries (`scripts/install-test-peers` installs the Debian packages when missing). Dropping
//! one stops exactly the processes it started, by pid, and removes its directory: no test
//! depends on a Redis or PostgreSQL that a machine happens to run.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A port that is free now, and whose cluster-bus port (+10000) is free too.
fn free_cluster_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair for a Redis Cluster node")
}

fn need(binary: &str, package: &str) -> anyhow::Result<PathBuf> {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join(binary);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{binary} is missing: install the Debian package {package} (scripts/install-test-peers)")
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

fn scratch_dir(kind: &str) -> anyhow::Result<PathBuf> {
    let dir = crate::scratch(&format!(
        "{kind}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ))?;
    Ok(dir)
}

/// Six `redis-server` processes in cluster mode: three primaries, three replicas.
pub struct RedisCluster {
    pub nodes: Vec<SocketAddr>,
    servers: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let server = need("redis-server", "redis-server")?;
        let cli = need("redis-cli", "redis-tools")?;
        let dir = scratch_dir("redis-cluster")?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            servers: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let port = free_cluster_port()?;
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let config = format!(
                "port {port}\nbind 127.0.0.1\ncluster-enabled yes\ncluster-config-file nodes.conf\n\
                 cluster-node-timeout 2000\nappendonly no\nsave \"\"\ndaemonize no\ndir {}\n",
                node_dir.display()
            );
            let conf = node_dir.join("redis.conf");
            std::fs::write(&conf, config)?;
            let child = Command::new(&server)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start redis-server")?;
            cluster.servers.push(child);
            cluster.nodes.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        for addr in &cluster.nodes {
            wait_for(Duration::from_secs(10), || async {
                run(
                    Command::new(&cli).args(["-p", &addr.port().to_string(), "ping"]),
                    "redis-cli ping",
                )
                .await
                .is_ok_and(|out| out.contains("PONG"))
            })
            .await
            .with_context(|| format!("redis-server on {addr} did not start"))?;
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
            wait_for(Duration::from_secs(20), || async {
                run(
                    Command::new(&cli).args(["-p", &addr.port().to_string(), "cluster", "info"]),
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

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|a| format!("redis://{a}")).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Child::id).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL instance of its own, trusting local connections.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

/// The newest installed PostgreSQL's binaries.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is missing: install the Debian package postgresql (scripts/install-test-peers)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("initdb is missing: install the Debian package postgresql")
}

impl Postgres {
    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = postgres_bin()?;
        let dir = scratch_dir("postgres")?;
        let data = dir.join("data");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // initdb refuses to run as root: then it runs as the postgres user, who owns the dir.
        let as_postgres = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")?.uid() == 0
        };
        if as_postgres {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            )
            .await?;
        }
        let pg = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            dir,
            as_postgres,
        };
        run(
            &mut pg.command("initdb", |c| {
                c.arg("-D")
                    .arg(&pg.data)
                    .args(["-U", "postgres", "--auth=trust", "--no-sync"]);
            }),
            "initdb",
        )
        .await?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.dir.display()
        );
        run(
            &mut pg.command("pg_ctl", |c| {
                c.arg("-D")
                    .arg(&pg.data)
                    .args(["-w", "-l"])
                    .arg(pg.dir.join("log"))
                    .args(["-o", &options, "start"]);
            }),
            "pg_ctl start",
        )
        .await?;
        Ok(pg)
    }

    /// A command of PostgreSQL's, as the user that owns the data.
    fn command(&self, name: &str, args: impl FnOnce(&mut Command)) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        args(&mut cmd);
        cmd
    }

    /// `psql` of this instance's version.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// The postmaster's pid, from its pid file.
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
        let mut cmd = std::process::Command::new(if self.as_postgres {
            PathBuf::from("runuser")
        } else {
            self.bin.join("pg_ctl")
        });
        if self.as_postgres {
            cmd.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
        }
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for<F, Fut>(within: Duration, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
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
