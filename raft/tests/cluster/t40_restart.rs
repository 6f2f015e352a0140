use crate::fixture::{Cluster, addr, id};
use shardgate_raft::MemberState;
use shardgate_raft::consensus::{Consensus, ConsensusError};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_a_restarted_node_keeps_its_id_term_and_log_and_rejoins() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let leader = c.leader().expect("leader");
    let n = [2, 1].into_iter().find(|n| *n != leader).expect("follower");
    let before = c.node(n).status();

    c.stop(n).await;
    c.wait_for(
        "the stopped node marked down",
        c.timing.down_after * 2,
        |c| c.state_of(leader, n) == Some(MemberState::Down),
    )
    .await;

    // Restart it cut off from everyone: what it shows comes from its own disk.
    c.router.set_unreachable(&addr(n), true);
    let node = c.start(n).await;
    c.wait_for(
        "vote, log and membership back from disk",
        Duration::from_secs(2),
        |c| {
            let s = c.node(n).status();
            s.membership == before.membership && s.term == before.term && s.voters == before.voters
        },
    )
    .await;
    assert_eq!(node.status().id, id(n));
    assert!(!node.serving(), "no leader heard yet");

    c.router.set_unreachable(&addr(n), false);
    c.wait_for(
        "the node active again everywhere",
        Duration::from_secs(5),
        |c| c.agreed(&[0, 1, 2], &[0, 1, 2], &[]),
    )
    .await;
    let after = c.membership(n);
    let down_epoch = before.membership.epoch + 1;
    assert_eq!(
        after.epoch,
        down_epoch + 1,
        "down, then one rejoin: {after:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_a_new_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::new(3).await;
    let founder = c.start(0).await;
    c.wait_for("a single-node cluster", Duration::from_secs(3), |c| {
        c.agreed(&[0], &[0], &[])
    })
    .await;
    // Enough changes for a snapshot and a purge of the log it covers.
    for i in 0..130 {
        let state = if i % 2 == 0 {
            MemberState::Draining
        } else {
            MemberState::Active
        };
        founder.set_state(&id(0), state).await.expect("set_state");
    }
    assert_eq!(c.membership(0).epoch, 131);

    c.start(1).await;
    c.wait_for("the newcomer caught up", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1], &[0, 1], &[])
    })
    .await;
    let snapshot = c.config(1).data_dir.join("snapshot.json");
    assert!(snapshot.exists(), "node-1 was sent a snapshot");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_a_data_dir_is_refused_to_another_node() {
    let mut c = Cluster::new(3).await;
    c.start(2).await;
    let mut wrong = c.config(1);
    wrong.data_dir = c.config(2).data_dir;
    let started = Consensus::start(wrong, c.router.transport(&addr(1))).await;
    assert!(
        matches!(&started, Err(ConsensusError::Storage { .. })),
        "{:?}",
        started.err()
    );
    c.shutdown().await;
}
