//! `shardgate bench` as a user runs it, against a one-node cluster with a gateway: each era over
//! HTTP/1.1 and h2c, at a low rate. Only correctness is checked, never timing: every request
//! due was answered, none failed, the percentiles are in order, and the CPU of the processes
//! named was read.

use serde_json::Value;
use shardgate_tests::{Cluster, scratch, shardgate_bin};

const RATE: u64 = 100;
const SECONDS: u64 = 2;

/// Runs `shardgate bench` with `args` against `url`; its JSON report.
async fn bench(url: &str, args: &[&str], json: &std::path::Path) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(shardgate_bin()?)
        .args([
            "bench",
            "--url",
            url,
            "--sessions",
            "5",
            "--warmup",
            "500ms",
        ])
        .args([
            "--rate",
            &RATE.to_string(),
            "--duration",
            &format!("{SECONDS}s"),
        ])
        .args(["--timeout", "30s", "--quiet", "--json"])
        .arg(json)
        .args(args)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("shardgate bench {args:?}:\n{stdout}");
    anyhow::ensure!(
        out.status.success(),
        "shardgate bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        stdout.contains("p99"),
        "the summary has percentiles: {stdout}"
    );
    Ok(serde_json::from_slice(&std::fs::read(json)?)?)
}

fn check(report: &Value, what: &str, ops: &[&str]) {
    let due = RATE * SECONDS;
    let scheduled = report["scheduled"].as_u64().unwrap_or_default();
    assert!(
        scheduled.abs_diff(due) <= 1,
        "{what}: {scheduled} requests due in {SECONDS} s at {RATE}/s"
    );
    assert_eq!(
        report["completed"].as_u64(),
        Some(scheduled),
        "{what}: every request due was answered: {report}"
    );
    assert_eq!(report["errors"]["total"], 0, "{what}: {report}");
    assert_eq!(report["interrupted"], false, "{what}");
    let l = &report["latency_ms"];
    let named: Vec<f64> = ["min", "p50", "p90", "p99", "p99.9", "max"]
        .iter()
        .map(|p| l[p].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert!(
        named.windows(2).all(|w| w[0] <= w[1]),
        "{what}: percentiles in order: {l}"
    );
    let full: Vec<f64> = l["percentiles"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p[1].as_f64()).collect())
        .unwrap_or_default();
    assert!(
        full.len() > 10 && full.windows(2).all(|w| w[0] <= w[1]),
        "{what}: {l}"
    );
    let by_op: u64 = ops
        .iter()
        .map(|op| {
            let n = report["by_op"][op]["completed"]
                .as_u64()
                .unwrap_or_default();
            assert!(n > 0, "{what}: the mix made {op} calls: {report}");
            n
        })
        .sum();
    assert_eq!(by_op, scheduled, "{what}: the operations add up");
    let cpu = &report["cpu"];
    assert_eq!(cpu["requests"].as_u64(), Some(scheduled), "{what}: {cpu}");
    let processes = cpu["processes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        processes.len(),
        2,
        "{what}: the gateway and the node: {cpu}"
    );
    assert!(
        processes.iter().all(|p| p["cpu_ms"].is_u64()),
        "{what}: {cpu}"
    );
}

#[tokio::test]
async fn t10_both_eras_over_both_http_versions() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(1).gateways(1).start().await?;
    let gateway = cluster.gateway_pid("gateway-0")?.to_string();
    let node = cluster.node_pid("node-0")?.to_string();
    let dir = scratch("t98-bench")?;
    let pids = ["--cpu-pid", gateway.as_str(), "--cpu-pid", node.as_str()];
    let session_mix = "echo=4,counter=2,list=1,stream=1,resume=1";
    let stateless_mix = "echo=2,counter=1,list=1";
    for http in ["1", "2"] {
        for (era, mix, ops) in [
            (
                "session",
                session_mix,
                &["echo", "counter", "list", "stream", "resume"][..],
            ),
            ("stateless", stateless_mix, &["echo", "counter", "list"][..]),
        ] {
            let what = format!("{era} era over HTTP/{http}");
            let json = dir.join(format!("{era}-{http}.json"));
            let mut args = vec!["--era", era, "--http", http, "--mix", mix];
            args.extend(pids);
            let report = bench(&cluster.endpoint, &args, &json).await?;
            check(&report, &what, ops);
        }
    }
    cluster.stop().await?;
    Ok(())
}

#[tokio::test]
async fn t20_mistakes_are_refused_before_any_load() -> anyhow::Result<()> {
    let refused = |args: &'static [&'static str], why: &'static str| async move {
        let out = tokio::process::Command::new(shardgate_bin()?)
            .arg("bench")
            .args(args)
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(!out.status.success(), "{args:?} was accepted");
        anyhow::ensure!(stderr.contains(why), "{args:?}: {stderr}");
        Ok::<_, anyhow::Error>(())
    };
    refused(&["--mix", "echo=8,ping=1"], "unknown operation 'ping'").await?;
    refused(&["--mix", "echo=x"], "whole number").await?;
    refused(&["--http", "3"], "HTTP/3 needs an https:// target").await?;
    refused(
        &["--era", "stateless", "--mix", "echo=1,resume=1"],
        "'resume'",
    )
    .await?;
    Ok(())
}
