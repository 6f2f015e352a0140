//! The harness's own backing services: a six-process Redis Cluster and a PostgreSQL instance,
//! started side by side on free ports, really serving, and gone (exactly their processes) once
//! dropped.

use shardgate_tests::services::{Postgres, RedisCluster};
use std::time::{Duration, Instant};
use tokio::process::Command;

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn t10_a_redis_cluster_and_postgres_of_our_own() -> anyhow::Result<()> {
    let started = Instant::now();
    let (redis, pg) = tokio::join!(RedisCluster::start(), Postgres::start());
    let (redis, pg) = (redis?, pg?);
    println!("started in {:?}", started.elapsed());

    let port = redis.nodes[0].port().to_string();
    let set = Command::new("redis-cli")
        .args(["-c", "-p", &port, "set", "sg:{probe}:k", "v"])
        .output()
        .await?;
    assert!(
        String::from_utf8_lossy(&set.stdout).contains("OK"),
        "{set:?}"
    );
    let other = redis.nodes[5].port().to_string();
    let get = Command::new("redis-cli")
        .args(["-c", "-p", &other, "get", "sg:{probe}:k"])
        .output()
        .await?;
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v", "{get:?}");

    let select = Command::new(pg.psql())
        .arg(&pg.url)
        .args(["-tAc", "select 40 + 2"])
        .output()
        .await?;
    assert_eq!(
        String::from_utf8_lossy(&select.stdout).trim(),
        "42",
        "{select:?}"
    );

    let mut pids = redis.pids();
    assert_eq!(pids.len(), 6);
    pids.extend(pg.pid());
    assert_eq!(pids.len(), 7, "the postmaster's pid is known");
    drop(redis);
    drop(pg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    Ok(())
}
