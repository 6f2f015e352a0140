//! A local cluster under `shardgate up`: its summary (what `up` prints once it is ready), its
//! node and gateway processes, and the faults and changes the harness puts it through.

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardgate_protocol::cluster_client::ClusterClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A node's listeners, as `up` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    pub session: SocketAddr,
    pub internal: SocketAddr,
    pub admin: SocketAddr,
}

/// What `up` prints before `ready`.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The `/mcp` URL clients use: the front's before several gateways, else the gateway's.
    pub endpoint: Option<String>,
    /// Each gateway's own `/mcp` URL, by ordinal, as it was when `up` became ready.
    pub gateways: Vec<String>,
    /// Each gateway's admin base URL (without `/metrics`), by ordinal.
    pub admins: Vec<String>,
    /// Every node's id and listeners.
    pub nodes: Vec<(String, NodeAddrs)>,
    /// Where `up` keeps the cluster's credentials.
    pub credentials: Option<PathBuf>,
    /// The session store as `up` shows it (without credentials).
    pub store: Option<String>,
    /// Under `--tls`: the CA clients trust for the gateways' certificate.
    pub edge_ca: Option<PathBuf>,
}

impl Summary {
    /// Reads `up`'s stdout until its `ready` line; the lines after it are left to the caller.
    pub async fn read(lines: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Summary> {
        let mut s = Summary::default();
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["endpoint", url] if s.endpoint.is_none() => s.endpoint = Some(url.to_string()),
                ["gateway", _, url] => s.gateways.push(url.to_string()),
                ["admin", url] => s.admins.push(url.trim_end_matches("/metrics").to_string()),
                ["node", id, session, internal, admin] => {
                    let field = |w: &str, key: &str| -> anyhow::Result<SocketAddr> {
                        w.strip_prefix(key)
                            .with_context(|| format!("node line: {line}"))?
                            .parse()
                            .with_context(|| format!("node line: {line}"))
                    };
                    s.nodes.push((
                        id.to_string(),
                        NodeAddrs {
                            session: field(session, "session=")?,
                            internal: field(internal, "internal=")?,
                            admin: field(admin, "admin=")?,
                        },
                    ));
                }
                ["credentials", dir] => s.credentials = Some(PathBuf::from(dir)),
                ["store", url] => s.store = Some(url.to_string()),
                ["edge-ca", path, ..] => s.edge_ca = Some(PathBuf::from(path)),
                ["ready", ..] => return Ok(s),
                _ => {}
            }
        }
        bail!("shardgate up exited before it was ready")
    }
}

/// A running `shardgate up`, stopped when dropped.
pub struct Up {
    pub summary: Summary,
    pub data_dir: PathBuf,
    child: Child,
}

impl Up {
    /// Starts `bin up ARGS --data-dir DATA_DIR --port 0` and waits until it is ready.
    pub async fn start(bin: &Path, args: &[String], data_dir: &Path) -> anyhow::Result<Up> {
        let mut child = Command::new(bin)
            .arg("up")
            .args(args)
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let summary = tokio::time::timeout(Duration::from_secs(90), Summary::read(&mut lines))
            .await
            .context("shardgate up was not ready within 90 s")??;
        // Keep reading, so that `up` never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Up {
            summary,
            data_dir: data_dir.to_owned(),
            child,
        })
    }

    pub fn endpoint(&self) -> anyhow::Result<&str> {
        self.summary
            .endpoint
            .as_deref()
            .context("up printed no endpoint")
    }

    /// The pid of node `id` as `up` runs it now (a restarted node has a new one).
    pub fn node_pid(&self, id: &str) -> anyhow::Result<u32> {
        let up = self.child.id().context("up has exited")?;
        node_pids(up)?
            .into_iter()
            .find(|(_, node)| node == id)
            .map(|(pid, _)| pid)
            .with_context(|| format!("no running {id} under up"))
    }

    /// The gateways `up` runs now: (pid, name), by name.
    pub fn gateways(&self) -> anyhow::Result<Vec<(u32, String)>> {
        let up = self.child.id().context("up has exited")?;
        let mut gateways = gateway_pids(up)?;
        gateways.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(gateways)
    }

    /// The nodes `up` runs now: (pid, id), by id.
    pub fn nodes(&self) -> anyhow::Result<Vec<(u32, String)>> {
        let up = self.child.id().context("up has exited")?;
        let mut nodes = node_pids(up)?;
        nodes.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(nodes)
    }

    /// The ids of the nodes `up` runs now.
    pub fn node_ids(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.nodes()?.into_iter().map(|(_, id)| id).collect())
    }

    /// The Raft leader, as the first node that answers sees it.
    pub async fn leader(&self) -> Option<String> {
        let dir = self.summary.credentials.as_ref()?;
        let files = shardgate_trust::tls::TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let mtls = shardgate_trust::tls::Mtls::load(&files).ok()?;
        let credentials = shardgate_trust::Credentials::Mtls(std::sync::Arc::new(mtls));
        let client = ClusterClient::new(&credentials, Duration::from_secs(2)).ok()?;
        let seeds: Vec<String> = self
            .summary
            .nodes
            .iter()
            .map(|(_, a)| a.internal.to_string())
            .collect();
        let status = shardgate_statefulset::status(&client, &seeds).await.ok()?;
        status.leader.map(|l| l.0)
    }

    /// Asks `up` for `nodes` nodes (what `shardgate scale` does).
    pub fn scale(&self, nodes: usize) -> anyhow::Result<()> {
        let file = shardgate_statefulset::local::scale_file(&self.data_dir);
        shardgate_statefulset::ready::write(&file, &shardgate_statefulset::local::Scale { nodes })
    }

    /// Stops the cluster as Ctrl-C would.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        }
        tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await??;
        Ok(())
    }
}

/// The `shardgate node` children of process `up`: (pid, node id).
pub fn node_pids(up: u32) -> anyhow::Result<Vec<(u32, String)>> {
    children(up, "node", |args| {
        let id = args.windows(2).find(|w| w[0] == b"--id")?[1];
        Some(String::from_utf8_lossy(id).into_owned())
    })
}

/// The `shardgate gateway` children of process `up`: (pid, name). A gateway has no id of its
/// own; `up` names its ready file after it (`<data dir>/gateway-N.ready`).
pub fn gateway_pids(up: u32) -> anyhow::Result<Vec<(u32, String)>> {
    children(up, "gateway", |args| {
        let file = args.windows(2).find(|w| w[0] == b"--ready-file")?[1];
        let file = Path::new(std::str::from_utf8(file).ok()?);
        Some(file.file_stem()?.to_str()?.to_owned())
    })
}

/// The children of process `up` running `shardgate ROLE`, each with the name `name` finds in
/// its arguments.
fn children(
    up: u32,
    role: &str,
    name: impl Fn(&[&[u8]]) -> Option<String>,
) -> anyhow::Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        if parent_in(&stat) != Some(up) {
            continue;
        }
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&role.as_bytes()) {
            continue;
        }
        if let Some(name) = name(&args) {
            out.push((pid, name));
        }
    }
    Ok(out)
}

/// Whether process `pid` has exited: gone, or a zombie its parent has not reaped yet (its
/// sockets are closed either way).
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X")
    })
}

/// The parent's pid in a `/proc/<pid>/stat`: the second field after the command, which is in
/// parentheses.
pub fn parent_in(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok())
}
