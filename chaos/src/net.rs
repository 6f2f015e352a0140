//! Network faults between the processes of this machine: a node cut off from its peers, from
//! the gateways or from the store, or its link to them made lossy (slow), as a partition of a
//! pod's network would. Traffic stays on the loopback interface.
//!
//! Each process `up` runs is in a cgroup v2 of its own from its first instruction (`up
//! --cgroup`), so every socket it opens is tagged with it; an nftables rule on the output hook
//! drops the packets a cgroup's sockets send to the ports of the other side. A drop is silent,
//! as a real partition is: a connection attempt hangs instead of being refused, and an open
//! connection stops moving. A lossy link drops a share of the packets instead, so that TCP
//! retransmits after its timeouts and the link crawls. Each fault is a table of its own, added
//! whole and deleted whole, so that healing is one command and a fault never outlives the run.

use anyhow::{Context, bail};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where nft resolves a cgroup path it is given.
const NFT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The prefix of every nftables table and cgroup the harness makes.
const PREFIX: &str = "shardgate_chaos_";

/// What a node is cut off from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The other nodes (Raft, cluster RPCs), both ways.
    Peers,
    /// The gateways: they cannot reach the node.
    Gateways,
    /// The session store's servers.
    Store,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Peers => "its peers",
            Side::Gateways => "the gateways",
            Side::Store => "the store",
        })
    }
}

/// Packets from the sockets of process `from` to any of `ports` on this machine are dropped:
/// all of them, or `loss` percent at random.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub from: String,
    pub ports: Vec<u16>,
    pub loss: Option<u8>,
}

/// The cgroups of one run and the packet filter that cuts their links.
pub struct Net {
    /// The cgroup `up` runs its processes under (`up --cgroup`).
    pub dir: PathBuf,
    /// `dir` as nft names it: relative to [`NFT_CGROUP_ROOT`].
    nft_dir: String,
    /// How deep a process's own cgroup is below the cgroup v2 root.
    level: usize,
    /// Faults made so far: each one's table is named after its number.
    made: u32,
}

impl Net {
    /// Makes this run's cgroup (under the harness's own) and checks that nftables can filter
    /// by it; the error says why links cannot be cut here.
    pub fn create() -> anyhow::Result<Net> {
        let mount = cgroup2_mount().context("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .context("this process is in no cgroup v2")?;
        remove_stale(&mount)?;
        let below =
            Path::new(own.trim_start_matches('/')).join(format!("{PREFIX}{}", std::process::id()));
        let dir = mount.join(&below);
        let nft_dir = dir
            .strip_prefix(NFT_CGROUP_ROOT)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
            .with_context(|| format!("cgroup v2 is mounted at {}", mount.display()))?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
        let net = Net {
            level: below.components().count() + 1,
            dir,
            nft_dir,
            made: 0,
        };
        // A rule naming a cgroup that exists: nft resolves it when the rule is added.
        let probe = net.dir.join("probe");
        std::fs::create_dir_all(&probe)?;
        let table = format!("{PREFIX}{}_probe", std::process::id());
        let checked = nft(&net.table_script(
            &table,
            &[Block {
                from: "probe".into(),
                ports: vec![1],
                loss: Some(1),
            }],
        ))
        .and_then(|_| nft(&format!("delete table inet {table}\n")));
        let _ = std::fs::remove_dir(&probe);
        // On failure, dropping `net` removes its cgroup.
        checked.context("nftables cannot filter by cgroup here")?;
        Ok(net)
    }

    /// Drops packets as `blocks` say until the returned cut is healed.
    pub fn cut(&mut self, blocks: &[Block]) -> anyhow::Result<Cut> {
        if blocks.is_empty() {
            bail!("a cut with nothing to drop");
        }
        self.made += 1;
        let table = format!("{PREFIX}{}_{}", std::process::id(), self.made);
        nft(&self.table_script(&table, blocks))?;
        Ok(Cut { table })
    }

    fn table_script(&self, table: &str, blocks: &[Block]) -> String {
        let mut script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n"
        );
        for d in blocks {
            let ports: Vec<String> = d.ports.iter().map(u16::to_string).collect();
            let loss = d
                .loss
                .map(|p| format!("numgen random mod 100 < {p} "))
                .unwrap_or_default();
            script.push_str(&format!(
                "    {loss}socket cgroupv2 level {} \"{}/{}\" tcp dport {{ {} }} counter drop\n",
                self.level,
                self.nft_dir,
                d.from,
                ports.join(", ")
            ));
        }
        script.push_str("  }\n}\n");
        script
    }
}

impl std::ops::Drop for Net {
    /// Deletes every table of this run and its cgroups (once `up` and its processes are gone).
    fn drop(&mut self) {
        delete_tables(|pid| pid == std::process::id());
        remove_cgroups(&self.dir);
    }
}

/// A fault's rules, in place until [`Cut::heal`].
pub struct Cut {
    table: String,
}

impl Cut {
    /// Deletes the rules; returns how many packets they dropped.
    pub fn heal(self) -> anyhow::Result<u64> {
        let listed = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .context("cannot run nft")?;
        nft(&format!("delete table inet {}\n", self.table))?;
        Ok(dropped(&String::from_utf8_lossy(&listed.stdout)))
    }
}

/// The packets the counters of a listed table counted.
fn dropped(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

/// Runs an nft script.
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (Debian's nftables)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Where the cgroup v2 hierarchy is mounted, from this process's mount table.
fn cgroup2_mount() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next() == Some("cgroup2"))
            .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The pid a table or cgroup of the harness was made by.
fn maker(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('_').next()?.parse().ok()
}

/// Tables and cgroups a harness that is gone left behind (killed before it cleaned up).
fn remove_stale(mount: &Path) -> anyhow::Result<()> {
    let gone = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists();
    delete_tables(gone);
    let mut stack = vec![mount.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match entry.file_name().to_str().and_then(maker) {
                Some(pid) if gone(pid) => remove_cgroups(&path),
                Some(_) => {}
                None => stack.push(path),
            }
        }
    }
    Ok(())
}

/// Deletes the harness's tables whose maker `which` picks.
fn delete_tables(which: impl Fn(u32) -> bool) {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    let script: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|name| maker(name).is_some_and(&which))
        .map(|name| format!("delete table inet {name}\n"))
        .collect();
    if !script.is_empty() {
        let _ = nft(&script);
    }
}

/// Removes a cgroup and the ones below it; one a process still runs in stays.
fn remove_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_one_rule_on_its_cgroup_and_ports() {
        let net = Net {
            dir: PathBuf::from("/sys/fs/cgroup/unified/shardgate_chaos_1"),
            nft_dir: "unified/shardgate_chaos_1".into(),
            level: 2,
            made: 0,
        };
        let script = net.table_script(
            "t",
            &[
                Block {
                    from: "node-1".into(),
                    ports: vec![7001, 7002],
                    loss: None,
                },
                Block {
                    from: "gateway-0".into(),
                    ports: vec![5432],
                    loss: Some(20),
                },
            ],
        );
        assert!(script.contains(
            "    socket cgroupv2 level 2 \"unified/shardgate_chaos_1/node-1\" tcp dport { 7001, 7002 } counter drop\n"
        ));
        assert!(script.contains("    numgen random mod 100 < 20 socket cgroupv2 level 2 \"unified/shardgate_chaos_1/gateway-0\" tcp dport { 5432 } counter drop\n"));
        assert_eq!(maker("shardgate_chaos_42_3"), Some(42));
        assert_eq!(maker("shardgate_chaos_42"), Some(42));
        assert_eq!(maker("other"), None);
        let listing = "table inet t {\n chain out {\n  socket cgroupv2 level 2 \"a\" tcp dport { 1 } counter packets 12 bytes 720 drop\n  numgen random mod 100 < 20 socket cgroupv2 level 2 \"b\" tcp dport { 2 } counter packets 3 bytes 180 drop\n }\n}\n";
        assert_eq!(dropped(listing), 15);
    }
}
