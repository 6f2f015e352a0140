//! The end-to-end harness: real `shardgate` processes on free loopback ports, the real MCP
//! peers installed by `scripts/install-test-peers`, and small MCP helpers over reqwest.
//!
//! - [`Cluster`]: `shardgate up` (nodes + gateways), or hand-assembled nodes and gateways for
//!   tests that need views to disagree.
//! - [`peers`]: where the conformance suite, Node 22 and the Python and TypeScript SDKs live.
//! - [`mcp`]: initialize, call, read SSE.
//! - [`upstreams`]: real MCP servers to put behind a cluster, and the configs that do.
//! - [`raft`]: nodes started one by one with Raft membership, for killing and scaling them.
//! - [`takeover`]: who owns which session, and calls and checks across a change of owner.

pub mod http3;
pub mod metrics;
pub mod peers;
pub mod raft;
/// The throw-away Redis Cluster and PostgreSQL of the tests, which the chaos harness starts too.
pub use shardgate_chaos::services;
pub mod takeover;
pub mod upstreams;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use shardgate_chaos::up::{Summary, gateway_pids, node_pids, parent_in};
pub use shardgate_chaos::{http, mcp};

/// The `shardgate` binary under test: `SHARDGATE_BIN`, or the one cargo builds beside this
/// test. Under cargo it is (re)built once per test process, so a test never runs a stale binary.
pub fn shardgate_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDGATE_BIN") {
        return Ok(PathBuf::from(p));
    }
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(build_binary)
        .clone()
        .map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe()?;
    // A test is target/<profile>/deps/<test>, a bench binary target/<profile>/<bench>; the
    // binary is target/<profile>/shardgate.
    let dir = exe.parent().context("cannot locate the target directory")?;
    let bin = match dir.file_name().is_some_and(|n| n == "deps") {
        true => dir.parent().unwrap_or(dir).join("shardgate"),
        false => dir.join("shardgate"),
    };
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (cargo build -p shardgate-statefulset)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Builds the binary with the cargo that runs the tests, in the same profile.
fn build_binary() -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(()); // not under cargo: use what is there
    };
    let release = std::env::current_exe()
        .map(|p| p.components().any(|c| c.as_os_str() == "release"))
        .unwrap_or(false);
    let mut cmd = std::process::Command::new(cargo);
    // The same package selection as a plain `cargo build --workspace`, so both share one
    // feature resolution and neither relinks what the other built.
    cmd.args(["build", "--quiet", "--workspace", "--bins"]);
    // Cargo sets these for the test process; left in, build scripts that watch the
    // environment would rerun and rebuild shared dependencies on every alternation.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let per_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
            || k == "OUT_DIR";
        if per_test {
            cmd.env_remove(&key);
        }
    }
    if release {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("building shardgate failed: {s}")),
        Err(e) => Err(format!("cannot run cargo to build shardgate: {e}")),
    }
}

/// The cluster secret of every cluster the harness assembles by hand (HMAC between its
/// processes); `shardgate up` makes its own credentials (mTLS).
pub const CLUSTER_SECRET: &str = "harness-cluster-secret-of-at-least-32-bytes";

/// Signs requests as a member of the harness's hand-assembled clusters.
pub fn signer() -> anyhow::Result<shardgate_trust::signature::Signer> {
    let secret = shardgate_trust::Secret::from_bytes(CLUSTER_SECRET.as_bytes().to_vec())?;
    Ok((&secret).into())
}

/// An authenticated client for nodes' internal listeners, under the harness's secret.
pub fn cluster_client() -> anyhow::Result<shardgate_protocol::cluster_client::ClusterClient> {
    let credentials = shardgate_trust::Credentials::Hmac(signer()?);
    shardgate_protocol::cluster_client::ClusterClient::new(&credentials, Duration::from_secs(5))
        .map_err(anyhow::Error::msg)
}

/// A POST of `body` to a node's `/mcp` (its session listener at `addr`) with `headers`,
/// signed as a gateway of the harness's hand-assembled clusters would sign it.
pub fn signed_post(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &serde_json::Value,
    headers: &[(&str, String)],
) -> anyhow::Result<reqwest::RequestBuilder> {
    let body = body.to_string();
    let mut map = http::HeaderMap::new();
    map.insert("content-type", "application/json".parse()?);
    map.insert("accept", "application/json, text/event-stream".parse()?);
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let (auth, _) = shardgate_trust::signature::sign_request(
        &signer()?,
        &http::Method::POST,
        "/mcp",
        &map,
        body.as_bytes(),
    );
    map.insert(shardgate_trust::signature::AUTH_HEADER, auth);
    Ok(http
        .post(format!("http://{addr}/mcp"))
        .headers(map)
        .body(body))
}

/// Runs `shardgate chaos --scenario smoke --seed 7 --duration 30s` with `extra` arguments, as
/// a user does, into a scratch folder named `name`; asserts it passed with 0 violations and
/// returns its output folder, its stdout and its REPORT.md.
pub async fn chaos_smoke(name: &str, extra: &[&str]) -> anyhow::Result<(PathBuf, String, String)> {
    chaos_scenario(name, "smoke", "30s", extra).await
}

/// Runs `shardgate chaos --scenario SCENARIO --seed 7 --duration DURATION` as
/// [`chaos_smoke`] does.
pub async fn chaos_scenario(
    name: &str,
    scenario: &str,
    duration: &str,
    extra: &[&str],
) -> anyhow::Result<(PathBuf, String, String)> {
    let out = scratch(name)?;
    let run = tokio::process::Command::new(shardgate_bin()?)
        .args([
            "chaos",
            "--scenario",
            scenario,
            "--seed",
            "7",
            "--duration",
            duration,
        ])
        .args(extra)
        // CI machines are slower than production clusters.
        .args(["--timings", "relaxed", "--out"])
        .arg(&out)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap_or_default();
    println!("{stdout}\n{report}");
    assert!(
        run.status.success(),
        "the {scenario} scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.trim_end().ends_with("0 violations"), "{stdout}");
    Ok((out, stdout, report))
}

/// A fresh scratch directory for one test, under the system's temporary directory.
pub fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("shardgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A port nothing listens on now; only for peers that cannot report a port they bound
/// themselves (the harness retries their start if the port was taken meanwhile).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub use shardgate_chaos::up::NodeAddrs;

/// A gateway's listeners, as its ready file reports them.
#[derive(Clone, Copy, Debug)]
pub struct GatewayAddrs {
    pub mcp: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts `shardgate <args> --ready-file …` (its listeners on port 0 unless `args` say
/// otherwise) with `envs` added to its environment, and returns it with what it bound.
async fn start_reporting(
    args: &[String],
    envs: &[(String, String)],
) -> anyhow::Result<(Process, serde_json::Value)> {
    let file = std::env::temp_dir().join(format!(
        "shardgate-ready-{}-{}",
        std::process::id(),
        READY_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&file);
    let mut all = args.to_vec();
    all.extend(["--ready-file".into(), file.display().to_string()]);
    let mut process = Process::spawn_with(&all, envs)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(&file)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            let _ = std::fs::remove_file(&file);
            return Ok((process, v));
        }
        if let Some(status) = process.child.try_wait()? {
            bail!("shardgate {} exited while starting: {status}", args[0]);
        }
        if Instant::now() > deadline {
            bail!("shardgate {} did not report its ports in time", args[0]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

static READY_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn addr(v: &serde_json::Value, key: &str) -> anyhow::Result<SocketAddr> {
    v[key]
        .as_str()
        .with_context(|| format!("ready file without {key}: {v}"))?
        .parse()
        .with_context(|| format!("ready file: bad {key}"))
}

/// `shardgate node --id ID --data-dir DIR/ID`: a node of its own Raft cluster (it founds one),
/// with no store, on port 0 for every listener.
pub async fn start_raft_node(
    dir: &std::path::Path,
    id: &str,
) -> anyhow::Result<(Process, NodeAddrs)> {
    start_node(&[
        "--id".into(),
        id.into(),
        "--data-dir".into(),
        dir.join(id).display().to_string(),
    ])
    .await
}

/// `shardgate node <args>` on port 0 for every listener not given in `args`.
pub async fn start_node(args: &[String]) -> anyhow::Result<(Process, NodeAddrs)> {
    start_node_with(args, &[]).await
}

/// [`start_node`] with more environment variables.
pub async fn start_node_with(
    args: &[String],
    envs: &[(String, String)],
) -> anyhow::Result<(Process, NodeAddrs)> {
    let mut all: Vec<String> = vec!["node".into()];
    for flag in ["--listen", "--internal-listen", "--admin-listen"] {
        if !args.iter().any(|a| a == flag) {
            all.extend([flag.into(), "127.0.0.1:0".into()]);
        }
    }
    all.extend(args.iter().cloned());
    let (process, v) = start_reporting(&all, envs).await?;
    let addrs = NodeAddrs {
        session: addr(&v, "session")?,
        internal: addr(&v, "internal")?,
        admin: addr(&v, "admin")?,
    };
    Ok((process, addrs))
}

/// `shardgate gateway <args>` on port 0 for both listeners; with `--auth-off` unless `args` give
/// a token key.
pub async fn start_gateway(args: &[String]) -> anyhow::Result<(Process, GatewayAddrs)> {
    start_gateway_with(args, &[]).await
}

/// [`start_gateway`] with more environment variables.
pub async fn start_gateway_with(
    args: &[String],
    envs: &[(String, String)],
) -> anyhow::Result<(Process, GatewayAddrs)> {
    let mut all: Vec<String> = vec![
        "gateway".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
    ];
    let keyed = ["--jwks-url", "--jwks-file", "--jwt-secret-file"];
    if !args.iter().any(|a| keyed.contains(&a.as_str())) {
        all.push("--auth-off".into());
    }
    all.extend(args.iter().cloned());
    let (process, v) = start_reporting(&all, envs).await?;
    let addrs = GatewayAddrs {
        mcp: addr(&v, "mcp")?,
        admin: addr(&v, "admin")?,
    };
    Ok((process, addrs))
}

/// A one-node cluster behind a gateway that serves TLS (and so HTTP/3) with a certificate
/// written to `dir` (`tls.crt`, `tls.key`), which a test may replace there.
pub struct TlsGateway {
    pub node: Process,
    pub gateway: Process,
    pub addrs: GatewayAddrs,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsGateway {
    /// Starts it with `certified` (rcgen's certificate and key) for a certificate.
    pub async fn start(
        dir: &std::path::Path,
        certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    ) -> anyhow::Result<TlsGateway> {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.signing_key.serialize_pem())?;
        let (node, at) = start_raft_node(dir, "node-0").await?;
        // The gateway starts from a view naming the node, and follows it.
        let (gateway, addrs) = start_gateway(&[
            "--seeds".into(),
            at.internal.to_string(),
            "--members".into(),
            format!("node-0={}/{}", at.session, at.internal),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ])
        .await?;
        Ok(TlsGateway {
            node,
            gateway,
            addrs,
            cert,
            key,
        })
    }
}

/// TLS for a client that trusts `roots` and offers `alpn`.
pub fn client_tls(
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tls)
}

/// A process we started; SIGTERM on drop, so nothing outlives a test.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn spawn(args: &[String]) -> anyhow::Result<Process> {
        Process::spawn_with(args, &[])
    }

    /// [`Process::spawn`] with more environment variables.
    pub fn spawn_with(args: &[String], envs: &[(String, String)]) -> anyhow::Result<Process> {
        let child = Command::new(shardgate_bin()?)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .env("SHARDGATE_EXIT_WITH_PARENT", "1")
            .env("SHARDGATE_CLUSTER_SECRET", CLUSTER_SECRET)
            .env(
                "LOG_LEVEL",
                std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn,openraft=off".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start shardgate")?;
        Ok(Process { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9`: no drain, no goodbye, as a crash or an OOM kill.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(within, self.child.wait())
            .await
            .context("the process did not exit in time")??)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.terminate();
        Ok(tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await??)
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A running local cluster started with `shardgate up`.
pub struct Cluster {
    /// The `/mcp` URL clients use: `up`'s front before several gateways, else the gateway's.
    pub endpoint: String,
    /// Each gateway's own `/mcp` URL, by ordinal.
    pub gateways: Vec<String>,
    /// The first gateway's admin base URL.
    pub admin: String,
    /// Each gateway's admin base URL, by ordinal.
    pub admins: Vec<String>,
    /// Every node's id and listeners.
    pub nodes: Vec<(String, NodeAddrs)>,
    /// Where `up` keeps the cluster's credentials (CA, certificates, secret).
    pub credentials: PathBuf,
    /// The session store as `up` shows it (without credentials), if it shows one.
    pub store: Option<String>,
    /// Under [`ClusterBuilder::tls`]: the CA that signed the gateways' certificate.
    pub edge_ca: Option<PathBuf>,
    process: Process,
}

pub struct ClusterBuilder {
    nodes: usize,
    gateways: usize,
    config: Option<PathBuf>,
    timings: &'static str,
    envs: Vec<(String, String)>,
    /// `up`'s flags beyond the ones every test gives (`--store`, `--ack`, `--tls`, …).
    flags: Vec<String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 3,
            gateways: 1,
            config: None,
            timings: "relaxed",
            envs: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// The view the first gateway routes by (its admin `/membership`).
    pub async fn gateway_view(&self) -> anyhow::Result<shardgate_raft::Membership> {
        let resp = http()
            .timeout(Duration::from_secs(3))
            .build()?
            .get(format!("{}/membership", self.admin))
            .send()
            .await?;
        Ok(resp.json().await?)
    }

    /// The first gateway's `/status.json`, and the members it lists.
    pub async fn status(
        &self,
        http: &reqwest::Client,
    ) -> anyhow::Result<(serde_json::Value, Vec<serde_json::Value>)> {
        let status: serde_json::Value = http
            .get(format!("{}/status.json", self.admin))
            .send()
            .await?
            .json()
            .await?;
        let members = status["members"].as_array().cloned().unwrap_or_default();
        Ok((status, members))
    }

    /// The process id of node `id` (`node-K`) as `up` runs it now: a node that `up` restarted
    /// has a new one.
    pub fn node_pid(&self, id: &str) -> anyhow::Result<u32> {
        let up = self.pid().context("up has exited")?;
        node_pids(up)?
            .into_iter()
            .find(|(_, node)| node == id)
            .map(|(pid, _)| pid)
            .with_context(|| format!("no running node {id} under up"))
    }

    /// The process id of gateway `name` (`gateway-K`) as `up` runs it now.
    pub fn gateway_pid(&self, name: &str) -> anyhow::Result<u32> {
        let up = self.pid().context("up has exited")?;
        gateway_pids(up)?
            .into_iter()
            .find(|(_, gateway)| gateway == name)
            .map(|(pid, _)| pid)
            .with_context(|| format!("no running {name} under up"))
    }

    /// The process ids of the cluster's nodes (children of `up` running `shardgate node`).
    pub fn node_pids(&self) -> anyhow::Result<Vec<u32>> {
        let up = self.pid().context("up has exited")?;
        Ok(node_pids(up)?.into_iter().map(|(pid, _)| pid).collect())
    }

    /// The sum of a gauge (`name{labels}` as written, or unlabelled) on one node's `/metrics`.
    pub async fn metric_of(
        &self,
        http: &reqwest::Client,
        node: usize,
        name: &str,
    ) -> anyhow::Result<u64> {
        let addrs = &self.nodes.get(node).context("no such node")?.1;
        let text = http
            .get(format!("http://{}/metrics", addrs.admin))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0))
    }

    /// The sum of a gauge or counter (`name`, unlabelled) over every node's `/metrics`.
    pub async fn node_metric(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<u64> {
        let mut total = 0;
        for node in 0..self.nodes.len() {
            total += self.metric_of(http, node, name).await?;
        }
        Ok(total)
    }

    /// Waits until [`Self::node_metric`] satisfies `done`; false if it does not within `within`.
    pub async fn wait_for_metric(
        &self,
        http: &reqwest::Client,
        name: &str,
        within: Duration,
        done: impl Fn(u64) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(self.node_metric(http, name).await?) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(false)
    }

    /// The `up` process, to signal it.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A client of the nodes' internal listeners with the cluster's own credentials (mTLS).
    pub fn cluster_client(
        &self,
    ) -> anyhow::Result<shardgate_protocol::cluster_client::ClusterClient> {
        let files = shardgate_trust::tls::TlsFiles {
            ca: self.credentials.join("ca.pem"),
            cert: self.credentials.join("cert.pem"),
            key: self.credentials.join("key.pem"),
        };
        let mtls = shardgate_trust::tls::Mtls::load(&files)?;
        let credentials = shardgate_trust::Credentials::Mtls(std::sync::Arc::new(mtls));
        shardgate_protocol::cluster_client::ClusterClient::new(&credentials, Duration::from_secs(5))
            .map_err(anyhow::Error::msg)
    }

    /// Runs `shardgate ARGS --seeds <node-0>` next to this cluster, with no credentials of its
    /// own (it finds them through the running `up`, as a user's command would); its stdout.
    pub async fn shardgate(&self, args: &[&str]) -> anyhow::Result<String> {
        let seed = self.nodes[0].1.internal.to_string();
        let out = tokio::process::Command::new(shardgate_bin()?)
            .args(args)
            .args(["--seeds", &seed])
            .env_remove("SHARDGATE_CLUSTER_SECRET")
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "shardgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Stops the cluster with SIGTERM, as Ctrl-C would.
    pub async fn stop(self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop().await
    }
}

impl ClusterBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    pub fn gateways(mut self, n: usize) -> Self {
        self.gateways = n;
        self
    }

    /// Production consensus timings instead of the relaxed ones tests use by default, which
    /// keep a starved CPU from producing spurious `Down` verdicts.
    pub fn production_timings(mut self) -> Self {
        self.timings = "production";
        self
    }

    /// The node configuration file (upstreams) every node gets.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// An environment variable for `up` and every process it starts.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The session store every node writes through to (`up --store`); without it, `up` gives
    /// its nodes one SQLite file in its data directory.
    pub fn store(mut self, url: &str) -> Self {
        self.flags.extend(["--store".into(), url.into()]);
        self
    }

    /// The PostgreSQL behind a `redis://` store (`up --store-durable`).
    pub fn store_durable(mut self, url: &str) -> Self {
        self.flags.extend(["--store-durable".into(), url.into()]);
        self
    }

    /// HTTPS and HTTP/3 at the gateways (`up --tls`).
    pub fn tls(mut self) -> Self {
        self.flags.push("--tls".into());
        self
    }

    /// When a node counts a message as acknowledged: `memory`, `store` or `replicated`.
    pub fn ack(mut self, level: &str) -> Self {
        self.flags.extend(["--ack".into(), level.into()]);
        self
    }

    /// Seconds after which a node passivates an idle session. `up` has no flag for it: the
    /// nodes, its children, read it from the environment they inherit.
    pub fn passivate_after_secs(self, secs: u64) -> Self {
        self.env("SHARDGATE_PASSIVATE_AFTER_SECS", &secs.to_string())
    }

    pub async fn start(self) -> anyhow::Result<Cluster> {
        let mut args: Vec<String> = [
            "up",
            "--port",
            "0",
            "--nodes",
            &self.nodes.to_string(),
            "--gateways",
            &self.gateways.to_string(),
            "--timings",
            self.timings,
        ]
        .map(String::from)
        .to_vec();
        if let Some(config) = &self.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        args.extend(self.flags.iter().cloned());
        let mut process = Process::spawn_with(&args, &self.envs)?;
        let stdout = process.child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let summary = tokio::time::timeout(Duration::from_secs(60), Summary::read(&mut lines))
            .await
            .context("shardgate up was not ready within 60 s")??;
        // Keep draining stdout so the cluster never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Cluster {
            endpoint: summary.endpoint.context("no endpoint line")?,
            gateways: summary.gateways,
            admin: summary.admins.first().cloned().context("no admin line")?,
            admins: summary.admins,
            nodes: summary.nodes,
            credentials: summary.credentials.context("no credentials line")?,
            store: summary.store,
            edge_ca: summary.edge_ca,
            process,
        })
    }
}

/// The parent of process `pid`, while it runs.
pub fn parent_pid(pid: u32) -> Option<u32> {
    parent_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The resident memory of a process, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}
