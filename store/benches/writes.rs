//! What a session write costs the embedded store (SQLite, a file in WAL mode), with nothing
//! else in the way: the latency of one write when a single session writes in turn, and the
//! writes per second of many sessions writing at once (each waits for its write, as a client
//! at the `store` level does). A write is shaped like a call's: the record with a request in
//! flight, then the record without it and the answer's event.
//!
//! `cargo bench -p shardgate-store --bench writes [-- SESSIONS SECONDS]`

use serde_json::{Map, json};
use shardgate_store::sqlite::SqliteStore;
use shardgate_store::{
    Changes, Fence, InFlightRecord, RawJson, SessionRecord, SessionStore, StoredEvent,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn record(id: &str, in_flight: bool, n: u64) -> SessionRecord {
    let mut state = Map::new();
    state.insert("builtin".into(), json!({ "counter": n }));
    SessionRecord {
        id: id.into(),
        principal: "anonymous".into(),
        protocol_version: "2025-11-25".into(),
        initialize_params: RawJson::new(&json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "bench", "version": "1" },
        })),
        upstream_state: state,
        next_stream: n + 2,
        next_request: 0,
        in_flight: if in_flight {
            vec![InFlightRecord {
                request_id: n.to_string(),
                stream: n + 1,
            }]
        } else {
            Vec::new()
        },
    }
}

/// One call's two writes on `id`; the durations of each.
async fn call(store: &SqliteStore, id: &str, fence: &Fence, n: u64) -> [Duration; 2] {
    let started = Instant::now();
    let before = record(id, true, n);
    store
        .save(&before, fence)
        .await
        .expect("in-flight record written");
    let first = started.elapsed();
    let after = record(id, false, n);
    let events = [StoredEvent {
        stream: n + 1,
        seq: 1,
        data: format!(
            r#"{{"jsonrpc":"2.0","id":{n},"result":{{"content":[{{"type":"text","text":"{n}"}}]}}}}"#
        ),
    }];
    let changes = Changes {
        record: Some(&after),
        events: &events,
        keep: 1024,
        forget: &[],
    };
    store
        .write(id, fence, changes)
        .await
        .expect("answer written");
    [first, started.elapsed() - first]
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let sessions: usize = args.first().map_or(Ok(32), |a| a.parse())?;
    let secs: u64 = args.get(1).map_or(Ok(5), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("shardgate-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("sessions.db");
    let store =
        Arc::new(SqliteStore::open(&file.to_string_lossy(), Duration::from_secs(3600)).await?);
    let fence = Fence::new("node-0", 1);
    for s in 0..sessions {
        store.claim(&format!("s{s}"), &fence).await?;
    }

    let mut first = Vec::new();
    let mut second = Vec::new();
    for n in 0..2000 {
        let [a, b] = call(&store, "s0", &fence, n).await;
        first.push(a);
        second.push(b);
    }
    first.sort();
    second.sort();
    println!(
        "one session in turn: in-flight write p50 {:.3} ms p99 {:.3} ms; answer write p50 {:.3} ms p99 {:.3} ms",
        quantile(&first, 0.5),
        quantile(&first, 0.99),
        quantile(&second, 0.5),
        quantile(&second, 0.99),
    );

    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..sessions)
        .map(|s| {
            let (store, fence) = (store.clone(), fence.clone());
            tokio::spawn(async move {
                let id = format!("s{s}");
                let mut calls = 0u64;
                while Instant::now() < until {
                    call(&store, &id, &fence, 10_000 + calls).await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        calls += task.await?;
    }
    println!(
        "{sessions} sessions at once: {:.0} calls/s ({:.0} writes/s)",
        calls as f64 / secs as f64,
        2.0 * calls as f64 / secs as f64
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
