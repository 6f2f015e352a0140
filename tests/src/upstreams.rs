//! Real upstreams for the end-to-end tests: the reference server (`server-everything`) over
//! stdio and Streamable HTTP, Python SDK servers, a recording stateless-era server, and node
//! configuration files that put them behind a cluster.

use crate::mcp::Client;
use crate::{free_addr, peers};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub fn write_config(dir: &Path, toml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

pub fn toml_str(s: impl AsRef<str>) -> String {
    Value::String(s.as_ref().to_string()).to_string()
}

/// A peer process (reference server, Python server) on a free loopback port, killed on drop.
pub struct Peer {
    _child: Child,
    pub url: String,
}

impl Peer {
    /// Starts a peer on `port`; fails if it exits before the port answers (it could not bind
    /// it, say).
    pub async fn spawn(mut cmd: Command, port: u16) -> anyhow::Result<Peer> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the peer exited before it listened on {port}: {status}");
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{addr} did not open in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Peer {
            _child: child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        })
    }

    /// A peer that takes its port as an argument cannot report one it bound itself: pick a
    /// free one, and if it was taken before the peer bound it, start again on another.
    pub async fn on_a_free_port<F, Fut>(start: F) -> anyhow::Result<Peer>
    where
        F: Fn(u16) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Peer>>,
    {
        let mut last = None;
        for _ in 0..3 {
            match start(free_addr()?.port()).await {
                Ok(peer) => return Ok(peer),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
    }

    /// The reference server in Streamable HTTP mode.
    pub async fn everything() -> anyhow::Result<Peer> {
        Peer::on_a_free_port(|port| async move {
            let mut cmd = Command::new(peers::node()?);
            cmd.arg(peers::server_everything()?)
                .arg("streamableHttp")
                .env("PORT", port.to_string());
            Peer::spawn(cmd, port).await
        })
        .await
    }

    /// The Python SDK server that logs the headers of every request to `log`.
    pub async fn recording(log: &Path) -> anyhow::Result<Peer> {
        Peer::on_a_free_port(|port| Peer::recording_on(log, port)).await
    }

    pub async fn recording_on(log: &Path, port: u16) -> anyhow::Result<Peer> {
        let mut cmd = Command::new(peers::python()?);
        cmd.arg(peers::python_script("recording_server.py"))
            .arg(port.to_string())
            .arg(log);
        Peer::spawn(cmd, port).await
    }
}

pub fn everything_stdio_config() -> anyhow::Result<String> {
    Ok(format!(
        "[[upstream]]\nname = \"everything\"\n[upstream.stdio]\ncommand = {}\nargs = [{}, \"stdio\"]\n",
        toml_str(peers::node()?.display().to_string()),
        toml_str(peers::server_everything()?.display().to_string()),
    ))
}

/// Our Python stdio server (`tests/python/stdio_server.py`) as the upstream `py`.
pub fn python_stdio_config() -> anyhow::Result<String> {
    Ok(format!(
        "[[upstream]]\nname = \"py\"\n[upstream.stdio]\ncommand = {}\nargs = [{}]\n",
        toml_str(peers::python()?.display().to_string()),
        toml_str(
            peers::python_script("stdio_server.py")
                .display()
                .to_string()
        ),
    ))
}

pub fn http_config(name: &str, url: &str, era: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\n[upstream.http]\nurl = {}\nera = \"{era}\"\nheaders = {{ Authorization = \"Bearer node-credential\" }}\n",
        toml_str(url)
    )
}

pub fn tool_text(answer: &Value) -> Option<String> {
    answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_string)
}

/// The JSON-RPC answer to a session-era `initialize`, whatever it is.
pub async fn initialize_answer(c: &Client) -> anyhow::Result<Value> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "shardgate-tests", "version": "0"}
    }});
    crate::mcp::response_of(c.post(&init).send().await?, &json!(0)).await
}

/// Runs the session-era handshake with these `initialize` params (a client of the test's
/// choosing); returns the session id.
pub async fn initialize_with(c: &Client, params: &Value) -> anyhow::Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params});
    let resp = c.post(&init).send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "initialize: HTTP {}",
        resp.status()
    );
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .ok_or_else(|| anyhow::anyhow!("no Mcp-Session-Id on the initialize response"))?
        .to_str()?
        .to_string();
    let answer = crate::mcp::response_of(resp, &json!(0)).await?;
    anyhow::ensure!(
        answer.get("result").is_some(),
        "initialize failed: {answer}"
    );
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let status = c.session_post(&sid, &note).send().await?.status();
    anyhow::ensure!(
        status.as_u16() == 202,
        "notifications/initialized: HTTP {status}"
    );
    Ok(sid)
}

/// What the recording server (`Peer::recording`) logged: one object per HTTP request, with
/// its `method`, `headers` and (POST) `body`.
pub fn recorded(log: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The request heads a recording upstream got, lowercased, in order.
#[derive(Clone, Default)]
pub struct Heads(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Heads {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The head of the `tools/call` it got.
    pub fn call(&self) -> anyhow::Result<String> {
        let all = self.all();
        all.iter()
            .find(|h| h.contains("mcp-method: tools/call"))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the call did not reach the upstream: {all:?}"))
    }
}

/// A stateless-era upstream of the simplest kind: answers every request with an empty
/// complete result, and records the headers of every request it gets.
pub async fn recording_stateless_upstream() -> anyhow::Result<(String, Heads)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    let seen = Heads::default();
    let record = seen.0.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            let (head, body) = loop {
                let Ok(n) = socket.read(&mut chunk).await else {
                    break (String::new(), Vec::new());
                };
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = buf[end + 4..].to_vec();
                    while body.len() < length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    break (head, body);
                }
            };
            if let Ok(mut seen) = record.lock() {
                seen.push(head);
            }
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|m| m.get("id").cloned())
                .unwrap_or(Value::Null);
            let answer = json!({"jsonrpc": "2.0", "id": id,
                "result": {"content": [], "resultType": "complete"}})
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    Ok((url, seen))
}

/// Our bare stdio server (`tests/python/raw_stdio_server.py`) as the upstream `raw`, writing
/// its pid into `pid_dir` (a file named by the pid, holding the params of each `initialize` it
/// received) and answering `initialize` after `start_delay_secs`.
pub fn raw_stdio_config(pid_dir: &Path, start_delay_secs: f64) -> anyhow::Result<String> {
    Ok(format!(
        "[[upstream]]\nname = \"raw\"\n[upstream.stdio]\ncommand = {}\nargs = [{}, \"--pid-dir\", {}, \"--start-delay\", \"{start_delay_secs}\"]\n",
        toml_str(peers::python()?.display().to_string()),
        toml_str(
            peers::python_script("raw_stdio_server.py")
                .display()
                .to_string()
        ),
        toml_str(pid_dir.display().to_string()),
    ))
}

/// The ids of the processes that wrote themselves into `pid_dir` and are still alive.
pub fn live_pids(pid_dir: &Path) -> anyhow::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(pid_dir)? {
        if let Some(pid) = entry?.file_name().to_str().and_then(|p| p.parse().ok())
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Every process that wrote itself into `pid_dir`, alive or not, with the `initialize` params
/// it received, in order.
pub fn initializes_by_pid(
    pid_dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<i32, Vec<Value>>> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(pid_dir)? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path())?;
        let params = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        seen.insert(pid, params);
    }
    Ok(seen)
}
