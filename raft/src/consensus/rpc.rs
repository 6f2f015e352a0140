//! The cluster RPCs: their names, bodies, the receiving side (`Consensus::rpc`) and the calling
//! side of our own requests (Raft's are sent by [`super::network`]).
//!
//! Every request body is a JSON envelope, `{"cluster": "<sender's cluster id>" | null, "body":
//! <the request>}`, so that a node can refuse a request from another cluster before acting on it
//! (see [`super::cluster::admission`]). Raft RPCs reply openraft's `Result<Response,
//! RaftError>`; ours reply `Result<T, WireError>`. `rpc` itself fails for an unknown name, a
//! malformed body or a request of another cluster (`ForeignCluster`), which the node's HTTP route
//! turns into a 4xx (403 for `ForeignCluster`), and when a pristine node cannot keep the id it
//! just learned.

use super::Shared;
use super::error::{ConsensusError, WireError};
use super::transport::{Transport, TransportError};
use super::types::TypeConfig;
use crate::{MemberState, Membership, NodeId};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Raft log replication and heartbeats.
pub const APPEND: &str = "append";
/// Raft elections.
pub const VOTE: &str = "vote";
/// Raft snapshot transfer to a follower that is too far behind.
pub const SNAPSHOT: &str = "snapshot";
/// A node asks to be a member (forwarded to the leader).
pub const JOIN: &str = "join";
/// A member leaves for good (forwarded to the leader).
pub const LEAVE: &str = "leave";
/// A member's state is set (forwarded to the leader).
pub const PROPOSE: &str = "propose";
/// The leader's failure detector checks that a member is alive.
pub const PROBE: &str = "probe";

/// Every name [`super::Consensus::rpc`] serves, i.e. every `POST /internal/raft/{name}` route.
pub const RPC_NAMES: [&str; 7] = [APPEND, VOTE, SNAPSHOT, JOIN, LEAVE, PROPOSE, PROBE];

/// `forwarded` marks a request a follower passed on to the leader, so it is never passed on
/// twice (two nodes with stale leader hints would bounce it forever).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub session_addr: String,
    pub weight: u32,
    #[serde(default)]
    pub forwarded: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LeaveRequest {
    pub id: NodeId,
    #[serde(default)]
    pub forwarded: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ProposeRequest {
    pub id: NodeId,
    pub state: MemberState,
    #[serde(default)]
    pub forwarded: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProbeRequest {
    pub from: NodeId,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProbeReply {
    /// Lets the prober notice that another node now answers at a member's address.
    pub id: NodeId,
    /// Whether this node belongs to a Raft group (has a membership config).
    pub in_cluster: bool,
    /// This node's cluster id, if it has one: a starting node refuses to run beside another
    /// cluster, and the failure detector does not count its answer as a member's.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// What every request travels in: the sender's cluster id beside the request itself.
#[derive(Serialize, Deserialize)]
struct Envelope<C, T> {
    cluster: Option<C>,
    body: T,
}

type Reply<T> = Result<T, WireError>;

pub(crate) async fn serve(
    shared: &Shared,
    name: &str,
    body: &[u8],
) -> Result<Vec<u8>, ConsensusError> {
    match name {
        APPEND => {
            let req: AppendEntriesRequest<TypeConfig> = open(shared, name, body).await?.1;
            let sender = req.vote.leader_id().voted_for();
            let reply = shared.raft.append_entries(req).await;
            // Anything but a higher-vote rejection means the sender is the current leader.
            if let (Ok(r), Some(leader)) = (&reply, sender)
                && !matches!(r, AppendEntriesResponse::HigherVote(_))
            {
                shared.lease.heard_from_leader(leader);
            }
            encode(&reply)
        }
        VOTE => encode(&shared.raft.vote(open(shared, name, body).await?.1).await),
        SNAPSHOT => {
            let req = open(shared, name, body).await?.1;
            encode(&shared.raft.install_snapshot(req).await)
        }
        JOIN => {
            // A follower passes the join on with the id of whoever asked, not its own: the
            // leader must judge the real sender.
            let (origin, req) = open(shared, name, body).await?;
            encode(&wire(shared.join(req, origin.as_deref()).await))
        }
        LEAVE => encode(&wire(shared.leave(open(shared, name, body).await?.1).await)),
        PROPOSE => encode(&wire(
            shared.set_state(open(shared, name, body).await?.1).await,
        )),
        PROBE => {
            let req: ProbeRequest = open(shared, name, body).await?.1;
            tracing::trace!(from = %req.from, "probed");
            encode(&Reply::Ok(shared.probe_reply()))
        }
        _ => Err(ConsensusError::UnknownRpc(name.to_owned())),
    }
}

/// Decodes a request and admits it: returns the sender's cluster id and the request, or
/// refuses a request of another cluster (after keeping the leader's id on a pristine node).
async fn open<T: DeserializeOwned>(
    shared: &Shared,
    name: &str,
    body: &[u8],
) -> Result<(Option<String>, T), ConsensusError> {
    let envelope: Envelope<String, T> = decode(name, body)?;
    shared
        .cluster
        .admit(name, envelope.cluster.as_deref())
        .await?;
    Ok((envelope.cluster, envelope.body))
}

/// Wraps a request in its envelope, stamped with `cluster`.
pub(crate) fn seal<T: Serialize>(cluster: Option<&str>, body: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Envelope { cluster, body })
}

/// Sends one of our own RPCs on behalf of `cluster` and decodes its reply, within `deadline`.
pub(crate) async fn call<Req, Resp>(
    transport: &dyn Transport,
    cluster: Option<&str>,
    addr: &str,
    name: &str,
    req: &Req,
    deadline: Duration,
) -> Result<Resp, ConsensusError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let body = seal(cluster, req).map_err(|e| ConsensusError::Failed(e.to_string()))?;
    let bytes = match tokio::time::timeout(deadline, transport.call(addr, name, body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e @ TransportError::Refused(_))) => {
            return Err(ConsensusError::Refused(format!("{name} to {addr}: {e}")));
        }
        Ok(Err(e)) => {
            return Err(ConsensusError::Unavailable(format!(
                "{name} to {addr}: {e}"
            )));
        }
        Err(_) => {
            return Err(ConsensusError::Unavailable(format!(
                "{name} to {addr} timed out"
            )));
        }
    };
    let reply: Reply<Resp> = serde_json::from_slice(&bytes)
        .map_err(|e| ConsensusError::Unavailable(format!("{name} to {addr}: bad reply: {e}")))?;
    reply.map_err(ConsensusError::from)
}

fn wire(result: Result<Membership, ConsensusError>) -> Reply<Membership> {
    result.map_err(WireError::from)
}

fn decode<T: DeserializeOwned>(name: &str, body: &[u8]) -> Result<T, ConsensusError> {
    serde_json::from_slice(body).map_err(|e| ConsensusError::BadRequest {
        rpc: name.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ConsensusError> {
    serde_json::to_vec(value).map_err(|e| ConsensusError::Failed(e.to_string()))
}
