//! Membership through Raft over real processes: `kill -9` of a follower and of the leader,
//! restarts under the same identity, and scaling 3 → 5 → 3 through join and drain.

use shardgate_raft::{MemberState, Membership, Ring};
use shardgate_tests::raft::{RaftCluster, active, state_of};
use shardgate_tests::scratch;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn t10_killed_members_go_down_and_come_back_with_their_id() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("raft-kill")?, 5, &[])?;
    cluster.start(5).await?;
    cluster.start_gateway().await?;
    let (_, view) = cluster.until_gateway(CONVERGE, |m| active(m) == 5).await?;
    println!("formed at epoch {}", view.epoch);

    let leader = cluster.leader().await?;
    let follower = (0..5).find(|&i| i != leader).unwrap_or(0);
    for (who, victim) in [("follower", follower), ("leader", leader)] {
        let before = cluster.gateway_view().await?.epoch;
        cluster.kill(victim).await?;
        let (took, view) = cluster
            .until_gateway(CONVERGE, |m| {
                m.epoch > before && state_of(m, victim) == Some(MemberState::Down)
            })
            .await?;
        println!(
            "{who} node-{victim} killed: Down at epoch {} after {took:?}",
            view.epoch
        );
        assert_eq!(view.epoch, before + 1, "one verdict, one epoch: {view:?}");
        let agreed = cluster.wait_for_agreement(CONVERGE).await?;
        assert_eq!(state_of(&agreed, victim), Some(MemberState::Down));
        assert_eq!(active(&agreed), 4, "the others stay active: {agreed:?}");
        let new_leader = cluster.leader().await?;
        assert_ne!(new_leader, victim, "a dead node does not lead");

        cluster.start_node(victim).await?;
        let (took, view) = cluster
            .until_gateway(CONVERGE, |m| {
                state_of(m, victim) == Some(MemberState::Active) && active(m) == 5
            })
            .await?;
        println!(
            "node-{victim} restarted: Active at epoch {} after {took:?}",
            view.epoch
        );
        let status = cluster.status(victim).await?;
        assert_eq!(status.id.0, format!("node-{victim}"), "the same identity");
        let settled = cluster.wait_for_agreement(CONVERGE).await?;
        assert_eq!(
            settled.epoch,
            agreed.epoch + 1,
            "back by one rejoin, not marked Down again on stale silence: {settled:?}"
        );
    }
    Ok(())
}

/// The share of `keys` whose owner differs between two views.
fn moved(before: &Membership, after: &Membership, keys: usize) -> f64 {
    let (a, b) = (Ring::new(before.clone()), Ring::new(after.clone()));
    let changed = (0..keys)
        .filter(|k| {
            let key = format!("session-{k}");
            a.owner(key.as_bytes()).map(|m| &m.id) != b.owner(key.as_bytes()).map(|m| &m.id)
        })
        .count();
    changed as f64 / keys as f64
}

#[tokio::test]
async fn t20_scaling_3_to_5_to_3_keeps_every_view_identical() -> anyhow::Result<()> {
    let mut cluster = RaftCluster::new(scratch("raft-scale")?, 5, &[])?;
    cluster.start(3).await?;
    let mut view = cluster.wait_for_agreement(CONVERGE).await?;
    assert_eq!(active(&view), 3);

    for i in [3, 4] {
        cluster.start_node(i).await?;
        cluster.wait_for_active(i + 1, CONVERGE).await?;
        let next = cluster.wait_for_agreement(CONVERGE).await?;
        assert!(next.epoch > view.epoch);
        let share = moved(&view, &next, 20_000);
        let ideal = 1.0 / (i + 1) as f64;
        println!(
            "node-{i} joined: epoch {} → {}, {:.3} of keys moved (ideal {ideal:.3})",
            view.epoch, next.epoch, share
        );
        assert!(
            share > ideal * 0.6 && share < ideal * 1.5,
            "moved {share}, ideal {ideal}"
        );
        view = next;
    }
    let status = cluster.status(0).await?;
    assert_eq!(status.voters.len(), 3, "voters are capped: {status:?}");
    assert_eq!(status.learners.len(), 2, "{status:?}");
    // What an operator sees: `shardgate status`, as JSON and as text, with the cluster's
    // secret from the environment.
    let shardgate = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(shardgate_tests::shardgate_bin()?)
            .args(args)
            .env("SHARDGATE_CLUSTER_SECRET", shardgate_tests::CLUSTER_SECRET)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok(String::from_utf8(out.stdout)?)
    };
    let seeds = cluster.addr(1)?;
    let json: serde_json::Value = serde_json::from_str(
        &shardgate(vec![
            "status".into(),
            "--seeds".into(),
            seeds.clone(),
            "--json".into(),
        ])
        .await?,
    )?;
    assert_eq!(
        json["membership"]["members"].as_array().map(Vec::len),
        Some(5)
    );
    assert_eq!(json["membership"]["epoch"], view.epoch);
    let text = shardgate(vec!["status".into(), "--seeds".into(), seeds]).await?;
    println!("{text}");
    assert!(text.contains(&format!("epoch {}", view.epoch)), "{text}");
    assert!(text.contains("leader node-"), "{text}");
    assert_eq!(text.matches(" active ").count(), 5, "{text}");

    // One leaves by `shardgate drain`, the other by SIGTERM.
    for i in [4, 3] {
        match i {
            4 => cluster.drain(i).await?,
            _ => cluster.terminate(i).await?,
        }
        let next = cluster.wait_for_agreement(CONVERGE).await?;
        assert!(state_of(&next, i).is_none(), "node-{i} has left: {next:?}");
        let share = moved(&view, &next, 20_000);
        println!(
            "node-{i} drained: epoch {} → {}, {:.3} of keys moved",
            view.epoch, next.epoch, share
        );
        // Only the leaver's keys move: about 1/(n+1) of them.
        let leaver_share = 1.0 / (i + 1) as f64;
        assert!(
            share > leaver_share * 0.6 && share < leaver_share * 1.5,
            "moved {share}, the leaver held about {leaver_share}"
        );
        view = next;
    }
    assert_eq!(active(&view), 3);
    let status = cluster.status(0).await?;
    assert_eq!(status.voters.len(), 3, "{status:?}");
    Ok(())
}

#[tokio::test]
async fn t30_a_node_cut_off_from_the_quorum_fails_closed() -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut cluster = RaftCluster::new(scratch("raft-lease")?, 3, &[])?;
    cluster.start(3).await?;
    cluster.wait_for_agreement(CONVERGE).await?;
    let signal = |cluster: &RaftCluster, i: usize, sig: Signal| -> anyhow::Result<()> {
        let pid = cluster
            .pid(i)
            .ok_or_else(|| anyhow::anyhow!("node-{i} is not running"))?;
        kill(Pid::from_raw(pid as i32), sig)?;
        Ok(())
    };
    // A session-era initialize that node-0 would host, sent to it directly.
    let http = shardgate_tests::http().build()?;
    let initialize = |cluster: &RaftCluster| {
        let node = cluster.addrs(0);
        let http = http.clone();
        async move {
            let node = node.ok_or_else(|| anyhow::anyhow!("node-0 has not started"))?;
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}});
            let resp = shardgate_tests::signed_post(&http, node.session, &body, &[])?
                .send()
                .await?;
            anyhow::Ok(resp.status().as_u16())
        }
    };
    assert_eq!(initialize(&cluster).await?, 200, "serving while in quorum");

    // Freeze the other two: node-0 hears from no quorum.
    signal(&cluster, 1, Signal::SIGSTOP)?;
    signal(&cluster, 2, Signal::SIGSTOP)?;
    let started = std::time::Instant::now();
    let mut status = cluster.status(0).await?;
    while status.serving && started.elapsed() < CONVERGE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = cluster.status(0).await?;
    }
    println!("node-0 stopped serving after {:?}", started.elapsed());
    assert!(!status.serving, "{status:?}");
    assert_eq!(initialize(&cluster).await?, 503, "fails closed");

    signal(&cluster, 1, Signal::SIGCONT)?;
    signal(&cluster, 2, Signal::SIGCONT)?;
    let started = std::time::Instant::now();
    while !cluster.status(0).await?.serving && started.elapsed() < CONVERGE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("node-0 serves again after {:?}", started.elapsed());
    assert_eq!(
        initialize(&cluster).await?,
        200,
        "serving again with a quorum"
    );
    Ok(())
}

#[tokio::test]
async fn t40_a_frozen_node_does_not_hold_the_gateway_back() -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut cluster = RaftCluster::new(scratch("raft-frozen")?, 5, &["--timings", "production"])?;
    cluster.start(5).await?;
    cluster.start_gateway().await?;
    let (_, view) = cluster.until_gateway(CONVERGE, |m| active(m) == 5).await?;
    // The gateway asks the members in order, so it is polling node-0 now. Frozen, node-0
    // keeps the connection open and never answers: only another node can bring the news.
    let pid = cluster
        .pid(0)
        .ok_or_else(|| anyhow::anyhow!("node-0 is not running"))?;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
    let outcome = cluster
        .until_gateway(Duration::from_secs(5), |m| {
            m.epoch > view.epoch && state_of(m, 0) == Some(MemberState::Down)
        })
        .await;
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT)?;
    let (took, _) = outcome?;
    println!("frozen node-0 is Down at the gateway after {took:?}");
    Ok(())
}
