//! The node's HTTP/JSON API as the harness uses it, with every answer mapped
//! to a history outcome:
//!
//! * `ok`: the server said SUCCESS (or answered a read);
//! * `fail`: certainly no effect: a refusal with a lock status, a 4xx, a
//!   503 `NO_LEADER` (the node sends it only when nothing was proposed: no
//!   leader within the 3 s leader wait, or a write refused before it was
//!   appended), a connection that was never established, or any failed
//!   *read*;
//! * `info`: a write whose outcome is unknown: a 503 `TIMEOUT` (proposed but
//!   not known to be committed within the 5 s write timeout, or a forward
//!   whose answer was lost), any other 5xx, a transport timeout, or a
//!   connection dropped after sending.

use crate::history::{Fields, OpType};
use locker_proto::{
    AcquireRequest, ErrorAnswer, ErrorCode, ExtendRequest, KeepaliveAnswer, KeepaliveRequest, Lock,
    LockAnswer, LockOpStatus, ReadAnswer, ReleaseRequest,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Call {
    Acquire {
        owner: String,
        ttl_ms: u64,
        process_hash: Option<String>,
    },
    Extend {
        owner: String,
        ttl_ms: u64,
    },
    Release {
        owner: String,
    },
    Read,
    Keepalive {
        process_hash: String,
        ttl_ms: u64,
    },
}

impl Call {
    pub fn f(&self) -> &'static str {
        match self {
            Call::Acquire { .. } => "acquire",
            Call::Extend { .. } => "extend",
            Call::Release { .. } => "release",
            Call::Read => "read",
            Call::Keepalive { .. } => "keepalive",
        }
    }

    /// What the invocation line records.
    pub fn request_fields(&self) -> Fields {
        match self {
            Call::Acquire {
                owner,
                ttl_ms,
                process_hash,
            } => Fields {
                owner: Some(owner.clone()),
                ttl_ms: Some(*ttl_ms),
                process_hash: process_hash.clone(),
                ..Fields::default()
            },
            Call::Extend { owner, ttl_ms } => Fields {
                owner: Some(owner.clone()),
                ttl_ms: Some(*ttl_ms),
                ..Fields::default()
            },
            Call::Release { owner } => Fields {
                owner: Some(owner.clone()),
                ..Fields::default()
            },
            Call::Read => Fields::default(),
            Call::Keepalive {
                process_hash,
                ttl_ms,
            } => Fields {
                process_hash: Some(process_hash.clone()),
                process_ttl_ms: Some(*ttl_ms),
                ..Fields::default()
            },
        }
    }

    fn is_write(&self) -> bool {
        !matches!(self, Call::Read)
    }
}

/// A request body as JSON (the proto request types always serialise).
fn body<T: Serialize>(req: &T) -> Value {
    serde_json::to_value(req).unwrap_or(Value::Null)
}

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

/// Result of one call: outcome type and the value to record.
#[derive(Clone, Debug)]
pub struct Answer {
    pub kind: OpType,
    pub fields: Fields,
    /// HTTP status and error code, for people reading the history.
    pub http: Option<u16>,
    pub error: Option<String>,
}

impl Answer {
    pub fn value(&self) -> Value {
        let mut v = self.fields.to_value();
        if let Value::Object(m) = &mut v {
            if let Some(h) = self.http {
                m.insert("http".into(), json!(h));
            }
            if let Some(e) = &self.error {
                m.insert("error".into(), json!(e));
            }
        }
        v
    }
}

impl Api {
    pub fn new(timeout: Duration) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(1000))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
        Ok(Api { http })
    }

    /// Sends a request. `Err(true)`: certainly not sent (connect failed).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), (bool, String)> {
        self.send_with(method, url, body, None).await
    }

    async fn send_with(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        secret: Option<&str>,
    ) -> Result<(u16, Value), (bool, String)> {
        let mut rb = self.http.request(method, url);
        if let Some(s) = secret {
            // Membership changes are admin operations guarded by the secret.
            rb = rb.header("x-locker-cluster-secret", s);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| (e.is_connect(), e.to_string()))?;
        let code = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| (false, e.to_string()))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((code, v))
    }

    pub async fn exec(&self, base: &str, key: &str, call: &Call) -> Answer {
        use reqwest::Method;
        let k = enc(key);
        let (method, url, body) = match call {
            Call::Acquire {
                owner,
                ttl_ms,
                process_hash,
            } => (
                Method::POST,
                format!("{base}/v1/locks/{k}/acquire"),
                Some(body(&AcquireRequest {
                    owner_hash: Some(owner.clone()),
                    process_hash: process_hash.clone(),
                    ttl_ms: Some(*ttl_ms),
                    ..AcquireRequest::default()
                })),
            ),
            Call::Extend { owner, ttl_ms } => (
                Method::POST,
                format!("{base}/v1/locks/{k}/extend"),
                Some(body(&ExtendRequest {
                    owner_hash: owner.clone(),
                    ttl_ms: Some(*ttl_ms),
                })),
            ),
            Call::Release { owner } => (
                Method::POST,
                format!("{base}/v1/locks/{k}/release"),
                Some(body(&ReleaseRequest {
                    owner_hash: owner.clone(),
                })),
            ),
            Call::Read => (Method::GET, format!("{base}/v1/locks/{k}"), None),
            Call::Keepalive {
                process_hash,
                ttl_ms,
            } => (
                Method::PUT,
                format!("{base}/v1/processes/{}", enc(process_hash)),
                Some(body(&KeepaliveRequest {
                    ttl_ms: Some(*ttl_ms),
                    info: None,
                })),
            ),
        };
        let unknown = if call.is_write() {
            OpType::Info
        } else {
            OpType::Fail
        };
        match self.send(method, &url, body).await {
            Err((not_sent, e)) => Answer {
                kind: if not_sent { OpType::Fail } else { unknown },
                fields: Fields::default(),
                http: None,
                error: Some(e),
            },
            Ok((code, v)) => classify(call, code, &v, unknown),
        }
    }

    /// An acquire that queues on the leader for up to `wait_ms` (FIFO
    /// waiters), classified like [`Api::exec`]'s acquire.
    pub async fn acquire_waiting(
        &self,
        base: &str,
        key: &str,
        call: &Call,
        wait_ms: u64,
    ) -> Answer {
        let Call::Acquire { owner, ttl_ms, .. } = call else {
            return self.exec(base, key, call).await;
        };
        let req = body(&AcquireRequest {
            owner_hash: Some(owner.clone()),
            ttl_ms: Some(*ttl_ms),
            wait_ms: Some(wait_ms),
            ..AcquireRequest::default()
        });
        let url = format!("{base}/v1/locks/{}/acquire", enc(key));
        match self.send(reqwest::Method::POST, &url, Some(req)).await {
            Err((not_sent, e)) => Answer {
                kind: if not_sent { OpType::Fail } else { OpType::Info },
                fields: Fields::default(),
                http: None,
                error: Some(e),
            },
            Ok((code, v)) => classify(call, code, &v, OpType::Info),
        }
    }

    /// GET a JSON document (cluster status, readiness); `None` on any error.
    pub async fn get_json(&self, url: &str) -> Option<(u16, Value)> {
        self.send(reqwest::Method::GET, url, None).await.ok()
    }

    pub async fn post_json(
        &self,
        url: &str,
        body: Value,
        secret: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        self.send_with(reqwest::Method::POST, url, Some(body), secret)
            .await
            .map_err(|e| anyhow::anyhow!(e.1))
    }

    pub async fn delete(&self, url: &str, secret: Option<&str>) -> anyhow::Result<(u16, Value)> {
        self.send_with(reqwest::Method::DELETE, url, None, secret)
            .await
            .map_err(|e| anyhow::anyhow!(e.1))
    }
}

/// A status answer typed by the proto: a lock operation's [`LockAnswer`], or
/// a keep-alive's (always `SUCCESS`, no lock). `None` when the body is not
/// one, or its status is not the one its HTTP status carries.
fn status_answer(call: &Call, code: u16, v: &Value) -> Option<(LockOpStatus, Option<Lock>)> {
    match call {
        Call::Read => None,
        Call::Keepalive { .. } => KeepaliveAnswer::deserialize(v)
            .ok()
            .filter(|a| a.status.http_status() == code)
            .map(|_| (LockOpStatus::Success, None)),
        _ => LockAnswer::deserialize(v)
            .ok()
            .filter(|a| a.status.http_status() == code)
            .map(|a| (a.status, a.lock)),
    }
}

fn classify(call: &Call, code: u16, v: &Value, unknown: OpType) -> Answer {
    let err = ErrorAnswer::deserialize(v).ok().map(|e| e.error.code);
    let answer = status_answer(call, code, v);
    let mut fields = Fields::default();
    let kind = match (call, code, answer) {
        (Call::Read, 200, _) => {
            if let Ok(r) = ReadAnswer::deserialize(v) {
                fields.locked = Some(r.locked);
                fields.holder = r.lock.as_ref().map(|l| l.owner_hash.clone());
                fields.holder_token = r.lock.as_ref().map(|l| l.fencing_token);
            }
            OpType::Ok
        }
        (_, 200, Some((LockOpStatus::Success, lock))) => {
            fields.status = Some(LockOpStatus::Success.as_str().into());
            fields.token = lock.as_ref().map(|l| l.fencing_token);
            if let Call::Acquire { .. } | Call::Extend { .. } = call {
                fields.owner = lock.map(|l| l.owner_hash);
            }
            OpType::Ok
        }
        (_, 404 | 409, Some((st, lock))) => {
            fields.status = Some(st.as_str().into());
            fields.holder = lock.as_ref().map(|l| l.owner_hash.clone());
            fields.holder_token = lock.as_ref().map(|l| l.fencing_token);
            OpType::Fail
        }
        // Rejected input: the server changed nothing.
        (_, 400..=499, _) => OpType::Fail,
        // Nothing was proposed (node team's contract); any other 5xx,
        // including 503 TIMEOUT, may have taken effect.
        (_, 503, _) if err == Some(ErrorCode::NoLeader) => OpType::Fail,
        _ => unknown,
    };
    Answer {
        kind,
        fields,
        http: Some(code),
        error: err.map(|c| c.as_str().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acq() -> Call {
        Call::Acquire {
            owner: "k@h/1.2.3".into(),
            ttl_ms: 1000,
            process_hash: None,
        }
    }

    fn lock_json(owner: &str, token: u64) -> Value {
        body(&Lock {
            key: "k".into(),
            owner_hash: owner.into(),
            process_hash: None,
            trace: None,
            acquired_at: 1,
            extended_at: 1,
            expires_at: 2,
            ttl_ms: 1000,
            fencing_token: token,
        })
    }

    #[test]
    fn answers_map_to_outcomes() {
        let lock = lock_json("k@h/1.2.3", 12);
        let a = classify(
            &acq(),
            200,
            &json!({"status":"SUCCESS","lock":lock}),
            OpType::Info,
        );
        assert_eq!((a.kind, a.fields.token), (OpType::Ok, Some(12)));
        let other = lock_json("k@x/9.9.1", 11);
        let a = classify(
            &acq(),
            409,
            &json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","lock":other}),
            OpType::Info,
        );
        assert_eq!(a.kind, OpType::Fail);
        assert_eq!(a.fields.holder.as_deref(), Some("k@x/9.9.1"));
        assert_eq!(a.fields.holder_token, Some(11));
        // NO_LEADER: nothing was proposed, a definite failure (for every
        // write, keep-alives included).
        let no_leader = json!({"error":{"code":"NO_LEADER","message":"x"}});
        let a = classify(&acq(), 503, &no_leader, OpType::Info);
        assert_eq!(a.kind, OpType::Fail);
        assert_eq!(a.error.as_deref(), Some("NO_LEADER"));
        assert_eq!(a.fields.status, None);
        let ka = Call::Keepalive {
            process_hash: "h/1.2".into(),
            ttl_ms: 2000,
        };
        assert_eq!(
            classify(&ka, 503, &no_leader, OpType::Info).kind,
            OpType::Fail
        );
        // TIMEOUT: proposed, outcome unknown.
        let a = classify(
            &acq(),
            503,
            &json!({"error":{"code":"TIMEOUT","message":"x"}}),
            OpType::Info,
        );
        assert_eq!(a.kind, OpType::Info);
        assert_eq!(a.error.as_deref(), Some("TIMEOUT"));
        // Any other 5xx, or a 503 whose body we cannot read: unknown.
        assert_eq!(
            classify(&acq(), 503, &Value::Null, OpType::Info).kind,
            OpType::Info
        );
        assert_eq!(
            classify(
                &acq(),
                500,
                &json!({"error":{"code":"NO_LEADER"}}),
                OpType::Info
            )
            .kind,
            OpType::Info
        );
        let a = classify(
            &acq(),
            400,
            &json!({"error":{"code":"INVALID_TTL"}}),
            OpType::Info,
        );
        assert_eq!(a.kind, OpType::Fail);
        let a = classify(&Call::Read, 200, &json!({"locked":false}), OpType::Fail);
        assert_eq!((a.kind, a.fields.locked), (OpType::Ok, Some(false)));
        assert_eq!(enc("jepsen/k 1"), "jepsen%2Fk%201");
    }

    /// The HTTP status and the typed body decide together: a status that
    /// its HTTP status cannot carry, or a lock without a fencing token, is
    /// not an answer (unknown for a write), and a 404 error body (no such
    /// route) is a refusal, not `NO_KEY`.
    #[test]
    fn answers_must_be_typed_and_match_their_http_status() {
        let held = json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","lock":lock_json("k@x/9.9.1", 11)});
        assert_eq!(
            classify(&acq(), 200, &held, OpType::Info).kind,
            OpType::Info
        );
        let mut tokenless = lock_json("k@h/1.2.3", 12);
        if let Some(o) = tokenless.as_object_mut() {
            o.remove("fencing_token");
        }
        let a = classify(
            &acq(),
            200,
            &json!({"status":"SUCCESS","lock":tokenless}),
            OpType::Info,
        );
        assert_eq!((a.kind, a.fields.token), (OpType::Info, None));
        let a = classify(
            &acq(),
            404,
            &json!({"error":{"code":"NOT_FOUND","message":"no route"}}),
            OpType::Info,
        );
        assert_eq!((a.kind, a.fields.status), (OpType::Fail, None));
        assert_eq!(a.error.as_deref(), Some("NOT_FOUND"));
        let ka = Call::Keepalive {
            process_hash: "h/1.2".into(),
            ttl_ms: 2000,
        };
        let a = classify(
            &ka,
            200,
            &json!({"status":"SUCCESS","alive_until":5}),
            OpType::Info,
        );
        assert_eq!(
            (a.kind, a.fields.status.as_deref()),
            (OpType::Ok, Some("SUCCESS"))
        );
    }
}
