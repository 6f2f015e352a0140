//! Passivation: with a store, a session nobody uses for `--passivate-after-secs` leaves its
//! node's memory, and its next request loads it from the store where it left off. A session
//! whose client listens on its standalone stream (an open GET) is not idle and stays.

use futures_util::StreamExt;
use shardgate_tests::mcp::{Client, SESSION_VERSION, SseReader};
use shardgate_tests::{Cluster, scratch};
use std::time::{Duration, Instant};

const SESSIONS: usize = 2_000;
const SAMPLE: usize = 50;
const GAUGE: &str = "shardgate_node_sessions";
/// `SHARDGATE_PASSIVATE_AFTER_SECS`: a session is passivated between one and two seconds
/// after its last request (the node looks once a second).
const PASSIVATE_AFTER: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_idle_sessions_leave_memory_and_come_back_where_they_left_off() -> anyhow::Result<()> {
    let dir = scratch("t87-passivation")?;
    let store = format!("sqlite:{}", dir.join("sessions.db").display());
    let cluster = Cluster::builder()
        .nodes(1)
        .env("SHARDGATE_STORE", &store)
        .env(
            "SHARDGATE_PASSIVATE_AFTER_SECS",
            &PASSIVATE_AFTER.as_secs().to_string(),
        )
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let http = c.http.clone();
    let gauge = || cluster.metric_of(&http, 0, GAUGE);

    // Many sessions, each counting to 2; some are passivated while the others are created.
    let started = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..SESSIONS)
        .map(|_| {
            let c = c.clone();
            async move {
                let sid = c.initialize().await?;
                for i in 1..=2 {
                    let n = c.count(&sid, i).await?;
                    anyhow::ensure!(n == i, "counter said {n} at call {i}");
                }
                anyhow::Ok(sid)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!(
        "{SESSIONS} sessions created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // All idle: the node holds none of them.
    let idle = Instant::now();
    assert!(
        cluster
            .wait_for_metric(&http, GAUGE, Duration::from_secs(20), |g| g == 0)
            .await?,
        "every idle session is passivated; the node still holds {}",
        gauge().await?
    );
    println!(
        "all passivated {:.1} s after the last was used",
        idle.elapsed().as_secs_f64()
    );

    // A sample comes back, each where it left off; the others stay in the store.
    let sample: Vec<&String> = ids.iter().step_by(SESSIONS / SAMPLE).collect();
    assert_eq!(sample.len(), SAMPLE);
    let began = Instant::now();
    let counts = futures_util::future::join_all(sample.iter().map(|sid| c.count(sid, 3))).await;
    let held = gauge().await?;
    let within = began.elapsed();
    for n in counts {
        assert_eq!(n?, 3, "a passivated session continues its counter");
    }
    println!(
        "{SAMPLE} sessions loaded again in {:.0} ms; the node holds {held}",
        within.as_secs_f64() * 1e3
    );
    if within < PASSIVATE_AFTER {
        // None of them has been idle long enough to go again, and no other came back.
        assert_eq!(held, SAMPLE as u64, "the node holds exactly the sample");
    } else {
        // Slower than the passivation delay: some may have gone again already.
        assert!(
            (1..=SAMPLE as u64).contains(&held),
            "the node holds some of the sample and nothing else: {held}"
        );
    }
    assert!(
        cluster
            .wait_for_metric(&http, GAUGE, Duration::from_secs(20), |g| g == 0)
            .await?,
        "the sample is passivated again; the node still holds {}",
        gauge().await?
    );

    // A client listening on its standalone stream keeps its session in memory; another
    // session, used at the same time, goes.
    let (listening, control) = (&ids[1], &ids[2]);
    let resp = c
        .http
        .get(&c.endpoint)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", listening.as_str())
        .header("mcp-protocol-version", SESSION_VERSION)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "the GET loads the passivated session");
    let mut events = SseReader::new(resp);
    let priming = tokio::time::timeout(Duration::from_secs(10), events.next()).await??;
    assert!(priming.is_some(), "the stream opens with its priming event");
    assert_eq!(c.count(control, 3).await?, 3);
    assert_eq!(gauge().await?, 2, "both sessions are loaded");
    assert!(
        cluster
            .wait_for_metric(&http, GAUGE, Duration::from_secs(20), |g| g == 1)
            .await?,
        "the unused session is passivated; the node holds {}",
        gauge().await?
    );
    // Several more looks of the reaper: the listened-to session stays, its stream open.
    match tokio::time::timeout(PASSIVATE_AFTER * 3, events.next()).await {
        Err(_) => {}
        Ok(Ok(None)) => panic!("the standalone stream was ended under its listener"),
        Ok(other) => panic!("unexpected on the standalone stream: {other:?}"),
    }
    assert_eq!(gauge().await?, 1, "the listened-to session stays in memory");
    assert_eq!(c.count(listening, 3).await?, 3);

    // Once its client stops listening, it is idle like any other, and still continues.
    drop(events);
    assert!(
        cluster
            .wait_for_metric(&http, GAUGE, Duration::from_secs(20), |g| g == 0)
            .await?,
        "a session nobody listens to any more is passivated; the node holds {}",
        gauge().await?
    );
    assert_eq!(c.count(listening, 4).await?, 4);
    assert_eq!(c.count(control, 4).await?, 4);

    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
