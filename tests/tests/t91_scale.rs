//! Scaling the local StatefulSet under load: `shardgate scale` adds `node-3` to a running `up`
//! and drains it away again while every session keeps calling `counter`. A planned change
//! fails no call and loses no session: each session's counter answers 1, 2, 3, … throughout,
//! with no error, no retry and no value skipped.

use shardgate_raft::MemberState;
use shardgate_tests::Cluster;
use shardgate_tests::mcp::Client;
use shardgate_tests::takeover::{count_once, owners, sessions_counted_to};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SESSIONS: usize = 32;
/// Steady load before, between and after the changes.
const SETTLE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn t10_scaling_out_and_in_under_load_fails_no_call_and_loses_no_session() -> anyhow::Result<()>
{
    let cluster = Cluster::builder().nodes(3).start().await?;
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 1).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = sids
        .iter()
        .map(|sid| {
            let (c, stop, sid) = (c.clone(), stop.clone(), sid.clone());
            tokio::spawn(async move {
                let mut got: Vec<Result<i64, String>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = 100 + got.len() as i64;
                    got.push(count_once(&c, &sid, id).await.map_err(|e| e.to_string()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                got
            })
        })
        .collect();

    tokio::time::sleep(SETTLE).await;
    let before = owners(&cluster.gateway_view().await?, &sids)?;
    let started = Instant::now();
    let out = cluster.shardgate(&["scale", "--nodes", "4"]).await?;
    assert!(out.contains("4 nodes"), "{out}");
    let grown = Instant::now() - started;
    let view = cluster.gateway_view().await?;
    let members: Vec<(&str, MemberState)> = view
        .members
        .iter()
        .map(|m| (m.id.0.as_str(), m.state))
        .collect();
    tokio::time::sleep(SETTLE).await;
    let wide = owners(&view, &sids)?;
    let moved_out = (0..SESSIONS).filter(|&i| before[i] != wide[i]).count();
    assert!(
        (0..SESSIONS).all(|i| before[i] == wide[i] || wide[i] == "node-3"),
        "only keys of the newcomer move: {before:?} → {wide:?}"
    );

    let started = Instant::now();
    let out = cluster.shardgate(&["scale", "--nodes", "3"]).await?;
    assert!(out.contains("3 nodes"), "{out}");
    let shrunk = Instant::now() - started;
    tokio::time::sleep(SETTLE).await;
    stop.store(true, Ordering::Relaxed);
    let after = cluster.gateway_view().await?;
    assert!(
        after.members.iter().all(|m| m.id.0 != "node-3"),
        "node-3 has left: {after:?}"
    );

    let mut problems = Vec::new();
    let mut calls = 0;
    for (task, sid) in load.into_iter().zip(&sids) {
        let got = task.await?;
        calls += got.len();
        let want: Vec<Result<i64, String>> = (2..2 + got.len() as i64).map(Ok).collect();
        if got != want {
            let first = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(0);
            problems.push(format!(
                "{sid}: from call {first} on answered {:?}",
                &got[first..got.len().min(first + 3)]
            ));
        }
    }
    println!(
        "scale 3 → 4 in {grown:?} (members {members:?}), {moved_out} of {SESSIONS} sessions \
         moved to node-3; 4 → 3 in {shrunk:?}; {calls} counter calls"
    );
    assert!(
        moved_out > 0,
        "no session moved to node-3, so nothing was handed off: {wide:?}"
    );
    assert!(
        problems.is_empty(),
        "calls failed or counters skipped while scaling:\n{}",
        problems.join("\n")
    );
    // Every session is where the ring says, and answers.
    for (i, sid) in sids.iter().enumerate() {
        let next = count_once(&c, sid, 10_000 + i as i64)
            .await
            .map_err(|e| anyhow::anyhow!("{sid} after scaling: {e}"))?;
        assert!(next > 1, "{sid} continued its counter: {next}");
    }
    cluster.stop().await?;
    Ok(())
}
