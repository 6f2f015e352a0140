//! `shardgate smoke`, the check a pipeline runs after a deploy, against real clusters: it passes
//! against `shardgate up`, and fails with a non-zero exit and a one-line reason against a
//! cluster whose node keeps sessions in memory only, and against a gateway whose tokens the
//! smoke cannot satisfy.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use shardgate_tests::{Cluster, scratch, shardgate_bin, start_gateway, start_raft_node};
use std::path::Path;

/// What `shardgate smoke` printed, and whether it passed.
struct Ran {
    passed: bool,
    stdout: String,
    stderr: String,
}

async fn smoke(url: &str, admin: &str, extra: &[&str]) -> anyhow::Result<Ran> {
    let out = tokio::process::Command::new(shardgate_bin()?)
        .args(["smoke", url, "--admin", admin])
        .args(extra)
        .env("RUST_BACKTRACE", "1")
        .output()
        .await?;
    let ran = Ran {
        passed: out.status.success(),
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    };
    println!("smoke {extra:?}:\n{}{}", ran.stdout, ran.stderr);
    Ok(ran)
}

/// The reason a failed smoke gave: its one line on stderr.
fn reason(ran: &Ran) -> &str {
    let lines: Vec<&str> = ran.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line of reason, not {:?}", ran.stderr);
    lines[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn t10_passes_against_a_local_cluster() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let ran = smoke(&cluster.endpoint, &cluster.admin, &[]).await?;
    assert!(ran.passed, "{}", ran.stderr);
    for step in [
        "health",
        "cluster",
        "session era",
        "stateless era",
        "metrics",
    ] {
        assert!(
            ran.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(step)),
            "no passed step '{step}' in {}",
            ran.stdout
        );
    }
    assert!(
        ran.stdout.contains("3 members serving at"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("tools/call echo"), "{}", ran.stdout);
    // `--json`: a line per check, then the verdict.
    let ran = smoke(&cluster.endpoint, &cluster.admin, &["--json"]).await?;
    assert!(ran.passed, "{}", ran.stderr);
    let lines: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 6, "{}", ran.stdout);
    assert!(lines[..5].iter().all(|l| l["ok"] == true), "{}", ran.stdout);
    assert_eq!(lines[5]["passed"], true);
    cluster.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn t15_a_member_marked_down_is_named_and_its_keys_served_by_the_others() -> anyhow::Result<()>
{
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let cluster = Cluster::builder().nodes(3).start().await?;
    let frozen = Pid::from_raw(i32::try_from(cluster.node_pid("node-2")?)?);
    kill(frozen, Signal::SIGSTOP)?;
    let http = shardgate_tests::http().build()?;
    let mut down = false;
    for _ in 0..150 {
        let (_, members) = cluster.status(&http).await?;
        if members
            .iter()
            .any(|m| m["id"] == "node-2" && m["state"] == "down")
        {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let outcome = async {
        anyhow::ensure!(down, "node-2 was never marked down");
        let ran = smoke(&cluster.endpoint, &cluster.admin, &[]).await?;
        anyhow::ensure!(ran.passed, "{}", ran.stderr);
        anyhow::ensure!(
            ran.stdout.contains("2 members serving (node-2 down"),
            "{}",
            ran.stdout
        );
        let ran = smoke(&cluster.endpoint, &cluster.admin, &["--require-all"]).await?;
        anyhow::ensure!(!ran.passed);
        anyhow::ensure!(reason(&ran).contains("node-2 is down"), "{}", ran.stderr);
        Ok(())
    }
    .await;
    kill(frozen, Signal::SIGCONT)?;
    cluster.stop().await?;
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn t20_fails_against_a_node_without_a_store() -> anyhow::Result<()> {
    let dir = scratch("smoke-memory-only")?;
    let (node, at) = start_raft_node(&dir, "node-0").await?;
    let (gateway, addrs) = start_gateway(&["--seeds".into(), at.internal.to_string()]).await?;
    let url = format!("http://{}/mcp", addrs.mcp);
    let admin = format!("http://{}", addrs.admin);
    // The gateway may need a moment to learn the membership.
    let mut ran = smoke(&url, &admin, &[]).await?;
    for _ in 0..50 {
        if ran.stderr.contains("memory only") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ran = smoke(&url, &admin, &[]).await?;
    }
    assert!(!ran.passed);
    let why = reason(&ran);
    assert!(
        why.contains("smoke failed at cluster")
            && why.contains("node-0 keeps sessions in memory only"),
        "{why}"
    );
    // Everything else holds: accepting memory only, it passes.
    let ran = smoke(&url, &admin, &["--allow-memory-only"]).await?;
    assert!(ran.passed, "{}", ran.stderr);
    gateway.stop().await?;
    node.stop().await?;
    Ok(())
}

const ISSUER: &str = "https://issuer.test";
const RESOURCE: &str = "https://gateway.test/mcp";
const SECRET: &str = "the gateway's development secret, 32 bytes or more";

fn token_file(dir: &Path, name: &str, secret: &str) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims =
        json!({"iss": ISSUER, "aud": RESOURCE, "sub": "smoke", "iat": now, "exp": now + 600});
    let token = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?;
    let path = dir.join(name);
    std::fs::write(&path, token)?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn t30_fails_when_auth_is_not_what_the_smoke_was_given() -> anyhow::Result<()> {
    let dir = scratch("smoke-auth")?;
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, SECRET)?;
    let cluster = Cluster::builder()
        .nodes(1)
        .env("SHARDGATE_JWT_SECRET_FILE", &secret.display().to_string())
        .env("SHARDGATE_JWT_ISSUER", ISSUER)
        .env("SHARDGATE_RESOURCE", RESOURCE)
        .start()
        .await?;
    let (url, admin) = (&cluster.endpoint, &cluster.admin);

    let ran = smoke(url, admin, &[]).await?;
    assert!(!ran.passed);
    let why = reason(&ran);
    assert!(
        why.contains("smoke failed at session era") && why.contains("asks for a bearer token"),
        "{why}"
    );

    let wrong = token_file(&dir, "wrong", "another secret, also 32 bytes or more")?;
    let ran = smoke(url, admin, &["--token-file", &wrong]).await?;
    assert!(!ran.passed);
    let why = reason(&ran);
    assert!(why.contains("refused the token"), "{why}");
    assert!(why.contains("invalid_token"), "{why}");

    let right = token_file(&dir, "right", SECRET)?;
    let ran = smoke(url, admin, &["--token-file", &right]).await?;
    assert!(ran.passed, "{}", ran.stderr);
    cluster.stop().await?;
    Ok(())
}
