//! The chaos harness's `smoke` scenario, as a user runs it: `shardgate chaos --scenario smoke
//! --seed 7 --duration 30s` against a local cluster (a node killed, a node frozen, a node cut
//! off from its peers, one added and one drained away, one of the two gateways behind `up`'s front killed, under two callers
//! per session), with every invariant checked on the recorded history. The run fails on any
//! violation; its report must say what held. And the store's record of its writers, which the
//! one-writer invariant reads, on a real PostgreSQL.

use shardgate_chaos::check::one_writer;
use shardgate_chaos::history::History;
use shardgate_chaos::writers::{Recorder, Writers};
use shardgate_store::postgres::PgStore;
use shardgate_store::{Changes, Fence, SessionStore, StoredEvent};
use shardgate_tests::services::Postgres;
use shardgate_tests::{chaos_scenario, chaos_smoke};
use std::time::Duration;
use tokio::process::Command;

#[tokio::test]
async fn t10_smoke_holds_every_invariant() -> anyhow::Result<()> {
    let (out, stdout, report) = chaos_smoke("chaos-smoke", &[]).await?;
    for kind in [
        "kill -9",
        "freeze",
        "scale up",
        "scale down",
        "gateway kill -9 | gateway-",
        // The test machine runs as root with nftables (scripts/install-test-peers), so links
        // can be cut.
        "partition | node-",
    ] {
        assert!(
            report.contains(kind),
            "the report lists the {kind}:\n{report}"
        );
    }
    // The cut bit: its rules dropped packets.
    let cut = report
        .lines()
        .find(|l| l.contains("| partition |") && l.contains("cut off from its peers"))
        .expect("a partition line");
    assert!(
        cut.contains(" packets dropped") && !cut.contains(": 0 packets dropped"),
        "{cut}"
    );
    // The GET holders heard their calls' notifications, and the delivery check looked.
    assert!(
        report.contains("GET holders: 4 sessions"),
        "the report counts what the GET holders heard:\n{report}"
    );
    assert!(
        stdout.contains("held  GET streams resumed with Last-Event-ID"),
        "{stdout}"
    );
    // The timeline is drawn, and the report shows it.
    let png = std::fs::read(out.join("timeline.png"))?;
    assert!(png.starts_with(b"\x89PNG"), "timeline.png is a PNG");
    assert!(report.contains("](timeline.png)"), "{report}");
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// The `upstreams` scenario: the sessions also call a stdio upstream, whose processes are
/// killed with SIGKILL every few seconds (and every fourth step a node): every call got one
/// answer, each its own, and every session's upstream answers again afterwards.
#[tokio::test]
async fn t15_stdio_upstream_processes_killed_under_load() -> anyhow::Result<()> {
    let (out, stdout, report) =
        chaos_scenario("chaos-upstreams", "upstreams", "20s", &["--gateways", "1"]).await?;
    let killed = report
        .lines()
        .filter(|l| l.contains("| stdio upstream kill -9 | process "))
        .count();
    assert!(killed >= 3, "stdio processes were killed:\n{report}");
    assert!(
        stdout.contains("held  calls through the stdio upstream get their own answer"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// The store's record of its writers (`shardgate_chaos::writers`) on a real PostgreSQL, read
/// by the one-writer check: fenced writes, the claim, the transactional write with events and
/// the refused ones leave exactly the writers that fencing admits, and writes forced past the
/// fence (two owners in one epoch, an epoch that goes back) are caught with their
/// counter-examples.
#[tokio::test]
async fn t20_the_store_records_its_writers_and_the_check_catches_forced_ones() -> anyhow::Result<()>
{
    let pg = Postgres::start().await?;
    // Installing twice (a second run on one database) is harmless.
    Recorder::install(Some(&pg.url)).await?;
    let recorder = Recorder::install(Some(&pg.url)).await?;
    let store = PgStore::connect(&pg.url, Duration::from_secs(300)).await?;
    let (old, new) = (Fence::new("node-0", 3), Fence::new("node-1", 5));
    store.claim("s", &old).await?;
    store.write("s", &old, Changes::default()).await?;
    let events = [StoredEvent {
        stream: 1,
        seq: 1,
        data: "{}".into(),
    }];
    store.append("s", &old, &events, 10, &[]).await?;
    store.claim("s", &new).await?;
    store.write("s", &new, Changes::default()).await?;
    // The stale owner is refused.
    assert!(store.write("s", &old, Changes::default()).await.is_err());

    let mut history = History {
        sessions: vec!["s".into()],
        writers: Some(recorder.read().await),
        epoch_reached: Some(5),
        ..History::default()
    };
    let Some(Writers::Recorded {
        writers,
        regressions,
    }) = &history.writers
    else {
        anyhow::bail!("nothing recorded: {:?}", history.writers);
    };
    let seen: Vec<(&str, i64, &str, i64)> = writers
        .iter()
        .map(|w| (w.session.as_str(), w.epoch, w.owner.as_str(), w.writes))
        .collect();
    assert_eq!(seen, [("s", 3, "node-0", 3), ("s", 5, "node-1", 2)]);
    assert!(regressions.is_empty(), "{regressions:?}");
    let verdict = one_writer::check(&history);
    assert!(verdict.held() && verdict.checked == 1, "{verdict:?}");

    // What only a store without fencing would let through.
    let psql = |sql: &'static str| {
        Command::new(pg.psql())
            .arg(&pg.url)
            .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
            .status()
    };
    assert!(
        psql("UPDATE sessions SET owner = 'node-2' WHERE id = 's'")
            .await?
            .success()
    );
    assert!(
        psql("UPDATE sessions SET owner = 'node-0', epoch = 4 WHERE id = 's'")
            .await?
            .success()
    );
    history.writers = Some(recorder.read().await);
    let verdict = one_writer::check(&history);
    assert_eq!(verdict.violations, 2, "{verdict:?}");
    let first = verdict.first.unwrap_or_default();
    assert!(
        first.starts_with("session s: epoch 5 written by 2 owners: node-1 (2 writes")
            && first.contains("node-2 (1 writes"),
        "{first}"
    );

    // The unfenced build's way back in: a claim under an epoch above the holder's, which the
    // compare-and-set lets through, but which no membership made.
    let stolen = Fence::new("node-0", 6);
    store.claim("s", &stolen).await?;
    store.write("s", &stolen, Changes::default()).await?;
    history.writers = Some(recorder.read().await);
    let verdict = one_writer::check(&history);
    assert_eq!(verdict.violations, 3, "{verdict:?}");
    Ok(())
}
