//! Connection hygiene on every listener (`node/src/listener.rs`): idle connections cannot
//! crowd out clients, stalled request bodies are cut off, long responses are not, and HTTP/2
//! clients get only their share of streams. Timeouts are shortened through flags.

use serde_json::json;
use shardgate_tests::mcp::{Client, SseReader};
use shardgate_tests::{GatewayAddrs, NodeAddrs, Process, scratch, start_gateway, start_node};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A one-node cluster and a gateway in front of it, each started with its own extra flags.
struct Setup {
    node: NodeAddrs,
    gw: GatewayAddrs,
    gateway: Process,
    _node: Process,
}

async fn setup(name: &str, node_flags: &[&str], gateway_flags: &[&str]) -> anyhow::Result<Setup> {
    let dir = scratch(name)?;
    let mut args: Vec<String> = ["--id", "node-0", "--data-dir"].map(String::from).to_vec();
    args.push(dir.join("node-0").display().to_string());
    args.extend(node_flags.iter().map(|f| f.to_string()));
    let (process, node) = start_node(&args).await?;
    let mut args = vec![
        "--seeds".to_string(),
        node.internal.to_string(),
        "--members".into(),
        format!("node-0={}/{}", node.session, node.internal),
    ];
    args.extend(gateway_flags.iter().map(|f| f.to_string()));
    let (gateway, gw) = start_gateway(&args).await?;
    let http = shardgate_tests::http().build()?;
    for ready in [
        format!("http://{}/health/ready", node.admin),
        format!("http://{}/health/ready", gw.admin),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            anyhow::ensure!(Instant::now() < deadline, "{ready} not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Setup {
        node,
        gw,
        gateway,
        _node: process,
    })
}

fn endpoint(gw: &GatewayAddrs) -> String {
    format!("http://{}/mcp", gw.mcp)
}

/// Waits until the server closes `tcp` (EOF or reset); false if it is still open at `deadline`.
async fn closed_by(tcp: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    let left = deadline.saturating_duration_since(Instant::now());
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(left, read).await.is_ok()
}

/// Descriptors the process has open (Linux).
fn descriptors(process: &Process) -> anyhow::Result<usize> {
    let pid = process.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[tokio::test]
async fn t10_idle_sockets_beyond_the_limit_do_not_lock_clients_out() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(4);
    let s = setup(
        "t55-flood",
        &[],
        &[
            "--max-connections",
            "50",
            "--header-timeout-secs",
            "4",
            "--idle-timeout-secs",
            "4",
        ],
    )
    .await?;
    let client = Client::new(&endpoint(&s.gw));
    client.initialize().await?;
    let before = descriptors(&s.gateway)?;

    let start = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(s.gw.mcp).await?);
    }
    // A client that comes now is served at once: the listener closes idle connections to make
    // room, long before their timeouts.
    let fresh = Client::new(&endpoint(&s.gw));
    tokio::time::timeout(Duration::from_secs(3), fresh.initialize()).await??;
    assert!(start.elapsed() < timeout, "served before any idle timeout");
    let during = descriptors(&s.gateway)?;
    assert!(
        during <= before + 50 + 5,
        "the gateway holds {during} descriptors (from {before}) under 200 idle sockets"
    );

    // Every idle socket is closed by the server within the idle timeout, with margin.
    let deadline = start + timeout + Duration::from_secs(3);
    for (i, tcp) in idle.iter_mut().enumerate() {
        assert!(closed_by(tcp, deadline).await, "idle socket {i} still open");
    }
    Ok(())
}

#[tokio::test]
async fn t20_a_stalled_body_is_cut_off() -> anyhow::Result<()> {
    let s = setup("t55-stall", &[], &["--body-timeout-secs", "2"]).await?;
    let mut tcp = TcpStream::connect(s.gw.mcp).await?;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: 1000\r\n\r\n",
        s.gw.mcp
    );
    let start = Instant::now();
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(b"{\"jsonrpc\"").await?; // 10 of 1,000 bytes, then nothing
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), tcp.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "cut off after {took:?}"
    );
    Ok(())
}

#[tokio::test]
async fn t30_a_response_stream_outlives_the_idle_and_body_timeouts() -> anyhow::Result<()> {
    let short = [
        "--header-timeout-secs",
        "2",
        "--idle-timeout-secs",
        "2",
        "--body-timeout-secs",
        "2",
    ];
    let s = setup("t55-stream", &short, &short).await?;
    for http2 in [false, true] {
        let mut http = shardgate_tests::http();
        if http2 {
            http = http.http2_prior_knowledge();
        }
        let client = Client::with_http(http.build()?, &endpoint(&s.gw));
        let sid = client.initialize().await?;
        // Two silent gaps of 2.5 s each: longer than every timeout, twice over in all.
        let slow = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": 2, "delay_ms": 2500},
            "_meta": {"progressToken": "p"}
        }});
        let start = Instant::now();
        let resp = client.session_post(&sid, &slow).send().await?;
        assert_eq!(resp.status(), 200);
        let mut reader = SseReader::new(resp);
        let mut progress = 0;
        let mut result = None;
        while let Some(event) = reader.next().await? {
            let Some(msg) = event.json() else { continue };
            if msg["method"] == "notifications/progress" {
                progress += 1;
            } else if msg["id"] == 1 {
                result = Some(msg);
                break;
            }
        }
        let result = result.expect("the call's result on the stream");
        assert_eq!(result["result"]["content"][0]["text"], "Finished 2 steps");
        assert_eq!(progress, 2, "http2 {http2}");
        assert!(start.elapsed() >= Duration::from_secs(5));
        // The same connection still serves the next request.
        assert_eq!(client.count(&sid, 2).await?, 1);
    }
    Ok(())
}

#[tokio::test]
async fn t40_http2_streams_beyond_the_client_limit_are_refused() -> anyhow::Result<()> {
    let s = setup("t55-streams", &[], &[]).await?;
    let mut tcp = TcpStream::connect(s.gw.mcp).await?;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    // 300 requests whose bodies never come, so each holds its stream open.
    let block = request_headers(&s.gw.mcp);
    let mut out = Vec::new();
    for i in 0..300u32 {
        out.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    tcp.write_all(&out).await?;

    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused.len() < 44 && Instant::now() < deadline {
        let Ok(read) = tokio::time::timeout(Duration::from_secs(1), read_frame(&mut tcp)).await
        else {
            continue;
        };
        let (kind, flags, stream, payload) = read?;
        match kind {
            SETTINGS if flags & ACK == 0 => tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await?,
            RST_STREAM if payload.get(..4) == Some(&REFUSED_STREAM) => refused.push(stream),
            GOAWAY => anyhow::bail!("the gateway closed the connection: {payload:?}"),
            _ => {}
        }
    }
    // The client limit is 256: the first 256 streams are taken, the last 44 refused.
    refused.sort_unstable();
    let expected: Vec<u32> = (256..300).map(|i| 2 * i + 1).collect();
    assert_eq!(refused, expected);
    Ok(())
}

#[tokio::test]
async fn t50_node_listeners_close_idle_sockets() -> anyhow::Result<()> {
    let s = setup("t55-node", &["--idle-timeout-secs", "2"], &[]).await?;
    let start = Instant::now();
    let mut idle = Vec::new();
    for addr in [s.node.session, s.node.internal, s.node.admin] {
        for _ in 0..5 {
            idle.push((addr, TcpStream::connect(addr).await?));
        }
    }
    let deadline = start + Duration::from_secs(2 + 3);
    for (addr, tcp) in &mut idle {
        assert!(closed_by(tcp, deadline).await, "idle socket to {addr} open");
    }
    // And the gateway's pooled connection to the node still works.
    let client = Client::new(&endpoint(&s.gw));
    let sid = client.initialize().await?;
    let answer = client
        .request(&sid, 1, "tools/list", json!({}))
        .await
        .map(|v| v["result"]["tools"].is_array());
    assert!(answer?, "tools/list through the gateway");
    Ok(())
}

// A few HTTP/2 frames by hand: a well-behaved client (h2, reqwest) never opens more streams
// than the server allows, so only a raw one can show what happens to the excess.

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: [u8; 4] = [0, 0, 0, 7];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A POST to `/mcp` that declares a body, as HPACK literals without indexing.
fn request_headers(authority: &SocketAddr) -> Vec<u8> {
    let fields = [
        (":method", "POST".to_string()),
        (":scheme", "http".into()),
        (":path", "/mcp".into()),
        (":authority", authority.to_string()),
        ("content-type", "application/json".into()),
        ("accept", "application/json, text/event-stream".into()),
        ("content-length", "100".into()),
    ];
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend(name.as_bytes());
        block.push(value.len() as u8);
        block.extend(value.as_bytes());
    }
    block
}

async fn read_frame(tcp: &mut TcpStream) -> anyhow::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}
