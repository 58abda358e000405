//! The sending side: openraft's network factory over reqwest.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CLUSTER_HEADER, PEER_PROTOCOL, PROTOCOL_HEADER, SECRET_HEADER, TARGET_HEADER};
use crate::store::Marker;
use crate::tls::NodeTls;
use crate::types::{NodeId, PeerNode, Snapshot, TypeConfig, Vote};

/// Creates one [`PeerClient`] per target; all share one connection pool.
#[derive(Clone)]
pub struct PeerNetwork {
    http: reqwest::Client,
    secret: Arc<str>,
    self_id: NodeId,
    /// `https` with peer TLS, else `http`.
    scheme: &'static str,
    /// Knows this node's cluster id, sent with every RPC.
    marker: Arc<Marker>,
}

impl PeerNetwork {
    /// The Raft network of node `self_id`; every RPC carries `secret`, which
    /// peers demand, and the target's id, which peers check. With peer TLS
    /// in `tls`, peers are reached over https with mutual TLS.
    pub fn new(
        self_id: NodeId,
        secret: &str,
        tls: &NodeTls,
        marker: Arc<Marker>,
    ) -> anyhow::Result<Self> {
        let http = tls
            .http_builder()
            .map_err(anyhow::Error::msg)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(PeerNetwork {
            http,
            secret: secret.into(),
            self_id,
            scheme: if tls.outgoing.is_some() {
                "https"
            } else {
                "http"
            },
            marker,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
            base: format!("{}://{}", self.scheme, node.peer_addr),
            peer_protocol: AtomicU32::new(UNKNOWN_PROTOCOL),
        }
    }
}

pub struct PeerClient {
    net: PeerNetwork,
    target: NodeId,
    base: String,
    /// The target's protocol, from its last answer's [`PROTOCOL_HEADER`]
    /// (none: protocol 0); [`UNKNOWN_PROTOCOL`] before any answer.
    peer_protocol: AtomicU32,
}

const UNKNOWN_PROTOCOL: u32 = u32::MAX;

enum Failure {
    Unreachable(String),
    Timeout,
    Network(String),
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Failure> {
        let body = bincode::serialize(req).map_err(|e| Failure::Network(e.to_string()))?;
        let mut rb = self
            .net
            .http
            .post(format!("{}{path}", self.base))
            .header(SECRET_HEADER, &*self.net.secret)
            .header(TARGET_HEADER, self.target.to_string())
            .header(PROTOCOL_HEADER, PEER_PROTOCOL)
            .header("content-type", "application/octet-stream");
        if let Some(cluster) = self.net.marker.cluster_id() {
            rb = rb.header(CLUSTER_HEADER, cluster);
        }
        let sent = rb.timeout(timeout).body(body).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(Failure::Timeout),
            Err(e) if e.is_connect() => return Err(Failure::Unreachable(e.to_string())),
            Err(e) => return Err(Failure::Network(e.to_string())),
        };
        let status = resp.status();
        if status.is_success() {
            // Only a served answer says what the peer speaks (a refusal
            // may come before its protocol header is added).
            let protocol = resp
                .headers()
                .get(PROTOCOL_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            self.peer_protocol.store(protocol, Ordering::Relaxed);
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(Failure::Timeout),
            Err(e) => return Err(Failure::Network(e.to_string())),
        };
        if !status.is_success() {
            // Wrong secret or wrong node: treat as unreachable so openraft backs off.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Err(Failure::Unreachable(format!(
                "peer answered {status}: {text}"
            )));
        }
        let answer: Result<Resp, String> =
            super::decode_message(&bytes).map_err(|e| Failure::Network(e.to_string()))?;
        answer.map_err(Failure::Network)
    }

    fn rpc_error(&self, f: Failure, action: RPCTypes, timeout: Duration) -> RPCError<TypeConfig> {
        match f {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            Failure::Network(m) => RPCError::Network(NetworkError::from_string(m)),
            Failure::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.net.self_id,
                target: self.target,
                timeout,
            }),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        self.call("/raft/append", &rpc, ttl)
            .await
            .map_err(|f| self.rpc_error(f, RPCTypes::AppendEntries, ttl))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        self.call("/raft/vote", &rpc, ttl)
            .await
            .map_err(|f| self.rpc_error(f, RPCTypes::Vote, ttl))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        self.call("/raft/pre-vote", &rpc, ttl)
            .await
            .map_err(|f| self.rpc_error(f, RPCTypes::Vote, ttl))
    }

    /// Without it openraft's default refuses, and a transfer only ends by
    /// election timeout, to whichever node wins (`POST /v1/cluster/leader`).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        self.call("/raft/transfer-leader", &req, ttl)
            .await
            .map_err(|f| self.rpc_error(f, RPCTypes::TransferLeader, ttl))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let mut data = snapshot.snapshot.as_slice();
        // A protocol 0 peer (the release before versions, during a rolling
        // upgrade) reads only bare images: send it the same image without
        // the header. So does a peer not heard from yet: openraft sends a
        // new learner behind a purged log a snapshot first, and format 0
        // data is read by every release. A slice, not a copy: bincode
        // encodes `&[u8]` as it does the `Vec<u8>` the peer decodes.
        let protocol = self.peer_protocol.load(Ordering::Relaxed);
        if protocol == 0 || protocol == UNKNOWN_PROTOCOL {
            if let Some(bare) = crate::store::format::snapshot_as_format_0(data) {
                data = bare;
            }
        }
        let req = (vote, snapshot.meta, data);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call("/raft/snapshot", &req, ttl) => r.map_err(|f| match self.rpc_error(f, RPCTypes::InstallSnapshot, ttl) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(e) => StreamingError::Network(NetworkError::from_string(e.to_string())),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `full_snapshot` sends the image as a borrowed slice; the peer port
    /// decodes a `Vec<u8>` (`network::server::snapshot`).
    #[test]
    fn a_sent_slice_decodes_as_the_vec_the_peer_expects() {
        let data = vec![0u8, 1, 2, 255];
        let sent = bincode::serialize(&(7u64, data.as_slice())).expect("encode");
        let got: (u64, Vec<u8>) = bincode::deserialize(&sent).expect("decode");
        assert_eq!(got, (7, data));
    }
}
