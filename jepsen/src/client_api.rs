//! The same operations as [`crate::api`], driven through the Rust client
//! library (`locker_client`) instead of raw HTTP, with every result mapped
//! to a history outcome the same way:
//!
//! * `ok`: `SUCCESS` (or a read);
//! * `fail`: a refusal with a lock status, a 4xx ([`Error::Api`]), or an
//!   error raised before anything was sent (configuration, terminated
//!   locker, reporter never started);
//! * `info`: [`Error::Unavailable`] or [`Error::Protocol`]: the client's
//!   failover gave up, and some attempt may have taken effect (the client
//!   retries 5xx answers, `TIMEOUT` included, with the same owner hash, so at
//!   most one grant results, but we cannot know whether it did). The
//!   library also answers `Unavailable` for an acquire, extend or release
//!   that ends without `SUCCESS` after a try whose answer was lost (unless
//!   the retry's refusal is a validation error, which the lost copy got
//!   too): a release's NO_KEY there may be our own release seen from
//!   outside (recorded `fail` it would read as the lease having ended
//!   early); an extend's may follow our own applied extend, the lease then
//!   having lived longer than a `fail` says; an acquire's refusal may
//!   follow a grant that already expired; and an [`Error::Api`] refusal of
//!   a retry (a 429) says nothing of the lost try at all. So an
//!   [`Error::Api`] reaching this module means every try of the call
//!   certainly did nothing, and `fail` is right for it.

use crate::api::{Answer, Call};
use crate::history::{status, Fields, Op, OpType, Process};
use crate::workload::{HolderArgs, MAX_HOLDER_SECS};
use locker_client::{
    AcquireRequest, AcquireResult, Client, ClientOptions, Error, LockData, LockResponse,
    LockStatus, Locker, LockerOptions,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A failover client for the harness's own workers. One attempt may take a
/// little longer than the node's leader wait + write timeout (3 s + 5 s), so
/// most faults end in an answer; the whole call gives up after `budget_ms`.
pub fn client(urls: &[String], budget_ms: u64) -> anyhow::Result<Client> {
    Client::new(ClientOptions {
        endpoints: urls.to_vec(),
        request_timeout_ms: 6_500,
        connect_timeout_ms: 1_000,
        failover_timeout_ms: budget_ms,
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("locker client: {e}"))
}

fn lock_fields(call: &Call, r: &LockResponse) -> (OpType, Fields) {
    let mut f = Fields::default();
    let lock = r.lock.as_ref();
    match r.status {
        LockStatus::Success => {
            f.status = Some(status::SUCCESS.into());
            f.token = lock.map(|l| l.fencing_token);
            if let Call::Acquire { .. } | Call::Extend { .. } = call {
                f.owner = lock.map(|l| l.owner_hash.clone());
            }
            (OpType::Ok, f)
        }
        other => {
            f.status = Some(other.as_str().into());
            f.holder = lock.map(|l| l.owner_hash.clone());
            f.holder_token = lock.map(|l| l.fencing_token);
            (OpType::Fail, f)
        }
    }
}

/// The outcome of an error: definite (`fail`) only when nothing can have
/// reached the cluster's log.
pub fn error_kind(e: &Error) -> OpType {
    match e {
        Error::Unavailable { .. } | Error::Protocol { .. } => OpType::Info,
        _ => OpType::Fail,
    }
}

fn err_answer(e: &Error) -> Answer {
    let (http, code) = match e {
        Error::Api {
            http_status, code, ..
        } => (Some(*http_status), code.as_str().to_string()),
        other => (None, other.to_string()),
    };
    Answer {
        kind: error_kind(e),
        fields: Fields::default(),
        http,
        error: Some(code.chars().take(300).collect()),
    }
}

/// Runs `call` through the client. Keep-alives are not offered here: the
/// client's own reporter thread writes them.
pub async fn exec(client: &Client, key: &str, call: &Call) -> Answer {
    let r = match call {
        Call::Acquire {
            owner,
            ttl_ms,
            process_hash,
        } => {
            client
                .acquire(
                    key,
                    &AcquireRequest {
                        owner_hash: Some(owner.clone()),
                        process_hash: process_hash.clone(),
                        ttl_ms: Some(*ttl_ms),
                        ..AcquireRequest::default()
                    },
                )
                .await
        }
        Call::Extend { owner, ttl_ms } => client.extend(key, owner, Some(*ttl_ms)).await,
        Call::Release { owner } => client.release(key, owner).await,
        Call::Read => {
            return match client.read_lock(key).await {
                Ok(lock) => Answer {
                    kind: OpType::Ok,
                    fields: Fields {
                        locked: Some(lock.is_some()),
                        holder: lock.as_ref().map(|l| l.owner_hash.clone()),
                        holder_token: lock.as_ref().map(|l| l.fencing_token),
                        ..Fields::default()
                    },
                    http: None,
                    error: None,
                },
                // A failed read changed nothing.
                Err(e) => Answer {
                    kind: OpType::Fail,
                    ..err_answer(&e)
                },
            };
        }
        Call::Keepalive { .. } => {
            return Answer {
                kind: OpType::Fail,
                fields: Fields::default(),
                http: None,
                error: Some("keep-alives are the client reporter's job".into()),
            }
        }
    };
    match r {
        Ok(resp) => {
            let (kind, fields) = lock_fields(call, &resp);
            Answer {
                kind,
                fields,
                http: None,
                error: None,
            }
        }
        Err(e) => err_answer(&e),
    }
}

/// The takeover holder driven through [`Locker`]: its reporter thread keeps
/// this process alive (`report_write_ms` = keepalive, `report_ttl_ms` =
/// process ttl), `Locker::acquire` takes the lock bound to the process
/// (lock ttl 60 s, so only the process's death can free it), and the process
/// then idles until it is killed. Each attempt is printed as one history
/// pair with absolute CLOCK_MONOTONIC times. The owner hash is made inside
/// the client, so it is known only from the answer: the invocation line is
/// printed after the call, stamped with the time the call started.
///
/// The reporter's keep-alives are internal to the client and not in the
/// history, so the lease checker cannot prove this lock's window (it skips
/// it); the takeover is judged by the liveness, linearizability and
/// fencing checkers.
pub async fn holder_main(a: HolderArgs) -> anyhow::Result<()> {
    let locker = Locker::new(LockerOptions {
        endpoints: a.urls.clone(),
        report_write_ms: a.keepalive_ms.max(50),
        report_ttl_ms: a.process_ttl_ms.max(100),
        reporter_spawn_timeout_ms: 10_000,
        lock_ttl_ms: 60_000,
        request_timeout_ms: 2_000,
        failover_timeout_ms: 5_000,
        ..LockerOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("locker: {e}"))?;
    let end = Instant::now() + Duration::from_secs(a.max_secs.min(MAX_HOLDER_SECS));
    let mut attempts = 0u32;
    while Instant::now() < end && attempts < 1_000 {
        attempts += 1;
        let t0 = crate::history::monotonic_ns();
        let r = locker.acquire(&a.key, None).await;
        let t1 = crate::history::monotonic_ns();
        let ph = locker.process_hash();
        match r {
            Ok(AcquireResult::Success(acq)) => {
                let l = &acq.lock_data;
                emit(
                    OpType::Invoke,
                    &a.key,
                    invoke_fields(Some(l), ph.clone()),
                    t0,
                );
                let mut v = Fields {
                    status: Some(status::SUCCESS.into()),
                    owner: Some(l.owner_hash.clone()),
                    token: Some(l.fencing_token),
                    process_hash: l.process_hash.clone().or(ph),
                    ..Fields::default()
                }
                .to_value();
                v["via"] = json!("client");
                emit(OpType::Ok, &a.key, v, t1);
                // Hold until killed; keep `acq` and the locker alive (their
                // drop would end the process record and free the lock).
                sleep(end.saturating_duration_since(Instant::now())).await;
                drop(acq);
                return Ok(());
            }
            Ok(AcquireResult::SomeoneElseHoldsLock(h)) => {
                // Our owner hash is not known here: the line carries none,
                // so the checkers use only the holder it names.
                emit(OpType::Invoke, &a.key, invoke_fields(None, ph), t0);
                let mut v = Fields {
                    status: Some(status::HELD.into()),
                    holder: Some(h.owner_hash.clone()),
                    holder_token: Some(h.fencing_token),
                    ..Fields::default()
                }
                .to_value();
                v["via"] = json!("client");
                emit(OpType::Fail, &a.key, v, t1);
            }
            Err(e) => {
                let kind = error_kind(&e);
                emit(OpType::Invoke, &a.key, invoke_fields(None, ph), t0);
                let msg: String = e.to_string().chars().take(300).collect();
                emit(kind, &a.key, json!({"error": msg, "via": "client"}), t1);
                if kind == OpType::Info {
                    // Unknown outcome (and an unknown owner): stop, as the
                    // HTTP holder does; a grant we never heard of dies with
                    // this process, which the harness kills now.
                    return Ok(());
                }
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Prints one history line of an acquire (process 0; the harness renumbers).
fn emit(kind: OpType, key: &str, v: Value, t: u64) {
    use std::io::Write;
    let op = Op::new(Process::Client(0), kind, "acquire", Some(key), v).at(t);
    if let Ok(l) = serde_json::to_string(&op) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{l}");
        let _ = out.flush();
    }
}

/// The invocation's fields: the owner and process as the answer told them
/// (the client makes both), else this process's hash.
fn invoke_fields(granted: Option<&LockData>, ph: Option<String>) -> Value {
    Fields {
        owner: granted.map(|l| l.owner_hash.clone()),
        ttl_ms: Some(60_000),
        process_hash: granted.and_then(|l| l.process_hash.clone()).or(ph),
        ..Fields::default()
    }
    .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one request: its headers, then as many body bytes as
    /// `content-length` says (bounded; a test peer, not a server).
    async fn read_request(sock: &mut TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while buf.len() < 65_536 {
            let Ok(n) = sock.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }

    /// A node that gives these answers (status line, JSON body), one per
    /// connection, in order, and closes each connection after it.
    async fn scripted(answers: Vec<(&'static str, &'static str)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((mut sock, _)) = l.accept().await else {
                    return;
                };
                read_request(&mut sock).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    const LOST: (&str, &str) = (
        "503 Service Unavailable",
        r#"{"error":{"code":"TIMEOUT","message":"the leader's answer was cut off"}}"#,
    );
    const NO_KEY: (&str, &str) = ("404 Not Found", r#"{"status":"NO_KEY","lock":null}"#);

    async fn release_through(answers: Vec<(&'static str, &'static str)>) -> Answer {
        let url = scripted(answers).await;
        let c = client(&[url], 5_000).expect("client");
        let call = Call::Release {
            owner: "k@h/1.2.3".into(),
        };
        exec(&c, "k", &call).await
    }

    /// A release whose first try's answer was lost and whose retry got
    /// NO_KEY is recorded `info`: that NO_KEY may be our own release seen
    /// from outside. It used to be recorded `fail` NO_KEY, which the lease
    /// checker reads as the lease having ended early.
    #[tokio::test]
    async fn a_release_of_unknown_outcome_is_recorded_info() {
        let a = release_through(vec![LOST, NO_KEY]).await;
        assert_eq!(a.kind, OpType::Info, "{a:?}");
        assert_eq!(a.fields.status, None, "{a:?}");
    }

    const RATE_LIMITED: (&str, &str) = (
        "429 Too Many Requests",
        r#"{"error":{"code":"RATE_LIMITED","message":"slow down"}}"#,
    );

    async fn extend_through(answers: Vec<(&'static str, &'static str)>) -> Answer {
        let url = scripted(answers).await;
        let c = client(&[url], 5_000).expect("client");
        let call = Call::Extend {
            owner: "k@h/1.2.3".into(),
            ttl_ms: 1_000,
        };
        exec(&c, "k", &call).await
    }

    /// An extend whose first try's answer was lost may have been applied:
    /// a retry refused 429 (the retry did nothing, the lost try may have
    /// extended) or answered NO_KEY (the lease may have run to the extended
    /// deadline first) is recorded `info`. Both used to be `fail`.
    #[tokio::test]
    async fn an_extend_of_unknown_outcome_is_recorded_info() {
        let a = extend_through(vec![LOST, RATE_LIMITED]).await;
        assert_eq!(a.kind, OpType::Info, "{a:?}");
        let a = extend_through(vec![LOST, NO_KEY]).await;
        assert_eq!(a.kind, OpType::Info, "{a:?}");
        // The control: the same refusal with no lost try is definite.
        let a = extend_through(vec![RATE_LIMITED]).await;
        assert_eq!(a.kind, OpType::Fail, "{a:?}");
    }

    /// The control: a NO_KEY with no try of unknown fate before it is a
    /// definite answer, recorded `fail` with its status.
    #[tokio::test]
    async fn a_plain_no_key_release_is_recorded_fail() {
        let a = release_through(vec![NO_KEY]).await;
        assert_eq!(a.kind, OpType::Fail, "{a:?}");
        assert_eq!(a.fields.status.as_deref(), Some("NO_KEY"), "{a:?}");
    }
}
