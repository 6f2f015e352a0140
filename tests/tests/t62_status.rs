//! What operators see of a running cluster: `shardgate status` and `shardgate sessions` (text and
//! JSON) next to `up`, each member answering for what it holds; and the gateway's status page,
//! rendered by headless Chromium (Debian's `chromium`, from `scripts/install-test-peers`), after a
//! node was killed with SIGKILL.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use shardgate_tests::mcp::Client;
use shardgate_tests::takeover::owners;
use shardgate_tests::{Cluster, http, scratch};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sessions each test creates: a few, so that most nodes hold some.
const SESSIONS: usize = 9;
/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long membership gets to mark a killed node down (relaxed timings: about 4 s at worst).
const CONVERGE: Duration = Duration::from_secs(30);

async fn sessions(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        sids.push(client.initialize().await?);
    }
    Ok(sids)
}

/// The number in column `col` (0-based, split on whitespace) of every row that starts with
/// `node-`, by member.
fn column(text: &str, col: usize) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("node-"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            Some((cells[0].to_owned(), (*cells.get(col)?).to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn t10_status_and_sessions_show_what_each_member_holds() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let client = Client::new(&cluster.endpoint);
    let sids = sessions(&client).await?;
    // A call gives the session state at its upstream, and a stream with two events (the
    // priming event and the answer).
    assert_eq!(client.count(&sids[0], 1).await?, 1);
    let owner = owners(&cluster.gateway_view().await?, &sids)?;

    // `status --json`: the view as before, and every member's report beside it.
    let status: Value = serde_json::from_str(&cluster.shardgate(&["status", "--json"]).await?)?;
    assert_eq!(
        status["membership"]["members"].as_array().map(Vec::len),
        Some(3)
    );
    let reports = status["reports"].as_array().cloned().unwrap_or_default();
    assert_eq!(reports.len(), 3, "{status}");
    let mut held = 0;
    let mut leaders = 0;
    for r in &reports {
        let answer = &r["answer"];
        let id = r["id"].as_str().unwrap_or_default();
        assert_eq!(answer["id"], r["id"], "{r}");
        let n = answer["sessions"].as_u64().unwrap_or(u64::MAX);
        let owned = owner.iter().filter(|o| *o == id).count() as u64;
        assert_eq!(n, owned, "{id} holds what the ring gives it: {r}");
        held += n;
        leaders += usize::from(answer["raft"]["role"] == "leader");
        assert_eq!(answer["store"]["kind"], "sqlite", "{r}");
        assert_eq!(answer["store"]["healthy"], true, "{r}");
        assert_eq!(answer["epoch"], status["membership"]["epoch"], "{r}");
    }
    assert_eq!(
        held, SESSIONS as u64,
        "every session is held once: {reports:?}"
    );
    assert_eq!(leaders, 1, "{reports:?}");

    // `status`: a row per member, with its sessions, role and store.
    let text = cluster.shardgate(&["status"]).await?;
    println!("{text}");
    let counts = column(&text, 4);
    let total: u64 = counts.values().filter_map(|n| n.parse::<u64>().ok()).sum();
    assert_eq!(counts.len(), 3, "{text}");
    assert_eq!(total, SESSIONS as u64, "{text}");
    assert_eq!(text.matches(" active ").count(), 3, "{text}");
    assert_eq!(text.matches("sqlite, healthy").count(), 3, "{text}");

    // `sessions --json`: every session once, on its owner, with its revision and principal.
    let lists: Value = serde_json::from_str(&cluster.shardgate(&["sessions", "--json"]).await?)?;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for member in lists.as_array().cloned().unwrap_or_default() {
        let node = member["id"].as_str().unwrap_or_default().to_owned();
        for s in member["answer"]["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            assert_eq!(s["protocol_version"], "2025-11-25", "{s}");
            assert_eq!(s["principal"], "anonymous", "{s}");
            let id = s["id"].as_str().unwrap_or_default().to_owned();
            assert!(
                listed.insert(id, node.clone()).is_none(),
                "listed twice: {s}"
            );
        }
    }
    let expected: BTreeMap<String, String> = sids.iter().cloned().zip(owner.clone()).collect();
    assert_eq!(listed, expected, "each session on its owner");

    // `sessions`: the same as a table, the newest first.
    let text = cluster.shardgate(&["sessions"]).await?;
    println!("{text}");
    for (sid, node) in &expected {
        let row = text.lines().find(|l| l.starts_with(sid.as_str()));
        let row = row.unwrap_or_default();
        assert!(row.contains(node.as_str()), "{sid} on {node}: {text}");
    }
    assert!(
        text.contains(&format!("{SESSIONS} sessions held by 3 of 3 members")),
        "{text}"
    );

    // `sessions ID`: the one that called, in detail, with its stream and its last event id.
    // Ids are URL-safe base64 and may start with `-`: the command takes them as they are.
    let sid = sids[0].as_str();
    let text = cluster.shardgate(&["sessions", sid]).await?;
    println!("{text}");
    assert!(text.contains(&format!("session      {sid}\n")), "{text}");
    assert!(
        text.contains(&format!("node         {}\n", owner[0])),
        "{text}"
    );
    assert!(text.contains("upstreams    builtin\n"), "{text}");
    let stream = text
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_default();
    assert_eq!(
        stream.split_whitespace().collect::<Vec<_>>()[..4],
        ["1", "1-1", "yes", "no"],
        "{text}"
    );
    let found: Value =
        serde_json::from_str(&cluster.shardgate(&["sessions", sid, "--json"]).await?)?;
    let detail = &found["holders"][0];
    assert_eq!(
        found["holders"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    assert_eq!(detail["id"], sid, "{found}");
    assert_eq!(detail["node"], owner[0].as_str(), "{found}");
    assert_eq!(
        detail["upstreams"],
        serde_json::json!(["builtin"]),
        "{found}"
    );
    assert_eq!(detail["streams"][0]["last_event_id"], "1-1", "{found}");
    // One no member holds is an error, and says so.
    assert!(
        cluster
            .shardgate(&["sessions", "no-such-session"])
            .await
            .is_err()
    );
    cluster.stop().await?;
    Ok(())
}

/// `up` restarts a node that dies; frozen (SIGSTOP), it does not, so a killed node stays down
/// for as long as the page is looked at. Thawed on drop, however the test ends, so that `up`
/// can stop.
struct Frozen(Pid);

impl Frozen {
    fn freeze(pid: u32) -> anyhow::Result<Frozen> {
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGSTOP)?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// `chromium --headless` on `url` with `args`; its stdout.
async fn chromium(profile: &Path, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let run = tokio::process::Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1200,800", "--virtual-time-budget=5000"])
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await??;
    anyhow::ensure!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn t20_the_status_page_shows_a_killed_node_down() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/install-test-peers"
    );
    let cluster = Cluster::builder().nodes(3).start().await?;
    let client = Client::new(&cluster.endpoint);
    sessions(&client).await?;
    let web = http().timeout(Duration::from_secs(5)).build()?;
    let page = web.get(format!("{}/", cluster.admin)).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().await?.contains("/status.json"));

    let victim = "node-2";
    let frozen = Frozen::freeze(cluster.pid().ok_or_else(|| anyhow::anyhow!("up is gone"))?)?;
    let pid = cluster.node_pid(victim)?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
    let deadline = Instant::now() + CONVERGE;
    let (status, members) = loop {
        let (status, members) = cluster.status(&web).await?;
        // The others answer too (a report may miss its second on a machine this busy).
        let shown = members.iter().all(|m| match m["id"] == victim {
            true => m["state"] == "down",
            false => m["report"].is_object(),
        });
        if shown {
            break (status, members);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{victim} never shown down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for m in members {
        let share = m["share"].as_f64().unwrap_or(-1.0);
        if m["id"] == victim {
            assert!(m["report"].is_null() && m["unreachable"].is_string(), "{m}");
            assert_eq!(share, 0.0, "a down member owns nothing: {m}");
        } else {
            assert_eq!(m["state"], "active", "{m}");
            assert!(m["report"]["sessions"].is_u64(), "{m}");
            assert!(
                (share - 0.5).abs() < 0.05,
                "two members share the ring: {m}"
            );
        }
    }
    assert!(status["leader"].is_string(), "{status}");

    let dir = scratch("t62-status-page")?;
    let shot = dir.join("status-page.png");
    let url = format!("{}/", cluster.admin);
    chromium(
        &dir.join("profile"),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    )
    .await?;
    let png = std::fs::read(&shot)?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    let dom = chromium(&dir.join("profile"), &url, &["--dump-dom"]).await?;
    let row = format!(r#"id="member-{victim}" data-state="down" data-reachable="no""#);
    assert!(dom.contains(&row), "the page shows {victim} down:\n{dom}");
    let rendered = dom.split(&row).nth(1).unwrap_or_default();
    let rendered = rendered.split("</tr>").next().unwrap_or_default();
    assert!(
        rendered.contains(">down<") && rendered.contains(">unreachable"),
        "{rendered}"
    );
    drop(frozen);
    cluster.stop().await?;
    Ok(())
}
