//! The ready file: where a process started with `--ready-file` writes the addresses it bound,
//! so that a supervisor (`shardgate up`, the test harness) can start it on port 0 and learn
//! its ports, with no window between picking a port and binding it.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// A node's bound listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub session: SocketAddr,
    pub internal: SocketAddr,
    pub admin: SocketAddr,
}

/// A gateway's bound listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub mcp: SocketAddr,
    pub admin: SocketAddr,
}

/// Writes `value` to `path` whole (through a temporary file and a rename), so a reader never
/// sees half of it.
pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// What `path` holds, once it exists.
pub fn read<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
