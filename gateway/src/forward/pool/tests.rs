use super::*;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::server::conn::http2 as server;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// An h2c server whose answers end when `release` turns true; counts the connections it
/// accepted and those that ended.
struct Server {
    addr: SocketAddr,
    release: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release, _) = watch::channel(false);
    let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (tx, a, e) = (release.clone(), accepted.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (tx, e) = (tx.clone(), e.clone());
            tokio::spawn(async move {
                let answer = service_fn(move |_req| {
                    let mut released = tx.subscribe();
                    async move {
                        let done = stream::once(async move {
                            let _ = released.wait_for(|r| *r).await;
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"done")))
                        });
                        Ok::<_, Infallible>(Response::new(StreamBody::new(done)))
                    }
                });
                let _ = server::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(100_000)
                    .serve_connection(TokioIo::new(tcp), answer)
                    .await;
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        addr,
        release,
        accepted,
        ended,
    }
}

fn pool() -> Pool<HttpConnector> {
    Pool::new(HttpConnector::new())
}

fn get(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}/mcp"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn send(pool: &Pool<HttpConnector>, addr: SocketAddr) -> Response<NodeBody> {
    match pool.request(get(addr)).await {
        Ok(resp) => resp,
        Err(Failed::Unsent(e)) => panic!("unsent: {e}"),
        Err(Failed::Sent(e)) => panic!("failed: {e}"),
    }
}

fn conns(pool: &Pool<HttpConnector>, addr: SocketAddr) -> Vec<usize> {
    let nodes = lock(&pool.nodes);
    let Some(node) = nodes.get(&addr.to_string()) else {
        return Vec::new();
    };
    let state = lock(&node.state);
    state
        .conns
        .iter()
        .map(|c| c.streams.load(Ordering::SeqCst))
        .collect()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 2 s");
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let s = server().await;
    let pool = pool();
    s.release.send_replace(true);
    for _ in 0..20 {
        let body = send(&pool, s.addr).await.into_body();
        body.collect().await.expect("read");
    }
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(conns(&pool, s.addr), vec![0]);
}

#[tokio::test]
async fn a_full_connection_gets_a_neighbour_that_closes_once_its_streams_end() {
    let s = server().await;
    let pool = pool();
    let held: Vec<_> =
        futures_util::future::join_all((0..STREAMS + 44).map(|_| send(&pool, s.addr))).await;
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        2,
        "one more for the streams beyond {STREAMS}"
    );
    assert_eq!(conns(&pool, s.addr), vec![STREAMS, 44]);
    // The answers end: the second connection goes, the first stays for what comes next.
    s.release.send_replace(true);
    for resp in held {
        resp.into_body().collect().await.expect("read");
    }
    assert_eq!(conns(&pool, s.addr), vec![0]);
    eventually("the second connection closed", || {
        s.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    send(&pool, s.addr)
        .await
        .into_body()
        .collect()
        .await
        .expect("read");
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        2,
        "the first connection still serves"
    );
}

#[tokio::test]
async fn an_answer_dropped_unread_frees_its_place() {
    let s = server().await;
    let pool = pool();
    let held: Vec<_> =
        futures_util::future::join_all((0..STREAMS + 1).map(|_| send(&pool, s.addr))).await;
    assert_eq!(conns(&pool, s.addr), vec![STREAMS, 1]);
    drop(held);
    assert_eq!(conns(&pool, s.addr), vec![0]);
}

#[tokio::test]
async fn a_refused_connection_is_a_request_never_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let pool = pool();
    assert!(matches!(
        pool.request(get(addr)).await,
        Err(Failed::Unsent(_))
    ));
    // And the next request tries again rather than waiting on the failed attempt.
    assert!(matches!(
        pool.request(get(addr)).await,
        Err(Failed::Unsent(_))
    ));
}
