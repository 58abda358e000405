//! Raft traffic between nodes: HTTP on the peer address, bodies in bincode,
//! every request carrying the cluster secret and the id of the node it means
//! to reach.

mod client;
mod server;

pub use client::PeerNetwork;
pub use server::{peer_router, same_secret, PeerInfo, PeerState};

/// Header carrying the shared cluster secret on every peer request.
pub const SECRET_HEADER: &str = "x-locker-cluster-secret";
/// Header naming the node id a peer request is meant for, so a request that
/// reaches the wrong process (a reused address) is refused, not obeyed.
pub const TARGET_HEADER: &str = "x-locker-target-id";

/// Asks the node at `peer_addr` who it is (used when forming or growing a cluster).
pub async fn fetch_peer_info(
    http: &reqwest::Client,
    peer_addr: &str,
    secret: &str,
) -> Result<PeerInfo, String> {
    let resp = http
        .get(format!("http://{peer_addr}/peer/info"))
        .header(SECRET_HEADER, secret)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("peer answered {}", resp.status()));
    }
    resp.json::<PeerInfo>().await.map_err(|e| e.to_string())
}
