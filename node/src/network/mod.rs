//! Raft traffic between nodes: HTTP on the peer address, bodies in bincode,
//! every request carrying the cluster secret and the id of the node it means
//! to reach.

mod client;
mod server;

pub use client::PeerNetwork;
pub use server::{decode_message, peer_router, same_secret, PeerInfo, PeerState};

/// Header carrying the shared cluster secret on every peer request.
pub const SECRET_HEADER: &str = "x-locker-cluster-secret";
/// Header naming the node id a peer request is meant for, so a request that
/// reaches the wrong process (a reused address) is refused, not obeyed.
pub const TARGET_HEADER: &str = "x-locker-target-id";
/// Header carrying the peer protocol version ([`PEER_PROTOCOL`]) on every
/// peer request and answer. A request without it comes from the release
/// before protocols were numbered (protocol 0, whose bodies are protocol 1's
/// byte for byte, except snapshot data: see `PeerClient::full_snapshot`). A
/// request of a newer protocol is refused with 400 and a message naming both
/// versions, logged at warn, rather than failing somewhere in bincode.
pub const PROTOCOL_HEADER: &str = "x-locker-protocol";
/// Header carrying the sender's cluster id once it knows it (the first
/// membership's hash, `store::identity::cluster_id`). A receiver that knows
/// its own and finds another refuses the request (409): a node of another
/// cluster sharing the secret (a reused address, a wrong `--initial-cluster`
/// or `cluster add`) must neither feed nor take this node's log. A node that
/// does not know its id yet (it joined from a snapshot, or was restored)
/// sends none and checks none.
pub const CLUSTER_HEADER: &str = "x-locker-cluster-id";

pub use crate::store::format::PEER_PROTOCOL;

use crate::config::NodeConfig;

/// Asks the node at `peer_addr` who it is (used when forming or growing a
/// cluster), with this node's cluster secret, over https with peer TLS.
pub async fn fetch_peer_info(
    http: &reqwest::Client,
    cfg: &NodeConfig,
    peer_addr: &str,
) -> Result<PeerInfo, String> {
    let resp = http
        .get(format!("{}://{peer_addr}/peer/info", cfg.peer_scheme()))
        .header(SECRET_HEADER, &cfg.cluster_secret)
        // The answer's JSON is alike in every protocol; 1 is accepted by
        // every release since protocols were numbered.
        .header(PROTOCOL_HEADER, 1)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("peer answered {}", resp.status()));
    }
    resp.json::<PeerInfo>().await.map_err(|e| e.to_string())
}
