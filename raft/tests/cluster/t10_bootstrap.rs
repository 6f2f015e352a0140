use crate::fixture::{Cluster, id};
use shardgate_raft::consensus::{ConsensusError, RPC_NAMES, Role};
use shardgate_raft::{MemberState, Ring};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_three_nodes_found_join_and_agree() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[2, 1, 0]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;

    // Three joins and nothing else: the joins that were retried, and node 0's own founding
    // join, changed nothing more.
    let view = c.membership(0);
    assert_eq!(view.epoch, 3, "{view:?}");
    assert_eq!(view.validate(), Ok(()));
    assert_eq!(Ring::new(view.clone()).epoch(), 3);
    let status = c.node(1).status();
    assert_eq!(status.id, id(1));
    assert!(status.term >= 1);
    let leader = c.leader().expect("a leader");
    for n in [0, 1, 2] {
        let want = if n == leader {
            Role::Leader
        } else {
            Role::Follower
        };
        assert_eq!(c.node(n).role(), want, "node {n}");
    }

    // Any node forwards a state change to the leader; every node sees it.
    let follower = [0, 1, 2].into_iter().find(|n| Some(*n) != c.leader());
    let follower = follower.expect("a follower");
    let after = c
        .node(follower)
        .set_state(&id(2), MemberState::Draining)
        .await
        .expect("set_state");
    assert_eq!(after.epoch, 4);
    c.wait_for("the change everywhere", Duration::from_secs(2), |c| {
        [0, 1, 2].iter().all(|n| c.membership(*n) == after)
    })
    .await;
    let unknown = c.node(follower).set_state(&id(9), MemberState::Down).await;
    assert!(matches!(unknown, Err(ConsensusError::UnknownMember(m)) if m == id(9)));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_every_rpc_name_is_served() {
    let mut c = Cluster::new(1).await;
    let node = c.start(0).await;
    for name in RPC_NAMES {
        let reply = node.rpc(name, b"not json").await;
        assert!(
            matches!(reply, Err(ConsensusError::BadRequest { ref rpc, .. }) if rpc == name),
            "{name}: {reply:?}"
        );
    }
    let unknown = node.rpc("nope", b"{}").await;
    assert!(matches!(unknown, Err(ConsensusError::UnknownRpc(_))));
    c.wait_for("a single-node cluster", Duration::from_secs(3), |c| {
        c.agreed(&[0], &[0], &[])
    })
    .await;
    c.shutdown().await;
}
