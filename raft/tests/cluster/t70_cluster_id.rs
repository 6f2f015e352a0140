//! One cluster id per cluster: founded once, kept by every node, carried by every RPC, and the
//! reason a node of another cluster is refused.

use crate::fixture::{Cluster, id};
use crate::router::Call;
use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Vote};
use serde_json::{Value, json};
use shardgate_raft::MemberState;
use shardgate_raft::consensus::{Consensus, ConsensusError, TransportError};
use std::time::{Duration, Instant};

/// A request as the wire carries it: the sender's cluster id beside the request.
fn envelope(cluster: Option<&str>, body: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "cluster": cluster, "body": body })).expect("json")
}

fn opened(call: &Call) -> (Option<String>, Value) {
    let mut v: Value = serde_json::from_slice(&call.body).expect("an envelope");
    let cluster = v["cluster"].as_str().map(str::to_owned);
    (cluster, v["body"].take())
}

fn stored_id(c: &Cluster, n: u64) -> String {
    let path = c.config(n).data_dir.join("cluster-id.json");
    let bytes = std::fs::read(&path).expect("cluster-id.json");
    serde_json::from_slice(&bytes).expect("a json string")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_a_founded_cluster_has_one_id_everywhere_and_keeps_it() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[]) && c.cluster_id().is_some()
    })
    .await;
    let cluster = c.cluster_id().expect("one id");
    assert_eq!(cluster.len(), 32, "{cluster}");
    assert!(
        cluster
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    for n in [0, 1, 2] {
        assert_eq!(stored_id(&c, n), cluster, "node-{n}'s data dir");
    }
    // `Found` names the cluster without moving the epoch: three joins, three epochs.
    assert_eq!(c.membership(0).epoch, 3);

    for n in [0, 1, 2] {
        c.stop(n).await;
    }
    c.start_all(&[2, 1, 0]).await;
    c.wait_for("the cluster back", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    assert_eq!(c.cluster_id(), Some(cluster));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t71_a_snapshot_carries_the_cluster_id() {
    let mut c = Cluster::new(3).await;
    let founder = c.start(0).await;
    c.wait_for("a single-node cluster", Duration::from_secs(3), |c| {
        c.agreed(&[0], &[0], &[])
    })
    .await;
    let cluster = founder.cluster_id().expect("founded");
    for i in 0..130 {
        let state = [MemberState::Draining, MemberState::Active][i % 2];
        founder.set_state(&id(0), state).await.expect("set_state");
    }
    c.start(1).await;
    c.wait_for("the newcomer caught up", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1], &[0, 1], &[])
    })
    .await;
    let snapshot = std::fs::read(c.config(1).data_dir.join("snapshot.json")).expect("sent one");
    let snapshot: Value = serde_json::from_slice(&snapshot).expect("json");
    assert_eq!(snapshot["membership"]["cluster"], json!(cluster));
    assert_eq!(c.cluster_id(), Some(cluster.clone()));

    // Restarted cut off from the leader, it has the id from its own disk.
    c.stop(1).await;
    c.router.set_unreachable(&c.addr(1), true);
    let node = c.start(1).await;
    assert_eq!(node.cluster_id(), Some(cluster.clone()));
    assert_eq!(node.watch().borrow().cluster, Some(cluster));
    c.router.set_unreachable(&c.addr(1), false);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t72_requests_from_another_cluster_are_refused_and_change_nothing() {
    let mut a = Cluster::new(3).await;
    a.router.record("append");
    a.start_all(&[0, 1, 2]).await;
    a.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let mut b = a.beside("other", 1);
    b.start(0).await;
    b.wait_for("another cluster", Duration::from_secs(3), |c| {
        c.agreed(&[0], &[0], &[]) && c.cluster_id().is_some()
    })
    .await;
    let (ours, theirs) = (a.cluster_id().expect("a's"), b.cluster_id().expect("b's"));
    assert_ne!(ours, theirs);

    let leader = a.leader().expect("leader");
    let follower = [0, 1, 2].into_iter().find(|n| *n != leader).expect("one");
    // A real heartbeat of `a`, as its leader sent it.
    let heartbeat = a
        .router
        .recorded()
        .into_iter()
        .rev()
        .find(|c| c.name == "append" && c.from == a.addr(leader) && c.to == a.addr(follower))
        .expect("a heartbeat");
    let (stamped, append) = opened(&heartbeat);
    assert_eq!(stamped.as_deref(), Some(ours.as_str()));
    let before = a.statuses();
    let term = before[&leader].term;

    // The same heartbeat is accepted from its own cluster...
    let node = a.node(follower).clone();
    node.rpc("append", &envelope(Some(&ours), &append))
        .await
        .expect("accepted");
    // ...and refused, with a higher term, from another one or from none.
    let mut usurper = append.clone();
    usurper["vote"]["leader_id"]["term"] = json!(term + 10);
    let vote = VoteRequest::new(
        Vote::new(term + 10, 7),
        Some(LogId::new(CommittedLeaderId::new(term + 10, 7), 1_000)),
    );
    let vote = serde_json::to_value(vote).expect("json");
    let join =
        json!({"id": "node-7", "addr": "node-7.other:7000", "session_addr": "s", "weight": 1});
    let leave = json!({"id": id(follower)});
    let propose = json!({"id": id(follower), "state": "down"});
    let requests = [
        ("append", &usurper),
        ("vote", &vote),
        ("join", &join),
        ("leave", &leave),
        ("propose", &propose),
    ];
    for target in [leader, follower] {
        let node = a.node(target).clone();
        for (name, body) in requests {
            let from = [Some(theirs.as_str()), None];
            // A pristine node may join; it sends nothing else.
            let from = if name == "join" {
                &from[..1]
            } else {
                &from[..]
            };
            for cluster in from {
                let refused = node.rpc(name, &envelope(*cluster, body)).await;
                assert!(
                    matches!(&refused, Err(ConsensusError::ForeignCluster { ours: o, theirs: t, .. })
                        if *o == ours && t.as_deref() == *cluster),
                    "{name} from {cluster:?} to node-{target}: {refused:?}"
                );
            }
        }
    }
    let message = node.rpc("vote", &envelope(Some(&theirs), &vote)).await;
    let message = message.expect_err("refused").to_string();
    assert!(
        message.contains(&format!("this node belongs to cluster {ours}"))
            && message.contains(&format!("cluster {theirs}")),
        "{message}"
    );

    // Over the wire, the refusal is what the node's HTTP route answers: a 403.
    let transport = b.router.transport(&b.addr(0));
    let reply = transport
        .call(&a.addr(leader), "join", envelope(Some(&theirs), &join))
        .await;
    assert!(
        matches!(&reply, Err(TransportError::Status { status: 403, .. })),
        "{reply:?}"
    );
    // A probe is answered, with the id, so that the prober can tell.
    let probe = json!({"from": "node-0"});
    let reply = node.rpc("probe", &envelope(Some(&theirs), &probe)).await;
    let reply: Value = serde_json::from_slice(&reply.expect("answered")).expect("json");
    assert_eq!(reply["Ok"]["cluster"], json!(ours));

    // Nothing moved: a heartbeat or two later, every node has the same term, leader and view.
    tokio::time::sleep(a.timing.heartbeat * 4).await;
    for (n, after) in a.statuses() {
        let was = &before[&n];
        assert_eq!(
            (after.term, &after.leader, &after.membership),
            (was.term, &was.leader, &was.membership),
            "node-{n}"
        );
    }
    assert!(a.agreed(&[0, 1, 2], &[0, 1, 2], &[]));
    assert_eq!(b.cluster_id(), Some(theirs));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t73_a_forwarded_join_carries_the_joiners_cluster_id() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let cluster = c.cluster_id().expect("one id");
    let leader = c.leader().expect("leader");
    let follower = [0, 1, 2].into_iter().find(|n| *n != leader).expect("one");
    let forwarded = |c: &Cluster, since: usize| -> Vec<Option<String>> {
        c.router.recorded()[since..]
            .iter()
            .map(opened)
            .filter(|(_, body)| body["id"] == json!("node-3") && body["forwarded"] == json!(true))
            .map(|(cluster, _)| cluster)
            .collect()
    };

    // A pristine node joins through a follower, which passes its (missing) id on.
    c.router.record("join");
    let mut config = c.config(3);
    config.seeds = vec![c.addr(follower)];
    c.try_start(3, config.clone()).await.expect("start");
    c.wait_for("four members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2, 3], &[0, 1, 2], &[3])
    })
    .await;
    let first = forwarded(&c, 0);
    assert_eq!(first.first(), Some(&None), "{first:?}");
    assert_eq!(
        c.cluster_id(),
        Some(cluster.clone()),
        "learned when it joined"
    );

    // Restarted, it has an id, and its forwarded join carries it.
    let seen = c.router.recorded().len();
    c.stop(3).await;
    c.try_start(3, config).await.expect("restart");
    c.wait_for("its join forwarded", Duration::from_secs(5), |c| {
        !forwarded(c, seen).is_empty()
    })
    .await;
    let again = forwarded(&c, seen);
    assert!(
        again.iter().all(|id| id.as_ref() == Some(&cluster)),
        "{again:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t74_a_pristine_node_0_waits_for_silent_seeds_then_founds() {
    let mut c = Cluster::new(3).await;
    c.found_wait = Duration::from_millis(500);
    let (config, transport) = (c.config(0), c.router.transport(&c.addr(0)));
    let id_file = config.data_dir.join("cluster-id.json");
    let started = Instant::now();
    let starting = tokio::spawn(Consensus::start(config, transport));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!id_file.exists(), "founded before found_wait");
    let node = starting.await.expect("task").expect("start");
    assert!(started.elapsed() >= c.found_wait, "{:?}", started.elapsed());
    let cluster = node.cluster_id().expect("founded");
    c.register(0, node);
    c.start_all(&[1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    assert_eq!(c.cluster_id(), Some(cluster));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t75_a_pristine_node_0_founds_at_once_when_every_seed_is_pristine() {
    let mut c = Cluster::new(3).await;
    c.found_wait = Duration::from_secs(10);
    c.start_all(&[1, 2]).await;
    let started = Instant::now();
    c.start(0).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[]) && c.cluster_id().is_some()
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t76_a_pristine_node_0_joins_the_cluster_its_seeds_are_in() {
    let mut c = Cluster::new(3).await;
    c.start_all(&[0, 1, 2]).await;
    c.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let cluster = c.cluster_id().expect("one id");

    // Node 0 loses its volume; its peers kept theirs.
    c.stop(0).await;
    c.wipe(0);
    c.found_wait = Duration::from_secs(10);
    let started = Instant::now();
    c.start(0).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a seed answered at once"
    );
    c.wait_for(
        "node 0 back in the same cluster",
        Duration::from_secs(8),
        |c| c.agreed(&[0, 1, 2], &[0, 1, 2], &[]) && c.cluster_id().is_some(),
    )
    .await;
    assert_eq!(c.cluster_id(), Some(cluster.clone()));
    assert_eq!(stored_id(&c, 0), cluster);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t77_a_node_whose_seeds_are_of_another_cluster_refuses_to_start() {
    let mut a = Cluster::new(3).await;
    a.start_all(&[0, 1, 2]).await;
    a.wait_for("three agreed members", Duration::from_secs(5), |c| {
        c.agreed(&[0, 1, 2], &[0, 1, 2], &[])
    })
    .await;
    let ours = a.cluster_id().expect("a's");
    let mut b = a.beside("other", 1);
    b.start(0).await;
    b.wait_for("another cluster", Duration::from_secs(3), |c| {
        c.cluster_id().is_some()
    })
    .await;
    let theirs = b.cluster_id().expect("b's");
    b.stop(0).await;

    // b's node, restarted with a's seeds (a wrong seed list, or a's volume on b's pod).
    let mut wrong = b.config(0);
    wrong.seeds = (0..3).map(|n| a.addr(n)).collect();
    let started = b.try_start(0, wrong).await;
    let Err(e) = started else {
        panic!("started beside another cluster");
    };
    assert!(
        matches!(&e, ConsensusError::ForeignCluster { ours: o, theirs: t, .. }
            if *o == theirs && t.as_deref() == Some(ours.as_str())),
        "{e:?}"
    );
    assert!(e.to_string().contains("seed node-"), "{e}");
    assert!(!e.is_retryable());

    // With its own seeds it starts, and a never heard of it.
    b.start(0).await;
    assert_eq!(b.node(0).cluster_id(), Some(theirs));
    assert!(a.agreed(&[0, 1, 2], &[0, 1, 2], &[]));
    assert_eq!(a.cluster_id(), Some(ours));
    b.shutdown().await;
    a.shutdown().await;
}
