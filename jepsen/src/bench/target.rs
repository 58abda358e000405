//! One benchmark client of each system, with the same five operations:
//! acquire (try, or wait for the key), release, extend a held lock, a
//! process keep-alive, and a linearizable read of a key's holder.
//!
//! * Locker: its HTTP/JSON API (`/v1/locks/...`, `/v1/processes/...`).
//! * etcd: the v3 lock API over the HTTP/JSON gateway with one lease per
//!   client (`/v3/lease/grant`, `/v3/lock/lock`, `/v3/lock/unlock`); a held
//!   lock lives as long as its lease, so extending it and a process
//!   keep-alive are both `/v3/lease/keepalive`; a read is a linearizable
//!   `/v3/kv/range` for the oldest key under the lock's prefix (its holder).
//! * Redis: the seed Locker's scripts (see [`super::resp`]) by EVALSHA.

use super::resp::{self, Conn, Reply};
use crate::api::enc;
use anyhow::{anyhow, bail, Context, Result};
use locker_proto::{
    AcquireRequest, ExtendRequest, KeepaliveAnswer, KeepaliveRequest, LockAnswer, LockOpStatus,
    ProcessStatus, ReadAnswer, ReleaseRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A system under test. Its command-line name (`--systems`) is the
/// lower-case variant, also the key of its figures in bench.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum System {
    Locker,
    Etcd,
    Redis,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Locker => "locker",
            System::Etcd => "etcd",
            System::Redis => "redis",
        }
    }
}

/// What a client needs to reach one system.
#[derive(Clone)]
pub struct Endpoint {
    pub system: System,
    /// Locker and etcd: base URLs of the members; Redis: `host:port`.
    pub addrs: Vec<String>,
    pub http: reqwest::Client,
    /// Redis: SHA1s of the create, update and delete scripts.
    pub shas: Arc<[String; 3]>,
}

/// A held lock: what release and extend need.
#[derive(Clone, Debug)]
pub struct Held {
    pub key: String,
    /// Locker and Redis: the owner hash; etcd: the lock's own key (base64).
    pub token: String,
}

pub struct Client {
    ep: Endpoint,
    base: String,
    redis: Option<Conn>,
    /// etcd: this client's lease.
    lease: i64,
    /// This client's number: part of its owner hashes, which must differ
    /// between clients (the same owner hash re-acquires a held lock).
    n: usize,
    seq: u64,
}

/// A lock TTL long enough that no lock expires during a run.
const TTL_MS: u64 = 600_000;

pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        // Contended acquires wait their turn behind up to 255 others.
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .context("http client")
}

pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= ch.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The prefix end for an etcd range over every key starting with `p`.
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

fn now_ms() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms}")
}

impl Client {
    /// Connects client number `n`: Locker and etcd clients spread over the
    /// members (followers forward to the leader in both); etcd grants the
    /// client's lease here; Redis opens the client's connection.
    pub async fn connect(ep: &Endpoint, n: usize) -> Result<Client> {
        let base = ep
            .addrs
            .get(n % ep.addrs.len().max(1))
            .cloned()
            .context("no address")?;
        let mut c = Client {
            ep: ep.clone(),
            base,
            redis: None,
            lease: 0,
            n,
            seq: 0,
        };
        match ep.system {
            System::Locker => {}
            System::Etcd => c.lease = c.grant(TTL_MS / 1000).await?,
            System::Redis => c.redis = Some(Conn::connect(&c.base).await?),
        }
        Ok(c)
    }

    /// Ends the client: etcd revokes its lease (and so its locks).
    pub async fn close(&mut self) {
        if self.ep.system == System::Etcd && self.lease != 0 {
            let _ = self
                .post("/v3/lease/revoke", json!({"ID": self.lease}))
                .await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let r = self
            .ep
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| url.clone())?;
        let code = r.status().as_u16();
        let text = r.text().await.with_context(|| url.clone())?;
        // etcd's streaming keep-alive answers one JSON document per line.
        let first = text.lines().next().unwrap_or("");
        Ok((code, serde_json::from_str(first).unwrap_or(Value::Null)))
    }

    pub async fn grant(&self, ttl_s: u64) -> Result<i64> {
        let (code, v) = self.post("/v3/lease/grant", json!({"TTL": ttl_s})).await?;
        v["ID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("etcd lease grant: {code} {v}"))
    }

    fn redis(&mut self) -> Result<&mut Conn> {
        self.redis.as_mut().context("no redis connection")
    }

    fn owner(&mut self, key: &str) -> String {
        self.seq += 1;
        format!(
            "{key}@bench{}/{}.0.{}",
            self.n,
            std::process::id(),
            self.seq
        )
    }

    /// Takes `key`; `wait` queues behind the holder instead of failing
    /// (Locker: a blocking acquire; etcd: its lock call always waits;
    /// Redis: the seed's mutex loop, create again after 1 ms).
    pub async fn acquire(&mut self, key: &str, wait: bool) -> Result<Held> {
        match self.ep.system {
            System::Locker => self.locker_acquire(key, wait).await,
            System::Etcd => {
                let body = json!({"name": b64(key.as_bytes()), "lease": self.lease});
                let (code, v) = self.post("/v3/lock/lock", body).await?;
                match v["key"].as_str() {
                    Some(k) => Ok(Held {
                        key: key.into(),
                        token: k.into(),
                    }),
                    None => Err(anyhow!("etcd lock: {code} {v}")),
                }
            }
            System::Redis => loop {
                let owner = self.owner(key);
                let rec = json!({"ownerHash": owner, "processHash": format!("bench/{}.0", std::process::id()),
                    "acquiredAt": now_ms(), "extendedAt": now_ms()})
                .to_string();
                let r = self
                    .eval(
                        0,
                        &format!("lock:{key}"),
                        &[rec.as_bytes(), TTL_MS.to_string().as_bytes()],
                    )
                    .await?;
                match r.status().as_deref() {
                    Some("SUCCESS") => {
                        return Ok(Held {
                            key: key.into(),
                            token: owner,
                        })
                    }
                    Some("SOMEONE_ELSE_HOLDS_LOCK") if wait => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    other => bail!("redis create: {other:?}"),
                }
            },
        }
    }

    async fn locker_acquire(&mut self, key: &str, wait: bool) -> Result<Held> {
        let owner = self.owner(key);
        let body = AcquireRequest {
            owner_hash: Some(owner.clone()),
            ttl_ms: Some(TTL_MS),
            wait_ms: wait.then_some(50_000),
            ..AcquireRequest::default()
        };
        let (code, v) = self
            .post(&format!("/v1/locks/{}/acquire", enc(key)), to_json(&body)?)
            .await?;
        locker_success(code, &v, "locker acquire")?;
        Ok(Held {
            key: key.into(),
            token: owner,
        })
    }

    async fn eval(&mut self, script: usize, key: &str, args: &[&[u8]]) -> Result<Reply> {
        let sha = self.ep.shas[script].clone();
        let mut full: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), b"1", key.as_bytes()];
        full.extend_from_slice(args);
        self.redis()?.call(&full).await
    }

    pub async fn release(&mut self, h: &Held) -> Result<()> {
        match self.ep.system {
            System::Locker => {
                let path = format!("/v1/locks/{}/release", enc(&h.key));
                let body = ReleaseRequest {
                    owner_hash: h.token.clone(),
                };
                let (code, v) = self.post(&path, to_json(&body)?).await?;
                locker_success(code, &v, "locker release")
            }
            System::Etcd => {
                let (code, v) = self
                    .post("/v3/lock/unlock", json!({"key": h.token}))
                    .await?;
                ok_if(
                    code == 200 && v["header"].is_object(),
                    "etcd unlock",
                    code,
                    &v,
                )
            }
            System::Redis => {
                let r = self
                    .eval(2, &format!("lock:{}", h.key), &[h.token.as_bytes()])
                    .await?;
                script_ok(&r, "redis delete")
            }
        }
    }

    pub async fn extend(&mut self, h: &Held) -> Result<()> {
        match self.ep.system {
            System::Locker => {
                let path = format!("/v1/locks/{}/extend", enc(&h.key));
                let body = ExtendRequest {
                    owner_hash: h.token.clone(),
                    ttl_ms: Some(TTL_MS),
                };
                let (code, v) = self.post(&path, to_json(&body)?).await?;
                locker_success(code, &v, "locker extend")
            }
            System::Etcd => self.lease_keepalive(self.lease).await,
            System::Redis => {
                let rec = json!({"ownerHash": h.token, "processHash": format!("bench/{}.0", std::process::id()),
                    "acquiredAt": now_ms(), "extendedAt": now_ms()})
                .to_string();
                let ttl = TTL_MS.to_string();
                let r = self
                    .eval(
                        1,
                        &format!("lock:{}", h.key),
                        &[rec.as_bytes(), ttl.as_bytes(), h.token.as_bytes()],
                    )
                    .await?;
                script_ok(&r, "redis update")
            }
        }
    }

    async fn lease_keepalive(&self, id: i64) -> Result<()> {
        let (code, v) = self.post("/v3/lease/keepalive", json!({"ID": id})).await?;
        // An unknown or expired lease answers without a TTL.
        let ttl = v["result"]["TTL"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok());
        ok_if(ttl.is_some_and(|t| t > 0), "etcd keepalive", code, &v)
    }

    /// Keep-alive of process number `p` (etcd: its pre-granted lease).
    pub async fn keepalive(&mut self, p: usize, leases: &[i64]) -> Result<()> {
        let hash = format!("bench/{}.{p}", std::process::id());
        match self.ep.system {
            System::Locker => {
                let path = format!("/v1/processes/{}", enc(&hash));
                let url = format!("{}{path}", self.base);
                let r = self
                    .ep
                    .http
                    .put(&url)
                    .json(&KeepaliveRequest {
                        ttl_ms: Some(TTL_MS),
                        info: None,
                    })
                    .send()
                    .await;
                let r = r.with_context(|| url.clone())?;
                let code = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let ok = code == 200
                    && answer::<KeepaliveAnswer>(&v)
                        .is_some_and(|a| a.status == ProcessStatus::Success);
                ok_if(ok, "locker keepalive", code, &v)
            }
            System::Etcd => {
                let id = leases.get(p).copied().context("no lease for the process")?;
                self.lease_keepalive(id).await
            }
            System::Redis => {
                let rec = json!({"aliveAt": now_ms()}).to_string();
                let key = format!("proc:{hash}");
                let ttl = TTL_MS.to_string();
                let args: [&[u8]; 5] = [
                    b"SET",
                    key.as_bytes(),
                    rec.as_bytes(),
                    b"PX",
                    ttl.as_bytes(),
                ];
                match self.redis()?.call(&args).await? {
                    Reply::Simple(s) if s == "OK" => Ok(()),
                    r => Err(anyhow!("redis SET: {r:?}")),
                }
            }
        }
    }

    /// A linearizable read of who holds `key`; Ok(true) if someone does.
    pub async fn read(&mut self, key: &str) -> Result<bool> {
        match self.ep.system {
            System::Locker => {
                let url = format!("{}/v1/locks/{}", self.base, enc(key));
                let r = self
                    .ep
                    .http
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| url.clone())?;
                let code = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                answer::<ReadAnswer>(&v)
                    .map(|a| a.locked)
                    .ok_or_else(|| anyhow!("locker read: {code} {v}"))
            }
            System::Etcd => {
                let p = format!("{key}/");
                let body = json!({"key": b64(p.as_bytes()), "range_end": b64(&prefix_end(p.as_bytes())),
                    "limit": 1, "sort_target": "CREATE", "sort_order": "ASCEND"});
                let (code, v) = self.post("/v3/kv/range", body).await?;
                if !v["header"].is_object() {
                    bail!("etcd range: {code} {v}");
                }
                Ok(v["kvs"].as_array().is_some_and(|a| !a.is_empty()))
            }
            System::Redis => {
                let k = format!("lock:{key}");
                let r = self.redis()?.call(&[b"GET", k.as_bytes()]).await?;
                Ok(matches!(r, Reply::Bulk(Some(_))))
            }
        }
    }
}

/// A request body as JSON.
fn to_json(body: &impl Serialize) -> Result<Value> {
    serde_json::to_value(body).context("request body")
}

/// A Locker answer of type `T`, or `None` when the body is not one.
fn answer<T: DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// Ok if a lock route answered 200 `SUCCESS`.
fn locker_success(code: u16, v: &Value, what: &str) -> Result<()> {
    let ok =
        code == 200 && answer::<LockAnswer>(v).is_some_and(|a| a.status == LockOpStatus::Success);
    ok_if(ok, what, code, v)
}

fn ok_if(ok: bool, what: &str, code: u16, v: &Value) -> Result<()> {
    anyhow::ensure!(ok, "{what}: {code} {v}");
    Ok(())
}

fn script_ok(r: &Reply, what: &str) -> Result<()> {
    match r.status().as_deref() {
        Some("SUCCESS") => Ok(()),
        other => Err(anyhow!("{what}: {other:?}")),
    }
}

/// Loads the three scripts into Redis once; clients call them by SHA1.
pub async fn load_scripts(addr: &str) -> Result<[String; 3]> {
    let mut c = Conn::connect(addr).await?;
    Ok([
        c.load(resp::CREATE_LUA).await?,
        c.load(resp::UPDATE_LUA).await?,
        c.load(resp::DELETE_LUA).await?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::procs;

    /// The value of a call that must succeed.
    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// True if the call failed with `what` in its error.
    fn refused<T: std::fmt::Debug>(r: Result<T>, what: &str) -> bool {
        match r {
            Ok(v) => panic!("expected a refusal ({what}), got {v:?}"),
            Err(e) => format!("{e:#}").contains(what),
        }
    }

    /// The seed's script semantics through our client, against a real
    /// redis-server (scripts/test.sh installs it; under CI a missing one
    /// fails the test instead of skipping it).
    #[tokio::test]
    async fn redis_scripts_keep_the_seed_semantics() {
        let bin = match procs::find_bin(None, "redis-server", "redis-server") {
            Ok(b) => b,
            Err(e) if std::env::var_os("CI").is_none() => return eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        };
        let dir = std::env::temp_dir().join(format!("locker-bench-redis-{}", std::process::id()));
        let base = (0..200)
            .map(|i| 30_000 + i * 20)
            .find(|b| procs::port_free(procs::redis_port(*b)))
            .unwrap_or(30_000);
        let mut sv = procs::start_redis(&bin, &dir, base).unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{}", procs::redis_port(base));
        let mut shas = Err(anyhow!("redis never tried"));
        for _ in 0..50 {
            shas = load_scripts(&addr).await;
            if shas.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shas = shas.unwrap_or_else(|e| panic!("redis never answered: {e:#}"));
        let http = http_client().unwrap_or_else(|e| panic!("{e}"));
        let ep = Endpoint {
            system: System::Redis,
            addrs: vec![addr],
            http,
            shas: Arc::new(shas),
        };
        let (mut a, mut b) = (
            Client::connect(&ep, 0)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Client::connect(&ep, 1)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let h = a
            .acquire("k", false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = b.acquire("k", false).await;
        assert!(
            taken
                .as_ref()
                .is_err_and(|e| format!("{e:#}").contains("SOMEONE_ELSE_HOLDS_LOCK")),
            "{taken:?}"
        );
        assert!(ok(b.read("k").await));
        ok(a.extend(&h).await);
        let stranger = Held {
            key: "k".into(),
            token: "k@other/1.0.1".into(),
        };
        assert!(refused(b.extend(&stranger).await, "SOMEONE_ELSE"));
        assert!(refused(b.release(&stranger).await, "SOMEONE_ELSE"));
        ok(a.release(&h).await);
        assert!(refused(a.release(&h).await, "NO_KEY"));
        assert!(refused(a.extend(&h).await, "NO_KEY"));
        assert!(!ok(b.read("k").await));
        ok(b.keepalive(7, &[]).await);
        sv.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn base64_and_prefix_end() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"k1/"), "azEv");
        assert_eq!(prefix_end(b"k1/"), b"k10".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        use clap::ValueEnum;
        assert_eq!(System::from_str("etcd", false), Ok(System::Etcd));
        assert!(System::from_str("zk", false).is_err());
        for s in System::value_variants() {
            let cli = s.to_possible_value().map(|p| p.get_name().to_string());
            assert_eq!(cli.as_deref(), Some(s.name()), "{s:?}");
        }
    }
}
