//! The gateway is transparent: the official conformance suite sees the same checks pass through
//! the gateway as it sees against the upstream directly (the reference server, and the builtin
//! across the era bridge).

use serde_json::Value;
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, peers, scratch};
use std::collections::BTreeMap;
use std::path::Path;
use tokio::process::Command;

/// Runs the stable conformance suite against `url`; returns each check's status by
/// (scenario, check id).
type Checks = BTreeMap<(String, String), String>;

/// Runs the stable conformance suite against `url`; every check's status, by scenario and id.
async fn conformance(url: &str, out: &Path) -> anyhow::Result<Checks> {
    suite("stable", &[], url, out).await
}

/// Runs conformance suite `which` with `extra` arguments against `url`.
async fn suite(which: &str, extra: &[&str], url: &str, out: &Path) -> anyhow::Result<Checks> {
    let _ = Command::new(peers::node()?)
        .arg(peers::conformance(which)?)
        .args(["server", "--url", url])
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .await?;
    let mut checks = BTreeMap::new();
    for entry in std::fs::read_dir(out)?.flatten() {
        let dir = entry.file_name().to_string_lossy().to_string();
        let scenario = scenario_of(&dir);
        let text = std::fs::read_to_string(entry.path().join("checks.json"))?;
        let list: Vec<Value> = serde_json::from_str(&text)?;
        for check in list {
            let id = check["id"].as_str().unwrap_or_default().to_string();
            let status = check["status"].as_str().unwrap_or_default().to_string();
            checks.insert((scenario.clone(), id), status);
        }
    }
    anyhow::ensure!(!checks.is_empty(), "the suite wrote no results for {url}");
    Ok(checks)
}

/// `server-<scenario>-<YYYY-MM-DDTHH…>`, the suite's result directory, without the rest.
fn scenario_of(dir: &str) -> String {
    let rest = dir.strip_prefix("server-").unwrap_or(dir);
    let b = rest.as_bytes();
    let stamp = (0..b.len()).find(|&i| {
        b.len() >= i + 12
            && b[i] == b'-'
            && b[i + 1..i + 5].iter().all(u8::is_ascii_digit)
            && b[i + 5] == b'-'
            && b[i + 8] == b'-'
            && b[i + 11] == b'T'
    });
    rest[..stamp.unwrap_or(rest.len())].to_string()
}

/// Checks the reference server fails on its own and passes behind the gateway, because the
/// gateway does what the check asks: server-everything binds every interface and accepts any
/// `Host` (DNS rebinding); our gateway refuses a foreign `Host` with 403.
const GATEWAY_RIGHT: [(&str, &str); 1] = [(
    "dns-rebinding-protection",
    "localhost-host-rebinding-rejected",
)];

/// Check by check, what differs between a direct run and a run through the gateway, but for
/// the [`GATEWAY_RIGHT`] checks turning from failure into success.
fn differences(direct: &Checks, via: &Checks) -> Vec<String> {
    let keys: std::collections::BTreeSet<_> = direct.keys().chain(via.keys()).collect();
    keys.into_iter()
        .filter(|k| direct.get(*k) != via.get(*k))
        .filter(|k| {
            let fixed = direct.get(*k).is_some_and(|s| s == "FAILURE")
                && via.get(*k).is_some_and(|s| s == "SUCCESS");
            !(fixed && GATEWAY_RIGHT.contains(&(k.0.as_str(), k.1.as_str())))
        })
        .map(|k| {
            format!(
                "{}/{}: direct {:?}, through the gateway {:?}",
                k.0,
                k.1,
                direct.get(k),
                via.get(k)
            )
        })
        .collect()
}

#[tokio::test]
async fn t10_transparency_against_the_reference_server() -> anyhow::Result<()> {
    let dir = scratch("transparency")?;
    let reference = Peer::everything().await?;
    let direct = conformance(&reference.url, &dir.join("direct")).await?;

    let http = write_config(&dir, &http_config("everything", &reference.url, "session"))?;
    let cluster = Cluster::builder().nodes(3).config(&http).start().await?;
    let via_http = conformance(&cluster.endpoint, &dir.join("via-http")).await?;
    cluster.stop().await?;

    std::fs::write(dir.join("stdio.toml"), everything_stdio_config()?)?;
    let cluster = Cluster::builder()
        .nodes(3)
        .config(dir.join("stdio.toml"))
        .start()
        .await?;
    let via_stdio = conformance(&cluster.endpoint, &dir.join("via-stdio")).await?;
    cluster.stop().await?;

    let passed = direct.values().filter(|s| *s == "SUCCESS").count();
    println!("direct: {passed} of {} checks pass", direct.len());
    let http_diff = differences(&direct, &via_http);
    let stdio_diff = differences(&direct, &via_stdio);
    println!("through the gateway (http upstream): {http_diff:#?}");
    println!("through the gateway (stdio upstream): {stdio_diff:#?}");
    assert!(http_diff.is_empty(), "http upstream: {http_diff:#?}");
    assert!(stdio_diff.is_empty(), "stdio upstream: {stdio_diff:#?}");
    Ok(())
}

/// What a stateless-era client cannot get from a session-era upstream through the bridge,
/// by scenario and check of the 2026-07-28 suite, with the reason.
const BRIDGE_LIMITS: [(&str, &str, &str); 10] = [
    // The upstream session's client capabilities are fixed at its `initialize`, where the
    // bridge declares them all; a tool that checks them rather than asking cannot see this
    // request's.
    (
        "input-required-result-capability-check",
        "sep-2322-respect-client-capabilities",
        "caps",
    ),
    (
        "server-stateless",
        "sep-2575-server-rejects-undeclared-capability",
        "caps",
    ),
    (
        "server-stateless",
        "sep-2575-missing-capability-http-400",
        "caps",
    ),
    // A session-era upstream asks one question at a time and names no keys; the bridge
    // numbers them, so checks that expect the server's own keys or several at once fail.
    (
        "input-required-result-basic-elicitation",
        "sep-2322-elicitation-incomplete",
        "keys",
    ),
    (
        "input-required-result-basic-elicitation",
        "sep-2322-elicitation-complete",
        "keys",
    ),
    (
        "input-required-result-multiple-input-requests",
        "sep-2322-multiple-inputs-incomplete",
        "keys",
    ),
    (
        "input-required-result-multiple-input-requests",
        "sep-2322-multiple-inputs-complete",
        "keys",
    ),
    (
        "input-required-result-ignore-extra-params",
        "sep-2322-ignore-unexpected-params",
        "keys",
    ),
    // A session-era upstream announces a change to the upstream session that caused it. The
    // suite's client never sends back the key it is issued, so its listen stream and its
    // trigger are two clients with two upstream sessions, which never share anything.
    (
        "server-stateless",
        "sep-2575-server-sends-tools-list-changed-on-subscription",
        "clients",
    ),
    (
        "server-stateless",
        "sep-2575-server-sends-prompts-list-changed-on-subscription",
        "clients",
    ),
];

/// The builtin upstream of one cluster as the HTTP upstream of another: session era through
/// the connector check by check, and the stateless era through the era bridge, where only
/// the [`BRIDGE_LIMITS`] may differ.
#[tokio::test]
async fn t15_transparency_against_the_builtin() -> anyhow::Result<()> {
    let dir = scratch("transparency-builtin")?;
    let reference = Cluster::builder().nodes(1).start().await?;
    let config = write_config(
        &dir,
        &http_config("builtin", &reference.endpoint, "session"),
    )?;
    let cluster = Cluster::builder().nodes(2).config(&config).start().await?;
    let runs: [(&str, &[&str]); 3] = [
        ("stable", &[]),
        ("next", &["--requirements", "2025-11-25"]),
        ("next", &["--requirements", "2026-07-28"]),
    ];
    for (i, (which, extra)) in runs.into_iter().enumerate() {
        let direct = suite(
            which,
            extra,
            &reference.endpoint,
            &dir.join(format!("direct-{i}")),
        )
        .await?;
        let via = suite(
            which,
            extra,
            &cluster.endpoint,
            &dir.join(format!("via-{i}")),
        )
        .await?;
        let passed = direct.values().filter(|s| *s == "SUCCESS").count();
        let diff = differences(&direct, &via);
        println!(
            "{which} {extra:?}: direct {passed} of {} pass; differences {diff:#?}",
            direct.len()
        );
        let unexplained: Vec<_> = direct
            .keys()
            .chain(via.keys())
            .filter(|k| direct.get(*k) != via.get(*k))
            .filter(|k| {
                !BRIDGE_LIMITS
                    .iter()
                    .any(|(scenario, id, _)| k.0 == *scenario && k.1 == *id)
            })
            .collect();
        assert!(unexplained.is_empty(), "{which} {extra:?}: {diff:#?}");
    }
    cluster.stop().await?;
    reference.stop().await?;
    Ok(())
}
