//! Nodes with Raft membership, started one by one as a StatefulSet would (node-0 first, the
//! others joining through seeds), each with its own data directory, so that a test can
//! `kill -9` one, restart it under the same identity, add members and drain them.
//!
//! Every process binds port 0 and reports what it bound; a restarted node asks for its old
//! ports again, as a pod keeps its name. Requests to nodes carry the harness's credentials.

use crate::{GatewayAddrs, NodeAddrs, Process, start_gateway, start_node};
use anyhow::{Context, bail};
use shardgate_raft::consensus::Status;
use shardgate_raft::{MemberState, Membership};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One StatefulSet-shaped cluster: nodes `node-0…` and one gateway following them.
pub struct RaftCluster {
    dir: PathBuf,
    /// Every node's listeners by ordinal, once it has started.
    addrs: Vec<Option<NodeAddrs>>,
    nodes: Vec<Option<Process>>,
    gateway: Option<(Process, GatewayAddrs)>,
    /// Extra `shardgate node` flags for every node.
    flags: Vec<String>,
    pub client: shardgate_protocol::cluster_client::ClusterClient,
}

impl RaftCluster {
    /// Room for `capacity` nodes in `dir`; nothing is started yet. Nodes run with relaxed
    /// timings unless `flags` name others.
    pub fn new(dir: PathBuf, capacity: usize, flags: &[&str]) -> anyhow::Result<RaftCluster> {
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if !flags.iter().any(|f| f == "--timings") {
            flags.extend(["--timings".into(), "relaxed".into()]);
        }
        Ok(RaftCluster {
            dir,
            addrs: vec![None; capacity],
            nodes: (0..capacity).map(|_| None).collect(),
            gateway: None,
            flags,
            client: crate::cluster_client()?,
        })
    }

    /// Node `i`'s internal listener (Raft, membership, status).
    pub fn addr(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.addrs[i]
            .context("the node has not started")?
            .internal
            .to_string())
    }

    /// Node `i`'s listeners.
    pub fn addrs(&self, i: usize) -> Option<NodeAddrs> {
        self.addrs[i]
    }

    /// The internal listeners of every node started so far but `i`.
    fn seeds_for(&self, i: usize) -> Vec<String> {
        (0..self.addrs.len())
            .filter(|&j| j != i)
            .filter_map(|j| self.addrs[j].map(|a| a.internal.to_string()))
            .collect()
    }

    /// Starts (or restarts, with the same id, data directory and, if free, ports) node `i`.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let id = format!("node-{i}");
        let mut args = vec![
            "--id".to_string(),
            id.clone(),
            "--data-dir".into(),
            self.dir.join(&id).display().to_string(),
        ];
        let seeds = self.seeds_for(i);
        if !seeds.is_empty() {
            args.extend(["--seeds".into(), seeds.join(",")]);
        }
        args.extend(self.flags.iter().cloned());
        let mut same_ports = args.clone();
        if let Some(old) = self.addrs[i] {
            same_ports.extend([
                "--listen".into(),
                old.session.to_string(),
                "--internal-listen".into(),
                old.internal.to_string(),
                "--admin-listen".into(),
                old.admin.to_string(),
            ]);
        }
        let (process, addrs) = match start_node(&same_ports).await {
            Ok(started) => started,
            // A port of the old incarnation was taken meanwhile: new ones, as a pod on a new IP.
            Err(_) if self.addrs[i].is_some() => start_node(&args).await?,
            Err(e) => return Err(e),
        };
        self.nodes[i] = Some(process);
        self.addrs[i] = Some(addrs);
        Ok(())
    }

    /// Starts nodes `0..n` in order, and waits until all are active members.
    pub async fn start(&mut self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            self.start_node(i).await?;
        }
        self.wait_for_active(n, Duration::from_secs(30)).await
    }

    /// Starts the gateway, following the nodes started so far; returns its listeners.
    pub async fn start_gateway(&mut self) -> anyhow::Result<GatewayAddrs> {
        self.start_gateway_with(&[]).await
    }

    /// [`RaftCluster::start_gateway`] with more flags.
    pub async fn start_gateway_with(&mut self, flags: &[&str]) -> anyhow::Result<GatewayAddrs> {
        let seeds = self.seeds_for(usize::MAX).join(",");
        let mut args = vec!["--seeds".to_string(), seeds];
        args.extend(flags.iter().map(|f| f.to_string()));
        let (process, addrs) = start_gateway(&args).await?;
        self.gateway = Some((process, addrs));
        Ok(addrs)
    }

    /// `kill -9` of node `i`.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let process = self.nodes[i].take().context("the node is not running")?;
        process.kill().await
    }

    /// SIGTERM to node `i`, as an orchestrator removing the pod: it drains, leaves and exits.
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<()> {
        let process = self.nodes[i].take().context("the node is not running")?;
        let status = process.stop().await?;
        if !status.success() {
            bail!("node-{i} exited with {status}");
        }
        Ok(())
    }

    /// Takes node `i`'s process, to wait for it to exit by itself.
    pub fn take(&mut self, i: usize) -> Option<Process> {
        self.nodes[i].take()
    }

    /// Node `i`'s process id, to signal it.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].as_ref().and_then(Process::pid)
    }

    /// The running nodes' ordinals.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Node `i`'s status.
    pub async fn status(&self, i: usize) -> anyhow::Result<Status> {
        let body = self
            .client
            .call(
                http::Method::GET,
                &self.addr(i)?,
                "/internal/status",
                Vec::new(),
                Duration::from_secs(3),
            )
            .await
            .with_context(|| format!("status of node-{i}"))?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The view the gateway routes by.
    pub async fn gateway_view(&self) -> anyhow::Result<Membership> {
        let (_, addrs) = self.gateway.as_ref().context("no gateway")?;
        let resp = crate::http()
            .timeout(Duration::from_secs(3))
            .build()?
            .get(format!("http://{}/membership", addrs.admin))
            .send()
            .await?;
        Ok(resp.json().await?)
    }

    /// Polls the gateway's view until `done` holds; returns how long that took.
    pub async fn until_gateway(
        &self,
        within: Duration,
        done: impl Fn(&Membership) -> bool,
    ) -> anyhow::Result<(Duration, Membership)> {
        let started = Instant::now();
        loop {
            if let Ok(view) = self.gateway_view().await
                && done(&view)
            {
                return Ok((started.elapsed(), view));
            }
            if started.elapsed() > within {
                bail!(
                    "the gateway's view did not get there within {within:?}: {:?}",
                    self.gateway_view().await.ok()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until some running node reports `n` active members.
    pub async fn wait_for_active(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            for i in self.running() {
                if let Ok(s) = self.status(i).await
                    && active(&s.membership) >= n
                {
                    return Ok(());
                }
            }
            if started.elapsed() > within {
                bail!("the cluster did not reach {n} active members within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node reports the same membership; returns it.
    pub async fn wait_for_agreement(&self, within: Duration) -> anyhow::Result<Membership> {
        let started = Instant::now();
        loop {
            let mut views = Vec::new();
            for i in self.running() {
                if let Ok(s) = self.status(i).await {
                    views.push(s.membership);
                }
            }
            if views.len() == self.running().len()
                && let Some(first) = views.first()
                && views.iter().all(|v| v == first)
            {
                return Ok(first.clone());
            }
            if started.elapsed() > within {
                bail!("the running nodes did not agree within {within:?}: {views:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader's ordinal, as a running node sees it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for i in self.running() {
            if let Ok(s) = self.status(i).await
                && let Some(leader) = s.leader
            {
                return ordinal(&leader.0);
            }
        }
        bail!("no running node knows a leader")
    }

    /// Drains node `i` with `shardgate drain`, and waits for its process to exit.
    pub async fn drain(&mut self, i: usize) -> anyhow::Result<()> {
        let seeds = self
            .running()
            .into_iter()
            .filter(|&j| j != i)
            .filter_map(|j| self.addr(j).ok())
            .collect::<Vec<_>>()
            .join(",");
        let out = tokio::process::Command::new(crate::shardgate_bin()?)
            .args(["drain", &format!("node-{i}"), "--seeds", &seeds])
            .env("SHARDGATE_CLUSTER_SECRET", crate::CLUSTER_SECRET)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "shardgate drain node-{i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let process = self.take(i).context("the node is not running")?;
        process.wait(Duration::from_secs(30)).await?;
        Ok(())
    }
}

pub fn active(m: &Membership) -> usize {
    m.members
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .count()
}

/// The state of `node-i` in `m`, if it is a member.
pub fn state_of(m: &Membership, i: usize) -> Option<MemberState> {
    let id = format!("node-{i}");
    m.members.iter().find(|m| m.id.0 == id).map(|m| m.state)
}

fn ordinal(id: &str) -> anyhow::Result<usize> {
    id.strip_prefix("node-")
        .and_then(|o| o.parse().ok())
        .with_context(|| format!("{id} is not node-<ordinal>"))
}
