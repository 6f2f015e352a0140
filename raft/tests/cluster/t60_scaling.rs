use crate::fixture::Cluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_scaling_3_to_5_to_3_keeps_every_view_identical() {
    let mut c = Cluster::new(5).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;

    c.start(3).await;
    c.wait_for("four members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2, 3], &[0, 1, 2, 3], &[])
    })
    .await;
    c.start(4).await;
    c.wait_for("five members, five voters", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], &[])
    })
    .await;
    let grown = c.membership(0).epoch;

    // A StatefulSet scales down from the highest ordinal.
    for n in [4, 3] {
        c.node(n).leave().await.expect("leave");
        c.stop(n).await;
    }
    c.wait_for("back to three", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    assert_eq!(c.membership(0).epoch, grown + 2);
    c.shutdown().await;
}
