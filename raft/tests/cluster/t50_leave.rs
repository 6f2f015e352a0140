use crate::fixture::{Cluster, id};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_when_the_leader_leaves_a_learner_is_promoted() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2, 3]).await;
    c.wait_for("four members, three voters", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2, 3], &[0, 1, 2], &[3])
    })
    .await;
    // The hardest voter to lose: the leader removes itself and steps down mid-change.
    let leaving = c.leader().expect("leader");
    let epoch = c.membership(leaving).epoch;
    c.node(leaving).leave().await.expect("leave");
    c.stop(leaving).await;

    let rest: Vec<u64> = [0, 1, 2, 3].into_iter().filter(|n| *n != leaving).collect();
    c.wait_for("three voters, no learner", Duration::from_secs(5), |c| {
        c.agreed(&rest, &rest, &[])
    })
    .await;
    let view = c.membership(rest[0]);
    assert!(view.member(&id(leaving)).is_none());
    assert_eq!(view.epoch, epoch + 1, "one leave, one epoch");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t51_a_follower_voter_leaves() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2, 3]).await;
    c.wait_for("four members, three voters", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2, 3], &[0, 1, 2], &[3])
    })
    .await;
    let leaving = [1, 2]
        .into_iter()
        .find(|n| Some(*n) != c.leader())
        .expect("voter");
    c.node(leaving).leave().await.expect("leave");
    c.stop(leaving).await;
    let rest: Vec<u64> = [0, 1, 2, 3].into_iter().filter(|n| *n != leaving).collect();
    c.wait_for("the learner promoted", Duration::from_secs(5), |c| {
        c.agreed(&rest, &rest, &[])
    })
    .await;
    c.shutdown().await;
}
