//! `locker cluster [add|remove|promote]`: the cluster's status, and the
//! membership changes an operator makes (replacing a machine), over the
//! node's membership routes. Every change needs the cluster secret.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use locker_client::{ClusterInfo, ErrorAnswer};

/// The header the node's membership routes read the secret from.
const SECRET_HEADER: &str = "x-locker-cluster-secret";

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

/// Runs a membership change; prints the new cluster view. Exit 0 when done,
/// 1 when refused or the cluster is unreachable.
pub async fn run(
    action: ClusterAction,
    endpoints: &[String],
    timeout_ms: u64,
    json: bool,
) -> Result<u8, String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let admin = Admin {
        http,
        endpoints,
        deadline: Instant::now() + Duration::from_millis(timeout_ms),
    };
    let view = match action {
        ClusterAction::Add {
            id,
            peer_addr,
            secret,
        } => admin.add(id, &peer_addr, &secret.cluster_secret).await?,
        ClusterAction::Remove { id, secret } => {
            let path = format!("/v1/cluster/members/{id}");
            admin
                .send(reqwest::Method::DELETE, &path, None, &secret.cluster_secret)
                .await?
        }
        ClusterAction::Promote { id, secret } => {
            let peer_addr = admin.learner_peer_addr(id).await?;
            admin.add(id, &peer_addr, &secret.cluster_secret).await?
        }
    };
    if json {
        super::print_json(&view);
    } else {
        super::print_cluster(&view);
    }
    Ok(0)
}

struct Admin<'a> {
    http: reqwest::Client,
    endpoints: &'a [String],
    /// No new attempt starts after this.
    deadline: Instant,
}

impl Admin<'_> {
    async fn add(&self, id: u64, peer_addr: &str, secret: &str) -> Result<ClusterInfo, String> {
        let body = serde_json::json!({"id": id, "peer_addr": peer_addr});
        self.send(
            reqwest::Method::POST,
            "/v1/cluster/members",
            Some(body),
            secret,
        )
        .await
    }

    /// The peer address the cluster records for learner `id`.
    async fn learner_peer_addr(&self, id: u64) -> Result<String, String> {
        let view: ClusterInfo = self
            .send(reqwest::Method::GET, "/v1/cluster", None, "")
            .await?;
        match view.members.iter().find(|m| m.id == id) {
            None => Err(format!("node {id} is not a member of the cluster")),
            Some(m) if m.voter => Err(format!("node {id} is a voter already")),
            Some(m) => Ok(m.peer_addr.clone()),
        }
    }

    /// Sends to each endpoint in turn (any node forwards a membership change
    /// to the leader) until one answers 2xx or refuses for good (4xx);
    /// retries transport errors and 503 (no leader, a change in progress)
    /// until the deadline. A retried add or promote is harmless: adding a
    /// member again only re-records its addresses.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        secret: &str,
    ) -> Result<ClusterInfo, String> {
        let mut last = String::from("no endpoint given");
        loop {
            for base in self.endpoints {
                let mut req = self
                    .http
                    .request(
                        method.clone(),
                        format!("{}{path}", base.trim_end_matches('/')),
                    )
                    .timeout(Duration::from_secs(30));
                if !secret.is_empty() {
                    req = req.header(SECRET_HEADER, secret);
                }
                if let Some(b) = &body {
                    req = req.json(b);
                }
                match answer(req.send().await).await {
                    Ok(view) => return Ok(view),
                    Err(Failure::Final(e)) => return Err(e),
                    Err(Failure::Retry(e)) => last = format!("{base}: {e}"),
                }
            }
            if Instant::now() >= self.deadline {
                return Err(format!("gave up: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

enum Failure {
    /// Refused: retrying would not help (bad input, wrong secret).
    Final(String),
    /// Unreachable, no leader, a change in progress.
    Retry(String),
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<ClusterInfo, Failure> {
    let resp = sent.map_err(|e| Failure::Retry(e.to_string()))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_str(&text)
            .map_err(|e| Failure::Final(format!("bad answer ({e}): {text}")));
    }
    let message = serde_json::from_str::<ErrorAnswer>(&text).map_or_else(
        |_| format!("{status}: {text}"),
        |e| format!("{status} {:?}: {}", e.error.code, e.error.message),
    );
    if status.is_server_error() {
        Err(Failure::Retry(message))
    } else {
        Err(Failure::Final(message))
    }
}
