//! The HTTP connector end to end, against loopback sockets.

#[tokio::test]
async fn a_refused_connection_is_reported_without_the_url() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = crate::config::NodeFile::parse(&format!(
        "[[upstream]]\nname = 'remote'\n[upstream.http]\nurl = 'http://127.0.0.1:{port}/mcp?token=s3cret'\n"
    ))
    .expect("config");
    let Some(crate::config::UpstreamConfig { http: Some(h), .. }) = config.upstreams.first() else {
        panic!("an http upstream");
    };
    let connector = crate::upstream::connector::Connector::http("remote", h).expect("client");
    let err = crate::upstream::testing::Client::session()
        .run(&connector, "tools/list", serde_json::json!({}))
        .await
        .expect_err("nothing listens");
    assert!(
        err.message.starts_with("upstream remote: "),
        "{}",
        err.message
    );
    assert!(!err.message.contains("s3cret"), "{}", err.message);
    assert!(!err.message.contains("/mcp"), "{}", err.message);
}
