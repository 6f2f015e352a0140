//! Sessions outlive their owner. Every node writes its sessions through to a store, and when a
//! key changes hands — its owner killed with `kill -9`, drained, frozen, or a new node joining —
//! the new owner takes the session over on its next request: same session id, the builtin
//! `counter` going on from its last acknowledged value, a resumed stream replaying from the
//! stored log without gap or duplicate, and a request that was in flight on the dead node
//! answered with an error rather than silence. An old owner that comes back from a freeze is
//! fenced off by the store: clients never see it answer for a session it lost.
//!
//! Each test prints what BENCHMARKS.md quotes: how many sessions the lost node held and how long
//! after the kill each session answered again.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use shardgate_raft::{MemberState, Membership};
use shardgate_tests::mcp::{Client, Event, SseReader};
use shardgate_tests::raft::{RaftCluster, active, state_of};
use shardgate_tests::services::{Postgres, RedisCluster};
use shardgate_tests::takeover::{
    RECOVER, Retry, check_continuation, count_everywhere, count_once, count_until_answered,
    mismatches, most_loaded, owners, read_until_response, resume_until_placed, sessions_counted_to,
    sessions_on, spread,
};
use shardgate_tests::{Cluster, scratch, shardgate_bin};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sessions per test: enough that every node owns some (a node owns none of 30 with
/// probability (2/3)^30, about 1e-5).
const SESSIONS: usize = 30;
/// How long membership gets to settle (relaxed timings: `Down` after about 4 s).
const CONVERGE: Duration = Duration::from_secs(20);
/// What the message of the error for a request that was in flight on a lost owner says.
const INTERRUPTED: &str = "interrupted by failover";

#[tokio::test]
async fn t10_sessions_survive_kill_9_with_the_default_sqlite_store() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let store = cluster.store.clone().unwrap_or_default();
    assert!(
        store.starts_with("sqlite:") && store.ends_with("/sessions.db"),
        "without --store, up gives its nodes one SQLite file in its data dir; it shows {store:?}"
    );
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    // The gauges agree with the ring: the ring is how these tests know which node owns what.
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    for (j, (id, _)) in cluster.nodes.iter().enumerate() {
        let hosted = cluster
            .metric_of(&c.http, j, "shardgate_node_sessions")
            .await?;
        let owned = owner.iter().filter(|o| *o == id).count() as u64;
        assert_eq!(
            hosted, owned,
            "{id} hosts what the ring gives it: {owner:?}"
        );
    }
    kill_owner_and_count(&cluster, &c, &sids, &[4; SESSIONS], "sqlite").await?;
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t15_a_killed_owner_that_stays_dead_has_its_sessions_taken_over_by_the_others()
-> anyhow::Result<()> {
    // `up` restarts a killed node within a second, before it is marked Down, so in t10 the node
    // takes its own sessions back. Here nobody restarts it: the ring moves, and the others take
    // them over.
    let (mut cluster, c) = raft_cluster("t86-kill", 3).await?;
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let before = owners(&cluster.gateway_view().await?, &sids)?;
    let (victim, k) = most_loaded(&before, &[]);
    let i = ordinal(&victim)?;
    cluster.kill(i).await?;
    let killed = Instant::now();
    let answers = count_everywhere(&c, &sids, 4, killed, Retry::Unplaced).await;
    let (_, view) = cluster
        .until_gateway(CONVERGE, |m| state_of(m, i) == Some(MemberState::Down))
        .await?;
    let after = owners(&view, &sids)?;
    let moves: Vec<String> = (0..SESSIONS)
        .map(|j| format!("{} → {}", before[j], after[j]))
        .collect();
    let problems = mismatches(&sids, &moves, &answers, &[4; SESSIONS]);
    let lost: Vec<Duration> = (0..SESSIONS)
        .filter(|&j| before[j] == victim)
        .map(|j| answers[j].after)
        .collect();
    println!(
        "kill -9, no restart: {victim} owned {k} of {SESSIONS} sessions; kill → first answer for them: {}",
        spread(lost)
    );
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, sessions did not continue on the others:\n{}",
        problems.join("\n")
    );
    check_hosts(&cluster, &view, &sids).await?;
    Ok(())
}

#[tokio::test]
async fn t20_a_call_in_flight_on_a_killed_owner_ends_in_an_error_on_its_resumed_stream()
-> anyhow::Result<()> {
    // What reached the client was stored first (the default, said out loud): so the stored log
    // holds every event the client saw, and a replay has no gap.
    let cluster = Cluster::builder().nodes(3).ack("store").start().await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    assert_eq!(c.count(&sid, 1).await?, 1);
    let owner = owners(&cluster.gateway_view().await?, std::slice::from_ref(&sid))?.remove(0);

    // 50 steps of 100 ms: still running when its owner dies.
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 50, "delay_ms": 100},
        "_meta": {"progressToken": "t86-in-flight"}
    }});
    let resp = c.session_post(&sid, &slow).send().await?;
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = reader.next().await?;
        seen.push(event.ok_or_else(|| anyhow::anyhow!("the slow call's stream ended: {seen:?}"))?);
    }
    assert_eq!(
        seen[0].data, "",
        "the first event primes the stream: {seen:?}"
    );
    let last = seen
        .last()
        .and_then(|e| e.id.clone())
        .expect("progress has ids");
    let pid = cluster.node_pid(&owner)?;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    let killed = Instant::now();
    drop(reader);

    let resumed = resume_until_placed(&c, &sid, &last, killed).await?;
    let replay = read_until_response(SseReader::new(resumed), &json!(7), RECOVER).await?;
    println!(
        "in flight: {owner} killed after {} events of the slow call's stream; resumed after {:?} with {} events",
        seen.len(),
        killed.elapsed(),
        replay.len()
    );
    check_continuation(&seen, &replay)?;
    let response = replay
        .iter()
        .filter_map(Event::json)
        .find(|m| m["id"] == 7 && (m.get("result").is_some() || m.get("error").is_some()))
        .ok_or_else(|| {
            anyhow::anyhow!("no response to the slow call on the resumed stream: {replay:?}")
        })?;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(INTERRUPTED),
        "the call in flight on the dead {owner} gets an error saying {INTERRUPTED:?}: {response}"
    );
    let answer = count_until_answered(&c, &sid, 8, Instant::now(), Retry::Unplaced).await;
    assert_eq!(
        answer.value,
        Ok(2),
        "session {sid} counts on after the interruption (earlier tries: {:?})",
        answer.tries
    );
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t30_sessions_survive_kill_9_with_redis_cluster_and_postgres() -> anyhow::Result<()> {
    /// Seconds after which an idle session is passivated.
    const PASSIVATE: u64 = 2;
    let redis = RedisCluster::start().await?;
    let pg = Postgres::start().await?;
    // Deployments apply the schema before the nodes start; a second run is a no-op if a node
    // applies it itself.
    let migrate = tokio::process::Command::new(shardgate_bin()?)
        .args(["migrate", "--database-url", &pg.url])
        .output()
        .await?;
    assert!(
        migrate.status.success(),
        "shardgate migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let seeds: Vec<String> = redis.nodes.iter().map(SocketAddr::to_string).collect();
    let store = format!("redis://{}", seeds.join(","));
    let cluster = Cluster::builder()
        .nodes(3)
        .store(&store)
        .store_durable(&pg.url)
        .passivate_after_secs(PASSIVATE)
        .start()
        .await?;
    assert_eq!(cluster.store.as_deref(), Some(store.as_str()));
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    // Half the sessions sit idle past the passivation delay; the other half counts once more
    // just before the kill, so both idle and hot sessions are taken over.
    tokio::time::sleep(Duration::from_secs(PASSIVATE + 1)).await;
    let mut expected = vec![4; SESSIONS];
    for (i, sid) in sids.iter().enumerate().skip(SESSIONS / 2) {
        assert_eq!(c.count(sid, 4).await?, 4, "session {sid}");
        expected[i] = 5;
    }
    kill_owner_and_count(&cluster, &c, &sids, &expected, "redis+postgres").await?;
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t40_a_drained_owner_hands_its_sessions_over() -> anyhow::Result<()> {
    let (mut cluster, c) = raft_cluster("t86-drain", 3).await?;
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    let (victim, _) = most_loaded(&owner, &[]);
    let theirs: Vec<usize> = (0..SESSIONS).filter(|&i| owner[i] == victim).collect();

    // The drained node's sessions keep counting while it drains, each one call after another.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = theirs
        .iter()
        .map(|&i| {
            let (c, stop, sid) = (c.clone(), stop.clone(), sids[i].clone());
            tokio::spawn(async move {
                let mut got: Vec<Result<i64, String>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = 1000 + got.len() as i64;
                    got.push(count_once(&c, &sid, id).await.map_err(|e| e.to_string()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                got
            })
        })
        .collect();
    let started = Instant::now();
    cluster.drain(ordinal(&victim)?).await?;
    println!(
        "drain: {victim}, which owned {} of {SESSIONS} sessions, left after {:?}",
        theirs.len(),
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let mut expected = vec![4; SESSIONS];
    let mut problems = Vec::new();
    let mut calls = 0;
    for (task, &i) in traffic.into_iter().zip(&theirs) {
        let got = task.await?;
        let counted: Vec<i64> = got
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let want: Vec<i64> = (4..4 + got.len() as i64).collect();
        if counted != want {
            problems.push(format!(
                "{} (owner {victim}) answered {got:?} during the drain, expected {want:?}",
                sids[i]
            ));
        }
        calls += got.len();
        expected[i] = 4 + got.len() as i64;
    }
    println!("drain: {calls} counter calls in its sessions while it drained");
    let view = cluster
        .until_gateway(CONVERGE, |m| m.members.iter().all(|m| m.id.0 != victim))
        .await?
        .1;
    let answers = count_everywhere(&c, &sids, 2000, Instant::now(), Retry::Unplaced).await;
    problems.extend(mismatches(&sids, &owner, &answers, &expected));
    assert!(
        problems.is_empty(),
        "after draining {victim}, sessions did not continue:\n{}",
        problems.join("\n")
    );
    check_hosts(&cluster, &view, &sids).await?;
    Ok(())
}

#[tokio::test]
async fn t50_a_joining_node_takes_over_the_sessions_it_now_owns() -> anyhow::Result<()> {
    let (mut cluster, c) = raft_cluster("t86-join", 4).await?;
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let before = owners(&cluster.gateway_view().await?, &sids)?;
    cluster.start_node(3).await?;
    cluster.wait_for_active(4, CONVERGE).await?;
    let (_, view) = cluster.until_gateway(CONVERGE, |m| active(m) == 4).await?;
    let after = owners(&view, &sids)?;
    let moved: Vec<usize> = (0..SESSIONS).filter(|&i| before[i] != after[i]).collect();
    assert!(
        moved.iter().all(|&i| after[i] == "node-3"),
        "only keys of the newcomer move: {before:?} → {after:?}"
    );
    anyhow::ensure!(
        !moved.is_empty(),
        "none of the {SESSIONS} sessions moved to node-3, so nothing was taken over: {after:?}"
    );
    let joined = Instant::now();
    let answers = count_everywhere(&c, &sids, 4, joined, Retry::Unplaced).await;
    let moves: Vec<String> = (0..SESSIONS)
        .map(|i| match before[i] == after[i] {
            true => after[i].clone(),
            false => format!("{} → {}", before[i], after[i]),
        })
        .collect();
    let problems = mismatches(&sids, &moves, &answers, &[4; SESSIONS]);
    assert!(
        problems.is_empty(),
        "after node-3 joined, sessions did not continue:\n{}",
        problems.join("\n")
    );
    let took: Vec<Duration> = moved.iter().map(|&i| answers[i].after).collect();
    println!(
        "join: node-3 took over {} of {SESSIONS} sessions; their first answers after {}",
        moved.len(),
        spread(took)
    );
    let admin = cluster.addrs(3).expect("node-3 runs").admin;
    assert_eq!(
        sessions_on(&c.http, admin).await?,
        moved.len() as u64,
        "node-3 hosts exactly the sessions it took over"
    );
    Ok(())
}

#[tokio::test]
async fn t60_a_frozen_owner_is_fenced_off_when_it_wakes() -> anyhow::Result<()> {
    let (cluster, c) = raft_cluster("t86-freeze", 3).await?;
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    // Not the leader: freezing it would cost an election on top, and the point is the owner.
    let leader = format!("node-{}", cluster.leader().await?);
    let (victim, k) = most_loaded(&owner, &[&leader]);
    let theirs: Vec<usize> = (0..SESSIONS).filter(|&i| owner[i] == victim).collect();
    let i = ordinal(&victim)?;
    let pid = Pid::from_raw(cluster.pid(i).expect("running") as i32);
    let admin = cluster.addrs(i).expect("started").admin;
    assert_eq!(
        sessions_on(&c.http, admin).await?,
        k as u64,
        "{victim} hosts what it owns"
    );

    // A call in flight on the victim when it freezes: it will try to go on when it wakes.
    let slow_sid = sids[theirs[0]].clone();
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 40, "delay_ms": 100},
        "_meta": {"progressToken": "t86-frozen"}
    }});
    let resp = c.session_post(&slow_sid, &slow).send().await?;
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut before = Vec::new();
    for _ in 0..2 {
        let event = reader.next().await?;
        before.push(event.ok_or_else(|| anyhow::anyhow!("the slow call's stream ended"))?);
    }
    // The rest of the old stream, with when each event came.
    let old_stream: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
    let reading = tokio::spawn({
        let old_stream = old_stream.clone();
        async move {
            while let Ok(Some(e)) = reader.next().await {
                old_stream
                    .lock()
                    .expect("not poisoned")
                    .push((Instant::now(), e));
            }
        }
    });

    kill(pid, Signal::SIGSTOP)?;
    let frozen = Instant::now();
    let woke = Mutex::new(None);
    let outcome = freeze_and_wake(&cluster, &c, &sids, &theirs, &victim, frozen, &woke).await;
    // Whatever happened, the victim is not left frozen.
    let _ = kill(pid, Signal::SIGCONT);
    outcome?;

    // The new owner marked the slow call interrupted; what the old owner did after it woke
    // reached the client neither on the old stream nor through the stored log.
    reading.abort();
    let woke = woke.lock().expect("not poisoned").expect("it woke");
    let late: Vec<Event> = old_stream
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(at, e)| *at >= woke && e.id.is_some())
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        late.is_empty(),
        "after it woke, the fenced {victim} still sent on the slow call's stream: {late:?}"
    );
    let last = before
        .last()
        .and_then(|e| e.id.clone())
        .expect("an event id");
    let resumed = resume_until_placed(&c, &slow_sid, &last, Instant::now()).await?;
    let replay = read_until_response(SseReader::new(resumed), &json!(7), RECOVER).await?;
    check_continuation(&before, &replay)?;
    let response = replay
        .iter()
        .filter_map(Event::json)
        .find(|m| m["id"] == 7)
        .ok_or_else(|| anyhow::anyhow!("no response to the slow call: {replay:?}"))?;
    assert!(
        response["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(INTERRUPTED)),
        "the call that was in flight on the frozen {victim} was interrupted: {response}"
    );
    Ok(())
}

/// Freezes the victim (already stopped at `frozen`) until its keys moved, counts in every
/// session on the new owners, wakes it, watches it drop what it lost, and counts on in its
/// sessions until it owns them again.
async fn freeze_and_wake(
    cluster: &RaftCluster,
    c: &Client,
    sids: &[String],
    theirs: &[usize],
    victim: &str,
    frozen: Instant,
    woke: &Mutex<Option<Instant>>,
) -> anyhow::Result<()> {
    let i = ordinal(victim)?;
    let pid = Pid::from_raw(cluster.pid(i).expect("running") as i32);
    let admin = cluster.addrs(i).expect("started").admin;
    let (took, down) = cluster
        .until_gateway(CONVERGE, |m| state_of(m, i) == Some(MemberState::Down))
        .await?;
    println!(
        "freeze: {victim} frozen with {} sessions; Down at the gateway after {took:?}",
        theirs.len()
    );
    let owner = owners(&down, sids)?;
    let answers = count_everywhere(c, sids, 4, frozen, Retry::Unplaced).await;
    let problems = mismatches(sids, &owner, &answers, &[4; SESSIONS]);
    assert!(
        problems.is_empty(),
        "while {victim} is frozen:\n{}",
        problems.join("\n")
    );

    let now = Instant::now();
    *woke.lock().expect("not poisoned") = Some(now);
    kill(pid, Signal::SIGCONT)?;
    let woke = now;
    // Nothing is sent to its sessions now. The slow call goes on where it was frozen, and the
    // store refuses what it writes, as the session was claimed by its new owner: the woken node
    // drops that session. It may drop the others too, on learning from the membership it missed
    // that they were taken; or keep them until their next request shows they are stale (so only
    // the one whose write was refused is asserted).
    let mut gauge = Vec::new();
    while woke.elapsed() < Duration::from_secs(10) {
        let n = sessions_on(&c.http, admin).await.ok();
        gauge.push((woke.elapsed().as_millis(), n));
        let dropped = n.is_some_and(|n| n < theirs.len() as u64);
        if n == Some(0) || (dropped && woke.elapsed() > Duration::from_secs(3)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fewest = gauge.iter().filter_map(|g| g.1).min();
    println!("freeze: the woken {victim}'s session gauge (ms since SIGCONT, sessions): {gauge:?}");
    assert!(
        fewest.is_some_and(|n| n < theirs.len() as u64),
        "the woken {victim} drops the session whose write the store refused: it held {}, then \
         (ms since SIGCONT, its session gauge) {gauge:?}",
        theirs.len()
    );

    let mine: Vec<String> = theirs.iter().map(|&j| sids[j].clone()).collect();
    let mine_owner: Vec<String> = theirs
        .iter()
        .map(|&j| format!("{} or {victim}", owner[j]))
        .collect();
    // It may be Active again already: whoever owns them now answers 5, never 4 again.
    let answers = count_everywhere(c, &mine, 5, woke, Retry::AnyError).await;
    let problems = mismatches(&mine, &mine_owner, &answers, &vec![5; mine.len()]);
    assert!(
        problems.is_empty(),
        "after {victim} woke:\n{}",
        problems.join("\n")
    );

    // Back in the ring, it owns them again and must take them over from the store rather than
    // answer from what it held before the freeze (3, so 4).
    let (took, _) = cluster
        .until_gateway(CONVERGE, |m| state_of(m, i) == Some(MemberState::Active))
        .await?;
    println!("freeze: {victim} Active again at the gateway {took:?} after it woke");
    let answers = count_everywhere(c, &mine, 6, Instant::now(), Retry::AnyError).await;
    let back = vec![victim.to_owned(); mine.len()];
    let problems = mismatches(&mine, &back, &answers, &vec![6; mine.len()]);
    assert!(
        problems.is_empty(),
        "with {victim} back in the ring:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// Nodes with Raft membership and one SQLite store (acknowledging what it stored: a fenced
/// node can send nothing), and a gateway following them: `n` slots, the first three started.
async fn raft_cluster(name: &str, n: usize) -> anyhow::Result<(RaftCluster, Client)> {
    let dir = scratch(name)?;
    let store = format!("sqlite:{}", dir.join("sessions.db").display());
    let mut cluster = RaftCluster::new(dir, n, &["--store", &store, "--ack", "store"])?;
    cluster.start(3).await?;
    let gateway = cluster.start_gateway().await?;
    cluster.until_gateway(CONVERGE, |m| active(m) == 3).await?;
    Ok((cluster, Client::new(&format!("http://{}/mcp", gateway.mcp))))
}

/// `kill -9` of the node of `up` that owns most of `sids`, then one `counter` call in every
/// session, which must answer `expected[i]`. Prints how long each took from the kill.
async fn kill_owner_and_count(
    cluster: &Cluster,
    c: &Client,
    sids: &[String],
    expected: &[i64],
    label: &str,
) -> anyhow::Result<()> {
    let owner = owners(&cluster.gateway_view().await?, sids)?;
    let (victim, k) = most_loaded(&owner, &[]);
    let pid = cluster.node_pid(&victim)?;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    let killed = Instant::now();
    let answers = count_everywhere(c, sids, 100, killed, Retry::Unplaced).await;
    let problems = mismatches(sids, &owner, &answers, expected);
    let (lost, kept): (Vec<usize>, Vec<usize>) = (0..sids.len()).partition(|&i| owner[i] == victim);
    let times = |of: &[usize]| spread(of.iter().map(|&i| answers[i].after).collect());
    println!(
        "{label}: kill -9 of {victim} (pid {pid}), which owned {k} of {} sessions",
        sids.len()
    );
    println!(
        "{label}: kill → first answer, sessions of {victim}: {}",
        times(&lost)
    );
    println!(
        "{label}: kill → first answer, the other sessions: {}",
        times(&kept)
    );
    let retried = answers.iter().filter(|a| !a.tries.is_empty()).count();
    println!("{label}: {retried} sessions needed more than one try");
    let after = cluster.gateway_view().await?;
    println!(
        "{label}: afterwards {victim} is {:?} at epoch {} (pid now {:?}; up restarts what dies)",
        after
            .members
            .iter()
            .find(|m| m.id.0 == victim)
            .map(|m| m.state),
        after.epoch,
        cluster.node_pid(&victim).ok()
    );
    assert!(
        problems.is_empty(),
        "{label}: after kill -9 of {victim}, {} of {} sessions did not continue:\n{}",
        problems.len(),
        sids.len(),
        problems.join("\n")
    );
    // Each takeover was timed: every node's histogram counts what its counter does. The
    // sessions are taken over by a survivor, or by the victim itself when `up` restarts it
    // before it is marked down (its new process counts from zero).
    let mut timed = 0;
    for (j, (id, _)) in cluster.nodes.iter().enumerate() {
        let scraped = async {
            let count = cluster
                .metric_of(&c.http, j, "shardgate_node_takeover_seconds_count")
                .await?;
            let takeovers = cluster
                .metric_of(&c.http, j, "shardgate_node_takeovers_total")
                .await?;
            anyhow::Ok((count, takeovers))
        }
        .await;
        let (count, takeovers) = match scraped {
            Ok(both) => both,
            // A restarted victim that is not back on its admin port yet took nothing over.
            Err(_) if *id == victim => continue,
            Err(e) => return Err(e),
        };
        assert_eq!(count, takeovers, "{label}: {id} timed every takeover");
        timed += count;
    }
    assert!(timed > 0, "{label}: the victim's sessions were taken over");
    Ok(())
}

/// `n` new sessions, each of which called `counter` `calls` times.
fn ordinal(id: &str) -> anyhow::Result<usize> {
    id.strip_prefix("node-")
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{id} is not node-<ordinal>"))
}

/// Every running node hosts at least the sessions `view` gives it (all were just served).
async fn check_hosts(
    cluster: &RaftCluster,
    view: &Membership,
    sids: &[String],
) -> anyhow::Result<()> {
    let owner = owners(view, sids)?;
    let http = shardgate_tests::http().build()?;
    for i in cluster.running() {
        let id = format!("node-{i}");
        let owned = owner.iter().filter(|o| **o == id).count() as u64;
        let admin = cluster.addrs(i).expect("running").admin;
        let hosted = sessions_on(&http, admin).await?;
        assert!(
            hosted >= owned,
            "{id} hosts {hosted} sessions but owns {owned}: {owner:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn t70_a_stateless_clients_state_is_taken_over_with_its_key() -> anyhow::Result<()> {
    const CLIENTS: usize = 12;
    let (mut cluster, c) = raft_cluster("t86-stateless", 3).await?;
    let mut keys = Vec::new();
    for i in 0..CLIENTS {
        let (n, key) = c.stateless_count(1, None).await?;
        assert_eq!(n, 1, "client {i}'s first count");
        keys.push(key.ok_or_else(|| anyhow::anyhow!("client {i} was issued no key"))?);
    }
    for key in &keys {
        for expected in 2..=3 {
            assert_eq!(c.stateless_count(expected, Some(key)).await?.0, expected);
        }
    }
    let routes: Vec<String> = keys.iter().map(|k| format!("client/{k}")).collect();
    let before = owners(&cluster.gateway_view().await?, &routes)?;
    let (victim, held) = most_loaded(&before, &[]);
    cluster.kill(ordinal(&victim)?).await?;
    let killed = Instant::now();
    let mut problems = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let answer = loop {
            match c.stateless_count(4, Some(key)).await {
                Ok((n, _)) => break Ok(n),
                // Held or refused while the ring moves the key: nothing reached a node.
                Err(_) if killed.elapsed() < RECOVER => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        if answer != Ok(4) {
            problems.push(format!(
                "client {i} (owner {}) answered {answer:?} after the kill, expected 4",
                before[i]
            ));
        }
    }
    println!(
        "stateless: {victim} held {held} of {CLIENTS} clients' state; all answered within {:?}",
        killed.elapsed()
    );
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, stateless clients lost their state:\n{}",
        problems.join("\n")
    );
    Ok(())
}
