//! The session store's contract (`shardgate_store::contract`) against each real backend: SQLite
//! on a file, a throw-away PostgreSQL and a throw-away six-node Redis Cluster; plus what only a
//! real backend shows (expiry on the server's clock, every key of a session in one slot, purge,
//! audit) and `shardgate migrate` run twice.

use shardgate_store::contract;
use shardgate_store::postgres::{self, AuditEntry, PgStore};
use shardgate_store::redis::RedisStore;
use shardgate_store::sqlite::SqliteStore;
use shardgate_store::{Fence, SessionStore, StoredEvent};
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
        .append(&id, &fence, std::slice::from_ref(&event), 10)
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
        outcome: "ok".into(),
    };
    store.audit(&entry).await?;
    store
        .audit(&AuditEntry {
            session: None,
            outcome: "error".into(),
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
    let started = Instant::now();
    let store = RedisStore::connect(&cluster.urls(), TTL).await?;
    contract::run_all(Arc::new(store.clone())).await;
    let short = RedisStore::connect(&cluster.urls(), SHORT_TTL).await?;
    contract::expiry(Arc::new(short), SHORT_TTL).await;
    println!("redis cluster contract in {:?}", started.elapsed());

    // Every key of a session: one slot, and an expiry no later than the ttl.
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
    store.append(&id, &fence, &events, 10).await?;
    let port = cluster.nodes[0].port().to_string();
    let redis_cli = |args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-c", "-p", &port]).args(args);
        cmd
    };
    let mut slots = Vec::new();
    for suffix in ["owner", "record", "tails", "s:1", "s:7"] {
        let key = format!("sg:{{{id}}}:{suffix}");
        slots.push(output(&mut redis_cli(&["cluster", "keyslot", &key])).await?);
        let pttl: i64 = output(&mut redis_cli(&["pttl", &key])).await?.parse()?;
        assert!(
            pttl > 0 && pttl <= TTL.as_millis() as i64,
            "{key} expires in {pttl} ms"
        );
    }
    slots.dedup();
    assert_eq!(slots.len(), 1, "one slot for every key: {slots:?}");
    store.delete(&id, &fence).await?;
    let left = output(&mut redis_cli(&["exists", &format!("sg:{{{id}}}:s:7")])).await?;
    assert_eq!(left, "0", "a delete removes the streams too");
    Ok(())
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
