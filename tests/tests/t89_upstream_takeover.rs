//! Upstreams continue across a takeover. A session whose owner is `kill -9`'d is served next by
//! a node process that never saw it, which rebuilds the session from its stored record: a stdio
//! upstream gets a new process, initialized with the `initialize` params the client sent when
//! the session began; an HTTP upstream's session is reused by its id, with no new `initialize`.

use futures_util::future::join_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shardgate_raft::MemberState;
use shardgate_tests::mcp::Client;
use shardgate_tests::raft::{RaftCluster, active, state_of};
use shardgate_tests::takeover::{Reply, Retry, call_until_answered, most_loaded, owners, spread};
use shardgate_tests::upstreams::{
    Peer, http_config, initialize_with, initializes_by_pid, raw_stdio_config, recorded, tool_text,
    write_config,
};
use shardgate_tests::{Cluster, parent_pid, scratch};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Sessions per test: the most loaded of three nodes owns at least four of them.
const SESSIONS: usize = 12;
/// How long membership gets to settle (relaxed timings: `Down` after about 4 s).
const CONVERGE: Duration = Duration::from_secs(20);

/// The `initialize` params of session `i`: a client of its own, named so that what an upstream
/// received can be traced to the session.
fn client_params(label: &str, i: usize) -> Value {
    json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {"roots": {"listChanged": true}},
        "clientInfo": {"name": format!("t89-{label}-{i}"), "version": format!("1.{i}.7")}
    })
}

/// The clientInfo name of some `initialize` params.
fn client_name(params: &Value) -> Option<&str> {
    params["clientInfo"]["name"].as_str()
}

/// `echo`/`whoami` with `text` in every session at once, each until it is answered.
async fn call_everywhere(
    c: &Client,
    sids: &[String],
    tool: &str,
    text: impl Fn(usize) -> String,
    since: Instant,
) -> Vec<Reply> {
    join_all(
        sids.iter().enumerate().map(|(i, sid)| {
            let arguments = json!({"text": text(i)});
            async move {
                call_until_answered(c, sid, 100, tool, &arguments, since, Retry::Unplaced).await
            }
        }),
    )
    .await
}

/// Every session whose reply's text is not `want(i)`, with its owner and what it got.
fn wrong_replies(
    sids: &[String],
    owner: &[String],
    replies: &[Reply],
    want: impl Fn(usize) -> String,
) -> Vec<String> {
    (0..sids.len())
        .filter_map(|i| {
            let r = &replies[i];
            let got = r.value.as_ref().ok().and_then(tool_text);
            (got.as_deref() != Some(want(i).as_str())).then(|| {
                format!(
                    "session {i} {} (owner {}): {:?} after {:?}, expected text {:?}; earlier tries: {:?}",
                    sids[i],
                    owner[i],
                    r.value,
                    r.after,
                    want(i),
                    r.tries
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn t10_a_stdio_upstream_is_started_again_with_the_stored_initialize_params()
-> anyhow::Result<()> {
    let dir = scratch("t89-stdio")?;
    let pid_dir = dir.join("pids");
    std::fs::create_dir_all(&pid_dir)?;
    let config = write_config(&dir, &raw_stdio_config(&pid_dir, 0.0)?)?;
    // The default store (one SQLite file); `up` restarts the killed node, whose new process
    // never saw the sessions it owns again.
    let cluster = Cluster::builder().nodes(3).config(config).start().await?;
    assert!(
        cluster
            .store
            .as_deref()
            .is_some_and(|s| s.starts_with("sqlite:")),
        "without --store, up gives its nodes one SQLite file; it shows {:?}",
        cluster.store
    );
    let c = Client::new(&cluster.endpoint);
    let sent: Vec<Value> = (0..SESSIONS).map(|i| client_params("stdio", i)).collect();
    let sids = join_all(sent.iter().map(|p| initialize_with(&c, p)))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<String>>>()?;
    let since = Instant::now();
    let before = call_everywhere(&c, &sids, "echo", |i| format!("s{i}-before"), since).await;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    let problems = wrong_replies(&sids, &owner, &before, |i| format!("s{i}-before"));
    assert!(
        problems.is_empty(),
        "before any kill:\n{}",
        problems.join("\n")
    );

    // Each session has had one process, started by its `initialize` with the client's params,
    // a child of the node that owns it.
    let spawned = initializes_by_pid(&pid_dir)?;
    let first = processes_of(&spawned, &sent);
    for i in 0..SESSIONS {
        let [pid] = first[i][..] else {
            panic!(
                "session {i} has one stdio process before the kill, not {:?}: {spawned:?}",
                first[i]
            );
        };
        assert_eq!(
            spawned[&pid],
            vec![sent[i].clone()],
            "process {pid} of session {i} was initialized once, with the client's params"
        );
        let node = cluster.node_pid(&owner[i])?;
        assert_eq!(
            parent_pid(pid as u32),
            Some(node),
            "session {i}'s process {pid} is a child of its owner {} (pid {node})",
            owner[i]
        );
    }

    let (victim, k) = most_loaded(&owner, &[]);
    let victim_pid = cluster.node_pid(&victim)?;
    kill(Pid::from_raw(victim_pid as i32), Signal::SIGKILL)?;
    let killed = Instant::now();
    let after = call_everywhere(&c, &sids, "echo", |i| format!("s{i}-after"), killed).await;
    let lost: Vec<usize> = (0..SESSIONS).filter(|&i| owner[i] == victim).collect();
    println!(
        "stdio: kill -9 of {victim} (pid {victim_pid}), which owned {k} of {SESSIONS} sessions; \
         kill → answer for them: {}",
        spread(lost.iter().map(|&i| after[i].after).collect())
    );
    let problems = wrong_replies(&sids, &owner, &after, |i| format!("s{i}-after"));
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, the sessions' next call did not succeed:\n{}",
        problems.join("\n")
    );
    // The killed node's address refused connections, so it was marked Down and its sessions
    // served elsewhere; `up` restarts it, and once it is Active again its sessions are handed
    // back to it. Once every member is Active, each session is called where it now lives.
    let settled = Instant::now();
    let members = cluster.gateway_view().await?.members.len();
    loop {
        let view = cluster.gateway_view().await?;
        if active(&view) == members {
            break;
        }
        anyhow::ensure!(
            settled.elapsed() < Duration::from_secs(30),
            "the membership did not settle after the kill: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = call_everywhere(&c, &sids, "echo", |i| format!("s{i}-settled"), settled).await;
    let problems = wrong_replies(&sids, &owner, &again, |i| format!("s{i}-settled"));
    assert!(
        problems.is_empty(),
        "once {victim} was back, the sessions' next call did not succeed:\n{}",
        problems.join("\n")
    );

    let spawned = initializes_by_pid(&pid_dir)?;
    let now = processes_of(&spawned, &sent);
    let nodes = cluster.node_pids()?;
    let orphans: Vec<(i32, String)> = lost
        .iter()
        .map(|&i| first[i][0])
        .map(|p| (p, process_state(p)))
        .collect();
    println!("stdio: the killed node's processes now (pid, state): {orphans:?}");
    println!(
        "stdio: node pids now {nodes:?}; {victim} is {:?}",
        cluster.node_pid(&victim).ok()
    );
    let mut problems = Vec::new();
    for i in 0..SESSIONS {
        let new: Vec<i32> = now[i]
            .iter()
            .copied()
            .filter(|p| !first[i].contains(p))
            .collect();
        let parents: Vec<(i32, Option<u32>)> =
            new.iter().map(|&p| (p, parent_pid(p as u32))).collect();
        if owner[i] != victim {
            if !new.is_empty() {
                problems.push(format!(
                    "session {i} (owner {}, not killed) got new processes {parents:?}",
                    owner[i]
                ));
            }
            continue;
        }
        if new.is_empty() {
            problems.push(format!(
                "session {i} (owner {victim}, killed) was served without a new stdio process; \
                 its processes: {:?}, the first {:?}: {}",
                now[i],
                first[i],
                process_state(first[i][0])
            ));
        }
        for &p in &new {
            if spawned[&p] != [sent[i].clone()] {
                problems.push(format!(
                    "session {i}: the new process {p} received {:?}, not the client's \
                     initialize params once ({})",
                    spawned[&p], sent[i]
                ));
            }
        }
        // The one serving it now is a child of a node process other than the killed one.
        let served = parents
            .iter()
            .any(|(_, parent)| parent.is_some_and(|n| n != victim_pid && nodes.contains(&n)));
        if !served {
            problems.push(format!(
                "session {i}: no new process of it (pid, parent) {parents:?} runs under a live \
                 node {nodes:?} other than the killed {victim_pid}"
            ));
        }
    }
    // Every process started since the kill was initialized as one of the sessions' clients.
    let theirs: BTreeSet<i32> = now.iter().flatten().copied().collect();
    let strangers: Vec<(i32, &Vec<Value>)> = spawned
        .iter()
        .filter(|(pid, _)| !theirs.contains(pid))
        .map(|(pid, got)| (*pid, got))
        .collect();
    if !strangers.is_empty() {
        problems.push(format!(
            "processes initialized with none of the sessions' params (pid, initialize params \
             received): {strangers:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, stdio upstreams of its sessions:\n{}",
        problems.join("\n")
    );
    cluster.stop().await?;
    Ok(())
}

/// A process's state letter and parent from `/proc` (`Z` a zombie), or `gone`.
fn process_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            Some(format!("{} (parent {})", rest.first()?, rest.get(1)?))
        })
        .unwrap_or_else(|| "gone".into())
}

/// The processes that received each session's `initialize` params (by clientInfo name).
fn processes_of(spawned: &BTreeMap<i32, Vec<Value>>, sent: &[Value]) -> Vec<Vec<i32>> {
    sent.iter()
        .map(|params| {
            spawned
                .iter()
                .filter(|(_, got)| got.iter().any(|g| client_name(g) == client_name(params)))
                .map(|(pid, _)| *pid)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn t20_an_http_upstream_session_is_reused_by_the_new_owner() -> anyhow::Result<()> {
    let dir = scratch("t89-http")?;
    let log = dir.join("requests.jsonl");
    let upstream = Peer::recording(&log).await?;
    let config = write_config(&dir, &http_config("rec", &upstream.url, "session"))?;
    let store = format!("sqlite:{}", dir.join("sessions.db").display());
    let config = config.display().to_string();
    // Nodes nobody restarts: the killed owner stays dead, and the others take its sessions.
    let mut cluster = RaftCluster::new(
        dir.clone(),
        3,
        &["--store", &store, "--ack", "store", "--config", &config],
    )?;
    cluster.start(3).await?;
    let gateway = cluster.start_gateway().await?;
    cluster.until_gateway(CONVERGE, |m| active(m) == 3).await?;
    let c = Client::new(&format!("http://{}/mcp", gateway.mcp));

    let sent: Vec<Value> = (0..SESSIONS).map(|i| client_params("http", i)).collect();
    let sids = join_all(sent.iter().map(|p| initialize_with(&c, p)))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<String>>>()?;
    let owner = owners(&cluster.gateway_view().await?, &sids)?;
    let since = Instant::now();
    let before = call_everywhere(&c, &sids, "whoami", |i| format!("s{i}-before"), since).await;
    let problems = wrong_replies(&sids, &owner, &before, |i| format!("recorded: s{i}-before"));
    assert!(
        problems.is_empty(),
        "before any kill:\n{}",
        problems.join("\n")
    );
    let requests = recorded(&log)?;
    let upstream_sid: Vec<String> = (0..SESSIONS)
        .map(|i| {
            let seen = calls_with(&requests, &format!("s{i}-before"));
            match &seen[..] {
                [r] => upstream_session(r)
                    .ok_or_else(|| anyhow::anyhow!("session {i}'s call has no session id: {r}")),
                _ => Err(anyhow::anyhow!(
                    "session {i}'s call reached the upstream once, not {}: {seen:?}",
                    seen.len()
                )),
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let distinct: BTreeSet<&String> = upstream_sid.iter().collect();
    assert_eq!(
        distinct.len(),
        SESSIONS,
        "each session has an upstream session of its own: {upstream_sid:?}"
    );
    let inits = initializes(&requests, &sent);
    assert!(
        inits.iter().all(|n| *n == 1),
        "each session initialized its upstream session once (per session: {inits:?})"
    );

    let (victim, k) = most_loaded(&owner, &[]);
    let v = victim
        .strip_prefix("node-")
        .and_then(|o| o.parse::<usize>().ok())
        .ok_or_else(|| anyhow::anyhow!("{victim} is not node-<ordinal>"))?;
    cluster.kill(v).await?;
    let killed = Instant::now();
    let after = call_everywhere(&c, &sids, "whoami", |i| format!("s{i}-after"), killed).await;
    let (_, view) = cluster
        .until_gateway(CONVERGE, |m| state_of(m, v) == Some(MemberState::Down))
        .await?;
    let now_owner = owners(&view, &sids)?;
    let moves: Vec<String> = (0..SESSIONS)
        .map(|i| format!("{} → {}", owner[i], now_owner[i]))
        .collect();
    let lost: Vec<usize> = (0..SESSIONS).filter(|&i| owner[i] == victim).collect();
    println!(
        "http: kill -9 of {victim}, which owned {k} of {SESSIONS} sessions; kill → answer for \
         them: {}",
        spread(lost.iter().map(|&i| after[i].after).collect())
    );
    let problems = wrong_replies(&sids, &moves, &after, |i| format!("recorded: s{i}-after"));
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, the sessions' next call did not succeed:\n{}",
        problems.join("\n")
    );
    assert!(
        lost.iter().all(|&i| now_owner[i] != victim),
        "the killed {victim}'s sessions have new owners: {moves:?}"
    );

    let requests = recorded(&log)?;
    let mut problems = Vec::new();
    for i in 0..SESSIONS {
        let seen = calls_with(&requests, &format!("s{i}-after"));
        let sids_seen: Vec<Option<String>> = seen.iter().map(|r| upstream_session(r)).collect();
        if sids_seen != [Some(upstream_sid[i].clone())] {
            problems.push(format!(
                "session {i} ({}): its call after the kill reached the upstream under {sids_seen:?}, \
                 not once under its upstream session {}",
                moves[i], upstream_sid[i]
            ));
        }
    }
    let inits_now = initializes(&requests, &sent);
    for i in 0..SESSIONS {
        if inits_now[i] != 1 {
            problems.push(format!(
                "session {i} ({}): the upstream got {} initialize requests for it in all",
                moves[i], inits_now[i]
            ));
        }
    }
    let all_inits = requests
        .iter()
        .filter(|r| r["body"]["method"] == "initialize")
        .count();
    if all_inits != SESSIONS {
        problems.push(format!(
            "the upstream got {all_inits} initialize requests in all, for {SESSIONS} sessions"
        ));
    }
    assert!(
        problems.is_empty(),
        "after kill -9 of {victim}, HTTP upstream sessions:\n{}\nwhat the upstream got since \
         the kill:\n{}",
        problems.join("\n"),
        requests
            .iter()
            .skip_while(|r| {
                !r["body"]["params"]["arguments"]["text"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("-after"))
            })
            .map(summary)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(upstream);
    Ok(())
}

/// A recorded request on one line: HTTP method, upstream session, JSON-RPC method, and the
/// call's text or the client's name.
fn summary(request: &Value) -> String {
    let body = &request["body"];
    let what = body["params"]["arguments"]["text"]
        .as_str()
        .or_else(|| client_name(&body["params"]));
    format!(
        "{} session={} {} {}",
        request["method"].as_str().unwrap_or("?"),
        upstream_session(request).as_deref().unwrap_or("-"),
        body["method"].as_str().unwrap_or("-"),
        what.unwrap_or("")
    )
}

/// The upstream session id a recorded request carried.
fn upstream_session(request: &Value) -> Option<String> {
    request["headers"]["mcp-session-id"]
        .as_str()
        .map(str::to_owned)
}

/// The recorded `tools/call` POSTs whose `text` argument is `text`.
fn calls_with<'a>(requests: &'a [Value], text: &str) -> Vec<&'a Value> {
    requests
        .iter()
        .filter(|r| r["body"]["method"] == "tools/call")
        .filter(|r| r["body"]["params"]["arguments"]["text"] == text)
        .collect()
}

/// How many `initialize` requests the upstream got with each session's params.
fn initializes(requests: &[Value], sent: &[Value]) -> Vec<usize> {
    sent.iter()
        .map(|params| {
            requests
                .iter()
                .filter(|r| r["body"]["method"] == "initialize")
                .filter(|r| client_name(&r["body"]["params"]) == client_name(params))
                .count()
        })
        .collect()
}
