//! Admin and test-only routes of a node, as the nemeses and the replica
//! checker use them: leadership transfer, crash points (failpoints) and the
//! replica digest. Every call carries the cluster secret, which the admin and
//! peer routes require and the others ignore.

use locker_proto::{DigestAnswer, LeaderAnswer, TransferLeaderRequest};
use serde_json::Value;
use std::time::Duration;

/// Why an admin call did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// The node does not serve this route (404/405): an older build, or one
    /// built without the test feature the route belongs to.
    Missing(String),
    /// Any other failure (timeout, refused connection, 5xx...).
    Failed(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Missing(s) => write!(f, "route missing: {s}"),
            AdminError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for AdminError {}

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    secret: String,
}

const SECRET_HEADER: &str = "x-locker-cluster-secret";

impl Admin {
    /// `timeout` bounds every call; a leadership transfer waits on the node
    /// for the new leader's takeover marker, so give it a few seconds.
    pub fn new(secret: &str, timeout: Duration) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(1_000))
            .build()
            .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
        Ok(Admin {
            http,
            secret: secret.to_string(),
        })
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<(u16, String), AdminError> {
        let resp = rb
            .header(SECRET_HEADER, &self.secret)
            .send()
            .await
            .map_err(|e| AdminError::Failed(e.to_string()))?;
        let code = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| AdminError::Failed(e.to_string()))?;
        if code == 404 || code == 405 {
            return Err(AdminError::Missing(format!("HTTP {code}")));
        }
        Ok((code, text))
    }

    /// `POST {client_base}/v1/cluster/leader {"id":id}`: returns the leader
    /// the node reports once the transfer is done.
    pub async fn transfer_leader(&self, client_base: &str, id: u64) -> Result<u64, AdminError> {
        let rb = self
            .http
            .post(format!("{client_base}/v1/cluster/leader"))
            .json(&TransferLeaderRequest { id });
        let (code, text) = self.send(rb).await?;
        match (code, serde_json::from_str::<LeaderAnswer>(&text)) {
            (200, Ok(a)) => Ok(a.leader_id),
            _ => Err(AdminError::Failed(format!("HTTP {code}: {}", short(&text)))),
        }
    }

    /// `GET {peer_base}/internal/failpoints`: the crash points this node has.
    pub async fn failpoints(&self, peer_base: &str) -> Result<Vec<String>, AdminError> {
        let rb = self.http.get(format!("{peer_base}/internal/failpoints"));
        let (code, text) = self.send(rb).await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match (code, v["failpoints"].as_array()) {
            (200, Some(a)) => Ok(a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()),
            _ => Err(AdminError::Failed(format!("HTTP {code}: {}", short(&text)))),
        }
    }

    /// `PUT {peer_base}/internal/failpoints/{name}` with an action in the
    /// fail crate's syntax (`return`, `1*off->return`, `off`).
    pub async fn set_failpoint(
        &self,
        peer_base: &str,
        name: &str,
        action: &str,
    ) -> Result<(), AdminError> {
        let rb = self
            .http
            .put(format!(
                "{peer_base}/internal/failpoints/{}",
                crate::api::enc(name)
            ))
            .header("content-type", "text/plain")
            .body(action.to_string());
        let (code, text) = self.send(rb).await?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(AdminError::Failed(format!("HTTP {code}: {}", short(&text))))
        }
    }

    /// A plain GET of a JSON document (a lock's data), not recorded.
    pub async fn get_json(&self, url: &str) -> Result<Value, AdminError> {
        let (code, text) = self.send(self.http.get(url)).await?;
        match (code, serde_json::from_str::<Value>(&text)) {
            (200, Ok(v)) => Ok(v),
            _ => Err(AdminError::Failed(format!("HTTP {code}: {}", short(&text)))),
        }
    }

    /// `GET {client_base}/v1/digest`: the local replica's digest.
    pub async fn digest(&self, client_base: &str) -> Result<DigestAnswer, AdminError> {
        let rb = self.http.get(format!("{client_base}/v1/digest"));
        let (code, text) = self.send(rb).await?;
        match (code, serde_json::from_str::<DigestAnswer>(&text)) {
            (200, Ok(v)) => Ok(v),
            _ => Err(AdminError::Failed(format!("HTTP {code}: {}", short(&text)))),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}
