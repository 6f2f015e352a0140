//! Store outages degrade clearly. A request that cannot reach its acknowledgement level gets
//! 503 with a JSON-RPC error saying the store is unavailable and the request may be retried;
//! the node's readiness turns false meanwhile; nothing is half-written, so once the store is
//! back each session's builtin `counter` goes on from the last value its client saw
//! acknowledged. A Redis primary killed inside the cluster (its replica promoted) is survived,
//! and so is a PostgreSQL restart behind Redis.
//!
//! Each test prints what happened to each session: how long its calls were refused, and what a
//! refusal said.

use futures_util::future::join_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shardgate_tests::Cluster;
use shardgate_tests::mcp::{self, Client};
use shardgate_tests::services::{Postgres, RedisCluster, redis_role, replica_port};
use shardgate_tests::takeover::{owners, sessions_counted_to};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The JSON-RPC code of a store that cannot be reached (node/src/takeover.rs).
const STORE_UNAVAILABLE: i64 = -32001;
/// What its message says.
const UNAVAILABLE_MESSAGE: &str = "the session store is unavailable; the request may be retried";
/// How long sessions get to answer again once the store is back.
const RECOVER: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_frozen_redis_cluster_gets_503_and_unready_nodes_then_counting_goes_on()
-> anyhow::Result<()> {
    const SESSIONS: usize = 6;
    let started = Instant::now();
    let redis = RedisCluster::start().await?;
    let cluster = Cluster::builder()
        .nodes(3)
        .store(&store_url(&redis))
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    let owning: BTreeSet<&str> = owner.iter().map(String::as_str).collect();
    for (id, addrs) in &cluster.nodes {
        assert_eq!(
            readiness(&c.http, addrs.admin).await,
            Some(200),
            "{id} is ready before the outage"
        );
    }
    println!(
        "frozen: {SESSIONS} sessions at 3, owners {owner:?}; set up in {:?}",
        started.elapsed()
    );

    // Every Redis process stopped: connections stay open, nothing answers.
    let frozen = Frozen::stop(&redis.pids())?;
    let froze = Instant::now();
    let polling = AtomicBool::new(true);
    let ready_log: Mutex<ReadyLog> = Mutex::default();
    let poll = async {
        while polling.load(Ordering::Relaxed) {
            for (id, addrs) in &cluster.nodes {
                let status = readiness(&c.http, addrs.admin).await;
                let mut log = ready_log.lock().expect("not poisoned");
                let entries = log.entry(id.clone()).or_default();
                // Only changes, so that the printout stays short.
                if entries.last().is_none_or(|(_, s)| *s != status) {
                    entries.push((froze.elapsed(), status));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let calls = async {
        // Round 1: the sessions are in their owners' memory; the record naming the request
        // cannot be stored, so the call is refused before it runs.
        let first = timed_round(&c, &sids, 4).await;
        // Round 2: their owners dropped them (the store could not take their writes); taking
        // them over needs a claim in the store, which cannot be made either.
        let second = timed_round(&c, &sids, 5).await;
        polling.store(false, Ordering::Relaxed);
        (first, second)
    };
    let ((first, second), ()) = tokio::join!(calls, poll);
    let frozen_for = froze.elapsed();
    frozen.resume();
    let thawed = Instant::now();
    let ready_log = ready_log.into_inner().expect("not poisoned");
    println!("frozen: every Redis process stopped for {frozen_for:?}");
    println!("frozen: readiness while frozen (time since SIGSTOP, status): {ready_log:?}");

    let mut problems = Vec::new();
    let mut shown = false;
    for (round, answers) in [(1, &first), (2, &second)] {
        for (i, (took, got)) in answers.iter().enumerate() {
            match got {
                Got::Unavailable { body, retry_after } => {
                    if !shown {
                        println!(
                            "frozen: a refused call (round {round}, after {took:?}): HTTP 503, \
                             Retry-After {retry_after:?}, body {body}"
                        );
                        shown = true;
                    }
                    if let Err(why) = check_unavailable(body, retry_after.as_deref()) {
                        problems.push(format!("round {round}, {}: {why}", sids[i]));
                    }
                }
                other => problems.push(format!(
                    "round {round}, {} (owner {}): expected 503, got {other:?} after {took:?}",
                    sids[i], owner[i]
                )),
            }
        }
        let times: Vec<Duration> = answers.iter().map(|(t, _)| *t).collect();
        println!("frozen: round {round} answered after {times:?}");
    }
    for id in &owning {
        let seen = ready_log.get(*id).cloned().unwrap_or_default();
        if !seen.iter().any(|(_, s)| *s == Some(503)) {
            problems.push(format!(
                "{id} owns sessions whose writes failed, yet its /health/ready never answered \
                 503 while the store was frozen: {seen:?}"
            ));
        }
    }

    // Unready until a write succeeds again (ARCHITECTURE.md, "Outages"): none was made yet.
    let mut idle = BTreeMap::new();
    for (id, addrs) in &cluster.nodes {
        idle.insert(id.clone(), readiness(&c.http, addrs.admin).await);
    }
    println!("frozen: readiness just after SIGCONT, before any call: {idle:?}");

    // Nothing the refused calls began is in the store: each record still holds the count 3.
    // Their records may name them as in flight (a write that timed out may still land once
    // Redis runs again): a new owner answers those with an error nobody waits for.
    let port = redis.nodes[0].port();
    for (i, sid) in sids.iter().enumerate() {
        let key = format!("sg:{{{sid}}}:record");
        let stored = redis_cli(port, &["-c", "get", &key]).await?;
        let record: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
        let in_flight: Vec<&Value> = record["in_flight"]
            .as_array()
            .map(|a| a.iter().map(|r| &r["request_id"]).collect())
            .unwrap_or_default();
        println!(
            "frozen: {sid}'s record after SIGCONT: counter {}, in flight {in_flight:?}",
            record["upstream_state"]["counter"]
        );
        if record["upstream_state"]["counter"] != 3 {
            problems.push(format!(
                "{} (owner {}): the stored record after SIGCONT does not hold the count 3: \
                 {stored}",
                sid, owner[i]
            ));
        }
    }

    // Back: each session counts on from the last value its client saw acknowledged (3), so
    // the calls refused while frozen did not count.
    let recovered = join_all(
        sids.iter()
            .map(|sid| count_until_counted(&c, sid, 100, thawed)),
    )
    .await;
    let mut after = Vec::new();
    for (i, (got, tries)) in recovered.iter().enumerate() {
        after.push(tries.last().map(|(t, _)| *t));
        if *got != Some(4) {
            problems.push(format!(
                "{} (owner {}): after SIGCONT expected 4 (3 acknowledged before, the refused \
                 calls not counted), got {got:?}; tries (since SIGCONT): {tries:?}",
                sids[i], owner[i]
            ));
        }
    }
    println!("frozen: SIGCONT → first count per session: {after:?}");
    for (i, sid) in sids.iter().enumerate() {
        match call_counter(&c, sid, 200).await {
            Got::Count(5) => {}
            other => problems.push(format!(
                "{sid} (owner {}): the next call expected 5, got {other:?}",
                owner[i]
            )),
        }
    }
    let mut back = BTreeMap::new();
    for (id, addrs) in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = readiness(&c.http, addrs.admin).await;
        while status != Some(200) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = readiness(&c.http, addrs.admin).await;
        }
        back.insert(id.clone(), (status, thawed.elapsed()));
        if status != Some(200) {
            problems.push(format!(
                "{id}'s /health/ready is {status:?} 10 s after the store came back"
            ));
        }
    }
    println!("frozen: readiness after SIGCONT (status, time since SIGCONT): {back:?}");
    assert!(
        problems.is_empty(),
        "with Redis frozen, then thawed:\n{}",
        problems.join("\n")
    );
    cluster.stop().await?;
    println!("frozen: test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_a_redis_primary_killed_is_survived_once_its_replica_is_promoted() -> anyhow::Result<()>
{
    const SESSIONS: usize = 12;
    let started = Instant::now();
    let redis = RedisCluster::start().await?;
    // A primary whose replica has not synced yet cannot be replaced.
    redis.replicas_online(Duration::from_secs(20)).await?;
    // At the default level (`store`) a write is acknowledged once its primary has it, and
    // replication is asynchronous: a write the primary took just before it died could be lost
    // with it, which would show below as a count repeating. The node's writer retries a write
    // for longer than this cluster's failover takes (each try waits up to the Redis client's
    // 2 s timeout), so calls mostly stall through it; a 503 is allowed, and must not count.
    let cluster = Cluster::builder()
        .nodes(3)
        .store(&store_url(&redis))
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 1).await?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;

    // The primary that holds most sessions, and its replica.
    let mut held: Vec<(usize, u16, BTreeSet<String>)> = Vec::new();
    for (i, addr) in redis.nodes.iter().enumerate() {
        let port = addr.port();
        if redis_role(port).await? == "master" {
            held.push((i, port, sessions_in(port).await?));
        }
    }
    anyhow::ensure!(held.len() == 3, "three primaries: {held:?}");
    held.sort_by_key(|(_, _, s)| std::cmp::Reverse(s.len()));
    let (victim, victim_port, on_victim) = held.swap_remove(0);
    let replica_port = replica_port(victim_port).await?;
    let spread: Vec<usize> = held.iter().map(|(_, _, s)| s.len()).collect();
    println!(
        "primary kill: the primary on port {victim_port} holds {} of {SESSIONS} sessions (the \
         others {spread:?}); its replica is on port {replica_port}; set up in {:?}",
        on_victim.len(),
        started.elapsed()
    );
    anyhow::ensure!(!on_victim.is_empty(), "no session on the chosen primary");

    let traffic = Traffic::start(&c, &sids, 1000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = redis.pids()[victim];
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
    let killed = Instant::now();

    // Until the replica is promoted, and every session has counted a few times after it.
    let mut promoted = None;
    let deadline = killed + Duration::from_secs(40);
    loop {
        if promoted.is_none() && redis_role(replica_port).await.is_ok_and(|r| r == "master") {
            promoted = Some(killed.elapsed());
        }
        let settled = traffic.every_session(|calls| {
            let tail: Vec<&Call> = calls.iter().rev().take(5).collect();
            tail.len() == 5
                && tail
                    .iter()
                    .all(|t| t.at > killed && t.got.counted().is_some())
        });
        if promoted.is_some() && settled && killed.elapsed() > Duration::from_secs(3) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = traffic.stop().await;
    println!("primary kill: kill -9 → replica on port {replica_port} is a primary: {promoted:?}");

    let mut problems = Vec::new();
    if promoted.is_none() {
        problems.push(format!(
            "the replica on port {replica_port} was not promoted within 40 s"
        ));
    }
    for (i, sid) in sids.iter().enumerate() {
        let report = check_counting(&calls[i], 1, killed);
        let place = if on_victim.contains(sid) {
            "on the killed primary"
        } else {
            "elsewhere"
        };
        println!(
            "primary kill: {sid} ({place}, node {}): {}",
            owner[i], report.summary
        );
        for p in report.problems {
            problems.push(format!("{sid} ({place}, node {}): {p}", owner[i]));
        }
        let last = calls[i].last().map(|c| &c.got);
        if last.and_then(Got::counted).is_none() {
            problems.push(format!(
                "{sid} ({place}): does not count again within 40 s of the kill; last: {last:?}"
            ));
        }
    }
    for (id, addrs) in &cluster.nodes {
        let status = readiness(&c.http, addrs.admin).await;
        if status != Some(200) {
            problems.push(format!(
                "{id}'s /health/ready is {status:?} after the failover"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "after kill -9 of the Redis primary on port {victim_port}:\n{}",
        problems.join("\n")
    );
    cluster.stop().await?;
    println!("primary kill: test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_postgres_restart_behind_redis_is_survived_and_caught_up() -> anyhow::Result<()> {
    const SESSIONS: usize = 6;
    /// How long PostgreSQL stays down: less than the write-behind retries a write
    /// (`Limits::retry_for`, 10 s).
    const DOWN: Duration = Duration::from_secs(3);
    let started = Instant::now();
    let (redis, mut pg) = tokio::try_join!(RedisCluster::start(), Postgres::start())?;
    let cluster = Cluster::builder()
        .nodes(3)
        .store(&store_url(&redis))
        .store_durable(&pg.url)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 3).await?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    // Written behind within moments: what PostgreSQL holds before the restart.
    wait_for_counters(&pg, &sids, &[3; SESSIONS], Duration::from_secs(10)).await?;
    println!(
        "postgres restart: {SESSIONS} sessions at 3, in PostgreSQL too; set up in {:?}",
        started.elapsed()
    );
    let pid_before = pg.pid();

    let polling = Arc::new(AtomicBool::new(true));
    let ready = tokio::spawn({
        let (http, polling) = (c.http.clone(), polling.clone());
        let admins: Vec<(String, SocketAddr)> = cluster
            .nodes
            .iter()
            .map(|(id, a)| (id.clone(), a.admin))
            .collect();
        async move {
            let mut not_ready = Vec::new();
            while polling.load(Ordering::Relaxed) {
                for (id, admin) in &admins {
                    let status = readiness(&http, *admin).await;
                    if status != Some(200) {
                        not_ready.push((id.clone(), status));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            not_ready
        }
    });

    // Counting before and while PostgreSQL is down; the traffic stops before it is back, so
    // the last counts reach it only through the write-behind's retries.
    let traffic = Traffic::start(&c, &sids, 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    pg.stop().await?;
    let stopped = Instant::now();
    let down = psql(&pg, "SELECT 1").await;
    anyhow::ensure!(
        down.is_err() && pg.pid().is_none(),
        "PostgreSQL is down after pg_ctl stop: {down:?}, pid {:?}",
        pg.pid()
    );
    tokio::time::sleep(DOWN).await;
    let during = traffic.stop().await;
    let starting = Instant::now();
    pg.start_again().await?;
    let back = Instant::now();
    println!(
        "postgres restart: pid {pid_before:?} stopped in {:?}, down {:?}, pid {:?} started in {:?}",
        stopped - stopping,
        starting - stopped,
        pg.pid(),
        back - starting
    );
    let mut problems = Vec::new();
    let last = check_phase(
        &sids,
        &owner,
        &during,
        &[3; SESSIONS],
        stopped,
        &mut problems,
    );
    for (i, sid) in sids.iter().enumerate() {
        let while_down = during[i]
            .iter()
            .filter(|c| c.at > stopped && c.got.counted().is_some())
            .count();
        if while_down == 0 {
            problems.push(format!("{sid}: no call counted while PostgreSQL was down"));
        }
    }
    match wait_for_counters(&pg, &sids, &last, Duration::from_secs(15)).await {
        Ok(()) => println!(
            "postgres restart: PostgreSQL caught up with the counts Redis took while it was \
             down {:?} after it was back: {last:?}",
            back.elapsed()
        ),
        Err(e) => problems.push(format!("the counts made while it was down: {e:#}")),
    }

    // And counting goes on with it back.
    let traffic = Traffic::start(&c, &sids, 100_000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = traffic.stop().await;
    polling.store(false, Ordering::Relaxed);
    let not_ready = ready.await?;
    let last = check_phase(&sids, &owner, &after, &last, back, &mut problems);
    let caught_up = Instant::now();
    match wait_for_counters(&pg, &sids, &last, Duration::from_secs(15)).await {
        Ok(()) => println!(
            "postgres restart: PostgreSQL holds the counts made after it was back {:?} after \
             the traffic stopped: {last:?}",
            caught_up.elapsed()
        ),
        Err(e) => problems.push(format!("the counts made after it was back: {e:#}")),
    }
    if !not_ready.is_empty() {
        problems.push(format!(
            "nodes were not ready while PostgreSQL restarted (Redis takes every write): \
             {not_ready:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "while PostgreSQL restarted behind Redis:\n{}",
        problems.join("\n")
    );
    cluster.stop().await?;
    println!("postgres restart: test took {:?}", started.elapsed());
    Ok(())
}

/// Checks each session's calls of a phase in which every call must count (Redis takes every
/// write): `from[i]` is where session `i` stood before it. Returns where each stands after.
fn check_phase(
    sids: &[String],
    owner: &[String],
    calls: &[Vec<Call>],
    from: &[i64],
    outage: Instant,
    problems: &mut Vec<String>,
) -> Vec<i64> {
    let mut last = Vec::new();
    for (i, sid) in sids.iter().enumerate() {
        let report = check_counting(&calls[i], from[i], outage);
        println!(
            "postgres restart: {sid} (node {}): {}",
            owner[i], report.summary
        );
        problems.extend(
            report
                .problems
                .into_iter()
                .map(|p| format!("{sid} (node {}): {p}", owner[i])),
        );
        let failed: Vec<&Call> = calls[i]
            .iter()
            .filter(|c| c.got.counted().is_none())
            .collect();
        if !failed.is_empty() {
            problems.push(format!(
                "{sid}: Redis is the hot store, yet calls failed around PostgreSQL's restart: \
                 {failed:?}"
            ));
        }
        last.push(
            calls[i]
                .iter()
                .filter_map(|c| c.got.counted())
                .next_back()
                .unwrap_or(from[i]),
        );
    }
    last
}

/// Each node's readiness as it changed: (time since the freeze, status).
type ReadyLog = BTreeMap<String, Vec<(Duration, Option<u16>)>>;

/// What one `counter` call got.
#[derive(Clone, Debug, PartialEq)]
enum Got {
    Count(i64),
    /// 503: refused, so not counted.
    Unavailable {
        body: String,
        retry_after: Option<String>,
    },
    /// 404: the session is gone.
    NotFound(String),
    /// Anything else (a stream that ended without the answer, an error answer, another
    /// status): the call may or may not have counted.
    Failed(String),
}

impl Got {
    fn counted(&self) -> Option<i64> {
        match self {
            Got::Count(n) => Some(*n),
            _ => None,
        }
    }
}

/// One `tools/call` of the builtin `counter` in session `sid`.
async fn call_counter(c: &Client, sid: &str, id: i64) -> Got {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "counter", "arguments": {}}});
    let resp = match c
        .session_post(sid, &body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Got::Failed(format!("send: {e}")),
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        return match status {
            503 => Got::Unavailable {
                body: text,
                retry_after,
            },
            404 => Got::NotFound(text),
            _ => Got::Failed(format!("HTTP {status}: {text}")),
        };
    }
    match mcp::response_of(resp, &json!(id)).await {
        Ok(answer) => match answer["result"]["content"][0]["text"]
            .as_str()
            .and_then(|t| t.trim().parse().ok())
        {
            Some(n) => Got::Count(n),
            None => Got::Failed(format!("not a count: {answer}")),
        },
        Err(e) => Got::Failed(format!("reading the answer: {e:#}")),
    }
}

/// Whether a 503's body and header say what the promise says: JSON-RPC error -32001, the store
/// unavailable, the request may be retried, after a second.
fn check_unavailable(body: &str, retry_after: Option<&str>) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("body {body:?}: {e}"))?;
    let error = &v["error"];
    if v["jsonrpc"] != "2.0" || error["code"] != STORE_UNAVAILABLE {
        return Err(format!(
            "not a JSON-RPC error with code {STORE_UNAVAILABLE}: {body}"
        ));
    }
    if error["message"] != UNAVAILABLE_MESSAGE {
        return Err(format!("message is not {UNAVAILABLE_MESSAGE:?}: {body}"));
    }
    if retry_after != Some("1") {
        return Err(format!("Retry-After is {retry_after:?}, not 1"));
    }
    Ok(())
}

/// One `counter` call in every session at once (request id `id`), with how long each took.
async fn timed_round(c: &Client, sids: &[String], id: i64) -> Vec<(Duration, Got)> {
    join_all(sids.iter().map(|sid| async move {
        let at = Instant::now();
        let got = call_counter(c, sid, id).await;
        (at.elapsed(), got)
    }))
    .await
}

/// `counter` in `sid` until it counts, again after every 503, for at most [`RECOVER`] after
/// `since`: the count, and every try (time since `since`, what it got).
async fn count_until_counted(
    c: &Client,
    sid: &str,
    first_id: i64,
    since: Instant,
) -> (Option<i64>, Vec<(Duration, Got)>) {
    let mut tries = Vec::new();
    for id in first_id.. {
        let got = call_counter(c, sid, id).await;
        tries.push((since.elapsed(), got.clone()));
        match got {
            Got::Count(n) => return (Some(n), tries),
            Got::Unavailable { .. } if since.elapsed() < RECOVER => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return (None, tries),
        }
    }
    unreachable!("ids do not run out")
}

/// One call of a session's traffic.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    took: Duration,
    got: Got,
}

/// Every session calling `counter` one call after another: again after a short pause when
/// refused, at once otherwise.
struct Traffic {
    stop: Arc<AtomicBool>,
    calls: Vec<Arc<Mutex<Vec<Call>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Request ids from `first_id` on, in each session.
    fn start(c: &Client, sids: &[String], first_id: i64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let calls: Vec<Arc<Mutex<Vec<Call>>>> = sids.iter().map(|_| Arc::default()).collect();
        let tasks = sids
            .iter()
            .zip(&calls)
            .map(|(sid, log)| {
                let (c, sid, log, stop) = (c.clone(), sid.clone(), log.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut id = first_id;
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let got = call_counter(&c, &sid, id).await;
                        let pause = match got {
                            Got::Count(_) => Duration::from_millis(20),
                            _ => Duration::from_millis(100),
                        };
                        log.lock().expect("not poisoned").push(Call {
                            at,
                            took: at.elapsed(),
                            got,
                        });
                        tokio::time::sleep(pause).await;
                        id += 1;
                    }
                })
            })
            .collect();
        Traffic { stop, calls, tasks }
    }

    fn every_session(&self, done: impl Fn(&[Call]) -> bool) -> bool {
        self.calls
            .iter()
            .all(|log| done(&log.lock().expect("not poisoned")))
    }

    /// Stops the calls, waits for those under way; every session's calls.
    async fn stop(self) -> Vec<Vec<Call>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.calls
            .iter()
            .map(|log| log.lock().expect("not poisoned").clone())
            .collect()
    }
}

/// What a session's calls show.
struct Counting {
    summary: String,
    problems: Vec<String>,
}

/// Checks one session's calls, made after it had counted to `start`: no 404, and each count
/// one more than the one before, or more by at most the calls between them whose outcome the
/// client could not know (neither counted nor refused with 503). A 503 must not count, and
/// nothing acknowledged may be lost (a count never repeats or goes back).
fn check_counting(calls: &[Call], start: i64, outage: Instant) -> Counting {
    let mut problems = Vec::new();
    let (mut last, mut unknown) = (start, 0);
    let (mut refused, mut failed, mut counted) = (0, 0, 0);
    // The longest run of calls that did not count: from the first one's start to the end of
    // the call that counted next (or of the last call).
    let (mut run_from, mut longest): (Option<Instant>, Duration) = (None, Duration::ZERO);
    let mut first_failure = None;
    let slowest = calls
        .iter()
        .max_by_key(|c| c.took)
        .map(|c| format!("{:?} at {} from the outage", c.took, signed(c.at, outage)));
    for call in calls {
        match &call.got {
            Got::Count(n) => {
                counted += 1;
                let step = n - last;
                if step < 1 || step > 1 + unknown {
                    problems.push(format!(
                        "counted {n} after {last} with {unknown} calls of unknown outcome \
                         between (at {:?} from the outage)",
                        signed(call.at, outage)
                    ));
                }
                (last, unknown) = (*n, 0);
                if let Some(from) = run_from.take() {
                    longest = longest.max(call.at + call.took - from);
                }
            }
            other => {
                match other {
                    Got::Unavailable { body, retry_after } => {
                        refused += 1;
                        if let Err(why) = check_unavailable(body, retry_after.as_deref()) {
                            problems.push(format!("a 503 that does not say why: {why}"));
                        }
                    }
                    Got::NotFound(body) => {
                        failed += 1;
                        problems.push(format!(
                            "the session is lost: 404 {body} at {:?} from the outage",
                            signed(call.at, outage)
                        ));
                    }
                    _ => {
                        failed += 1;
                        unknown += 1;
                    }
                }
                first_failure.get_or_insert_with(|| format!("{other:?}"));
                run_from.get_or_insert(call.at);
            }
        }
    }
    if let (Some(from), Some(end)) = (run_from, calls.last()) {
        longest = longest.max(end.at + end.took - from);
    }
    Counting {
        summary: format!(
            "{} calls: {counted} counted (to {last}), {refused} refused with 503, {failed} \
             other failures; longest stretch without a count {longest:?}; slowest call {}; \
             first failure: {}",
            calls.len(),
            slowest.unwrap_or_else(|| "none".into()),
            first_failure.unwrap_or_else(|| "none".into())
        ),
        problems,
    }
}

/// `at` relative to `origin`, in milliseconds, negative before it.
fn signed(at: Instant, origin: Instant) -> String {
    match at.checked_duration_since(origin) {
        Some(d) => format!("+{} ms", d.as_millis()),
        None => format!("-{} ms", (origin - at).as_millis()),
    }
}

/// Processes stopped with SIGSTOP, continued on [`Frozen::resume`] or drop, whatever happens in
/// between.
struct Frozen(Vec<Pid>);

impl Frozen {
    fn stop(pids: &[u32]) -> anyhow::Result<Frozen> {
        let mut frozen = Frozen(Vec::new());
        for &pid in pids {
            let pid = Pid::from_raw(i32::try_from(pid)?);
            kill(pid, Signal::SIGSTOP)?;
            frozen.0.push(pid);
        }
        Ok(frozen)
    }

    fn resume(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(pid, Signal::SIGCONT);
        }
    }
}

/// `redis://` with every node of the cluster as a seed.
fn store_url(redis: &RedisCluster) -> String {
    let seeds: Vec<String> = redis.nodes.iter().map(SocketAddr::to_string).collect();
    format!("redis://{}", seeds.join(","))
}

/// The status of a node's `/health/ready`; `None` when it does not answer.
async fn readiness(http: &reqwest::Client, admin: SocketAddr) -> Option<u16> {
    http.get(format!("http://{admin}/health/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    output(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
    )
    .await
}

/// The sessions whose keys the node on `port` holds.
async fn sessions_in(port: u16) -> anyhow::Result<BTreeSet<String>> {
    let keys = redis_cli(port, &["--scan", "--pattern", "sg:*:owner"]).await?;
    Ok(keys
        .lines()
        .filter_map(|k| k.strip_prefix("sg:{")?.strip_suffix("}:owner"))
        .map(str::to_owned)
        .collect())
}

async fn psql(pg: &Postgres, sql: &str) -> anyhow::Result<String> {
    output(Command::new(pg.psql()).arg(&pg.url).args(["-tAc", sql])).await
}

/// Waits until PostgreSQL's record of each session holds the count `want[i]` in its builtin
/// upstream state; the error shows what it holds.
async fn wait_for_counters(
    pg: &Postgres,
    sids: &[String],
    want: &[i64],
    within: Duration,
) -> anyhow::Result<()> {
    let list: Vec<String> = sids.iter().map(|s| format!("'{s}'")).collect();
    let sql = format!(
        "SELECT id, record->'upstream_state'->>'counter' FROM sessions WHERE id IN ({})",
        list.join(",")
    );
    let expected: BTreeMap<String, String> = sids
        .iter()
        .zip(want)
        .map(|(s, n)| (s.clone(), n.to_string()))
        .collect();
    let deadline = Instant::now() + within;
    loop {
        let held = psql(pg, &sql).await.map(|rows| {
            rows.lines()
                .filter_map(|l| l.split_once('|'))
                .map(|(id, n)| (id.to_owned(), n.to_owned()))
                .collect::<BTreeMap<String, String>>()
        });
        if held.as_ref().is_ok_and(|h| *h == expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let records = psql(
                pg,
                &format!(
                    "SELECT id, owner, epoch, record FROM sessions WHERE id IN ({})",
                    list.join(",")
                ),
            )
            .await;
            anyhow::bail!(
                "PostgreSQL does not hold each session's last count within {within:?}: \
                 expected {expected:?}, it holds {held:?}; records: {records:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
