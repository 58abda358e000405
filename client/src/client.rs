//! The raw HTTP API with endpoint failover.

use crate::types::{
    ClusterInfo, ErrorAnswer, KeepaliveResponse, ListAnswer, LockData, LockResponse,
    OwnerStatusResponse, ProcessStatus, ReadAnswer, StatusAnswer,
};
use crate::{Error, TlsOptions};
use locker_proto::{
    AcquireRequest, AddMemberRequest, ErrorCode, ExtendRequest, KeepaliveRequest,
    LockOpStatus as LockStatus, ReleaseRequest,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything but RFC 3986 unreserved characters is escaped, so a key or an
/// owner hash containing '/', '@', '#', '?' or '%' stays one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The default endpoint, as documented in docs/protocol.md ("The `locker` command").
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";

/// Options of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Node URLs, e.g. `http://10.0.0.1:7070`. Tried in order, starting from
    /// the last one that answered.
    pub endpoints: Vec<String>,
    /// Timeout of one HTTP attempt against one node (a `wait_ms` is added on
    /// top for waiting acquires).
    pub request_timeout_ms: u64,
    /// Timeout to open a TCP connection to one node.
    pub connect_timeout_ms: u64,
    /// Total time one call may spend failing over between nodes before it
    /// gives up with [`Error::Unavailable`].
    pub failover_timeout_ms: u64,
    /// CA and client certificate for `https://` endpoints.
    pub tls: TlsOptions,
    /// The secret of a token of the nodes' `--tokens-file`, sent as
    /// `Authorization: Bearer` on every request.
    pub token: Option<BearerToken>,
}

/// A token's secret. Its `Debug` does not show it, so options can be logged.
///
/// ```
/// let t = locker_client::BearerToken::from("s3cret");
/// assert_eq!(t.secret(), "s3cret");
/// assert!(!format!("{t:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The secret itself, for the `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl From<String> for BearerToken {
    fn from(s: String) -> Self {
        BearerToken(s)
    }
}

impl From<&str> for BearerToken {
    fn from(s: &str) -> Self {
        BearerToken(s.to_string())
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            request_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            failover_timeout_ms: 10_000,
            tls: TlsOptions::default(),
            token: None,
        }
    }
}

/// Splits a comma-separated endpoint list (as in `LOCKER_ENDPOINTS`), trims
/// it, drops empty items and trailing slashes, and adds `http://` when no
/// scheme is given.
///
/// ```
/// let e = locker_client::parse_endpoints("127.0.0.1:7071, http://b:7072/ ,").unwrap();
/// assert_eq!(e, vec!["http://127.0.0.1:7071", "http://b:7072"]);
/// assert!(locker_client::parse_endpoints(" , ").is_err());
/// ```
pub fn parse_endpoints(s: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim().trim_end_matches('/');
        if item.is_empty() {
            continue;
        }
        let url = if item.contains("://") {
            item.to_string()
        } else {
            format!("http://{item}")
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "endpoint {url:?} must be an http:// or https:// URL"
            )));
        }
        out.push(url);
    }
    if out.is_empty() {
        return Err(Error::Config(format!("no endpoint in {s:?}")));
    }
    Ok(out)
}

/// The HTTP API of a Locker cluster, one method per route, with failover: on
/// a connection error, a timeout or a 5xx (503 is what a node without a
/// leader answers) the call moves on to the next endpoint, and after a full
/// round sleeps briefly (honouring `Retry-After`, capped) before trying
/// again, until `failover_timeout_ms` has passed.
///
/// Writes are retried with the same owner hash: while the lock is held, a
/// repeated acquire is a re-acquire (same fencing token) and a repeated
/// extend is an extend; a repeated release may answer `NO_KEY`. A copy of
/// an acquire that a try gave up on can still reach the leader late; once
/// its run has ended (released, expired, or fenced by [`Client::acquire`]
/// after a refusal) the node refuses it with `OWNER_HASH_RETIRED`, so it
/// cannot take the key again for a finished owner. The node's memory of
/// ended runs is bounded (docs/protocol.md): a copy held back for longer
/// than an hour, or behind 64 later runs of the same process part, is no
/// longer recognised.
///
/// ```no_run
/// # async fn demo() -> Result<(), locker_client::Error> {
/// use locker_client::{Client, ClientOptions};
/// let client = Client::new(ClientOptions {
///     endpoints: locker_client::parse_endpoints("127.0.0.1:7071,127.0.0.1:7072")?,
///     ..Default::default()
/// })?;
/// let info = client.cluster().await?;
/// println!("leader: {:?}", info.leader_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    opts: ClientOptions,
    /// The endpoint that answered last: every call starts there (sticky),
    /// and moves on only when it fails. Shared by a locker's clients, so
    /// what the reporter thread learns about a hung node the heartbeats do
    /// not have to learn again.
    preferred: Arc<AtomicUsize>,
    /// The process part of the owner hashes this client makes up for
    /// acquires sent without one: one per client, not one per request, so
    /// the node's memory of ended runs (`OWNER_HASH_RETIRED`) holds one
    /// record per client, not one per acquire.
    anonymous_process: String,
}

/// A 5xx answer: retried elsewhere. Whether it may have been applied
/// depends on its code: `NO_LEADER` means nothing was proposed
/// (docs/http-api.md); anything else (TIMEOUT, INTERNAL, a proxy's page)
/// may come after the write was proposed.
fn server_error(status: StatusCode, bytes: &[u8], retry_after: Option<Duration>) -> Attempt {
    let parsed = serde_json::from_slice::<ErrorAnswer>(bytes).ok();
    let maybe_applied = parsed
        .as_ref()
        .is_none_or(|b| b.error.code != ErrorCode::NoLeader);
    let detail = parsed
        .map(|b| format!("{} {}", b.error.code, b.error.message))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect());
    Attempt::Retry {
        maybe_applied,
        why: format!("HTTP {} {}", status.as_u16(), detail),
        retry_after,
    }
}

/// The header the node's membership routes read the cluster secret from.
const SECRET_HEADER: &str = "x-locker-cluster-secret";

/// One request, as the failover loop sends it to each endpoint in turn.
struct Req<'a> {
    method: Method,
    path: &'a str,
    body: Option<&'a [u8]>,
    /// The cluster secret, for the operator routes that require it.
    secret: Option<&'a str>,
}

/// What one attempt against one endpoint produced.
enum Attempt {
    Done(u16, Value),
    Retry {
        /// Whether the request may have reached the cluster and been applied
        /// (a timeout or reset after sending, a 503 TIMEOUT or a 500), as
        /// opposed to certainly not (connection refused, 503 NO_LEADER).
        maybe_applied: bool,
        why: String,
        retry_after: Option<Duration>,
    },
    Fatal(Error),
}

impl Client {
    /// Builds a client; does not connect.
    pub fn new(opts: ClientOptions) -> Result<Client, Error> {
        Client::with_preference(opts, Arc::new(AtomicUsize::new(0)))
    }

    /// A client with its own connections (for another runtime) that shares
    /// this one's remembered good endpoint.
    pub(crate) fn sibling(&self, opts: ClientOptions) -> Result<Client, Error> {
        Client::with_preference(opts, self.inner.preferred.clone())
    }

    fn with_preference(opts: ClientOptions, preferred: Arc<AtomicUsize>) -> Result<Client, Error> {
        if opts.endpoints.is_empty() {
            return Err(Error::Config("at least one endpoint is needed".into()));
        }
        let http = opts
            .tls
            .apply(reqwest::Client::builder(), &opts.endpoints)?
            .connect_timeout(Duration::from_millis(opts.connect_timeout_ms.max(1)))
            // Idle pooled connections to a node that was killed are detected
            // on use; a short idle timeout keeps the pool from going stale.
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                http,
                opts,
                preferred,
                anonymous_process: crate::hash::new_process_hash(),
            }),
        })
    }

    /// The endpoints this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.opts.endpoints
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// Sends one request with failover and returns the HTTP status and JSON
    /// body of the first usable answer: a 2xx, or a 4xx whose body is not
    /// the error body (a lock status such as 404 `NO_KEY`, which the route's
    /// decoder checks against the HTTP status). A 4xx with the error body is
    /// [`Error::Api`]; a 5xx is retried.
    ///
    /// `extra_ms` lengthens each attempt's timeout (for `wait_ms`); `budget`
    /// overrides `failover_timeout_ms`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        extra_ms: u64,
        budget: Option<Duration>,
    ) -> Result<(u16, Value), Error> {
        let req = Req {
            method,
            path,
            body,
            secret: None,
        };
        let mut uncertain = false;
        self.call_noting(&req, extra_ms, budget, &mut uncertain)
            .await
    }

    /// [`Client::call`], also setting `uncertain` when a failed try may
    /// have been applied all the same (its copy may still arrive later).
    async fn call_noting(
        &self,
        req: &Req<'_>,
        extra_ms: u64,
        budget: Option<Duration>,
        uncertain: &mut bool,
    ) -> Result<(u16, Value), Error> {
        let opts = &self.inner.opts;
        let n = opts.endpoints.len();
        let start = Instant::now();
        let budget = budget.unwrap_or(Duration::from_millis(opts.failover_timeout_ms));
        let mut idx = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut tries = 0usize;
        let mut round = 0u32;
        let mut last = String::from("no attempt made");
        let mut retry_after: Option<Duration> = None;
        loop {
            let elapsed = start.elapsed();
            if tries > 0 && elapsed >= budget {
                return Err(Error::Unavailable {
                    elapsed_ms: elapsed.as_millis() as u64,
                    endpoints: opts.endpoints.join(","),
                    last,
                });
            }
            let per_try = per_try_timeout(
                budget.saturating_sub(elapsed),
                n - tries % n,
                opts.request_timeout_ms,
                extra_ms,
            );
            let endpoint = &opts.endpoints[idx];
            match self.attempt(req, endpoint, per_try).await {
                Attempt::Done(status, value) => {
                    self.inner.preferred.store(idx, Ordering::Relaxed);
                    return Ok((status, value));
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry {
                    maybe_applied,
                    why,
                    retry_after: ra,
                } => {
                    *uncertain |= maybe_applied;
                    tracing::debug!(endpoint = %endpoint, path = req.path, %why, "locker request failed; failing over");
                    last = format!("{endpoint}: {why}");
                    if ra.is_some() {
                        retry_after = ra;
                    }
                }
            }
            tries += 1;
            idx = (idx + 1) % n;
            if tries.is_multiple_of(n) {
                // A full round failed: back off before the next one, honouring
                // Retry-After but capping it so failover stays quick once an
                // election is over.
                let backoff = Duration::from_millis((100u64 << round.min(4)).min(1_000));
                let pause = retry_after.map_or(backoff, |ra| ra.min(backoff));
                let left = budget.saturating_sub(start.elapsed());
                if left.is_zero() {
                    continue;
                }
                tokio::time::sleep(pause.min(left)).await;
                round += 1;
                retry_after = None;
            }
        }
    }

    async fn attempt(&self, req: &Req<'_>, endpoint: &str, timeout: Duration) -> Attempt {
        let url = format!("{endpoint}{}", req.path);
        let mut sent = self
            .inner
            .http
            .request(req.method.clone(), &url)
            .timeout(timeout);
        if let Some(t) = &self.inner.opts.token {
            sent = sent.bearer_auth(t.secret());
        }
        if let Some(b) = req.body {
            // Serialised once by the route; each try only copies the bytes.
            sent = sent
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        if let Some(secret) = req.secret {
            sent = sent.header(SECRET_HEADER, secret);
        }
        let resp = match sent.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    // Refused before anything was sent; anything else (a
                    // timeout, a reset) may come after the node read it.
                    maybe_applied: !e.is_connect(),
                    why: describe_reqwest_error(&e),
                    retry_after: None,
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    maybe_applied: true,
                    why: format!("reading the answer: {}", describe_reqwest_error(&e)),
                    retry_after,
                }
            }
        };
        if status.is_server_error() {
            return server_error(status, &bytes, retry_after);
        }
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Attempt::Fatal(Error::Protocol {
                    endpoint: endpoint.to_string(),
                    detail: format!("HTTP {}: body is not JSON ({e})", status.as_u16()),
                })
            }
        };
        // An answer is told from a refusal by the HTTP status and the typed
        // body, never by looking for fields: a 2xx is the route's answer; a
        // 4xx carrying the error body is a refusal; any other 4xx goes to the
        // route's decoder, which accepts it only as a status answer whose
        // status belongs to that HTTP status (404 NO_KEY, 409 held).
        if status.is_success() {
            return Attempt::Done(status.as_u16(), value);
        }
        match ErrorAnswer::deserialize(&value) {
            Ok(b) => Attempt::Fatal(Error::Api {
                http_status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            }),
            Err(_) => Attempt::Done(status.as_u16(), value),
        }
    }

    /// Sends a lock operation and decodes its answer, whose status must be
    /// the one its HTTP status carries (200 SUCCESS, 404 NO_KEY, 409 held).
    async fn lock_op_noting(
        &self,
        path: &str,
        body: &[u8],
        extra_ms: u64,
        budget: Option<Duration>,
        uncertain: &mut bool,
    ) -> Result<LockResponse, Error> {
        let req = Req {
            method: Method::POST,
            path,
            body: Some(body),
            secret: None,
        };
        let (status, v) = self.call_noting(&req, extra_ms, budget, uncertain).await?;
        let r: LockResponse = decode(path, &v)?;
        if r.status.http_status() != status {
            return Err(unexpected(path, status, &v));
        }
        Ok(r)
    }

    /// `PUT /v1/processes/{process_hash}`: creates or refreshes a process.
    pub async fn keepalive(
        &self,
        process_hash: &str,
        ttl_ms: u64,
        info: Option<&Value>,
    ) -> Result<KeepaliveResponse, Error> {
        self.keepalive_within(process_hash, ttl_ms, info, None)
            .await
    }

    pub(crate) async fn keepalive_within(
        &self,
        process_hash: &str,
        ttl_ms: u64,
        info: Option<&Value>,
        budget: Option<Duration>,
    ) -> Result<KeepaliveResponse, Error> {
        // A keep-alive answers only SUCCESS, but a refusal of a retry (a
        // 429, a process limit) says nothing of an earlier try whose answer
        // was lost and which may have refreshed the process: settled by the
        // rule every write follows.
        let started = Instant::now();
        let path = format!("/v1/processes/{}", encode_segment(process_hash));
        let body = to_body(&KeepaliveRequest {
            ttl_ms: Some(ttl_ms),
            info: info.cloned(),
        })?;
        let req = Req {
            method: Method::PUT,
            path: &path,
            body: Some(&body),
            secret: None,
        };
        let mut uncertain = false;
        let result = async {
            let (status, v) = self.call_noting(&req, 0, budget, &mut uncertain).await?;
            decode_ok(&path, status, &v)
        }
        .await;
        self.settle_write(
            started,
            uncertain,
            result,
            |_: &KeepaliveResponse| None,
            |seen| {
                format!(
                    "keep-alive of {process_hash:?}: outcome unknown: an earlier try may have \
                     refreshed it (its answer was lost) and a retry got {seen}"
                )
            },
        )
    }

    /// `DELETE /v1/processes/{process_hash}`: ends a process and frees all its
    /// locks at once. `SUCCESS` or `NO_KEY`; settled as [`Client::release`]
    /// is: after a try of unknown fate (which may have ended the process
    /// itself), a `NO_KEY` or an [`Error::Api`] refusal of a retry is
    /// [`Error::Unavailable`], not a definite answer (unless the refusal is
    /// one every copy of the request gets, a validation error).
    pub async fn end_process(&self, process_hash: &str) -> Result<ProcessStatus, Error> {
        self.end_process_within(process_hash, None).await
    }

    pub(crate) async fn end_process_within(
        &self,
        process_hash: &str,
        budget: Option<Duration>,
    ) -> Result<ProcessStatus, Error> {
        let started = Instant::now();
        let path = format!("/v1/processes/{}", encode_segment(process_hash));
        let req = Req {
            method: Method::DELETE,
            path: &path,
            body: None,
            secret: None,
        };
        let mut uncertain = false;
        let result = async {
            let (status, v) = self.call_noting(&req, 0, budget, &mut uncertain).await?;
            let r: StatusAnswer = decode(&path, &v)?;
            if r.status.http_status() != status {
                return Err(unexpected(&path, status, &v));
            }
            Ok(r.status)
        }
        .await;
        self.settle_write(
            started,
            uncertain,
            result,
            |s| (*s != ProcessStatus::Success).then(|| s.to_string()),
            |seen| {
                format!(
                    "end of process {process_hash:?}: outcome unknown: an earlier try may have \
                     ended it (its answer was lost) and a retry got {seen}"
                )
            },
        )
    }

    /// `POST /v1/locks/{key}/acquire`. Without an owner hash in `req`, one
    /// is made here for the call (not by the node: each retry would then
    /// get a new one); a key or trace no owner hash can carry is refused
    /// with [`Error::Config`] before anything is sent.
    ///
    /// When a try's fate is unknown (a timeout, a reset, a 5xx other than
    /// `NO_LEADER`) and the acquire then ends without the lock, the owner
    /// hash is released before the answer: that run is over, and a later
    /// acquire with the same owner hash is refused `OWNER_HASH_RETIRED`.
    /// The answer is then [`Error::Unavailable`] (outcome unknown: the lost
    /// try may have held the key for a while), never the retry's refusal,
    /// unless that refusal is one every copy of the request gets (a
    /// validation error such as `INVALID_TTL`).
    /// Use a new owner hash (a new sequence number) for a new attempt.
    /// That release fails over within a `failover_timeout_ms` of its own,
    /// so such an acquire can take up to twice the budget.
    pub async fn acquire(&self, key: &str, req: &AcquireRequest) -> Result<LockResponse, Error> {
        self.acquire_noting(key, req, &mut false).await
    }

    /// [`Client::acquire`], setting `retired_run` when its answer is an
    /// unknown outcome hiding a retry's `OWNER_HASH_RETIRED` after the fence
    /// ended the run for certain: a copy of this request was granted and
    /// that run is over, so a caller that never saw the grant (the
    /// [`Locker`](crate::Locker)) may start a new run.
    pub(crate) async fn acquire_noting(
        &self,
        key: &str,
        req: &AcquireRequest,
        retired_run: &mut bool,
    ) -> Result<LockResponse, Error> {
        let started = Instant::now();
        let path = format!("/v1/locks/{}/acquire", encode_segment(key));
        // One owner hash for every try: a try whose answer was lost (a
        // timeout, then failover) may have taken the lock, and the retry
        // must be a re-acquire by the same owner, not a second owner that
        // is refused while the first holds the lock for nobody.
        let mut req = req.clone();
        let owner = match req.owner_hash.take() {
            Some(o) => o,
            None => crate::hash::make_owner_hash(
                key,
                &self.inner.anonymous_process,
                crate::hash::next_seq(),
                req.trace.as_deref(),
            )
            .map_err(|e| Error::Config(e.to_string()))?,
        };
        req.owner_hash = Some(owner.clone());
        let body = to_body(&req)?;
        let wait = req.wait_ms.unwrap_or(0);
        // A waiting acquire may legitimately take `wait_ms`: widen the budget
        // so failover does not give up on a request that is simply queued.
        let budget = (wait > 0).then(|| {
            Duration::from_millis(self.inner.opts.failover_timeout_ms.saturating_add(wait))
        });
        if wait > 0 {
            // A try that may wait `wait_ms` would give a hung node (accepts,
            // never answers) the whole wait before the next node is tried:
            // first find a node that answers (a read, failing over within
            // the normal budget; it becomes the remembered endpoint, where
            // the waiting try starts). A failed probe is no verdict: the
            // acquire itself still fails over.
            let _ = self.read_lock(key).await;
        }
        let mut uncertain = false;
        let result = self
            .lock_op_noting(&path, &body, wait, budget, &mut uncertain)
            .await;
        let granted = matches!(&result, Ok(r) if r.status == LockStatus::Success);
        if uncertain && !granted {
            return self
                .fence_unknown_acquire(key, &owner, started, result, retired_run)
                .await;
        }
        result
    }

    /// An acquire answered with a refusal (or an error) after an earlier try
    /// whose fate is unknown: that try's copy may still reach the leader
    /// later and grant the key to a run we have given up. A release by the
    /// same owner hash ends the run for good (the node refuses any later
    /// copy with `OWNER_HASH_RETIRED`), so the answer we return stays true.
    async fn fence_unknown_acquire(
        &self,
        key: &str,
        owner: &str,
        started: Instant,
        result: Result<LockResponse, Error>,
        retired_run: &mut bool,
    ) -> Result<LockResponse, Error> {
        // The whole acquire, fence included, is what the caller waited.
        let unknown = |why: String| self.unknown_outcome(started, why);
        // The fence's own tries can lose their answers too: a refusal after
        // one of them does not prove the lost acquire took nothing (that
        // try may have released a brief grant), so it is not `Ok(_)` below.
        let mut fence_uncertain = false;
        let fenced = self
            .release_noting(key, owner, None, &mut fence_uncertain)
            .await;
        match fenced {
            // The lost try had taken the key after all; it is free again,
            // but "refused" would be a lie: the outcome was a brief grant.
            Ok(r) if r.status == LockStatus::Success => Err(unknown(format!(
                "an earlier try of this acquire took {key:?} after the answer; released again"
            ))),
            // Refused, so the run is over (a refused release retires its
            // owner hash too), but whether it briefly held the key is unknown.
            Ok(r) if fence_uncertain => Err(unknown(format!(
                "acquire of {key:?}: an earlier try may have taken it, and the release that ended \
                 its run was answered {} after a try of unknown fate",
                r.status
            ))),
            // The run is over and the fence was answered for certain, but
            // its NO_KEY or SOMEONE_ELSE_HOLDS_LOCK does not prove the lost
            // try took nothing: it may have been granted and have ended
            // (expired, its process dead) before the fence arrived, a ttl
            // being shorter than a try may last. So the retry's refusal
            // (OWNER_HASH_RETIRED: that very grant's run ended; held: taken
            // after it) is no definite "not granted".
            Ok(f) => {
                let seen = match &result {
                    Err(Error::Api { code, .. }) if refused_whatever_the_table(*code) => {
                        return result
                    }
                    // Already an unknown outcome.
                    Err(Error::Unavailable { .. }) => return result,
                    Err(Error::Api {
                        code: ErrorCode::OwnerHashRetired,
                        ..
                    }) => {
                        *retired_run = true;
                        ErrorCode::OwnerHashRetired.to_string()
                    }
                    Ok(r) => r.status.to_string(),
                    Err(e) => e.to_string(),
                };
                Err(unknown(format!(
                    "acquire of {key:?}: outcome unknown: an earlier try may have taken it (its \
                     answer was lost) and a retry got {seen}; the release that ended its run \
                     was answered {}, which a brief grant that had ended already leaves too",
                    f.status
                )))
            }
            Err(e) => Err(unknown(format!(
                "acquire of {key:?}: an earlier try may still be applied, and ending its run failed: {e}"
            ))),
        }
    }

    /// `POST /v1/locks/{key}/extend`.
    ///
    /// `SUCCESS` is definite. After a try of unknown fate (a timeout, a
    /// reset, a 5xx other than `NO_LEADER`), the call answers
    /// [`Error::Unavailable`] instead of a retry's `NO_KEY` or
    /// `SOMEONE_ELSE_HOLDS_LOCK` (the lock is not ours now, but the lost try
    /// may have extended it before it ended) or an [`Error::Api`] refusal
    /// of a retry (the retry did nothing; the lost try may have), unless
    /// that refusal is one every copy of the request gets, a validation
    /// error.
    pub async fn extend(
        &self,
        key: &str,
        owner_hash: &str,
        ttl_ms: Option<u64>,
    ) -> Result<LockResponse, Error> {
        self.extend_within(key, owner_hash, ttl_ms, None).await
    }

    pub(crate) async fn extend_within(
        &self,
        key: &str,
        owner_hash: &str,
        ttl_ms: Option<u64>,
        budget: Option<Duration>,
    ) -> Result<LockResponse, Error> {
        let path = format!("/v1/locks/{}/extend", encode_segment(key));
        let body = to_body(&ExtendRequest {
            owner_hash: owner_hash.to_string(),
            ttl_ms,
        })?;
        // A retry's NO_KEY or SOMEONE_ELSE_HOLDS_LOCK does mean the lock
        // is gone now (an applied lost extend only moved a live lock's
        // deadline, and a late copy cannot bring it back), but not that
        // the extend did nothing: the lost try may have moved the deadline
        // before the lock ended, so it lived longer than a "refused" extend
        // says. A refusal of the retry itself (`Error::Api`: a rate limit,
        // a token) says nothing of the lost try at all. Settled as a
        // release is.
        let started = Instant::now();
        let mut uncertain = false;
        let result = self
            .lock_op_noting(&path, &body, 0, budget, &mut uncertain)
            .await;
        self.settle_write(
            started,
            uncertain,
            result,
            |r| (r.status != LockStatus::Success).then(|| r.status.to_string()),
            |seen| {
                format!(
                    "extend of {key:?}: outcome unknown: an earlier try may have extended it \
                     (its answer was lost) and a retry got {seen}"
                )
            },
        )
    }

    /// `POST /v1/locks/{key}/release`.
    ///
    /// `SUCCESS` means this call released the lock. `NO_KEY` and
    /// `SOMEONE_ELSE_HOLDS_LOCK` are returned only when every earlier try
    /// of this call certainly did nothing: after a try of unknown fate (a
    /// timeout, a reset, a 5xx other than `NO_LEADER`) such a refusal would
    /// be just what that try, applied with its answer lost, leaves behind,
    /// so the call fails with [`Error::Unavailable`] instead (the outcome is
    /// unknown: the lock may have been released by this call or have ended
    /// before it). The same holds for an [`Error::Api`] refusal of a retry,
    /// except a validation error, which the lost try got too.
    /// See [`Error::Unavailable`] for what to do then.
    pub async fn release(&self, key: &str, owner_hash: &str) -> Result<LockResponse, Error> {
        self.release_within(key, owner_hash, None).await
    }

    pub(crate) async fn release_within(
        &self,
        key: &str,
        owner_hash: &str,
        budget: Option<Duration>,
    ) -> Result<LockResponse, Error> {
        let started = Instant::now();
        let mut uncertain = false;
        let result = self
            .release_noting(key, owner_hash, budget, &mut uncertain)
            .await;
        self.settle_release(key, started, uncertain, result)
    }

    /// The release request itself, setting `uncertain` when a failed try
    /// may have been applied; its refusals are not yet judged against that
    /// (see [`Client::settle_release`]).
    pub(crate) async fn release_noting(
        &self,
        key: &str,
        owner_hash: &str,
        budget: Option<Duration>,
        uncertain: &mut bool,
    ) -> Result<LockResponse, Error> {
        let path = format!("/v1/locks/{}/release", encode_segment(key));
        let body = to_body(&ReleaseRequest {
            owner_hash: owner_hash.to_string(),
        })?;
        self.lock_op_noting(&path, &body, 0, budget, uncertain)
            .await
    }

    /// What a release may honestly answer, given whether an earlier try
    /// (of this call, or of earlier calls for the same release) may have
    /// been applied. A release applied at the leader whose answer was lost
    /// (a follower's forward cut off, a timeout) leaves the key free, or
    /// soon another owner's: the retry's NO_KEY or SOMEONE_ELSE_HOLDS_LOCK
    /// is then our own release seen from outside, and reporting it as a
    /// definite refusal tells the caller the lease had already ended early.
    /// SUCCESS stays definite: the retry itself found the lock ours and
    /// released it. A refusal of the retry (`Error::Api`: rate limit,
    /// token) says nothing of the earlier try either.
    pub(crate) fn settle_release(
        &self,
        key: &str,
        started: Instant,
        uncertain: bool,
        result: Result<LockResponse, Error>,
    ) -> Result<LockResponse, Error> {
        self.settle_write(
            started,
            uncertain,
            result,
            |r| (r.status != LockStatus::Success).then(|| r.status.to_string()),
            |seen| {
                format!(
                    "release of {key:?}: outcome unknown: an earlier try may have released it \
                     (its answer was lost) and a retry got {seen}; the lock is not known to be \
                     released by this call (release again, or let it expire)"
                )
            },
        )
    }

    /// The one rule for a write (release, end of process, extend,
    /// keep-alive) some of
    /// whose tries may have been applied with their answers lost
    /// (`uncertain`): its success is definite (the retry itself did it);
    /// any other answer (`refused` names it), and any [`Error::Api`]
    /// refusal of a retry, is an unknown outcome, [`Error::Unavailable`]
    /// with `why(what the retry got)`, except a refusal every copy of the
    /// request gets whatever the table holds (see
    /// [`refused_whatever_the_table`]): the lost try was refused too.
    /// Other errors are already unknown ([`Error::Unavailable`],
    /// [`Error::Protocol`]) or raised before sending, and pass as they are.
    fn settle_write<T>(
        &self,
        started: Instant,
        uncertain: bool,
        result: Result<T, Error>,
        refused: impl FnOnce(&T) -> Option<String>,
        why: impl FnOnce(String) -> String,
    ) -> Result<T, Error> {
        if !uncertain {
            return result;
        }
        let seen = match &result {
            Ok(r) => match refused(r) {
                Some(seen) => seen,
                None => return result,
            },
            Err(Error::Api { code, .. }) if refused_whatever_the_table(*code) => return result,
            Err(e @ Error::Api { .. }) => e.to_string(),
            Err(_) => return result,
        };
        Err(self.unknown_outcome(started, why(seen)))
    }

    /// An unknown outcome of a write, in the shape every unknown outcome
    /// has ([`Error::Unavailable`]), timed from `started`.
    fn unknown_outcome(&self, started: Instant, why: String) -> Error {
        Error::Unavailable {
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            endpoints: self.inner.opts.endpoints.join(","),
            last: why,
        }
    }

    /// `GET /v1/locks/{key}`: the live lock, or `None` when unlocked.
    pub async fn read_lock(&self, key: &str) -> Result<Option<LockData>, Error> {
        self.read_lock_within(key, None).await
    }

    pub(crate) async fn read_lock_within(
        &self,
        key: &str,
        budget: Option<Duration>,
    ) -> Result<Option<LockData>, Error> {
        let path = format!("/v1/locks/{}", encode_segment(key));
        let (status, v) = self.call(Method::GET, &path, None, 0, budget).await?;
        let r: ReadAnswer = decode_ok(&path, status, &v)?;
        Ok(if r.locked { r.lock } else { None })
    }

    /// `GET /v1/locks?prefix=&limit=`: live locks in key order.
    pub async fn list_locks(
        &self,
        prefix: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<LockData>, Error> {
        let mut path = String::from("/v1/locks");
        let mut sep = '?';
        if let Some(p) = prefix {
            path.push_str(&format!("{sep}prefix={}", encode_segment(p)));
            sep = '&';
        }
        if let Some(l) = limit {
            path.push_str(&format!("{sep}limit={l}"));
        }
        let (status, v) = self.call(Method::GET, &path, None, 0, None).await?;
        let r: ListAnswer = decode_ok(&path, status, &v)?;
        Ok(r.locks)
    }

    /// `GET /v1/owners/{owner_hash}`.
    pub async fn owner_status(&self, owner_hash: &str) -> Result<OwnerStatusResponse, Error> {
        let path = format!("/v1/owners/{}", encode_segment(owner_hash));
        let (status, v) = self.call(Method::GET, &path, None, 0, None).await?;
        decode_ok(&path, status, &v)
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterInfo, Error> {
        let (status, v) = self.call(Method::GET, "/v1/cluster", None, 0, None).await?;
        decode_ok("/v1/cluster", status, &v)
    }

    /// `POST /v1/cluster/members` (operator route, needs the cluster
    /// secret): adds node `id`, started with `--join` and listening for
    /// peers at `peer_addr`, as a learner, and makes it a voter once it
    /// has caught up; answers the new view once it votes. Repeating it is
    /// harmless (it re-records the addresses, promotes a learner).
    pub async fn add_member(
        &self,
        id: u64,
        peer_addr: &str,
        secret: &str,
    ) -> Result<ClusterInfo, Error> {
        let body = to_body(&AddMemberRequest {
            id,
            peer_addr: peer_addr.to_string(),
        })?;
        self.operator(Method::POST, "/v1/cluster/members", Some(&body), secret)
            .await
    }

    /// `DELETE /v1/cluster/members/{id}` (operator route, needs the cluster
    /// secret): removes voter or learner `id`; answers the new view.
    pub async fn remove_member(&self, id: u64, secret: &str) -> Result<ClusterInfo, Error> {
        let path = format!("/v1/cluster/members/{id}");
        self.operator(Method::DELETE, &path, None, secret).await
    }

    /// A membership change, with failover like every call. It answers only
    /// once done (a learner caught up and promoted), which can outlast a
    /// request timeout: each try may take the whole failover budget.
    async fn operator(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        secret: &str,
    ) -> Result<ClusterInfo, Error> {
        let req = Req {
            method,
            path,
            body,
            secret: Some(secret),
        };
        // A try that may take the whole budget would give a hung node all
        // of it: first find a node that answers (a read; it becomes the
        // remembered endpoint), as a waiting acquire does.
        let _ = self.cluster().await;
        let extra_ms = self.inner.opts.failover_timeout_ms;
        let mut uncertain = false;
        let (status, v) = self
            .call_noting(&req, extra_ms, None, &mut uncertain)
            .await?;
        decode_ok(path, status, &v)
    }

    /// Opens a long GET (the watch stream) on one URL: no overall timeout,
    /// the client's connect timeout and token. `Err` names the failure.
    pub(crate) async fn get_stream(&self, url: &str) -> Result<reqwest::Response, String> {
        let mut req = self.inner.http.get(url);
        if let Some(t) = &self.inner.opts.token {
            req = req.bearer_auth(t.secret());
        }
        req.send().await.map_err(|e| describe_reqwest_error(&e))
    }

    /// GET any path and return the JSON body as is (for tools).
    pub async fn get_json(&self, path: &str) -> Result<Value, Error> {
        let (status, v) = self.call(Method::GET, path, None, 0, None).await?;
        if is_success(status) {
            Ok(v)
        } else {
            Err(unexpected(path, status, &v))
        }
    }
}

fn is_success(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(|s| s.is_success())
}

/// A request body as JSON bytes, serialised once for every try (the proto
/// request types always serialise).
fn to_body<T: Serialize>(req: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(req).map_err(|e| Error::Config(format!("cannot encode the request: {e}")))
}

/// Decodes an answer body as the route's proto type: a body that does not
/// fit (a missing fencing token, an unknown status) is a protocol error,
/// never a default value.
fn decode<T: DeserializeOwned>(path: &str, v: &Value) -> Result<T, Error> {
    T::deserialize(v).map_err(|e| Error::Protocol {
        endpoint: path.to_string(),
        detail: format!("cannot decode {v}: {e}"),
    })
}

/// Decodes the answer of a route whose only answer is a 2xx.
fn decode_ok<T: DeserializeOwned>(path: &str, status: u16, v: &Value) -> Result<T, Error> {
    if !is_success(status) {
        return Err(unexpected(path, status, v));
    }
    decode(path, v)
}

fn unexpected(path: &str, status: u16, v: &Value) -> Error {
    Error::Protocol {
        endpoint: path.to_string(),
        detail: format!("unexpected HTTP {status}: {v}"),
    }
}

/// The smallest share of a budget one attempt gets, so a slow but healthy
/// node (an fsync under load) is not cut off by a budget split many ways.
const MIN_TRY_MS: u64 = 300;

/// Timeout of one attempt: the `remaining` budget shared among the
/// `untried` endpoints of this round (a node that accepts connections and
/// never answers must not eat the whole budget: the others still get their
/// turn), at least [`MIN_TRY_MS`] (but never beyond what remains), at most
/// `request_timeout_ms`; a waiting acquire's `extra_ms` on top.
fn per_try_timeout(
    remaining: Duration,
    untried: usize,
    request_timeout_ms: u64,
    extra_ms: u64,
) -> Duration {
    let remaining = remaining.max(Duration::from_millis(50));
    let share = remaining / (untried.max(1) as u32);
    let floor = Duration::from_millis(MIN_TRY_MS).min(remaining);
    let base = share
        .max(floor)
        .min(Duration::from_millis(request_timeout_ms.max(1)));
    base + Duration::from_millis(extra_ms)
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the
    // source chain says what actually happened (refused, reset, timeout).
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if e.is_timeout() {
        s.push_str(" (timeout)");
    }
    s
}

/// Whether a refusal is one every copy of the same request gets, whatever
/// the lock table holds, so a lost copy of it did nothing either: the
/// request's own form, checked against bounds fixed in `locker-proto`
/// (the same on every node of a release) before anything is proposed. Not
/// so: `OWNER_HASH_RETIRED`, `LIMIT_EXCEEDED`, `RATE_LIMITED` (they depend
/// on the table or on recent traffic), `UNAUTHENTICATED`, `FORBIDDEN`,
/// `HOST_NOT_ALLOWED` (a node's tokens or configuration, which can change
/// between tries and differ between nodes), `NOT_FOUND` and
/// `METHOD_NOT_ALLOWED` (a node of another release may know the route).
fn refused_whatever_the_table(code: ErrorCode) -> bool {
    use ErrorCode::*;
    matches!(
        code,
        InvalidKey
            | InvalidOwnerHash
            | InvalidProcessHash
            | InvalidTtl
            | InvalidWait
            | InvalidTrace
            | InvalidInfo
            | InvalidQuery
            | InvalidJson
            | InvalidPath
            | MalformedRequest
            | PayloadTooLarge
            | UnsupportedMediaType
            | UriTooLong
            | HeadersTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{refuse, reply, FakePeer};
    use crate::types::{ErrorCode, LockStatus, ReadAnswer};
    use axum::routing::{get, post};
    use axum::{Json, Router};

    /// A peer whose every read answers "unlocked".
    async fn unlocked_peer() -> FakePeer {
        let free = ReadAnswer {
            locked: false,
            lock: None,
        };
        FakePeer::serve(Router::new().route(
            "/v1/locks/{key}",
            get(move || async move { reply(200, &free) }),
        ))
        .await
    }

    /// A peer that refuses every request with `code`.
    async fn refusing_peer(code: ErrorCode) -> FakePeer {
        FakePeer::serve(Router::new().fallback(move || async move { refuse(code, "scripted") }))
            .await
    }

    /// Asserts that `r` is the cluster's refusal `code` with `http_status`.
    fn assert_refused<T: std::fmt::Debug>(r: Result<T, Error>, http_status: u16, code: ErrorCode) {
        match r {
            Err(Error::Api {
                http_status: s,
                code: c,
                ..
            }) => {
                assert_eq!(s, http_status);
                assert_eq!(c, code);
            }
            other => panic!("expected the refusal {code}, got {other:?}"),
        }
    }

    fn client(endpoints: Vec<String>, failover_ms: u64) -> Client {
        Client::new(ClientOptions {
            endpoints,
            request_timeout_ms: 1_000,
            connect_timeout_ms: 200,
            failover_timeout_ms: failover_ms,
            ..Default::default()
        })
        .expect("client")
    }

    #[test]
    fn segments_are_fully_escaped() {
        assert_eq!(encode_segment("a/b@c#d?e%f g"), "a%2Fb%40c%23d%3Fe%25f%20g");
        assert_eq!(encode_segment("ok-._~"), "ok-._~");
        assert_eq!(encode_segment("ключ"), "%D0%BA%D0%BB%D1%8E%D1%87");
    }

    #[tokio::test]
    async fn fails_over_from_a_dead_endpoint() {
        let dead = FakePeer::dead_url().await;
        let srv = unlocked_peer().await;
        let c = client(vec![dead, srv.url()], 5_000);
        assert_eq!(c.read_lock("k").await.expect("read"), None);
        // The working node is now preferred: the next call goes there first.
        assert_eq!(c.inner.preferred.load(Ordering::Relaxed), 1);
        assert_eq!(srv.hits(), 1);
    }

    #[tokio::test]
    async fn retries_503_on_another_node() {
        let no_leader = refusing_peer(ErrorCode::NoLeader).await;
        // The path's key arrives decoded: "a/b" was one escaped segment.
        let ok = FakePeer::serve(Router::new().route(
            "/v1/locks/{key}/release",
            post(
                |axum::extract::Path(key): axum::extract::Path<String>,
                 Json(body): Json<ReleaseRequest>| async move {
                    assert_eq!(key, "a/b");
                    assert_eq!(body.owner_hash, "a/b@h/1.2.3");
                    let answer = LockResponse {
                        status: LockStatus::NoKey,
                        lock: None,
                    };
                    reply(404, &answer)
                },
            ),
        ))
        .await;
        let c = client(vec![no_leader.url(), ok.url()], 5_000);
        let r = c.release("a/b", "a/b@h/1.2.3").await.expect("release");
        assert_eq!(r.status, LockStatus::NoKey);
        assert_eq!(no_leader.hits(), 1);
    }

    #[tokio::test]
    async fn gives_up_within_the_budget() {
        let srv = refusing_peer(ErrorCode::NoLeader).await;
        let c = client(vec![srv.url()], 700);
        let t = Instant::now();
        let e = c.read_lock("k").await.expect_err("must fail");
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("NO_LEADER"), "{e}");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(2_000), "took {took:?}");
        assert!(srv.hits() >= 2, "retried: {}", srv.hits());
    }

    #[tokio::test]
    async fn four_hundreds_are_not_retried() {
        let srv = refusing_peer(ErrorCode::InvalidKey).await;
        let c = client(vec![srv.url()], 5_000);
        assert_refused(c.read_lock("").await, 400, ErrorCode::InvalidKey);
        assert_eq!(srv.hits(), 1);
    }

    fn holder(token: u64) -> LockData {
        LockData {
            key: "k".into(),
            owner_hash: "k@other/1.2.3".into(),
            process_hash: Some("other/1.2".into()),
            trace: None,
            acquired_at: 1,
            extended_at: 1,
            expires_at: 2,
            ttl_ms: 1,
            fencing_token: token,
        }
    }

    #[tokio::test]
    async fn conflict_answers_carry_the_holder() {
        let srv = FakePeer::serve(Router::new().route(
            "/v1/locks/{key}/acquire",
            post(|Json(body): Json<Value>| async move {
                assert_eq!(body["owner_hash"], "k@me/1.2.3");
                assert_eq!(body["process_hash"], "me/1.2");
                assert!(body.get("wait_ms").is_none(), "absent options are omitted");
                let answer = LockResponse {
                    status: LockStatus::SomeoneElseHoldsLock,
                    lock: Some(holder(5)),
                };
                reply(409, &answer)
            }),
        ))
        .await;
        let c = client(vec![srv.url()], 5_000);
        let r = c
            .acquire(
                "k",
                &AcquireRequest {
                    owner_hash: Some("k@me/1.2.3".into()),
                    process_hash: Some("me/1.2".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("acquire");
        assert_eq!(r.status, LockStatus::SomeoneElseHoldsLock);
        assert_eq!(r.lock.expect("holder").owner_hash, "k@other/1.2.3");
    }

    /// Regression: a lock answer without a fencing token used to read as
    /// token 0 (every missing number defaulted to 0). It is a protocol
    /// error, and it is not retried as if it were a refusal.
    #[tokio::test]
    async fn a_lock_answer_without_a_fencing_token_is_a_protocol_error() {
        let srv = FakePeer::serve(Router::new().route(
            "/v1/locks/{key}/acquire",
            post(|| async {
                let mut lock = serde_json::to_value(holder(5)).expect("json");
                if let Some(o) = lock.as_object_mut() {
                    o.remove("fencing_token");
                }
                reply(200, &serde_json::json!({"status": "SUCCESS", "lock": lock}))
            }),
        ))
        .await;
        let c = client(vec![srv.url()], 5_000);
        match c.acquire("k", &AcquireRequest::default()).await {
            Err(Error::Protocol { detail, .. }) => {
                assert!(detail.contains("fencing_token"), "{detail}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert_eq!(srv.hits(), 1);
    }

    /// The HTTP status and the body's status must agree: a 409 claiming
    /// SUCCESS, or a 200 with an error body, is not an answer.
    #[tokio::test]
    async fn a_status_that_does_not_match_its_http_status_is_refused() {
        let srv = FakePeer::serve(
            Router::new()
                .route(
                    "/v1/locks/{key}/extend",
                    post(|| async {
                        let answer = LockResponse {
                            status: LockStatus::Success,
                            lock: Some(holder(5)),
                        };
                        reply(409, &answer)
                    }),
                )
                .route(
                    "/v1/locks/{key}/release",
                    post(|| async { reply(200, &ErrorAnswer::new(ErrorCode::NoLeader, "x")) }),
                ),
        )
        .await;
        let c = client(vec![srv.url()], 5_000);
        let e = c
            .extend("k", "k@me/1.2.3", None)
            .await
            .expect_err("409 SUCCESS");
        assert!(matches!(e, Error::Protocol { .. }), "{e}");
        let e = c
            .release("k", "k@me/1.2.3")
            .await
            .expect_err("200 error body");
        assert!(matches!(e, Error::Protocol { .. }), "{e}");
    }

    /// A 404 on a lock route is NO_KEY only with a lock answer: the error
    /// body (no such route) is a refusal with its typed code.
    #[tokio::test]
    async fn a_missing_route_is_an_error_not_no_key() {
        let srv = refusing_peer(ErrorCode::NotFound).await;
        let c = client(vec![srv.url()], 5_000);
        assert_refused(c.release("k", "k@me/1.2.3").await, 404, ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn a_key_no_owner_hash_can_carry_is_refused_before_sending() {
        let srv = unlocked_peer().await;
        let c = client(vec![srv.url()], 5_000);
        let e = c
            .acquire("line\nbreak", &AcquireRequest::default())
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert_eq!(srv.hits(), 0);
    }

    #[test]
    fn per_try_timeouts_leave_room_for_the_other_endpoints() {
        let ms = Duration::from_millis;
        // A 2 s keep-alive budget over two endpoints: 1 s each, not 2 s on
        // the first.
        assert_eq!(per_try_timeout(ms(2_000), 2, 5_000, 0), ms(1_000));
        // The last untried endpoint gets all that is left.
        assert_eq!(per_try_timeout(ms(1_200), 1, 5_000, 0), ms(1_200));
        // Never more than one request timeout, never under the floor unless
        // the budget itself is smaller.
        assert_eq!(per_try_timeout(ms(60_000), 2, 5_000, 0), ms(5_000));
        assert_eq!(per_try_timeout(ms(900), 9, 5_000, 0), ms(300));
        assert_eq!(per_try_timeout(ms(120), 3, 5_000, 0), ms(120));
        // A waiting acquire may wait its wait_ms on top.
        assert_eq!(per_try_timeout(ms(10_000), 2, 5_000, 7_000), ms(12_000));
    }

    #[tokio::test]
    async fn a_hung_endpoint_does_not_eat_the_budget() {
        let hung = FakePeer::hung_url().await;
        let srv = unlocked_peer().await;
        let c = client(vec![hung, srv.url()], 2_000);
        let t = Instant::now();
        assert_eq!(
            c.read_lock_within("k", Some(Duration::from_millis(2_000)))
                .await
                .expect("read"),
            None
        );
        assert!(
            t.elapsed() < Duration::from_millis(1_800),
            "{:?}",
            t.elapsed()
        );
        // Sticky: the next call goes straight to the healthy node.
        let t = Instant::now();
        c.read_lock("k").await.expect("read");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(srv.hits(), 2);
    }

    /// The fault the fence itself can meet: the first try hangs (its fate
    /// unknown), the second is refused, and then the fencing release hangs
    /// too. The acquire must still end (two budgets at most: the acquire's
    /// and the release's) with an error that says how long it took; it
    /// used to claim it had given up after 0 ms.
    #[tokio::test]
    async fn a_fence_whose_release_hangs_ends_and_reports_the_time_taken() {
        let hung = FakePeer::hung_url().await;
        let refusing = FakePeer::serve(
            Router::new()
                .route(
                    "/v1/locks/{key}/acquire",
                    post(|| async {
                        let answer = LockResponse {
                            status: LockStatus::SomeoneElseHoldsLock,
                            lock: Some(holder(5)),
                        };
                        reply(409, &answer)
                    }),
                )
                .route(
                    "/v1/locks/{key}/release",
                    post(std::future::pending::<axum::response::Response>),
                ),
        )
        .await;
        let c = client(vec![hung, refusing.url()], 1_000);
        let t = Instant::now();
        let e = c
            .acquire("k", &AcquireRequest::default())
            .await
            .expect_err("the fence could not end the lost try");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(3_500), "took {took:?}");
        match e {
            Error::Unavailable {
                elapsed_ms, last, ..
            } => {
                assert!(elapsed_ms >= 900, "claimed {elapsed_ms} ms after {took:?}");
                assert!(last.contains("ending its run failed"), "{last}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(refusing.hits_of("POST /v1/locks/k/release") >= 1);
    }

    /// Tries that certainly did nothing (connection refused, 503 NO_LEADER)
    /// leave no run to fence: a refusal after them is answered as it is,
    /// with no release sent. A try of unknown fate does get one (the test
    /// above).
    #[tokio::test]
    async fn a_refusal_after_tries_that_did_nothing_is_not_fenced() {
        let dead = FakePeer::dead_url().await;
        let no_leader = refusing_peer(ErrorCode::NoLeader).await;
        let held = FakePeer::serve(
            Router::new()
                .route(
                    "/v1/locks/{key}/acquire",
                    post(|| async {
                        let answer = LockResponse {
                            status: LockStatus::SomeoneElseHoldsLock,
                            lock: Some(holder(5)),
                        };
                        reply(409, &answer)
                    }),
                )
                .route(
                    "/v1/locks/{key}/release",
                    post(|| async { refuse(ErrorCode::Internal, "must not be called") }),
                ),
        )
        .await;
        let c = client(vec![dead, no_leader.url(), held.url()], 5_000);
        let r = c
            .acquire("k", &AcquireRequest::default())
            .await
            .expect("answered");
        assert_eq!(r.status, LockStatus::SomeoneElseHoldsLock);
        assert_eq!(no_leader.hits(), 1);
        assert_eq!(held.hits_of("POST /v1/locks/k/release"), 0);
    }

    /// A refusal with an error code this client does not know (a newer
    /// node's) is not retried, and the error names the code.
    #[tokio::test]
    async fn an_unknown_error_code_is_a_clear_error_and_not_retried() {
        let srv = FakePeer::serve(Router::new().fallback(|| async {
            let body = serde_json::json!({"error": {"code": "FROM_A_NEWER_NODE", "message": "m"}});
            reply(400, &body)
        }))
        .await;
        let c = client(vec![srv.url()], 5_000);
        let e = c.release("k", "k@me/1.2.3").await.expect_err("refused");
        assert!(e.to_string().contains("FROM_A_NEWER_NODE"), "{e}");
        let e = c.read_lock("k").await.expect_err("refused");
        assert!(e.to_string().contains("FROM_A_NEWER_NODE"), "{e}");
        assert_eq!(srv.hits(), 2);
    }

    /// A peer whose first answer on `path` is a 503 TIMEOUT (the write's
    /// fate unknown, as when a follower's forward loses the leader's
    /// answer) and every later one `status` with `then`'s body.
    async fn lost_then(method_path: &'static str, status: u16, then: Value) -> FakePeer {
        let first = Arc::new(AtomicUsize::new(0));
        FakePeer::serve(Router::new().fallback(move |req: axum::extract::Request| {
            let first = first.clone();
            let then = then.clone();
            async move {
                let seen = format!("{} {}", req.method(), req.uri().path());
                if seen != method_path {
                    return refuse(ErrorCode::NotFound, "scripted");
                }
                if first.fetch_add(1, Ordering::SeqCst) == 0 {
                    return refuse(ErrorCode::Timeout, "scripted: answer lost");
                }
                reply(status, &then)
            }
        }))
        .await
    }

    fn assert_unknown<T: std::fmt::Debug>(r: Result<T, Error>) {
        match r {
            Err(Error::Unavailable { last, .. }) => {
                assert!(last.contains("outcome unknown"), "{last}")
            }
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
    }

    /// After a try of unknown fate, a release's NO_KEY or
    /// SOMEONE_ELSE_HOLDS_LOCK is what that try, applied, would leave: the
    /// outcome is unknown. Both used to come back as definite refusals.
    #[tokio::test]
    async fn a_refused_release_after_a_try_of_unknown_fate_is_unknown() {
        let path = "POST /v1/locks/k/release";
        let no_key = serde_json::json!({"status": "NO_KEY", "lock": null});
        let srv = lost_then(path, 404, no_key).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.release("k", "k@me/1.2.3").await);
        assert_eq!(srv.hits_of(path), 2);

        let held = serde_json::to_value(LockResponse {
            status: LockStatus::SomeoneElseHoldsLock,
            lock: Some(holder(7)),
        })
        .expect("json");
        let srv = lost_then(path, 409, held).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.release("k", "k@me/1.2.3").await);
    }

    /// SUCCESS after a try of unknown fate is definite: the retry found
    /// the lock still ours and released it.
    #[tokio::test]
    async fn a_release_that_succeeds_on_a_retry_is_success() {
        let path = "POST /v1/locks/k/release";
        let ok = serde_json::json!({"status": "SUCCESS", "lock": null});
        let srv = lost_then(path, 200, ok).await;
        let c = client(vec![srv.url()], 5_000);
        let r = c.release("k", "k@me/1.2.3").await.expect("released");
        assert_eq!(r.status, LockStatus::Success);
    }

    /// Ending a process is the same kind of write: NO_KEY after a try of
    /// unknown fate may be our own end, seen from outside.
    #[tokio::test]
    async fn an_end_of_process_refused_after_a_try_of_unknown_fate_is_unknown() {
        let path = "DELETE /v1/processes/h%2F1.2";
        let srv = lost_then(path, 404, serde_json::json!({"status": "NO_KEY"})).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.end_process("h/1.2").await);
        assert_eq!(srv.hits_of(path), 2);
    }

    /// A refusal of the retry itself (a 429, a 401) says nothing of the
    /// earlier try: ending a process must settle it like a release does.
    /// It used to come back as the 429, a definite "nothing done".
    #[tokio::test]
    async fn an_end_of_process_whose_retry_is_rate_limited_is_unknown() {
        let path = "DELETE /v1/processes/h%2F1.2";
        let limited = serde_json::to_value(ErrorAnswer::new(ErrorCode::RateLimited, "slow down"))
            .expect("json");
        let srv = lost_then(path, 429, limited).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.end_process("h/1.2").await);
        assert_eq!(srv.hits_of(path), 2);
    }

    /// A keep-alive whose answer was lost may have refreshed the process:
    /// a retry refused 429 does not say it did nothing. It used to come
    /// back as the 429, a definite "nothing done".
    #[tokio::test]
    async fn a_keepalive_whose_retry_is_rate_limited_is_unknown() {
        let path = "PUT /v1/processes/h%2F1.2";
        let limited = serde_json::to_value(ErrorAnswer::new(ErrorCode::RateLimited, "slow down"))
            .expect("json");
        let srv = lost_then(path, 429, limited).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.keepalive("h/1.2", 10_000, None).await);
        assert_eq!(srv.hits_of(path), 2);
    }

    /// A validation refusal is what every copy of the request gets, the
    /// lost one included: it stays a definite refusal.
    #[tokio::test]
    async fn a_validation_refusal_after_a_try_of_unknown_fate_is_definite() {
        let path = "DELETE /v1/processes/h%2F1.2";
        let invalid =
            serde_json::to_value(ErrorAnswer::new(ErrorCode::InvalidProcessHash, "bad hash"))
                .expect("json");
        let srv = lost_then(path, 400, invalid).await;
        let c = client(vec![srv.url()], 5_000);
        assert_refused(
            c.end_process("h/1.2").await,
            400,
            ErrorCode::InvalidProcessHash,
        );
    }

    /// An extend whose lost try may have been applied: a retry refused
    /// with an error (nothing done by the retry) or answered NO_KEY (the
    /// lock may have lived on to the extended deadline) is unknown; both
    /// used to be definite, and Jepsen recorded them `fail`.
    #[tokio::test]
    async fn an_extend_refused_after_a_try_of_unknown_fate_is_unknown() {
        let path = "POST /v1/locks/k/extend";
        let limited = serde_json::to_value(ErrorAnswer::new(ErrorCode::RateLimited, "slow down"))
            .expect("json");
        let srv = lost_then(path, 429, limited).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.extend("k", "k@me/1.2.3", Some(1_000)).await);
        assert_eq!(srv.hits_of(path), 2);

        let no_key = serde_json::json!({"status": "NO_KEY", "lock": null});
        let srv = lost_then(path, 404, no_key).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.extend("k", "k@me/1.2.3", Some(1_000)).await);

        let invalid = serde_json::to_value(ErrorAnswer::new(ErrorCode::InvalidTtl, "too long"))
            .expect("json");
        let srv = lost_then(path, 400, invalid).await;
        let c = client(vec![srv.url()], 5_000);
        assert_refused(
            c.extend("k", "k@me/1.2.3", Some(1_000)).await,
            400,
            ErrorCode::InvalidTtl,
        );
    }

    /// A peer whose first acquire answers 503 TIMEOUT (its fate unknown),
    /// every later acquire `status` with `then`, and every release (the
    /// fence) a definite NO_KEY.
    async fn acquire_lost_then(status: u16, then: Value) -> FakePeer {
        let first = Arc::new(AtomicUsize::new(0));
        FakePeer::serve(
            Router::new()
                .route(
                    "/v1/locks/{key}/acquire",
                    post(move || {
                        let first = first.clone();
                        let then = then.clone();
                        async move {
                            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                                return refuse(ErrorCode::Timeout, "scripted: answer lost");
                            }
                            reply(status, &then)
                        }
                    }),
                )
                .route(
                    "/v1/locks/{key}/release",
                    post(|| async {
                        reply(404, &serde_json::json!({"status": "NO_KEY", "lock": null}))
                    }),
                ),
        )
        .await
    }

    /// The fence's definite NO_KEY does not prove the lost try took
    /// nothing: it may have been granted and expired before the fence (a
    /// ttl shorter than a try). The retry's refusal (OWNER_HASH_RETIRED:
    /// that grant's run ended; SOMEONE_ELSE_HOLDS_LOCK: taken after it) is
    /// then no definite "not granted"; both used to be returned as such.
    #[tokio::test]
    async fn an_acquire_refused_after_a_try_of_unknown_fate_is_unknown_though_fenced() {
        let retired = serde_json::to_value(ErrorAnswer::new(ErrorCode::OwnerHashRetired, "ended"))
            .expect("json");
        let srv = acquire_lost_then(409, retired).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.acquire("k", &AcquireRequest::default()).await);
        assert_eq!(srv.hits_of("POST /v1/locks/k/release"), 1, "fenced");

        let held = serde_json::to_value(LockResponse {
            status: LockStatus::SomeoneElseHoldsLock,
            lock: Some(holder(5)),
        })
        .expect("json");
        let srv = acquire_lost_then(409, held).await;
        let c = client(vec![srv.url()], 5_000);
        assert_unknown(c.acquire("k", &AcquireRequest::default()).await);
        assert_eq!(srv.hits_of("POST /v1/locks/k/release"), 1, "fenced");

        // Refused whatever the table held: the lost copy was refused too.
        let invalid = serde_json::to_value(ErrorAnswer::new(ErrorCode::InvalidTtl, "too long"))
            .expect("json");
        let srv = acquire_lost_then(400, invalid).await;
        let c = client(vec![srv.url()], 5_000);
        assert_refused(
            c.acquire("k", &AcquireRequest::default()).await,
            400,
            ErrorCode::InvalidTtl,
        );
    }

    #[test]
    fn endpoint_parsing() {
        assert_eq!(
            parse_endpoints("http://a:1").expect("ok"),
            vec!["http://a:1".to_string()]
        );
        assert!(parse_endpoints("ftp://a").is_err());
        assert!(parse_endpoints("").is_err());
    }
}
