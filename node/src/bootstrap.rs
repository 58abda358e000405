//! Forming the cluster on first start, with a majority of its initial members.
//!
//! Every member of `--initial-cluster` that starts on an empty data directory
//! asks the others whether they hold a cluster. Once a majority (itself
//! included) answers that none exists, and none says one does, it calls
//! openraft's `initialize` with a membership built from `--initial-cluster`
//! alone: every voter, with its peer address and no client address yet. The
//! members that initialize all write the same entry (same voters, same
//! addresses, log id 0), so however many of them do it, there is one cluster
//! and one first entry; no single id has to be up for the cluster to form.
//!
//! Client addresses are learned afterwards: each member, once it holds the
//! cluster, has the leader record its own addresses (`register_addresses`).
//! That record doubles as proof that the member has taken part: a member
//! that later starts on an empty data directory and finds itself recorded
//! has lost its volume, and refuses to run (it may have voted or acknowledged
//! entries it no longer holds); one still unrecorded is a member that was not
//! up when the cluster formed, and simply waits for the leader to replicate
//! to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use locker_proto::ClusterAnswer;
use openraft::async_runtime::WatchReceiver;
use openraft::ChangeMembers;

use crate::network::{fetch_peer_info, SECRET_HEADER};
use crate::node::Node;
use crate::types::{NodeId, PeerNode};

/// How often a starting node asks its peers again.
const POLL: Duration = Duration::from_millis(250);

/// What the initial members answered.
enum Census {
    /// A majority (this node included) holds no cluster, and no one does.
    Form,
    /// Some members hold a cluster: their client addresses.
    Formed(Vec<String>),
    /// Too few answers yet.
    Wait,
}

impl Node {
    /// Forms the cluster on first start; a no-op once initialized. An error
    /// means this node must not run (the caller exits).
    pub async fn bootstrap(self: &Arc<Self>) -> anyhow::Result<()> {
        if !self.started_empty {
            tracing::info!("already initialized; rejoining with the data on disk");
        } else if self.cfg.join {
            // Added by an operator, who records its addresses then.
            tracing::info!("waiting to be added to a cluster (--join)");
            self.admitted.send_replace(true);
            return Ok(());
        } else if self.cfg.initial_cluster.is_empty() {
            self.admitted.send_replace(true);
            let me = self.own_addresses();
            tracing::info!("initializing a single-node cluster");
            if let Err(e) = self.raft.initialize(BTreeMap::from([(self.id, me)])).await {
                tracing::warn!(error = %e, "initialize refused");
            }
            return Ok(());
        } else {
            self.form_or_wait().await?;
        }
        self.clone().register_addresses().await;
        Ok(())
    }

    /// Whether the membership holds this node's own current addresses.
    pub fn addresses_recorded(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().get_node(&self.id) == Some(&self.own_addresses())
    }

    fn own_addresses(&self) -> PeerNode {
        PeerNode {
            peer_addr: self.cfg.advertised_peer_addr(),
            client_addr: self.cfg.advertised_client_addr(),
        }
    }

    /// The first membership, from `--initial-cluster` alone so that every
    /// member that initializes writes the very same entry.
    fn initial_membership(&self) -> BTreeMap<NodeId, PeerNode> {
        self.cfg
            .initial_cluster
            .iter()
            .map(|(&id, addr)| {
                let node = PeerNode {
                    peer_addr: addr.clone(),
                    client_addr: String::new(),
                };
                (id, node)
            })
            .collect()
    }

    /// Polls the initial members until this node either initializes (a
    /// majority holds nothing) or knows the cluster exists without it.
    async fn form_or_wait(&self) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            match self.census(attempt).await? {
                Census::Form => {
                    let members = self.initial_membership();
                    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "a majority of the initial members is up and holds no cluster: initializing");
                    self.admitted.send_replace(true);
                    if let Err(e) = self.raft.initialize(members).await {
                        // Another member's entry reached us first: the same one.
                        tracing::info!(error = %e, "initialize refused; the cluster formed already");
                    }
                    return Ok(());
                }
                Census::Formed(client_addrs) => {
                    if self.check_never_joined(&client_addrs).await? {
                        tracing::info!("the cluster formed without this node; waiting for the leader to replicate to it");
                        self.admitted.send_replace(true);
                        return Ok(());
                    }
                }
                Census::Wait => {}
            }
            attempt += 1;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks every other initial member whether it holds a cluster.
    async fn census(&self, attempt: u32) -> anyhow::Result<Census> {
        let mut empty = 1usize; // this node
        let mut formed = Vec::new();
        for (&id, addr) in &self.cfg.initial_cluster {
            if id == self.id {
                continue;
            }
            match fetch_peer_info(&self.http, &self.cfg, addr).await {
                Ok(info) if info.node_id != id => anyhow::bail!(
                    "{addr} answered as node {}, but --initial-cluster says node {id}",
                    info.node_id
                ),
                Ok(info) if info.initialized => formed.push(info.client_addr),
                Ok(_) => empty += 1,
                Err(e) if attempt.is_multiple_of(20) => {
                    tracing::info!(node = id, %addr, error = %e, "waiting for peer")
                }
                Err(_) => {}
            }
        }
        let majority = self.cfg.initial_cluster.len() / 2 + 1;
        Ok(if !formed.is_empty() {
            Census::Formed(formed)
        } else if empty >= majority {
            Census::Form
        } else {
            Census::Wait
        })
    }

    /// Whether the formed cluster has never heard from this node (Ok(true)),
    /// or cannot tell yet (Ok(false)). An error if it has: this node's data
    /// directory is empty, so it lost what it once held, and running would
    /// let it vote or acknowledge again as if it had not.
    async fn check_never_joined(&self, client_addrs: &[String]) -> anyhow::Result<bool> {
        let mut views = 0;
        for addr in client_addrs {
            // A member that has just initialized may not show its first
            // membership yet: no members means it cannot tell either.
            let Some(view) = self
                .cluster_view(addr)
                .await
                .filter(|v| !v.members.is_empty())
            else {
                continue;
            };
            views += 1;
            match view.members.iter().find(|m| m.id == self.id) {
                Some(m) if m.client_addr.is_empty() => {}
                Some(_) => anyhow::bail!(
                    "node {} says the cluster is already initialized and this node has taken \
                     part in it, but this node's data directory {} holds none: refusing to run \
                     on an empty data directory (and never forming a second cluster). Restore \
                     this node's data directory, or remove this node from the cluster and add \
                     it back with a new id and --join",
                    view.node_id,
                    self.cfg.data_dir.display()
                ),
                None => anyhow::bail!(
                    "node {} says the cluster is already initialized and this node is not a \
                     member of it (removed?); this node's data directory {} is empty. Start \
                     it with a new id and --join, then add it",
                    view.node_id,
                    self.cfg.data_dir.display()
                ),
            }
        }
        Ok(views > 0)
    }

    async fn cluster_view(&self, client_addr: &str) -> Option<ClusterAnswer> {
        let resp = self
            .http
            .get(self.cfg.client_url(client_addr, "/v1/cluster"))
            .header(SECRET_HEADER, &self.cfg.cluster_secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json::<ClusterAnswer>().await.ok()
    }

    /// Runs until the membership holds this node's own addresses: the leader
    /// records them itself; a follower asks the leader (the membership route
    /// updates a member it already has). Never fails: it retries.
    pub async fn register_addresses(self: Arc<Self>) {
        let mine = self.own_addresses();
        let mut stopping = self.stopping();
        loop {
            if *stopping.borrow_and_update() {
                return;
            }
            let (current, leader) = {
                let m = self.raft.metrics();
                let m = m.borrow_watched();
                let membership = m.membership_config.membership();
                let leader = m
                    .current_leader
                    .and_then(|l| Some((l, membership.get_node(&l)?.client_addr.clone())));
                (membership.get_node(&self.id).cloned(), leader)
            };
            if current.as_ref() == Some(&mine) {
                tracing::info!("the membership holds this node's addresses");
                return;
            }
            match leader {
                Some((l, _)) if l == self.id => {
                    let change = ChangeMembers::SetNodes(BTreeMap::from([(self.id, mine.clone())]));
                    if let Err(e) = self.raft.change_membership(change, false).await {
                        tracing::debug!(error = %e, "recording own addresses failed; retrying");
                    }
                }
                Some((_, addr)) if current.is_some() && !addr.is_empty() => {
                    self.ask_leader_to_record(&addr, &mine).await
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn ask_leader_to_record(&self, leader_client_addr: &str, mine: &PeerNode) {
        let r = self
            .http
            .post(
                self.cfg
                    .client_url(leader_client_addr, "/v1/cluster/members"),
            )
            .header(SECRET_HEADER, &self.cfg.cluster_secret)
            .json(&serde_json::json!({"id": self.id, "peer_addr": mine.peer_addr}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "asking the leader to record our addresses failed; retrying");
        }
    }
}
