//! `locker cluster [add|remove|promote]`: the cluster's status, and the
//! membership changes an operator makes (replacing a machine), over the
//! node's membership routes. Every change needs the cluster secret.

use clap::{Args, Subcommand};
use locker_client::{Client, ClusterInfo};

/// `locker cluster`: without a subcommand, the answering node's view.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: Option<ClusterAction>,
}

/// Membership changes (see "Replacing a node" in docs/operations.md).
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Add node ID, started empty with `locker-node --join` and its peer
    /// port at PEER_ADDR: it joins as a learner, catches up, then becomes a
    /// voter. Answers once it votes. Adding a member again records the
    /// addresses it answers with now and makes a learner a voter.
    Add {
        /// The new node's id (never the id of a node that was removed).
        id: u64,
        /// Its peer address (host:port of its --peer-addr).
        peer_addr: String,
        #[command(flatten)]
        secret: Secret,
    },
    /// Remove node ID (voter or learner) from the cluster.
    Remove {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        secret: Secret,
    },
    /// Make learner ID a voter (e.g. after an `add` whose promotion failed).
    Promote {
        /// The learner's id.
        id: u64,
        #[command(flatten)]
        secret: Secret,
    },
}

/// The cluster secret, from the environment (preferred: a flag is visible
/// to every user of the machine in `ps`) or a flag. Its value is never
/// shown by --help.
#[derive(Args, Debug)]
pub struct Secret {
    /// The cluster secret the nodes were started with.
    #[arg(
        long = "cluster-secret",
        env = "LOCKER_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    cluster_secret: String,
}

/// Runs a membership change through the client's failover (any node
/// forwards a change to the leader; a retried add or promote is harmless);
/// prints the new cluster view. Exit 0 when done, 1 when refused or the
/// cluster is unreachable.
pub async fn run(action: ClusterAction, client: &Client, json: bool) -> Result<u8, String> {
    let view = match action {
        ClusterAction::Add {
            id,
            peer_addr,
            secret,
        } => {
            client
                .add_member(id, &peer_addr, &secret.cluster_secret)
                .await
        }
        ClusterAction::Remove { id, secret } => {
            client.remove_member(id, &secret.cluster_secret).await
        }
        ClusterAction::Promote { id, secret } => {
            let peer_addr = learner_peer_addr(client, id).await?;
            client
                .add_member(id, &peer_addr, &secret.cluster_secret)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    if json {
        super::print_json(&view);
    } else {
        super::print_cluster(&view);
    }
    Ok(0)
}

/// The peer address the cluster records for learner `id`.
async fn learner_peer_addr(client: &Client, id: u64) -> Result<String, String> {
    let view: ClusterInfo = client.cluster().await.map_err(|e| e.to_string())?;
    match view.members.iter().find(|m| m.id == id) {
        None => Err(format!("node {id} is not a member of the cluster")),
        Some(m) if m.voter => Err(format!("node {id} is a voter already")),
        Some(m) => Ok(m.peer_addr.clone()),
    }
}
