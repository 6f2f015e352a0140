use crate::fixture::{Cluster, addr, id};
use shardgate_raft::MemberState;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_partitioned_leader_is_replaced_marked_down_and_fails_closed() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let old = c.leader().expect("leader");
    let rest: Vec<u64> = [0, 1, 2].into_iter().filter(|n| *n != old).collect();
    let old_term = c.node(old).status().term;
    let old_view = c.membership(old);
    assert!(c.node(old).serving());

    let cut = Instant::now();
    c.router
        .partition(&[vec![addr(old)], rest.iter().map(|n| addr(*n)).collect()]);

    c.wait_for(
        "a new leader on the majority side",
        Duration::from_secs(3),
        |c| c.leader_of(&rest).is_some(),
    )
    .await;
    let new = c.leader_of(&rest).expect("new leader");
    assert!(c.node(new).status().term > old_term);
    // The isolated old leader stops serving before the new one may give its keys away.
    c.wait_for(
        "the isolated old leader to stop serving",
        c.timing.lease + Duration::from_millis(500),
        |c| !c.node(old).serving(),
    )
    .await;
    assert!(cut.elapsed() < c.timing.lease + Duration::from_millis(500));
    assert_ne!(
        c.state_of(new, old),
        Some(MemberState::Down),
        "marked down while it still served"
    );
    c.wait_for("the old leader marked down", c.timing.down_after * 2, |c| {
        c.state_of(new, old) == Some(MemberState::Down)
    })
    .await;
    let failover = cut.elapsed();
    assert!(
        failover < c.timing.down_after + Duration::from_secs(1),
        "took {failover:?}"
    );
    assert!(rest.iter().all(|n| c.node(*n).serving()));
    assert_eq!(
        c.membership(old),
        old_view,
        "the minority side commits nothing"
    );
    assert_eq!(
        c.node(old).status().leader,
        Some(id(old)),
        "it still believes it leads"
    );

    c.router.heal();
    c.wait_for(
        "the old leader back as a follower",
        Duration::from_secs(5),
        |c| c.agreed(&[0, 1, 2], &[0, 1, 2], &[]) && c.leader() != Some(old),
    )
    .await;
    c.shutdown().await;
}
