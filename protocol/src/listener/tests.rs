use super::body::{InFlight, Timed};
use super::*;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::future::poll_fn;
use hyper::body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[test]
fn presets_are_valid_and_zero_is_refused() {
    for preset in [
        ListenerLimits::CLIENT,
        ListenerLimits::ADMIN,
        ListenerLimits::NODE_SESSION,
        ListenerLimits::NODE_INTERNAL,
    ] {
        assert_eq!(preset.validate(), Ok(()));
    }
    let idle = ListenerLimits {
        idle_timeout: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(idle.validate(), Err(LimitsError::Zero("idle timeout")));
    let none = ListenerLimits {
        max_connections: 0,
        ..Default::default()
    };
    assert_eq!(none.validate(), Err(LimitsError::Zero("max connections")));
}

#[test]
fn only_the_node_session_listener_takes_many_streams() {
    assert_eq!(ListenerLimits::NODE_SESSION.max_concurrent_streams, 100_000);
    assert_eq!(ListenerLimits::CLIENT.max_concurrent_streams, 256);
    assert_eq!(ListenerLimits::NODE_INTERNAL.max_concurrent_streams, 256);
    let short = ListenerLimits {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let admin = ListenerLimits::ADMIN.with_timeouts_of(&short);
    assert_eq!(admin.idle_timeout, Duration::from_secs(2));
    assert_eq!(admin.max_connections, ListenerLimits::ADMIN.max_connections);
}

#[test]
fn connection_limits_fit_the_descriptor_table() {
    let (mut client, mut admin) = (ListenerLimits::CLIENT, ListenerLimits::ADMIN);
    // Roomy enough, or unlimited: untouched.
    assert_eq!(
        fit_to_descriptors(&mut [&mut client, &mut admin], 1 << 20),
        None
    );
    assert_eq!(
        fit_to_descriptors(&mut [&mut client, &mut admin], u64::MAX),
        None
    );
    assert_eq!(client.max_connections, 10_000);
    // 1024 descriptors: three quarters for the listeners, shared in proportion.
    assert_eq!(
        fit_to_descriptors(&mut [&mut client, &mut admin], 1024),
        Some(10_256)
    );
    assert_eq!(client.max_connections, 748);
    assert_eq!(admin.max_connections, 19);
    assert!(client.max_connections + admin.max_connections <= 768);
    // Never below one connection.
    fit_to_descriptors(&mut [&mut client, &mut admin], 4);
    assert_eq!((client.max_connections, admin.max_connections), (2, 1));
}

fn conn(epoch: Instant) -> Conn {
    Conn {
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        evicted: AtomicBool::new(false),
        wake: Notify::new(),
        epoch,
    }
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_before_the_first_request_and_between_requests() {
    let epoch = Instant::now();
    let conn = Arc::new(conn(epoch));
    let limits = ListenerLimits::CLIENT;
    assert!(limits.header_timeout < limits.idle_timeout);
    assert_eq!(
        conn.close_at(&limits, None),
        Some(epoch + limits.idle_timeout),
        "a connection not used yet (a pool's spare) waits as long as an idle one"
    );

    let request = InFlight::start(&conn);
    assert_eq!(conn.close_at(&limits, None), None, "never while in flight");
    tokio::time::sleep(Duration::from_secs(100)).await;
    drop(request);
    let idle = epoch + Duration::from_secs(100);
    assert_eq!(
        conn.close_at(&limits, None),
        Some(idle + limits.idle_timeout)
    );
    // Its end woke the connection's task.
    tokio::time::timeout(Duration::from_millis(1), conn.wake.notified())
        .await
        .expect("woken");

    let closing = Instant::now() + Duration::from_secs(1);
    assert_eq!(
        conn.close_at(&limits, Some(closing)),
        Some(closing + CLOSE_GRACE)
    );
}

/// A request body fed by hand.
struct Chan(mpsc::Receiver<Bytes>);

impl Body for Chan {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_fails_only_after_making_no_progress_for_the_timeout() {
    let (tx, rx) = mpsc::channel(4);
    let stalled = Arc::new(AtomicBool::new(false));
    let mut body = Timed {
        body: Chan(rx),
        timeout: Duration::from_secs(30),
        stall: None,
        waiting: false,
        stalled: Some(stalled.clone()),
    };
    let start = Instant::now();
    let feed = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            let _ = tx.send(Bytes::from_static(b"0123456789")).await;
        }
        // Then nothing, and the sender stays open.
        std::future::pending::<()>().await;
    });
    for _ in 0..3 {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Ok(_))));
    }
    let err = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(matches!(err, Some(Err(_))));
    assert!(stalled.load(Ordering::Relaxed));
    assert_eq!(start.elapsed(), Duration::from_secs(90));
    feed.abort();
}

fn short() -> ListenerLimits {
    ListenerLimits {
        max_connections: 2,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

/// A listener on a free port with `limits`, serving `/ok`, `/slow` (answered after 600 ms), a
/// slow `/stream` and `/echo`.
async fn listen(limits: ListenerLimits) -> (SocketAddr, CancellationToken) {
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "slow"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let ticks = futures_util::stream::unfold(0, |n| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    (n < 5).then(|| (Ok::<_, Infallible>(Bytes::from("tick\n")), n + 1))
                });
                axum::body::Body::from_stream(ticks)
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, limits, router, None, shutdown.clone()));
    (addr, shutdown)
}

/// Everything the server sends until it closes the connection.
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn idle_connections_make_room_and_are_closed() {
    let (addr, shutdown) = listen(short()).await;
    let mut idle1 = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _idle2 = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // At the limit: the connection idle longest goes, the newcomer is served.
    let mut fresh = TcpStream::connect(addr).await.expect("connect");
    fresh
        .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    assert!(read_all(&mut fresh).await.starts_with("HTTP/1.1 200"));
    assert_eq!(read_all(&mut idle1).await, "", "evicted without a word");
    // A connection that sends nothing is closed after the idle timeout.
    let started = Instant::now();
    let mut idle3 = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(read_all(&mut idle3).await, "");
    assert!(started.elapsed() >= Duration::from_millis(250));
    shutdown.cancel();
}

#[tokio::test]
async fn a_response_stream_outlives_the_idle_and_body_timeouts() {
    let (addr, shutdown) = listen(short()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(&mut tcp).await;
    assert_eq!(answer.matches("tick").count(), 5, "{answer}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let (addr, shutdown) = listen(short()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .expect("write");
    let answer = read_all(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    shutdown.cancel();
}

/// A listener whose idle timeout is far longer than its head timeout.
fn heads_short_idle_long() -> ListenerLimits {
    ListenerLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..short()
    }
}

/// What one request on a kept-alive connection gets: the status line and body of a small
/// answer, read without waiting for the connection to close.
async fn ask(tcp: &mut TcpStream, path: &str) -> String {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_not_the_head_timeout() {
    let (addr, shutdown) = listen(heads_short_idle_long()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(ask(&mut tcp, "/ok").await.starts_with("HTTP/1.1 200"));
    // Idle for three head timeouts: a client's pool may keep it that long and more.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = ask(&mut tcp, "/ok").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_head_that_trickles_in_is_cut_after_the_head_timeout() {
    let (addr, shutdown) = listen(heads_short_idle_long()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(ask(&mut tcp, "/ok").await.starts_with("HTTP/1.1 200"));
    // The next head starts and never ends: the connection closes without an answer.
    let started = Instant::now();
    tcp.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    assert_eq!(read_all(&mut tcp).await, "");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_secs(5));
    shutdown.cancel();
}

#[tokio::test]
async fn a_first_request_that_outlasts_the_head_timeout_leaves_the_connection_open() {
    let (addr, shutdown) = listen(heads_short_idle_long()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // In flight for twice the head timeout, from the connection's first moments.
    let first = ask(&mut tcp, "/slow").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = ask(&mut tcp, "/ok").await;
    assert!(again.starts_with("HTTP/1.1 200"), "kept alive: {again:?}");
    shutdown.cancel();
}

/// An HTTP/2 frame: its header (length, type, flags, stream) and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("a small frame")
        .to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_GOAWAY: u8 = 0x7;

/// `GET /ok` on `stream`, ending the stream: HPACK-indexed `:method GET`, `:scheme http`,
/// `:path /` replaced by a literal `/ok`, and a literal `:authority x`.
fn h2_get_ok(stream: u32) -> Vec<u8> {
    let block = [0x82, 0x86, 0x04, 0x03, b'/', b'o', b'k', 0x01, 0x01, b'x'];
    h2_frame(H2_HEADERS, 0x4 | 0x1, stream, &block)
}

/// Opens `resets` streams on a new HTTP/2 connection and resets each at once, all in one
/// write, then asks `GET /ok`; returns the types of the frames the server sent on stream 0
/// (a GOAWAY among them when it gave up on the connection), and whether `/ok` was answered.
async fn open_and_reset(addr: SocketAddr, resets: u32) -> (Vec<u8>, bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    for n in 0..resets {
        let stream = 2 * n + 1;
        out.extend(h2_get_ok(stream));
        // CANCEL, as a client that gave up on its call sends.
        out.extend(h2_frame(H2_RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let last = 2 * resets + 1;
    out.extend(h2_get_ok(last));
    tcp.write_all(&out).await.expect("write");
    let mut seen = Vec::new();
    let mut answered = false;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !answered {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await;
        let Ok(Ok(n)) = read else { break };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            match stream {
                0 => seen.push(buf[3]),
                s if s == last && buf[3] == H2_HEADERS => answered = true,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    (seen, answered)
}

#[tokio::test]
async fn a_node_takes_a_burst_of_resets_where_a_client_listener_closes_the_connection() {
    let (client, shutdown) = listen(ListenerLimits::CLIENT).await;
    let (frames, answered) = open_and_reset(client, 30).await;
    assert!(frames.contains(&H2_GOAWAY), "a flood of resets: {frames:?}");
    assert!(!answered);
    shutdown.cancel();
    let (node, shutdown) = listen(ListenerLimits::NODE_SESSION).await;
    let (frames, answered) = open_and_reset(node, 30).await;
    assert!(!frames.contains(&H2_GOAWAY), "{frames:?}");
    assert!(answered, "the connection goes on after the resets");
    shutdown.cancel();
}
