//! The sending side of Raft's own RPCs (openraft's `RaftNetworkFactory`/`RaftNetwork`) over a
//! [`Transport`]; the receiving side is [`super::rpc`]. Each request goes in the same envelope
//! as ours, stamped with this node's cluster id, so that a node of another cluster refuses it.

use super::cluster::ClusterId;
use super::rpc;
use super::transport::{Transport, TransportError};
use super::types::TypeConfig;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

type Error<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

pub(crate) struct Network {
    transport: Arc<dyn Transport>,
    cluster: Arc<ClusterId>,
    backoff: Duration,
}

impl Network {
    /// `backoff` is how long replication to an unreachable peer pauses before retrying: short,
    /// so that a healed partition or a restarted pod is caught up within a heartbeat or two.
    pub(crate) fn new(
        transport: Arc<dyn Transport>,
        cluster: Arc<ClusterId>,
        backoff: Duration,
    ) -> Network {
        Network {
            transport,
            cluster,
            backoff,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            transport: self.transport.clone(),
            cluster: self.cluster.clone(),
            target,
            addr: node.addr.clone(),
            backoff: self.backoff,
        }
    }
}

pub(crate) struct Connection {
    transport: Arc<dyn Transport>,
    /// Read at every call: a node only learns its id once it hears from the cluster.
    cluster: Arc<ClusterId>,
    target: u64,
    addr: String,
    backoff: Duration,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        name: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Error<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = rpc::seal(self.cluster.get(), req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = self.transport.call(&self.addr, name, body);
        let bytes = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e @ (TransportError::Unreachable(_) | TransportError::Refused(_)))) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => return Err(RPCError::Network(NetworkError::new(&e))),
            Err(_) => {
                let e = TransportError::Timeout;
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let reply: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Error> {
        self.call(rpc::APPEND, &req, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Error<InstallSnapshotError>> {
        self.call(rpc::SNAPSHOT, &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Error> {
        self.call(rpc::VOTE, &req, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}
