use crate::fixture::{Cluster, addr};
use shardgate_raft::MemberState;
use std::time::{Duration, Instant};

async fn three() -> Cluster {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_a_cut_off_follower_is_marked_down_then_active_again() {
    let c = three().await;
    let leader = c.leader().expect("leader");
    let follower = [0, 1, 2]
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    let other = [0, 1, 2]
        .into_iter()
        .find(|n| *n != leader && *n != follower)
        .expect("other");
    let before = c.membership(leader).epoch;

    let cut = Instant::now();
    c.router.set_unreachable(&addr(follower), true);
    // The order that keeps one owner per key: the cut-off node stops serving first, and only
    // then is it marked `Down` (its keys move).
    c.wait_for(
        "the cut-off follower to stop serving",
        c.timing.lease + Duration::from_millis(500),
        |c| !c.node(follower).serving(),
    )
    .await;
    assert_eq!(
        c.state_of(leader, follower),
        Some(MemberState::Active),
        "marked down while it still served"
    );
    c.wait_for("the follower marked down", c.timing.down_after * 2, |c| {
        c.state_of(leader, follower) == Some(MemberState::Down)
    })
    .await;
    let detected = cut.elapsed();
    assert!(
        detected < c.timing.down_after + Duration::from_secs(1),
        "took {detected:?}"
    );
    let down = c.membership(leader);
    assert_eq!(down.epoch, before + 1, "one verdict, one epoch: {down:?}");
    c.wait_for("the verdict replicated", Duration::from_secs(2), |c| {
        c.membership(other) == down
    })
    .await;
    assert!(c.node(leader).serving() && c.node(other).serving());

    c.router.set_unreachable(&addr(follower), false);
    c.wait_for(
        "the follower active again everywhere",
        Duration::from_secs(5),
        |c| c.agreed(&[0, 1, 2], &[0, 1, 2], &[]),
    )
    .await;
    assert_eq!(c.membership(follower).epoch, down.epoch + 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_a_slow_member_within_down_after_stays_active() {
    let c = three().await;
    let leader = c.leader().expect("leader");
    let slow = [0, 1, 2]
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    let before = c.membership(leader);

    // Each call to or from the slow node takes 20 ms longer: within a heartbeat (openraft's
    // append timeout) and well within the probe deadline.
    c.router.set_delay(&addr(slow), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.membership(leader), before, "no verdict for a slow member");
    assert!(c.node(slow).serving());

    // A link slower than the probe timeout is as good as dead.
    c.router.set_delay(
        &addr(slow),
        c.timing.probe_timeout + Duration::from_millis(250),
    );
    c.wait_for(
        "the very slow member marked down",
        c.timing.down_after * 2,
        |c| c.state_of(leader, slow) == Some(MemberState::Down),
    )
    .await;
    c.router.set_delay(&addr(slow), Duration::ZERO);
    c.wait_for("the member active again", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    c.shutdown().await;
}
