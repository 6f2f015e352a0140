//! Real upstreams behind the gateway: the reference server (`server-everything`) over stdio
//! and Streamable HTTP, servers built with the official Python SDK, federation, era bridging.

use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::{Cluster, free_addr, peers, scratch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

fn write_config(dir: &Path, toml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

fn toml_str(s: impl AsRef<str>) -> String {
    Value::String(s.as_ref().to_string()).to_string()
}

/// A peer process (reference server, Python server) on a free loopback port, killed on drop.
struct Peer {
    _child: Child,
    url: String,
}

impl Peer {
    /// Starts a peer on `port`; fails if it exits before the port answers (it could not bind
    /// it, say).
    async fn spawn(mut cmd: Command, port: u16) -> anyhow::Result<Peer> {
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
    async fn on_a_free_port<F, Fut>(start: F) -> anyhow::Result<Peer>
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
    async fn everything() -> anyhow::Result<Peer> {
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
    async fn recording(log: &Path) -> anyhow::Result<Peer> {
        Peer::on_a_free_port(|port| Peer::recording_on(log, port)).await
    }

    async fn recording_on(log: &Path, port: u16) -> anyhow::Result<Peer> {
        let mut cmd = Command::new(peers::python()?);
        cmd.arg(peers::python_script("recording_server.py"))
            .arg(port.to_string())
            .arg(log);
        Peer::spawn(cmd, port).await
    }
}

fn everything_stdio_config() -> anyhow::Result<String> {
    Ok(format!(
        "[[upstream]]\nname = \"everything\"\n[upstream.stdio]\ncommand = {}\nargs = [{}, \"stdio\"]\n",
        toml_str(peers::node()?.display().to_string()),
        toml_str(peers::server_everything()?.display().to_string()),
    ))
}

/// Our Python stdio server (`tests/python/stdio_server.py`) as the upstream `py`.
fn python_stdio_config() -> anyhow::Result<String> {
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

fn http_config(name: &str, url: &str, era: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\n[upstream.http]\nurl = {}\nera = \"{era}\"\nheaders = {{ Authorization = \"Bearer node-credential\" }}\n",
        toml_str(url)
    )
}

/// Runs the stable conformance suite against `url`; returns each check's status by
/// (scenario, check id).
type Checks = BTreeMap<(String, String), String>;

/// Runs the stable conformance suite against `url`; every check's status, by scenario and id.
async fn conformance(url: &str, out: &Path) -> anyhow::Result<Checks> {
    suite("stable", &[], url, out).await
}

/// Runs conformance suite `which` with `extra` arguments against `url`.
async fn suite(which: &str, extra: &[&str], url: &str, out: &Path) -> anyhow::Result<Checks> {
    let _ = Command::new(peers::node()?)
        .arg(peers::conformance(which)?)
        .args(["server", "--url", url])
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .await?;
    let mut checks = BTreeMap::new();
    for entry in std::fs::read_dir(out)?.flatten() {
        let dir = entry.file_name().to_string_lossy().to_string();
        let scenario = scenario_of(&dir);
        let text = std::fs::read_to_string(entry.path().join("checks.json"))?;
        let list: Vec<Value> = serde_json::from_str(&text)?;
        for check in list {
            let id = check["id"].as_str().unwrap_or_default().to_string();
            let status = check["status"].as_str().unwrap_or_default().to_string();
            checks.insert((scenario.clone(), id), status);
        }
    }
    anyhow::ensure!(!checks.is_empty(), "the suite wrote no results for {url}");
    Ok(checks)
}

/// `server-<scenario>-<YYYY-MM-DDTHH…>`, the suite's result directory, without the rest.
fn scenario_of(dir: &str) -> String {
    let rest = dir.strip_prefix("server-").unwrap_or(dir);
    let b = rest.as_bytes();
    let stamp = (0..b.len()).find(|&i| {
        b.len() >= i + 12
            && b[i] == b'-'
            && b[i + 1..i + 5].iter().all(u8::is_ascii_digit)
            && b[i + 5] == b'-'
            && b[i + 8] == b'-'
            && b[i + 11] == b'T'
    });
    rest[..stamp.unwrap_or(rest.len())].to_string()
}

/// Checks the reference server fails on its own and passes behind the gateway, because the
/// gateway does what the check asks: server-everything binds every interface and accepts any
/// `Host` (DNS rebinding); our gateway refuses a foreign `Host` with 403.
const GATEWAY_RIGHT: [(&str, &str); 1] = [(
    "dns-rebinding-protection",
    "localhost-host-rebinding-rejected",
)];

/// Check by check, what differs between a direct run and a run through the gateway, but for
/// the [`GATEWAY_RIGHT`] checks turning from failure into success.
fn differences(direct: &Checks, via: &Checks) -> Vec<String> {
    let keys: std::collections::BTreeSet<_> = direct.keys().chain(via.keys()).collect();
    keys.into_iter()
        .filter(|k| direct.get(*k) != via.get(*k))
        .filter(|k| {
            let fixed = direct.get(*k).is_some_and(|s| s == "FAILURE")
                && via.get(*k).is_some_and(|s| s == "SUCCESS");
            !(fixed && GATEWAY_RIGHT.contains(&(k.0.as_str(), k.1.as_str())))
        })
        .map(|k| {
            format!(
                "{}/{}: direct {:?}, through the gateway {:?}",
                k.0,
                k.1,
                direct.get(k),
                via.get(k)
            )
        })
        .collect()
}

#[tokio::test]
async fn t10_transparency_against_the_reference_server() -> anyhow::Result<()> {
    let dir = scratch("transparency")?;
    let reference = Peer::everything().await?;
    let direct = conformance(&reference.url, &dir.join("direct")).await?;

    let http = write_config(&dir, &http_config("everything", &reference.url, "session"))?;
    let cluster = Cluster::builder().nodes(3).config(&http).start().await?;
    let via_http = conformance(&cluster.endpoint, &dir.join("via-http")).await?;
    cluster.stop().await?;

    std::fs::write(dir.join("stdio.toml"), everything_stdio_config()?)?;
    let cluster = Cluster::builder()
        .nodes(3)
        .config(dir.join("stdio.toml"))
        .start()
        .await?;
    let via_stdio = conformance(&cluster.endpoint, &dir.join("via-stdio")).await?;
    cluster.stop().await?;

    let passed = direct.values().filter(|s| *s == "SUCCESS").count();
    println!("direct: {passed} of {} checks pass", direct.len());
    let http_diff = differences(&direct, &via_http);
    let stdio_diff = differences(&direct, &via_stdio);
    println!("through the gateway (http upstream): {http_diff:#?}");
    println!("through the gateway (stdio upstream): {stdio_diff:#?}");
    assert!(http_diff.is_empty(), "http upstream: {http_diff:#?}");
    assert!(stdio_diff.is_empty(), "stdio upstream: {stdio_diff:#?}");
    Ok(())
}

/// What a stateless-era client cannot get from a session-era upstream through the bridge,
/// by scenario and check of the 2026-07-28 suite, with the reason.
const BRIDGE_LIMITS: [(&str, &str, &str); 10] = [
    // The upstream session's client capabilities are fixed at its `initialize`, where the
    // bridge declares them all; a tool that checks them rather than asking cannot see this
    // request's.
    (
        "input-required-result-capability-check",
        "sep-2322-respect-client-capabilities",
        "caps",
    ),
    (
        "server-stateless",
        "sep-2575-server-rejects-undeclared-capability",
        "caps",
    ),
    (
        "server-stateless",
        "sep-2575-missing-capability-http-400",
        "caps",
    ),
    // A session-era upstream asks one question at a time and names no keys; the bridge
    // numbers them, so checks that expect the server's own keys or several at once fail.
    (
        "input-required-result-basic-elicitation",
        "sep-2322-elicitation-incomplete",
        "keys",
    ),
    (
        "input-required-result-basic-elicitation",
        "sep-2322-elicitation-complete",
        "keys",
    ),
    (
        "input-required-result-multiple-input-requests",
        "sep-2322-multiple-inputs-incomplete",
        "keys",
    ),
    (
        "input-required-result-multiple-input-requests",
        "sep-2322-multiple-inputs-complete",
        "keys",
    ),
    (
        "input-required-result-ignore-extra-params",
        "sep-2322-ignore-unexpected-params",
        "keys",
    ),
    // A session-era upstream announces a change to the upstream session that caused it. The
    // suite's client never sends back the key it is issued, so its listen stream and its
    // trigger are two clients with two upstream sessions, which never share anything.
    (
        "server-stateless",
        "sep-2575-server-sends-tools-list-changed-on-subscription",
        "clients",
    ),
    (
        "server-stateless",
        "sep-2575-server-sends-prompts-list-changed-on-subscription",
        "clients",
    ),
];

/// The builtin upstream of one cluster as the HTTP upstream of another: session era through
/// the connector check by check, and the stateless era through the era bridge, where only
/// the [`BRIDGE_LIMITS`] may differ.
#[tokio::test]
async fn t15_transparency_against_the_builtin() -> anyhow::Result<()> {
    let dir = scratch("transparency-builtin")?;
    let reference = Cluster::builder().nodes(1).start().await?;
    let config = write_config(
        &dir,
        &http_config("builtin", &reference.endpoint, "session"),
    )?;
    let cluster = Cluster::builder().nodes(2).config(&config).start().await?;
    let runs: [(&str, &[&str]); 3] = [
        ("stable", &[]),
        ("next", &["--requirements", "2025-11-25"]),
        ("next", &["--requirements", "2026-07-28"]),
    ];
    for (i, (which, extra)) in runs.into_iter().enumerate() {
        let direct = suite(
            which,
            extra,
            &reference.endpoint,
            &dir.join(format!("direct-{i}")),
        )
        .await?;
        let via = suite(
            which,
            extra,
            &cluster.endpoint,
            &dir.join(format!("via-{i}")),
        )
        .await?;
        let passed = direct.values().filter(|s| *s == "SUCCESS").count();
        let diff = differences(&direct, &via);
        println!(
            "{which} {extra:?}: direct {passed} of {} pass; differences {diff:#?}",
            direct.len()
        );
        let unexplained: Vec<_> = direct
            .keys()
            .chain(via.keys())
            .filter(|k| direct.get(*k) != via.get(*k))
            .filter(|k| {
                !BRIDGE_LIMITS
                    .iter()
                    .any(|(scenario, id, _)| k.0 == *scenario && k.1 == *id)
            })
            .collect();
        assert!(unexplained.is_empty(), "{which} {extra:?}: {diff:#?}");
    }
    cluster.stop().await?;
    reference.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_python_sdk_against_each_kind_of_upstream() -> anyhow::Result<()> {
    let dir = scratch("sdk-upstreams")?;
    let reference = Peer::everything().await?;
    let echo = [
        "echo",
        r#"{"message": "through shardgate"}"#,
        "through shardgate",
    ];

    std::fs::write(
        dir.join("http.toml"),
        http_config("everything", &reference.url, "session"),
    )?;
    std::fs::write(dir.join("stdio.toml"), everything_stdio_config()?)?;
    for config in ["http.toml", "stdio.toml"] {
        let cluster = Cluster::builder()
            .nodes(2)
            .config(dir.join(config))
            .start()
            .await?;
        let legacy = peers::sdk_client(&cluster.endpoint, "legacy", &echo).await?;
        assert!(legacy.contains("ok legacy"), "{config}: {legacy}");
        // auto mode picks the stateless era: a stateless client bridged to a session-era upstream.
        let auto = peers::sdk_client(&cluster.endpoint, "auto", &echo).await?;
        assert!(auto.contains("ok auto"), "{config}: {auto}");
        println!("{config}: {legacy}{auto}");
        cluster.stop().await?;
    }

    // A session-era client bridged to a stateless-era upstream: another shardgate cluster,
    // whose builtin upstream speaks 2026-07-28.
    let upstream = Cluster::builder().nodes(1).start().await?;
    std::fs::write(
        dir.join("bridge.toml"),
        http_config("modern", &upstream.endpoint, "stateless"),
    )?;
    let cluster = Cluster::builder()
        .nodes(2)
        .config(dir.join("bridge.toml"))
        .start()
        .await?;
    let legacy = peers::sdk_client(&cluster.endpoint, "legacy", &[]).await?;
    assert!(legacy.contains("ok legacy 2025-11-25"), "{legacy}");
    cluster.stop().await?;
    upstream.stop().await?;
    Ok(())
}

fn tool_text(answer: &Value) -> Option<String> {
    answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn t30_a_stdio_upstream_killed_mid_request() -> anyhow::Result<()> {
    let dir = scratch("stdio-kill")?;
    let config = python_stdio_config()?;
    let cluster = Cluster::builder()
        .nodes(2)
        .config(write_config(&dir, &config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let pid_of = |answer: Value| -> anyhow::Result<i32> {
        Ok(tool_text(&answer)
            .ok_or_else(|| anyhow::anyhow!("no pid in {answer}"))?
            .parse()?)
    };
    let first = pid_of(
        c.request(
            &sid,
            1,
            "tools/call",
            json!({"name": "pid", "arguments": {}}),
        )
        .await?,
    )?;
    let napping = {
        let (c, sid) = (c.clone(), sid.clone());
        tokio::spawn(async move {
            c.request(
                &sid,
                2,
                "tools/call",
                json!({"name": "nap", "arguments": {"seconds": 30}}),
            )
            .await
        })
    };
    let http = shardgate_tests::http().build()?;
    let napping_now = cluster
        .wait_for_metric(
            &http,
            "shardgate_node_calls_in_flight",
            Duration::from_secs(10),
            |n| n >= 1,
        )
        .await?;
    assert!(napping_now, "the nap call never started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let answer = tokio::time::timeout(Duration::from_secs(10), napping).await???;
    assert!(
        answer.get("error").is_some(),
        "the interrupted request gets an error: {answer}"
    );
    println!("interrupted: {}", answer["error"]);
    let second = pid_of(
        c.request(
            &sid,
            3,
            "tools/call",
            json!({"name": "pid", "arguments": {}}),
        )
        .await?,
    )?;
    assert_ne!(first, second, "a new process serves the session");
    let echo = c
        .request(
            &sid,
            4,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "alive"}}),
        )
        .await?;
    assert_eq!(tool_text(&echo).as_deref(), Some("alive"));
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t40_federated_upstreams_with_clashing_names_are_both_reachable() -> anyhow::Result<()> {
    let dir = scratch("federation")?;
    let config = "[[upstream]]\nname = \"a\"\n[upstream.builtin]\n\n[[upstream]]\nname = \"b\"\n[upstream.builtin]\n";
    let cluster = Cluster::builder()
        .nodes(2)
        .config(write_config(&dir, config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let mut names = Vec::new();
    let mut cursor: Option<Value> = None;
    for page in 0..50 {
        let params = match &cursor {
            Some(cur) => json!({"cursor": cur}),
            None => json!({}),
        };
        let list = c.request(&sid, 100 + page, "tools/list", params).await?;
        for t in list["result"]["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            names.push(t["name"].as_str().unwrap_or_default().to_string());
        }
        cursor = list["result"].get("nextCursor").cloned();
        if cursor.is_none() {
            break;
        }
    }
    assert!(names.contains(&"a__echo".to_string()), "{names:?}");
    assert!(names.contains(&"b__echo".to_string()), "{names:?}");
    let count = |name: &'static str, id: i64| {
        let (c, sid) = (c.clone(), sid.clone());
        async move {
            let answer = c
                .request(
                    &sid,
                    id,
                    "tools/call",
                    json!({"name": name, "arguments": {}}),
                )
                .await?;
            tool_text(&answer).ok_or_else(|| anyhow::anyhow!("{answer}"))
        }
    };
    assert_eq!(count("a__counter", 1).await?, "1");
    assert_eq!(count("a__counter", 2).await?, "2");
    assert_eq!(
        count("b__counter", 3).await?,
        "1",
        "each upstream keeps its own state"
    );
    let echo = c
        .request(
            &sid,
            4,
            "tools/call",
            json!({"name": "b__echo", "arguments": {"text": "b"}}),
        )
        .await?;
    assert_eq!(tool_text(&echo).as_deref(), Some("b"));
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t50_a_client_token_never_reaches_an_upstream() -> anyhow::Result<()> {
    let dir = scratch("token")?;
    let log = dir.join("headers.jsonl");
    let recording = Peer::recording(&log).await?;
    let config = write_config(&dir, &http_config("rec", &recording.url, "session"))?;
    let cluster = Cluster::builder().nodes(2).config(&config).start().await?;
    let c = Client {
        http: shardgate_tests::http()
            .default_headers(
                [(
                    reqwest::header::AUTHORIZATION,
                    reqwest::header::HeaderValue::from_static("Bearer client-secret-token"),
                )]
                .into_iter()
                .collect(),
            )
            .build()?,
        endpoint: cluster.endpoint.clone(),
    };
    let sid = c.initialize().await?;
    let answer = c
        .request(
            &sid,
            1,
            "tools/call",
            json!({"name": "whoami", "arguments": {"text": "x"}}),
        )
        .await?;
    assert_eq!(tool_text(&answer).as_deref(), Some("recorded: x"));
    cluster.stop().await?;

    let lines = std::fs::read_to_string(&log)?;
    let requests: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        requests.len() >= 3,
        "initialize, initialized, call: {lines}"
    );
    for r in &requests {
        assert_eq!(
            r["headers"]["authorization"], "Bearer node-credential",
            "the node's own credential, always: {r}"
        );
    }
    assert!(
        !lines.contains("client-secret-token"),
        "the client's token reached the upstream:\n{lines}"
    );
    Ok(())
}

/// The JSON-RPC answer to a session-era `initialize`, whatever it is.
async fn initialize_answer(c: &Client) -> anyhow::Result<Value> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "shardgate-tests", "version": "0"}
    }});
    shardgate_tests::mcp::response_of(c.post(&init).send().await?, &json!(0)).await
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn t35_stdio_processes_are_limited_and_end_with_their_session() -> anyhow::Result<()> {
    let dir = scratch("stdio-limits")?;
    let config = format!(
        "[limits]\nstdio_processes = 1\n\n{}",
        python_stdio_config()?
    );
    let cluster = Cluster::builder()
        .nodes(1)
        .config(write_config(&dir, &config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let first = c.initialize().await?;
    let answer = c
        .request(
            &first,
            1,
            "tools/call",
            json!({"name": "pid", "arguments": {}}),
        )
        .await?;
    let pid: i32 = tool_text(&answer).unwrap_or_default().parse()?;
    assert!(alive(pid));

    let refused = initialize_answer(&c).await?;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream py") && message.contains("stdio upstream processes"),
        "a second process is refused, naming the upstream and the limit: {refused}"
    );

    let status = c
        .http
        .delete(&c.endpoint)
        .header("mcp-session-id", &first)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await?
        .status();
    assert!(status.is_success(), "DELETE: {status}");
    let mut waited = 0;
    while alive(pid) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert!(!alive(pid), "the session's process ends with it");
    let second = c.initialize().await?;
    let echo = c
        .request(
            &second,
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "room"}}),
        )
        .await?;
    assert_eq!(
        tool_text(&echo).as_deref(),
        Some("room"),
        "its place is free again"
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t55_an_upstream_that_forgets_the_session_is_initialized_again() -> anyhow::Result<()> {
    let dir = scratch("upstream-404")?;
    let log = dir.join("headers.jsonl");
    let port = free_addr()?.port();
    let upstream = Peer::recording_on(&log, port).await?;
    let config = write_config(&dir, &http_config("rec", &upstream.url, "session"))?;
    let cluster = Cluster::builder().nodes(1).config(&config).start().await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let call = |id: i64, text: &'static str| {
        let (c, sid) = (c.clone(), sid.clone());
        async move {
            let answer = c
                .request(
                    &sid,
                    id,
                    "tools/call",
                    json!({"name": "whoami", "arguments": {"text": text}}),
                )
                .await?;
            tool_text(&answer).ok_or_else(|| anyhow::anyhow!("{answer}"))
        }
    };
    assert_eq!(call(1, "before").await?, "recorded: before");
    // A restarted upstream has forgotten every session: it answers 404 to ours.
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _upstream = Peer::recording_on(&log, port).await?;
    assert_eq!(call(2, "after").await?, "recorded: after");
    cluster.stop().await?;

    let lines = std::fs::read_to_string(&log)?;
    let initializes = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["method"] == "POST" && r["headers"].get("mcp-session-id").is_none())
        .count();
    assert_eq!(
        initializes, 2,
        "initialized once, then again after the 404:\n{lines}"
    );
    Ok(())
}

#[tokio::test]
async fn t56_a_dead_upstream_is_named_and_its_breaker_opens() -> anyhow::Result<()> {
    let dir = scratch("breaker")?;
    let closed = free_addr()?.port();
    let config = format!(
        "[[upstream]]\nname = \"gone\"\n[upstream.http]\nurl = \"http://127.0.0.1:{closed}/mcp\"\nbreaker_failures = 2\nbreaker_open_secs = 600\n"
    );
    let cluster = Cluster::builder()
        .nodes(1)
        .config(write_config(&dir, &config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let mut messages = Vec::new();
    for _ in 0..3 {
        let answer = initialize_answer(&c).await?;
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
        messages.push(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    println!("{messages:#?}");
    assert!(
        messages.iter().all(|m| m.starts_with("upstream gone: ")),
        "{messages:?}"
    );
    assert!(!messages[0].contains("not tried again"), "{messages:?}");
    assert!(
        messages[2].contains("not tried again"),
        "the breaker is open: {messages:?}"
    );
    cluster.stop().await?;
    Ok(())
}

/// A stateless-era upstream of the simplest kind: answers every request with an empty
/// complete result, and records the headers of every request it gets.
async fn recording_stateless_upstream()
-> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
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

#[tokio::test]
async fn t57_mcp_param_headers_reach_a_stateless_upstream_and_nothing_else_does()
-> anyhow::Result<()> {
    let dir = scratch("param-headers")?;
    let (url, seen) = recording_stateless_upstream().await?;
    let config = write_config(&dir, &http_config("modern", &url, "stateless"))?;
    let cluster = Cluster::builder().nodes(1).config(&config).start().await?;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "weather", "arguments": {"region": "eu-west"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }});
    let resp = shardgate_tests::http()
        .build()?
        .post(&cluster.endpoint)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "weather")
        .header("mcp-param-region", "eu-west")
        .header("authorization", "Bearer client-secret-token")
        .body(body.to_string())
        .send()
        .await?;
    let answer: Value = resp.json().await?;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    cluster.stop().await?;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let call = seen
        .iter()
        .find(|h| h.contains("mcp-method: tools/call"))
        .ok_or_else(|| anyhow::anyhow!("the call did not reach the upstream: {seen:?}"))?;
    assert!(call.contains("mcp-param-region: eu-west"), "{call}");
    assert!(call.contains("mcp-name: weather"), "{call}");
    assert!(
        call.contains("authorization: bearer node-credential"),
        "{call}"
    );
    assert!(!call.contains("client-secret-token"), "{call}");
    Ok(())
}
