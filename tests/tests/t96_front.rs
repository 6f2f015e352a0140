//! `up`'s front before two gateways: clients keep one URL, and `kill -9` of a gateway costs
//! them at most the connections it held. Sessions opened through the front answer through the
//! same URL right after the kill (new connections go to the live gateway), and once `up` has
//! restarted the killed gateway the front sends connections to it again.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardgate_chaos::up::exited;
use shardgate_tests::Cluster;
use shardgate_tests::mcp::Client;
use shardgate_tests::takeover::{count_once, sessions_counted_to};
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;
/// Calls that may fail after the kill, one per connection the client's pool held to the dead
/// gateway: at most one per session's first call, as the calls were made one at a time.
const MAX_DEAD_CONNECTIONS: usize = SESSIONS;
/// How long `up` gets to restart the killed gateway and the front to serve it again.
const RESTART: Duration = Duration::from_secs(20);

/// Requests a gateway answered, from its admin `/metrics`.
async fn served(http: &reqwest::Client, admin: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("shardgate_gateway_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum())
}

#[tokio::test]
async fn t10_a_gateway_killed_behind_the_front_costs_no_session() -> anyhow::Result<()> {
    let cluster = Cluster::builder().nodes(3).gateways(2).start().await?;
    assert_eq!(cluster.gateways.len(), 2);
    assert!(
        !cluster.gateways.contains(&cluster.endpoint),
        "the endpoint is the front's, not a gateway's: {} {:?}",
        cluster.endpoint,
        cluster.gateways
    );
    let http = shardgate_tests::http()
        .timeout(Duration::from_secs(3))
        .build()?;
    let c = Client::new(&cluster.endpoint);
    let sids = sessions_counted_to(&c, SESSIONS, 1).await?;
    for admin in &cluster.admins {
        assert!(
            served(&http, admin).await? > 0,
            "the front spread the sessions' connections over both gateways ({admin})"
        );
    }

    let victim = cluster.gateway_pid("gateway-0")?;
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(victim) {
        anyhow::ensure!(Instant::now() < deadline, "gateway-0 outlived SIGKILL");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = served(&http, &cluster.admins[1]).await?;

    // The same client, through the same URL: each connection its pool held to the dead
    // gateway may fail one call (it never reached a node: the counter says so), and a call
    // made again goes to the live gateway once the pool has run out of dead connections.
    let mut lost = 0;
    for (i, sid) in sids.iter().enumerate() {
        let mut id = 100 + i as i64;
        let got = loop {
            match count_once(&c, sid, id).await {
                Ok(n) => break n,
                Err(e) if lost < MAX_DEAD_CONNECTIONS => {
                    lost += 1;
                    println!("{sid}: {e}; calling again");
                    id += 1000;
                }
                Err(e) => anyhow::bail!("{sid} after the gateway kill: {e}"),
            }
        };
        assert_eq!(got, 2, "{sid} continued its counter");
    }
    // New clients open new connections: each goes to the live gateway at the first try.
    for (i, sid) in sids.iter().enumerate() {
        let fresh = Client::new(&cluster.endpoint);
        let got = count_once(&fresh, sid, 200 + i as i64)
            .await
            .map_err(|e| anyhow::anyhow!("{sid} through a new connection: {e}"))?;
        assert_eq!(got, 3, "{sid} continued its counter");
    }
    assert!(
        served(&http, &cluster.admins[1]).await? >= before + SESSIONS as u64,
        "gateway-1 served every call while gateway-0 was down"
    );

    // `up` restarts gateway-0 (on its ports), and the front serves it again once it is ready.
    let started = Instant::now();
    let mut n = 3;
    loop {
        let restarted = cluster
            .gateway_pid("gateway-0")
            .is_ok_and(|pid| pid != victim);
        if restarted && served(&http, &cluster.admins[0]).await.unwrap_or(0) > 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < RESTART,
            "gateway-0 was not restarted and served again within {RESTART:?}"
        );
        n += 1;
        for (i, sid) in sids.iter().enumerate() {
            let fresh = Client::new(&cluster.endpoint);
            let got = count_once(&fresh, sid, 1000 * n + i as i64)
                .await
                .map_err(|e| anyhow::anyhow!("{sid} while gateway-0 came back: {e}"))?;
            assert_eq!(got, n, "{sid} continued its counter");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "gateway-0 killed: {lost} of {SESSIONS} calls on old connections lost; restarted and \
         served again within {:?}",
        started.elapsed()
    );
    cluster.stop().await?;
    Ok(())
}
