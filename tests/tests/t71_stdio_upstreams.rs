//! stdio upstreams behind the gateway: a process killed mid-request, the process budget, and a
//! process that ends with its session.

use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, scratch};
use std::time::Duration;

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

    let status = c.delete(&first).send().await?.status();
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
