//! The audit of tool calls, over a throw-away PostgreSQL: every `tools/call` a node with a
//! PostgreSQL store serves, of either era, becomes one row of the `audit` table, written behind
//! the call in batches. The writer's queue is bounded: with PostgreSQL down, rows beyond it are
//! dropped and counted, never waited for, and those it kept are written once PostgreSQL is
//! back.

use serde_json::{Value, json};
use shardgate_store::audit::{AuditEntry, Limits, MAX_FIELD_BYTES, Outcome};
use shardgate_store::postgres::{self, PgStore};
use shardgate_tests::mcp::{Client, SseReader};
use shardgate_tests::services::Postgres;
use shardgate_tests::{Cluster, NodeAddrs, Process, signed_post, start_node};
use sqlx::Row;
use sqlx::postgres::PgPool;
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

/// Counter calls the session makes.
const CALLS: i64 = 5;
/// How long rows get to reach the table: the writer lingers 100 ms.
const WRITTEN_WITHIN: Duration = Duration::from_secs(15);

/// One row of the audit table.
#[derive(Debug)]
struct Audited {
    principal: String,
    session: Option<String>,
    tool: String,
    duration_ms: i64,
    outcome: String,
    /// Seconds between `started_at` and the row's reading.
    age_secs: f64,
}

/// Which rows [`rows`] reads.
#[derive(Clone, Copy)]
enum Which<'a> {
    All,
    Session(&'a str),
    /// Those of no session: the stateless era's.
    Stateless,
}

/// The rows `which` selects, in the order they were written, once there are at least
/// `expected` of them (or [`WRITTEN_WITHIN`] has passed).
async fn rows(pool: &PgPool, which: Which<'_>, expected: usize) -> anyhow::Result<Vec<Audited>> {
    let (kind, session) = match which {
        Which::All => ("all", ""),
        Which::Session(sid) => ("session", sid),
        Which::Stateless => ("stateless", ""),
    };
    let deadline = Instant::now() + WRITTEN_WITHIN;
    loop {
        let found = sqlx::query(
            "SELECT principal, session, tool, duration_ms, outcome, \
             extract(epoch FROM now() - started_at)::float8 \
             FROM audit WHERE $1 = 'all' OR ($1 = 'stateless' AND session IS NULL) \
             OR ($1 = 'session' AND session = $2) ORDER BY id",
        )
        .bind(kind)
        .bind(session)
        .fetch_all(pool)
        .await?;
        if found.len() >= expected || Instant::now() > deadline {
            return found
                .iter()
                .map(|r| {
                    Ok(Audited {
                        principal: r.try_get(0)?,
                        session: r.try_get(1)?,
                        tool: r.try_get(2)?,
                        duration_ms: r.try_get(3)?,
                        outcome: r.try_get(4)?,
                        age_secs: r.try_get(5)?,
                    })
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_every_tool_call_of_both_eras_is_audited() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let cluster = Cluster::builder().nodes(2).store(&pg.url).start().await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    for k in 1..=CALLS {
        assert_eq!(c.count(&sid, k).await?, k);
    }
    let failed = c
        .request(
            &sid,
            100,
            "tools/call",
            json!({"name": "fail", "arguments": {}}),
        )
        .await?;
    assert!(failed.get("error").is_some(), "fail fails: {failed}");
    let tool_error = c
        .request(
            &sid,
            101,
            "tools/call",
            json!({"name": "test_error_handling", "arguments": {}}),
        )
        .await?;
    assert_eq!(tool_error["result"]["isError"], true, "{tool_error}");
    // Not a tool call: not audited.
    c.request(&sid, 102, "tools/list", json!({})).await?;

    // A slow call, cancelled by its client once it has begun; another, in a session of its
    // own, stopped by the end of its session.
    let ended = c.initialize().await?;
    for (session, id) in [(&sid, 103), (&ended, 1)] {
        let slow = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": 50, "delay_ms": 100},
            "_meta": {"progressToken": "t92"}
        }});
        let resp = c.session_post(session, &slow).send().await?;
        assert_eq!(resp.status(), 200);
        let mut reader = SseReader::new(resp);
        // The priming event, then the first progress: the call has run for 100 ms.
        for _ in 0..2 {
            anyhow::ensure!(
                reader.next().await?.is_some(),
                "the slow call's stream ended"
            );
        }
        if session == &sid {
            let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": id, "reason": "t92"}});
            assert_eq!(c.session_post(session, &cancel).send().await?.status(), 202);
        } else {
            assert_eq!(c.delete(session).send().await?.status(), 200);
        }
    }

    // The stateless era: no session; the principal is the request's (the gateway's
    // `anonymous` while it authenticates nobody).
    let resp = c
        .stateless(
            200,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "audited"}}),
            Some("echo"),
            json!({}),
        )
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await?;
    assert_eq!(
        echoed["result"]["content"][0]["text"], "audited",
        "{echoed}"
    );

    let pool = PgPool::connect(&pg.url).await?;
    let session_rows = rows(&pool, Which::Session(&sid), CALLS as usize + 3).await?;
    let tools: Vec<(&str, &str)> = session_rows
        .iter()
        .map(|r| (r.tool.as_str(), r.outcome.as_str()))
        .collect();
    let mut expected = vec![("counter", "ok"); CALLS as usize];
    expected.extend([
        ("fail", "error"),
        ("test_error_handling", "error"),
        ("slow", "cancelled"),
    ]);
    assert_eq!(tools, expected, "{session_rows:#?}");
    for r in &session_rows {
        assert_eq!(r.principal, "anonymous", "{r:?}");
        assert!(r.duration_ms >= 0, "{r:?}");
        assert!(
            (0.0..120.0).contains(&r.age_secs),
            "started_at is the call's start: {r:?}"
        );
    }
    let slow_row = &session_rows[CALLS as usize + 2];
    assert!(
        (100..5000).contains(&slow_row.duration_ms),
        "the cancelled call ran for a while, not its 5 s: {slow_row:?}"
    );
    let interrupted = rows(&pool, Which::Session(&ended), 1).await?;
    assert_eq!(interrupted.len(), 1, "{interrupted:#?}");
    assert_eq!(
        (
            interrupted[0].tool.as_str(),
            interrupted[0].outcome.as_str()
        ),
        ("slow", "interrupted"),
        "a call its session's end stopped"
    );
    let stateless = rows(&pool, Which::Stateless, 1).await?;
    assert_eq!(stateless.len(), 1, "{stateless:#?}");
    assert_eq!(
        (stateless[0].principal.as_str(), stateless[0].tool.as_str()),
        ("anonymous", "echo")
    );
    assert_eq!(stateless[0].outcome, "ok");

    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
        .fetch_one(&pool)
        .await?;
    assert_eq!(all, CALLS + 5, "tools/list and initialize are not audited");
    // A batch is counted once its INSERT has returned, a moment after its rows are visible.
    let counted = cluster
        .wait_for_metric(
            &c.http,
            "shardgate_node_audit_written_total",
            Duration::from_secs(5),
            |written| written == all as u64,
        )
        .await?;
    assert!(counted, "the nodes count the {all} rows they wrote");
    let dropped = cluster
        .node_metric(&c.http, "shardgate_node_audit_dropped_total")
        .await?;
    assert_eq!(dropped, 0);
    println!(
        "audited {all} calls; the slow call's row: {slow_row:?}; the stateless row: {:?}",
        stateless[0]
    );
    cluster.stop().await?;
    Ok(())
}

/// One node with a fixed membership of itself and `store`, reached directly with the
/// harness's HMAC, so that a test says who the principal is (as an authenticating gateway
/// would).
async fn lone_node(store: &str) -> anyhow::Result<(Process, NodeAddrs)> {
    let mut last = None;
    // The member list names ports before the node binds them; one taken meanwhile fails the
    // start, which is tried again on others.
    for _ in 0..3 {
        let port = || -> anyhow::Result<String> {
            Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
        };
        let (session, internal) = (port()?, port()?);
        let started = start_node(&[
            "--id".into(),
            "node-0".into(),
            "--listen".into(),
            session.clone(),
            "--internal-listen".into(),
            internal.clone(),
            "--members".into(),
            format!("node-0={session}/{internal}"),
            "--store".into(),
            store.into(),
        ])
        .await;
        match started {
            Ok(started) => return Ok(started),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_the_stateless_principal_is_the_requests_and_client_texts_are_cut() -> anyhow::Result<()>
{
    let pg = Postgres::start().await?;
    let (_node, addrs) = lone_node(&pg.url).await?;
    let http = shardgate_tests::http().build()?;
    let call = |id: i64, tool: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": tool, "arguments": {"text": "x"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }})
    };
    let stateless = |principal: &str, tool: &str| {
        vec![
            ("mcp-protocol-version", "2026-07-28".to_owned()),
            ("mcp-method", "tools/call".to_owned()),
            ("mcp-name", tool.to_owned()),
            ("x-shardgate-principal", principal.to_owned()),
        ]
    };
    let resp = signed_post(
        &http,
        addrs.session,
        &call(1, "echo"),
        &stateless("tenant-a/alice", "echo"),
    )?
    .send()
    .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    // A principal and a tool name far past what the audit keeps (the tool is unknown: an
    // error).
    let (long_principal, long_tool) = ("p".repeat(4000), "t".repeat(4000));
    let resp = signed_post(
        &http,
        addrs.session,
        &call(2, &long_tool),
        &stateless(&long_principal, &long_tool),
    )?
    .send()
    .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    assert!(body.get("error").is_some(), "{status}: {body}");

    let pool = PgPool::connect(&pg.url).await?;
    let found = rows(&pool, Which::All, 2).await?;
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(
        (
            found[0].principal.as_str(),
            found[0].session.as_deref(),
            found[0].tool.as_str(),
            found[0].outcome.as_str()
        ),
        ("tenant-a/alice", None, "echo", "ok")
    );
    assert_eq!(found[1].principal, "p".repeat(MAX_FIELD_BYTES));
    assert_eq!(found[1].tool, "t".repeat(MAX_FIELD_BYTES));
    assert_eq!(found[1].outcome, "error");
    Ok(())
}

fn entry(principal: &str, n: u64) -> AuditEntry {
    AuditEntry {
        principal: principal.into(),
        session: n.is_multiple_of(2).then(|| format!("session-{n}")),
        tool: "counter".into(),
        started_at: SystemTime::now(),
        duration: Duration::from_millis(n),
        outcome: Outcome::Ok,
    }
}

async fn count(pool: &PgPool, principal: &str) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE principal = $1")
        .bind(principal)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_rows_go_in_batches_and_a_full_queue_drops_and_counts() -> anyhow::Result<()> {
    let mut pg = Postgres::start().await?;
    postgres::migrate(&pg.url).await?;
    let store = PgStore::connect(&pg.url, Duration::from_secs(300)).await?;
    let pool = PgPool::connect(&pg.url).await?;

    // One writer per store, whichever handle records; a thousand rows in a few statements.
    let (first, second) = (store.auditor(), store.auditor());
    for n in 0..1000u64 {
        let auditor = if n.is_multiple_of(2) { &first } else { &second };
        auditor.record(entry("batched", n));
    }
    first.flush().await;
    assert_eq!((second.written(), second.dropped()), (1000, 0));
    assert_eq!(count(&pool, "batched").await?, 1000);
    // Rows one INSERT wrote share its transaction id.
    let statements: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM audit WHERE principal = 'batched'",
    )
    .fetch_one(&pool)
    .await?;
    println!("1000 rows in {statements} statements");
    assert!(
        (2..=10).contains(&statements),
        "batches of at most 512 rows: {statements} statements"
    );
    let nulls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit WHERE principal = 'batched' AND session IS NULL",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(nulls, 500, "a stateless call's row has no session");

    // With PostgreSQL down, the writer holds one batch and a full queue; every row beyond is
    // dropped at once and counted, and recording never waits.
    let limits = Limits {
        capacity: 8,
        batch: 8,
        linger: Duration::from_millis(20),
        retry_for: Duration::from_secs(60),
    };
    let bounded = store.new_auditor(limits);
    pg.stop().await?;
    let recording = Instant::now();
    for n in 0..100 {
        bounded.record(entry("bounded", n));
    }
    let took = recording.elapsed();
    let dropped_at_once = bounded.dropped();
    println!(
        "PostgreSQL down: 100 rows recorded in {took:?}, {dropped_at_once} dropped, {} queued",
        bounded.queued()
    );
    assert!(
        took < Duration::from_millis(100),
        "recording waited: {took:?}"
    );
    assert!(
        dropped_at_once >= 100 - 16,
        "at most a batch and a queue are held: {dropped_at_once} dropped"
    );
    assert!(bounded.queued() <= 8);
    pg.start_again().await?;
    tokio::time::timeout(Duration::from_secs(60), bounded.flush()).await?;
    let (written, dropped) = (bounded.written(), bounded.dropped());
    println!("PostgreSQL back: {written} written, {dropped} dropped");
    assert_eq!(written + dropped, 100, "every row is written or counted");
    assert_eq!(
        dropped, dropped_at_once,
        "what was held is written once it is back"
    );
    let pool = PgPool::connect(&pg.url).await?;
    assert_eq!(count(&pool, "bounded").await?, written);
    Ok(())
}
