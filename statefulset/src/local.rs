//! Local clusters that `shardgate up` runs on this machine, so that `shardgate status`,
//! `shardgate drain` and `shardgate scale` next to one need no flags: `up` records its nodes' internal addresses and
//! where its credentials are in a file of its own, under a directory only this user can read,
//! and removes it when it stops.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One running `shardgate up`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub pid: u32,
    /// The nodes' internal listeners.
    pub seeds: Vec<String>,
    /// The credential flags its processes run with (file paths, never secrets).
    pub cluster_ca: PathBuf,
    pub cluster_cert: PathBuf,
    pub cluster_key: PathBuf,
    pub cluster_secret_file: PathBuf,
    /// Its data directory, where `shardgate scale` asks it for a number of nodes.
    pub data_dir: PathBuf,
}

impl Entry {
    /// The cluster's mTLS credentials, as its processes use them.
    pub fn mtls(&self) -> anyhow::Result<shardgate_trust::Credentials> {
        let files = shardgate_trust::TlsFiles {
            ca: self.cluster_ca.clone(),
            cert: self.cluster_cert.clone(),
            key: self.cluster_key.clone(),
        };
        let mtls = shardgate_trust::Mtls::load(&files)?;
        Ok(shardgate_trust::Credentials::Mtls(std::sync::Arc::new(
            mtls,
        )))
    }

    /// Writes (or rewrites, after a node moved) this entry.
    pub fn record(&self) -> anyhow::Result<()> {
        let dir = registry()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        restrict(&dir)?;
        crate::ready::write(&dir.join(format!("{}.json", self.pid)), self)
    }

    /// Asks this cluster for `nodes` nodes; it adds or drains them one at a time.
    pub fn request_scale(&self, nodes: usize) -> anyhow::Result<()> {
        crate::ready::write(&scale_file(&self.data_dir), &Scale { nodes })
    }

    pub fn remove(&self) {
        if let Ok(dir) = registry() {
            let _ = std::fs::remove_file(dir.join(format!("{}.json", self.pid)));
        }
    }
}

/// A scale request: how many nodes the cluster should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub nodes: usize,
}

/// Where a cluster with data directory `data_dir` finds its scale request.
pub fn scale_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("scale.json")
}

/// The local clusters still running, newest first.
pub fn running() -> Vec<Entry> {
    let Ok(dir) = registry() else {
        return Vec::new();
    };
    let Ok(files) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(std::time::SystemTime, Entry)> = files
        .filter_map(Result::ok)
        .filter_map(|f| {
            let entry: Entry = crate::ready::read(&f.path())?;
            let modified = f.metadata().and_then(|m| m.modified()).ok()?;
            alive(entry.pid).then_some((modified, entry))
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.into_iter().map(|(_, e)| e).collect()
}

/// The local cluster that `seeds` point into, or with no seeds the only one running.
pub fn find(seeds: &[String]) -> Option<Entry> {
    let running = running();
    if seeds.is_empty() {
        return match running.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
    }
    running
        .into_iter()
        .find(|e| seeds.iter().any(|s| e.seeds.contains(s)))
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `$XDG_RUNTIME_DIR/shardgate/local`, else `~/.cache/shardgate/local`.
fn registry() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("shardgate").join("local"))
}

#[cfg(unix)]
fn restrict(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

#[cfg(not(unix))]
fn restrict(_: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}
