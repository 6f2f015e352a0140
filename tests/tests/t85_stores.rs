//! The session store's contract (`shardgate_store::contract`) against each real backend: SQLite
//! on a file, a throw-away PostgreSQL, a throw-away six-node Redis Cluster, and that cluster
//! with PostgreSQL written behind it (`Tiered`); plus what only a real backend shows (expiry on
//! the server's clock, every key of a session in one slot, purge, audit, `WAIT` without a
//! replica, a session recovered from PostgreSQL after Redis lost it), stores opened from their
//! URLs, and `shardgate migrate` run twice.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardgate_store::audit::Outcome;
use shardgate_store::postgres::{self, AuditEntry, PgStore};
use shardgate_store::redis::RedisStore;
use shardgate_store::sqlite::SqliteStore;
use shardgate_store::tiered::Tiered;
use shardgate_store::{Claimed, Fence, Replay, SessionStore, StoreError, StoredEvent};
use shardgate_store::{contract, open};
use shardgate_tests::services::{Postgres, RedisCluster};
use shardgate_tests::{scratch, shardgate_bin};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::Command;

/// Long enough that no check outlives it by accident.
const TTL: Duration = Duration::from_secs(300);
/// Short enough for the expiry check to wait it out.
const SHORT_TTL: Duration = Duration::from_secs(1);

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

async fn psql(pg: &Postgres, sql: &str) -> anyhow::Result<String> {
    output(Command::new(pg.psql()).arg(&pg.url).args(["-tAc", sql])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_sqlite_keeps_the_contract() -> anyhow::Result<()> {
    let dir = scratch("t85-sqlite")?;
    let file = dir.join("sessions.db").display().to_string();
    let started = Instant::now();
    let store = SqliteStore::open(&file, TTL).await?;
    contract::run_all(Arc::new(store)).await;
    let short = SqliteStore::open(&file, SHORT_TTL).await?;
    contract::expiry(Arc::new(short), SHORT_TTL).await;
    println!("sqlite contract in {:?}", started.elapsed());

    // Opened from its URL, in a directory that does not exist yet.
    let nested = dir.join("a/b/sessions.db");
    let opened = open(&format!("sqlite:{}", nested.display()), None, TTL).await?;
    contract::round_trip(&*opened).await;
    assert!(nested.is_file(), "{} is created", nested.display());
    assert!(opened.auditor().is_none(), "SQLite keeps no audit");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_postgres_keeps_the_contract() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let migrated = postgres::migrate(&pg.url).await?;
    assert!(
        !migrated.applied.is_empty(),
        "a new database gets the schema"
    );
    assert!(
        postgres::migrate(&pg.url).await?.applied.is_empty(),
        "a second run applies nothing"
    );

    let started = Instant::now();
    let store = PgStore::connect(&pg.url, TTL).await?;
    contract::run_all(Arc::new(store.clone())).await;
    let short = PgStore::connect(&pg.url, SHORT_TTL).await?;
    contract::expiry(Arc::new(short.clone()), SHORT_TTL).await;
    println!("postgres contract in {:?}", started.elapsed());
    // Opened from its URL: migrating an up-to-date database again is harmless.
    let opened = open(&pg.url, None, TTL).await?;
    contract::round_trip(&*opened).await;
    assert!(opened.auditor().is_some(), "PostgreSQL keeps the audit");

    // Expired rows stay until purged, invisible meanwhile; a purge removes them with their
    // events.
    let id = contract::unique("purge");
    let fence = Fence::new("node-a", 1);
    short.claim(&id, &fence).await?;
    short.save(&contract::record(&id), &fence).await?;
    let event = StoredEvent {
        stream: 1,
        seq: 1,
        data: "{}".into(),
    };
    short
        .append(&id, &fence, std::slice::from_ref(&event), 10, &[])
        .await?;
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(300)).await;
    assert_eq!(short.load(&id).await?, None);
    let count =
        |table: &str, column: &str| format!("SELECT count(*) FROM {table} WHERE {column} = '{id}'");
    assert_eq!(psql(&pg, &count("sessions", "id")).await?, "1");
    assert!(short.purge_expired().await? >= 1);
    assert_eq!(psql(&pg, &count("sessions", "id")).await?, "0");
    assert_eq!(psql(&pg, &count("events", "session_id")).await?, "0");

    let entry = AuditEntry {
        principal: "tenant-a/alice".into(),
        session: Some(id.clone()),
        tool: "add".into(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456),
        duration: Duration::from_millis(42),
        outcome: Outcome::Ok,
    };
    store.audit(&entry).await?;
    store
        .audit(&AuditEntry {
            session: None,
            outcome: Outcome::Error,
            ..entry
        })
        .await?;
    let rows = psql(
        &pg,
        "SELECT principal, coalesce(session, '-'), tool, \
         extract(epoch FROM started_at)::numeric(20,6), duration_ms, outcome \
         FROM audit ORDER BY id",
    )
    .await?;
    assert_eq!(
        rows,
        format!(
            "tenant-a/alice|{id}|add|1764000000.123456|42|ok\n\
             tenant-a/alice|-|add|1764000000.123456|42|error"
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_redis_cluster_keeps_the_contract() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    replicas_online(&cluster).await?;
    let started = Instant::now();
    let store = RedisStore::connect(&cluster.urls(), TTL).await?;
    contract::run_all(Arc::new(store.clone())).await;
    assert!(store.auditor().is_none(), "Redis alone keeps no audit");
    let short = RedisStore::connect(&cluster.urls(), SHORT_TTL).await?;
    contract::expiry(Arc::new(short), SHORT_TTL).await;
    println!("redis cluster contract in {:?}", started.elapsed());

    // Every key of a session: one slot; the owner and the record expire within the ttl, the
    // tails and the streams after the record but within one and a half ttl.
    let id = contract::unique("layout");
    let fence = Fence::new("node-a", 1);
    store.claim(&id, &fence).await?;
    store.save(&contract::record(&id), &fence).await?;
    let events: Vec<StoredEvent> = [1, 7]
        .into_iter()
        .map(|stream| StoredEvent {
            stream,
            seq: 1,
            data: "{}".into(),
        })
        .collect();
    store.append(&id, &fence, &events, 10, &[]).await?;
    let port = cluster.nodes[0].port().to_string();
    let redis_cli = |args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-c", "-p", &port]).args(args);
        cmd
    };
    let mut slots = Vec::new();
    let ttl = TTL.as_millis() as i64;
    let mut record_left = 0;
    for suffix in ["owner", "record", "tails", "s:1", "s:7"] {
        let key = format!("sg:{{{id}}}:{suffix}");
        slots.push(output(&mut redis_cli(&["cluster", "keyslot", &key])).await?);
        let pttl: i64 = output(&mut redis_cli(&["pttl", &key])).await?.parse()?;
        let within = match suffix {
            "owner" | "record" => {
                record_left = pttl;
                pttl > 0 && pttl <= ttl
            }
            _ => pttl > record_left && pttl <= ttl * 3 / 2,
        };
        assert!(within, "{key} expires in {pttl} ms (ttl {ttl} ms)");
    }
    slots.dedup();
    assert_eq!(slots.len(), 1, "one slot for every key: {slots:?}");
    store.delete(&id, &fence).await?;
    let left = output(&mut redis_cli(&["exists", &format!("sg:{{{id}}}:s:7")])).await?;
    assert_eq!(left, "0", "a delete removes the streams too");

    // With every replica stopped, a write stays on its primary: `replicate` says so after its
    // timeout, and is satisfied again once the replicas catch up.
    let id = contract::unique("unreplicated");
    store.claim(&id, &fence).await?;
    store.replicate(&id).await?;
    let replicas = nodes_in_role(&cluster, "slave").await?;
    assert_eq!(replicas.len(), 3, "three replicas");
    for &pid in &replicas {
        kill(pid, Signal::SIGSTOP)?;
    }
    let waited = Instant::now();
    let saved = store.save(&contract::record(&id), &fence).await;
    let replicated = store.replicate(&id).await;
    for &pid in &replicas {
        kill(pid, Signal::SIGCONT)?;
    }
    saved?;
    assert!(
        matches!(&replicated, Err(StoreError::Unavailable(why)) if why.contains("no replica")),
        "{replicated:?}"
    );
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "WAIT waited"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.replicate(&id).await {
        assert!(Instant::now() < deadline, "replicas back within 20s: {e}");
    }
    store.delete(&id, &fence).await?;
    Ok(())
}

/// Waits until every primary streams to its replica. A cluster is `ok` before that: a primary
/// starts a replica's first sync only after `repl-diskless-sync-delay` (5 s by default), and
/// until then `WAIT` counts no replica.
async fn replicas_online(cluster: &RedisCluster) -> anyhow::Result<()> {
    let started = Instant::now();
    for addr in &cluster.nodes {
        let port = addr.port().to_string();
        loop {
            let info = output(Command::new("redis-cli").args(["-p", &port, "info", "replication"]))
                .await?;
            let primary = info.lines().any(|l| l.trim() == "role:master");
            if !primary || info.contains("state=online") {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the replica of {addr} is not online within 30s: {info}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("replicas online after {:?}", started.elapsed());
    Ok(())
}

/// The pids of the cluster's nodes whose `ROLE` is `role` (`master` or `slave`).
async fn nodes_in_role(cluster: &RedisCluster, role: &str) -> anyhow::Result<Vec<Pid>> {
    let mut pids = Vec::new();
    for (addr, pid) in cluster.nodes.iter().zip(cluster.pids()) {
        let port = addr.port().to_string();
        let answer = output(Command::new("redis-cli").args(["-p", &port, "role"])).await?;
        if answer.lines().next() == Some(role) {
            pids.push(Pid::from_raw(i32::try_from(pid)?));
        }
    }
    Ok(pids)
}

/// `redis-cli -p PORT …` for every primary of the cluster.
async fn on_every_primary(cluster: &RedisCluster, args: &[&str]) -> anyhow::Result<()> {
    let mut primaries = 0;
    for addr in &cluster.nodes {
        let port = addr.port().to_string();
        let answer = output(Command::new("redis-cli").args(["-p", &port, "role"])).await?;
        if answer.lines().next() == Some("master") {
            output(Command::new("redis-cli").args(["-p", &port]).args(args)).await?;
            primaries += 1;
        }
    }
    anyhow::ensure!(primaries == 3, "{primaries} primaries, not 3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_tiered_keeps_the_contract() -> anyhow::Result<()> {
    let (cluster, pg) = tokio::try_join!(RedisCluster::start(), Postgres::start())?;
    replicas_online(&cluster).await?;
    let started = Instant::now();
    // Opened from its URLs: the cluster's seed nodes, and a fresh database it migrates.
    let url = format!(
        "redis://{}",
        cluster
            .nodes
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let store = open(&url, Some(&pg.url), TTL).await?;
    assert!(
        store.auditor().is_some(),
        "PostgreSQL behind Redis keeps the audit"
    );
    contract::run_all(store.clone()).await;
    store.flush().await;
    println!("tiered contract in {:?}", started.elapsed());
    let sessions = psql(&pg, "SELECT count(*) FROM sessions").await?;
    assert_eq!(
        sessions, "0",
        "every check deletes its sessions, behind too"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_tiered_recovers_a_session_redis_lost() -> anyhow::Result<()> {
    let (cluster, pg) = tokio::try_join!(RedisCluster::start(), Postgres::start())?;
    postgres::migrate(&pg.url).await?;
    let hot = RedisStore::connect(&cluster.urls(), TTL).await?;
    let durable = PgStore::connect(&pg.url, TTL).await?;
    let store = Tiered::new(hot.clone(), durable.clone());

    let id = contract::unique("lost");
    let a = Fence::new("node-a", 1);
    store.claim(&id, &a).await?;
    let mut rec = contract::record(&id);
    store.save(&rec, &a).await?;
    let event = |stream, seq: u64| StoredEvent {
        stream,
        seq,
        data: match seq {
            0 => String::new(),
            _ => format!(r#"{{"stream":{stream},"seq":{seq}}}"#),
        },
    };
    store
        .append(&id, &a, &[event(1, 0), event(1, 1), event(3, 1)], 10, &[])
        .await?;
    store.append(&id, &a, &[event(1, 2)], 10, &[]).await?;
    rec.next_request += 1;
    store.save(&rec, &a).await?;
    store.flush().await;
    assert_eq!(durable.load(&id).await?, Some((rec.clone(), a.clone())));

    on_every_primary(&cluster, &["flushall"]).await?;
    assert_eq!(hot.load(&id).await?, None, "Redis lost the session");

    // Reads find it in PostgreSQL meanwhile.
    assert_eq!(store.load(&id).await?, Some((rec.clone(), a.clone())));
    let stream_1 = Replay {
        oldest: Some(0),
        events: vec![event(1, 1), event(1, 2)],
    };
    assert_eq!(store.events(&id, 1, 0).await?, stream_1);

    // A new owner claims it: record and events come back, into Redis too.
    let b = Fence::new("node-b", 2);
    let claimed = store.claim(&id, &b).await?;
    assert_eq!(
        claimed,
        Claimed {
            record: Some(rec.clone()),
            tails: [(1, 2), (3, 1)].into_iter().collect(),
        }
    );
    assert_eq!(hot.load(&id).await?, Some((rec.clone(), b.clone())));
    assert_eq!(hot.events(&id, 1, 0).await?, stream_1, "seq 0 included");
    assert_eq!(hot.events(&id, 3, 0).await?.events, vec![event(3, 1)]);
    assert_eq!(
        store.save(&rec, &a).await,
        Err(StoreError::Fenced {
            owner: "node-b".into(),
            epoch: 2
        }),
        "the old owner is fenced"
    );
    store.append(&id, &b, &[event(1, 3)], 10, &[]).await?;
    store.flush().await;
    assert_eq!(
        durable.events(&id, 1, 2).await?.events,
        vec![event(1, 3)],
        "PostgreSQL follows the new owner"
    );

    // Lost again, and claimed by the stale owner first: PostgreSQL remembers the later claim,
    // so the stale claim is refused and leaves no owner in Redis.
    on_every_primary(&cluster, &["flushall"]).await?;
    assert_eq!(
        store.claim(&id, &a).await,
        Err(StoreError::Fenced {
            owner: "node-b".into(),
            epoch: 2
        })
    );
    assert_eq!(hot.save(&rec, &a).await, Err(StoreError::Gone));
    let again = store.claim(&id, &b).await?;
    assert_eq!(again.record, Some(rec.clone()));
    assert_eq!(again.tails.get(&1), Some(&3));
    assert_eq!(
        seqs(&hot.events(&id, 1, 0).await?),
        vec![1, 2, 3],
        "the events written after the first loss came back too"
    );

    store.delete(&id, &b).await?;
    store.flush().await;
    assert_eq!(durable.load(&id).await?, None, "deleted behind too");
    assert_eq!(store.load(&id).await?, None);
    Ok(())
}

fn seqs(replay: &Replay) -> Vec<u64> {
    replay.events.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn t40_shardgate_migrate_twice() -> anyhow::Result<()> {
    let bin = shardgate_bin()?;
    let pg = Postgres::start().await?;
    let first = output(Command::new(&bin).args(["migrate", "--database-url", &pg.url])).await?;
    println!("{first}");
    assert!(first.contains("applied 0001 sessions"), "{first}");
    // The second run, configured through the environment, finds nothing to do.
    let second = output(
        Command::new(&bin)
            .arg("migrate")
            .env("SHARDGATE_DATABASE_URL", &pg.url),
    )
    .await?;
    println!("{second}");
    assert!(second.starts_with("nothing to apply"), "{second}");
    let tables = psql(
        &pg,
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
         WHERE schemaname = 'public'",
    )
    .await?;
    assert_eq!(tables, "_sqlx_migrations,audit,events,sessions");

    let refused = Command::new(&bin)
        .args(["migrate", "--database-url", "sqlite::memory:"])
        .output()
        .await?;
    assert!(!refused.status.success(), "only PostgreSQL is migrated");
    Ok(())
}
