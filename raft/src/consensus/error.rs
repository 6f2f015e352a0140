//! What consensus operations fail with, and which failures are worth retrying.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Raft stopped (shut down, or a fatal storage error) or refused the change for good.
    #[error("{0}")]
    Failed(String),
    #[error("invalid consensus configuration: {0}")]
    Config(String),
    #[error("storage in {}: {source}", path.display())]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No leader is known right now (an election is running, or this node is cut off).
    #[error("no leader is known")]
    NoLeader,
    /// The leader or a peer did not answer in time, or a membership change is still in
    /// progress.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The peer's address refused the connection: its process is gone.
    #[error("refused: {0}")]
    Refused(String),
    #[error("unknown member {0}")]
    UnknownMember(NodeId),
    #[error("unknown consensus rpc {0:?}")]
    UnknownRpc(String),
    #[error("malformed {rpc} request: {reason}")]
    BadRequest { rpc: String, reason: String },
    /// A request, or a peer, of another cluster (or of none, where only a pristine node may
    /// be): refused and never acted on. The node's HTTP route answers it with 403; retrying
    /// cannot help, since a cluster id never changes.
    #[error("this node belongs to cluster {ours}; {from} belongs to {}", cluster_name(.theirs))]
    ForeignCluster {
        ours: String,
        theirs: Option<String>,
        /// Who was refused: "the sender of this append", "seed node-1:7000".
        from: String,
    },
}

fn cluster_name(id: &Option<String>) -> String {
    match id {
        Some(id) => format!("cluster {id}"),
        None => "no cluster".to_owned(),
    }
}

impl ConsensusError {
    /// Whether the same request may succeed later, e.g. once a new leader is elected.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConsensusError::NoLeader | ConsensusError::Unavailable(_) | ConsensusError::Refused(_)
        )
    }
}

/// A [`ConsensusError`] as carried in the reply of a forwarded request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireError {
    NoLeader,
    Unavailable(String),
    UnknownMember(NodeId),
    Failed(String),
}

impl From<ConsensusError> for WireError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::NoLeader => WireError::NoLeader,
            ConsensusError::Unavailable(s) | ConsensusError::Refused(s) => {
                WireError::Unavailable(s)
            }
            ConsensusError::UnknownMember(id) => WireError::UnknownMember(id),
            other => WireError::Failed(other.to_string()),
        }
    }
}

impl From<WireError> for ConsensusError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NoLeader => ConsensusError::NoLeader,
            WireError::Unavailable(s) => ConsensusError::Unavailable(s),
            WireError::UnknownMember(id) => ConsensusError::UnknownMember(id),
            WireError::Failed(s) => ConsensusError::Failed(s),
        }
    }
}
