//! The harness's own backing services: a six-process Redis Cluster and a PostgreSQL instance,
//! started side by side on free ports, really serving, and gone (exactly their processes) once
//! dropped.

use shardgate_tests::services::{Postgres, RedisCluster};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Whether `pid` is a live process (a zombie waiting for its parent counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // `pid (comm) state ...`; comm may hold spaces and parentheses.
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

async fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().await?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn t10_a_redis_cluster_and_postgres_of_our_own() -> anyhow::Result<()> {
    let started = Instant::now();
    let (redis, pg) = tokio::join!(RedisCluster::start(), Postgres::start());
    let (redis, pg) = (redis?, pg?);
    println!("started in {:?}", started.elapsed());
    assert_eq!(redis.nodes.len(), 6);
    assert_eq!(redis.urls().len(), 6);

    for addr in &redis.nodes {
        let info = output(Command::new("redis-cli").args([
            "-p",
            &addr.port().to_string(),
            "cluster",
            "info",
        ]))
        .await?;
        assert!(info.contains("cluster_state:ok"), "{addr}: {info}");
    }
    // `-c` follows the MOVED redirect to whichever primary owns the key's slot.
    let first = redis.nodes[0].port().to_string();
    let last = redis.nodes[5].port().to_string();
    for key in ["sg:{probe}:k", "sg:{other}:k", "sg:{third}:k"] {
        let set =
            output(Command::new("redis-cli").args(["-c", "-p", &first, "set", key, "v"])).await?;
        assert_eq!(set, "OK");
        let get = output(Command::new("redis-cli").args(["-c", "-p", &last, "get", key])).await?;
        assert_eq!(get, "v");
    }

    let select = output(
        Command::new(pg.psql())
            .arg(&pg.url)
            .args(["-tAc", "select 1"]),
    )
    .await?;
    assert_eq!(select, "1");

    let mut pids = redis.pids();
    assert_eq!(pids.len(), 6);
    pids.extend(pg.pid());
    assert_eq!(pids.len(), 7, "the postmaster's pid is known");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    let stopping = Instant::now();
    drop(redis);
    drop(pg);
    // The Redis servers are reaped by the drop; the postmaster, whose parent is not this
    // process, may linger for a moment after pg_ctl has seen it stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    println!("stopped in {:?}", stopping.elapsed());
    Ok(())
}
