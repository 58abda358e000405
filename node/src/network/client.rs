//! The sending side: openraft's network factory over reqwest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Each peer's protocol, from its latest answer that said anything of
    /// it (see [`Learned`]; shared by every [`PeerClient`]): what
    /// [`PeerNetwork::may_append`] and [`PeerNetwork::all_speak`] read.
    heard: Arc<Mutex<HashMap<NodeId, u32>>>,
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
            heard: Arc::default(),
        })
    }

    /// Whether this node, leading, may append entries that only peers of
    /// protocol `version` read: no member of `members` has answered in an
    /// older protocol, and the voters that answered in `version` or newer,
    /// with this node, are a majority of `voters` (such entries commit,
    /// whoever has not answered yet). A member of an older release thus
    /// keeps following the log; one down since this node started does not
    /// hold the newer entries back.
    pub fn may_append(&self, voters: &[NodeId], members: &[NodeId], version: u32) -> bool {
        match self.heard.lock() {
            Ok(heard) => may_append(&heard, self.self_id, voters, members, version),
            Err(_) => false,
        }
    }

    /// Whether every member of `members` but this node has answered in
    /// protocol `version` or newer. Stricter than [`PeerNetwork::may_append`]
    /// for entries that only save work (batches): a member not heard from
    /// yet may be of an older release. One that cannot decode an entry
    /// answers 400 with its protocol header (recorded: see
    /// [`Learned::Speaks`]), and stays behind on that entry until a
    /// snapshot past it reaches it.
    pub fn all_speak(&self, members: &[NodeId], version: u32) -> bool {
        match self.heard.lock() {
            Ok(heard) => all_speak(&heard, self.self_id, members, version),
            Err(_) => false,
        }
    }
}

/// [`PeerNetwork::all_speak`] given the protocols `heard` from peers.
fn all_speak(
    heard: &HashMap<NodeId, u32>,
    self_id: NodeId,
    members: &[NodeId],
    version: u32,
) -> bool {
    members
        .iter()
        .all(|id| *id == self_id || heard.get(id).is_some_and(|v| *v >= version))
}

/// [`PeerNetwork::may_append`] given the protocols `heard` from peers.
fn may_append(
    heard: &HashMap<NodeId, u32>,
    self_id: NodeId,
    voters: &[NodeId],
    members: &[NodeId],
    version: u32,
) -> bool {
    let older = |id: &NodeId| *id != self_id && heard.get(id).is_some_and(|v| *v < version);
    if members.iter().any(older) {
        return false;
    }
    let speak = voters
        .iter()
        .filter(|id| **id == self_id || heard.get(*id).is_some_and(|v| *v >= version))
        .count();
    speak * 2 > voters.len()
}

/// The protocol a request to a peer of `protocol` is labelled with: the
/// peer's own when it is older than this build's (the bodies sent to it are
/// of its protocol: see `PeerClient::full_snapshot` and `Node::propose`), 1
/// before it has answered (every release since protocols were numbered
/// accepts 1; the release before ignores the header), and 1 too after a
/// header-less 400 (recorded as [`REFUSED_PROTOCOL`], 0).
fn request_protocol(protocol: u32) -> u32 {
    if protocol == UNKNOWN_PROTOCOL {
        1
    } else {
        PEER_PROTOCOL.min(protocol.max(1))
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
    /// The target's protocol, from its latest served answer's
    /// [`PROTOCOL_HEADER`] (none: protocol 0); [`UNKNOWN_PROTOCOL`] before
    /// any answer; [`REFUSED_PROTOCOL`] after a 400 without the header.
    peer_protocol: AtomicU32,
}

const UNKNOWN_PROTOCOL: u32 = u32::MAX;

/// What a 400 without [`PROTOCOL_HEADER`] records: older than anything
/// this build sends only to newer peers, so neither `Op::As` entries
/// ([`PeerNetwork::may_append`] of 2) nor batches ([`PeerNetwork::all_speak`]
/// of 3) go to that peer's cluster, and the next request is labelled 1
/// ([`request_protocol`]), which every numbered release accepts and the
/// release before ignores; its served answer records the real protocol.
const REFUSED_PROTOCOL: u32 = 0;

/// What one answer says of a peer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learned {
    /// A served answer: the peer speaks this (no header: protocol 0). It
    /// replaces what was known, lower or higher: a peer may be started on
    /// an older release with its data, and must then be sent only what
    /// that release reads. So does a 400 with the header: a numbered
    /// release adds it to every answer past its label check
    /// (`server::authenticate`), a 400 for an entry it cannot decode
    /// included; a protocol 3 peer's 400 for another reason thus changes
    /// nothing.
    Speaks(u32),
    /// A 400 without the header: the label check refused the request, a
    /// label newer than the peer's own (a peer started on an older release
    /// with its data). Its protocol is older than what was known, but not
    /// named: [`REFUSED_PROTOCOL`] is recorded until a served answer names
    /// it, so nothing is sent meanwhile that only a newer peer reads.
    Refused,
    /// Any other refusal (secret, target, cluster, not admitted yet) says
    /// nothing of the protocol.
    Nothing,
}

/// What an answer of `status`, with protocol header `header`, says.
fn learned(status: reqwest::StatusCode, header: Option<&reqwest::header::HeaderValue>) -> Learned {
    let protocol = header.and_then(|v| v.to_str().ok()?.parse().ok());
    if status.is_success() {
        return Learned::Speaks(protocol.unwrap_or(0));
    }
    if status == reqwest::StatusCode::BAD_REQUEST {
        return match protocol {
            Some(p) => Learned::Speaks(p),
            None => Learned::Refused,
        };
    }
    Learned::Nothing
}

/// Records in `heard` what an answer of `target` said.
fn record(heard: &mut HashMap<NodeId, u32>, target: NodeId, learned: Learned) {
    match learned {
        Learned::Speaks(p) => {
            heard.insert(target, p);
        }
        Learned::Refused => {
            heard.insert(target, REFUSED_PROTOCOL);
        }
        Learned::Nothing => {}
    }
}

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
            .header(
                PROTOCOL_HEADER,
                request_protocol(self.peer_protocol.load(Ordering::Relaxed)),
            )
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
        self.remember(learned(status, resp.headers().get(PROTOCOL_HEADER)));
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

    /// Keeps what this answer said of the target's protocol, here and in
    /// the network's shared record.
    fn remember(&self, learned: Learned) {
        let protocol = match learned {
            Learned::Nothing => return,
            Learned::Speaks(p) => p,
            Learned::Refused => REFUSED_PROTOCOL,
        };
        self.peer_protocol.store(protocol, Ordering::Relaxed);
        if let Ok(mut heard) = self.net.heard.lock() {
            record(&mut heard, self.target, learned);
        }
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
        let protocol = self.peer_protocol.load(Ordering::Relaxed);
        let data = snapshot_for(protocol, snapshot.snapshot.as_slice());
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

/// The snapshot data sent to a peer of `protocol`. A peer of protocol 0 or
/// 1 (an older release, during a rolling upgrade) reads snapshot data of
/// format 0 or 1, not 2: it gets the same image without the header, format
/// 0, which it reads past the tokens. So does a peer not heard from yet:
/// openraft sends a new learner behind a purged log a snapshot first, and
/// format 0 data is read by every release. A slice, not a copy: bincode
/// encodes `&[u8]` as it does the `Vec<u8>` the peer decodes.
fn snapshot_for(protocol: u32, data: &[u8]) -> &[u8] {
    if protocol < 2 || protocol == UNKNOWN_PROTOCOL {
        if let Some(bare) = crate::store::format::snapshot_as_format_0(data) {
            return bare;
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::{
        all_speak, learned, may_append, record, request_protocol, snapshot_for, Learned,
        UNKNOWN_PROTOCOL,
    };
    use crate::store::format::{encode_snapshot, SNAPSHOT_MAGIC};
    use reqwest::header::HeaderValue;
    use reqwest::StatusCode;
    use std::collections::HashMap;

    /// Batches go only to a membership whose every other member has
    /// answered in protocol 3: one not heard from yet, or older, stops them.
    #[test]
    fn batches_wait_for_every_member_to_answer_in_protocol_3() {
        let members = [1, 2, 3, 4];
        let heard = |pairs: &[(u64, u32)]| pairs.iter().copied().collect();
        let cases: [(&[(u64, u32)], bool); 5] = [
            (&[(2, 3), (3, 3), (4, 3)], true),
            (&[(2, 3), (3, 4), (4, 3)], true),
            (&[(2, 3), (3, 3)], false), // learner 4 never answered
            (&[(2, 3), (3, 2), (4, 3)], false),
            (&[], false),
        ];
        for (pairs, want) in cases {
            assert_eq!(all_speak(&heard(pairs), 1, &members, 3), want, "{pairs:?}");
        }
        assert!(all_speak(&heard(&[]), 1, &[1], 3), "a single node");
    }

    /// A served answer's header is the peer's protocol, lower than before
    /// too; so is a 400's (the peer's label check passed: it refused what
    /// was sent for another reason); a 400 without it is the label check's
    /// refusal; other refusals say nothing.
    #[test]
    fn each_answer_says_what_the_peer_speaks() {
        let two = HeaderValue::from_static("2");
        assert_eq!(learned(StatusCode::OK, Some(&two)), Learned::Speaks(2));
        assert_eq!(learned(StatusCode::OK, None), Learned::Speaks(0));
        let junk = HeaderValue::from_static("x");
        assert_eq!(learned(StatusCode::OK, Some(&junk)), Learned::Speaks(0));
        assert_eq!(
            learned(StatusCode::BAD_REQUEST, Some(&two)),
            Learned::Speaks(2)
        );
        let three = HeaderValue::from_static("3");
        assert_eq!(
            learned(StatusCode::BAD_REQUEST, Some(&three)),
            Learned::Speaks(3)
        );
        for other in [401, 409, 421, 500, 503] {
            let status = StatusCode::from_u16(other).expect("a status");
            assert_eq!(learned(status, Some(&two)), Learned::Nothing, "{other}");
        }
    }

    /// Node 3 speaks protocol 3, is started on the release of protocol 2
    /// with its data, then upgraded again. Its 400 without a header (it
    /// refuses label 3) stops batches and `Op::As` entries too (its release
    /// is not named: it may be older than 2) and sends label 1; its next
    /// served answer, in protocol 2, keeps batches stopped while the other
    /// entries go on; protocol 3 again brings them back.
    #[test]
    fn a_peer_rolled_back_is_sent_only_what_it_reads_until_it_speaks_3_again() {
        let (voters, members) = ([1, 2, 3], [1, 2, 3]);
        let mut heard: HashMap<u64, u32> = [(2, 3), (3, 3)].into_iter().collect();
        assert!(all_speak(&heard, 1, &members, 3), "all upgraded");
        record(&mut heard, 3, learned(StatusCode::BAD_REQUEST, None));
        assert!(
            !all_speak(&heard, 1, &members, 3),
            "batches stop at the 400"
        );
        assert!(
            !may_append(&heard, 1, &voters, &members, 2),
            "Op::As waits for the protocol to be named"
        );
        let refused = *heard.get(&3).expect("the 400 is recorded");
        assert_eq!(request_protocol(refused), 1, "label 1 next");
        let two = HeaderValue::from_static("2");
        record(&mut heard, 3, learned(StatusCode::OK, Some(&two)));
        assert_eq!(heard.get(&3), Some(&2), "lowered to what it answered");
        assert!(!all_speak(&heard, 1, &members, 3));
        assert!(may_append(&heard, 1, &voters, &members, 2));
        let unavailable = learned(StatusCode::SERVICE_UNAVAILABLE, None);
        record(&mut heard, 3, unavailable);
        assert_eq!(heard.get(&3), Some(&2), "a 503 changes nothing");
        let three = HeaderValue::from_static("3");
        record(&mut heard, 3, learned(StatusCode::OK, Some(&three)));
        assert!(all_speak(&heard, 1, &members, 3), "upgraded again");
    }

    /// Node 3 answered in protocol 1 (an older release: entries are bare).
    /// A 400 without a header, from whichever client of the node's (a
    /// heartbeat still labelled 3, say), must not make it look newer: it
    /// stays closed to `Op::As` and batches, and labelled 1, until a served
    /// answer names its protocol.
    #[test]
    fn a_headerless_400_never_opens_what_an_older_answer_closed() {
        let (voters, members) = ([1, 2, 3], [1, 2, 3]);
        let mut heard: HashMap<u64, u32> = [(2, 3), (3, 1)].into_iter().collect();
        assert!(!may_append(&heard, 1, &voters, &members, 2));
        for _ in 0..2 {
            record(&mut heard, 3, learned(StatusCode::BAD_REQUEST, None));
            assert!(
                !may_append(&heard, 1, &voters, &members, 2),
                "a protocol 1 peer gets no Op::As"
            );
            assert!(!all_speak(&heard, 1, &members, 3), "nor batches");
            let now = *heard.get(&3).expect("still recorded");
            assert_eq!(request_protocol(now), 1);
            assert_eq!(snapshot_for(now, &[]), &[] as &[u8]);
        }
        let one = HeaderValue::from_static("1");
        record(&mut heard, 3, learned(StatusCode::OK, Some(&one)));
        assert_eq!(heard.get(&3), Some(&1), "the served answer names it");
    }

    /// A protocol 3 peer's 400 for another reason (a body it refused) comes
    /// with its header: batches go on.
    #[test]
    fn a_400_with_the_header_keeps_batching_with_a_protocol_3_peer() {
        let members = [1, 2, 3];
        let mut heard: HashMap<u64, u32> = [(2, 3), (3, 3)].into_iter().collect();
        let three = HeaderValue::from_static("3");
        record(
            &mut heard,
            3,
            learned(StatusCode::BAD_REQUEST, Some(&three)),
        );
        assert_eq!(heard.get(&3), Some(&3));
        assert!(all_speak(&heard, 1, &members, 3), "batches go on");
        // A protocol 2 peer's 400 for a batch it cannot decode names 2.
        let two = HeaderValue::from_static("2");
        record(&mut heard, 3, learned(StatusCode::BAD_REQUEST, Some(&two)));
        assert_eq!(heard.get(&3), Some(&2));
        assert!(!all_speak(&heard, 1, &members, 3), "batches stop");
        assert!(may_append(&heard, 1, &[1, 2, 3], &members, 2));
    }

    /// Leader 1 of voters 1, 2, 3 (and learner 4) appends protocol 2
    /// entries only when no member answered in an older protocol and
    /// protocol 2 voters (itself included) are a majority.
    #[test]
    fn newer_entries_wait_for_every_older_member_and_a_majority() {
        let voters = [1, 2, 3];
        let members = [1, 2, 3, 4];
        let heard = |pairs: &[(u64, u32)]| pairs.iter().copied().collect();
        let cases: [(&[(u64, u32)], bool); 7] = [
            (&[(2, 2), (3, 2), (4, 2)], true),
            (&[(2, 2)], true),                  // 3 and 4 down since the start
            (&[], false),                       // no majority heard yet
            (&[(2, 2), (3, 1)], false),         // 3 runs the older release
            (&[(2, 0), (3, 2)], false),         // 2 runs the release before
            (&[(2, 2), (3, 2), (4, 1)], false), // an older learner
            (&[(2, 1), (3, 1)], false),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                may_append(&heard(pairs), 1, &voters, &members, 2),
                want,
                "{pairs:?}"
            );
        }
        assert!(may_append(&heard(&[]), 1, &[1], &[1], 2), "a single node");
        // Batches (protocol 3) wait for the protocol 2 nodes of an upgrade.
        assert!(!may_append(
            &heard(&[(2, 3), (3, 2)]),
            1,
            &voters,
            &[1, 2, 3],
            3
        ));
        assert!(may_append(
            &heard(&[(2, 3), (3, 3)]),
            1,
            &voters,
            &[1, 2, 3],
            3
        ));
    }

    /// A peer of protocol 1 (the release before protocol 2, which refuses
    /// snapshot data of format 2 and any newer protocol label) gets format 0
    /// data and requests labelled 1; a peer of this protocol gets format 2.
    #[test]
    fn an_older_peer_gets_what_it_reads() {
        let table = crate::core::LockTable::new();
        let data = encode_snapshot(&table.to_image()).expect("encode");
        assert!(data.starts_with(SNAPSHOT_MAGIC));
        for older in [0, 1, UNKNOWN_PROTOCOL] {
            let sent = snapshot_for(older, &data);
            assert!(!sent.starts_with(SNAPSHOT_MAGIC), "protocol {older}");
            assert_eq!(request_protocol(older), 1, "protocol {older}");
        }
        assert_eq!(snapshot_for(2, &data), data.as_slice());
        assert_eq!(request_protocol(2), 2);
        assert_eq!(snapshot_for(3, &data), data.as_slice());
        assert_eq!(request_protocol(3), 3);
        assert_eq!(request_protocol(7), 3);
    }

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
