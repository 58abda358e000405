//! The [`Locker`]: the seed's API on top of a Locker cluster.

use crate::client::{parse_endpoints, BearerToken, Client, ClientOptions, DEFAULT_ENDPOINT};
use crate::error::{ErrorKind, LockerEvent, MutexError};
use crate::fence::{default_clock, safety_margin_ms, Clock, ProcessView};
use crate::hash::{make_owner_hash, next_seq, parse_owner_hash};
use crate::heartbeater::{Extender, Heartbeater, LockState};
use crate::reporter::{Reporter, ReporterConfig};
use crate::types::{LockData, LockResponse, LockStatus, OwnerHashStatus, OwnerStatusResponse};
use crate::{Error, TlsOptions};
use locker_proto::{AcquireRequest, ErrorCode};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// What losing a lock does beyond failing the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LostLockPolicy {
    /// Only heartbeats fail (and [`Heartbeater::lost`] completes); the job
    /// decides how to stop. The default.
    #[default]
    FailHeartbeat,
    /// The seed's seppuku: print the reason and end the whole process with
    /// this exit code as soon as a loss is detected.
    ExitProcess {
        /// The exit code.
        code: i32,
    },
}

/// Options of a [`Locker`], with the seed's defaults.
///
/// ```
/// let o = locker_client::LockerOptions::default();
/// assert_eq!(o.report_write_ms, 2_000);
/// assert_eq!(o.report_ttl_ms, 10_000);
/// assert_eq!(o.reporter_spawn_timeout_ms, 15_000);
/// assert_eq!(o.lock_recheck_ms, 5_000);
/// assert_eq!(o.lock_extend_ms, 60_000);
/// assert_eq!(o.lock_ttl_ms, 300_000);
/// assert_eq!(o.endpoints, vec!["http://127.0.0.1:7070".to_string()]);
/// ```
#[derive(Debug, Clone)]
pub struct LockerOptions {
    /// Node URLs; the client fails over between them.
    pub endpoints: Vec<String>,
    /// How often the reporter thread writes this process's keep-alive.
    pub report_write_ms: u64,
    /// The process record's ttl: after that long without a keep-alive the
    /// process, and every lock it holds, is dead.
    pub report_ttl_ms: u64,
    /// How long `acquire` waits for the reporter's first keep-alive.
    pub reporter_spawn_timeout_ms: u64,
    /// A heartbeat rechecks the lock at most this often.
    pub lock_recheck_ms: u64,
    /// A heartbeat extends the lock at most this often (keep it well below
    /// `lock_ttl_ms`).
    pub lock_extend_ms: u64,
    /// The lock's own ttl (long: survives a stalled runtime).
    pub lock_ttl_ms: u64,
    /// Subtracted from ttls for local self-fencing deadlines; default a tenth
    /// of the ttl, at most 5 s.
    pub safety_margin_ms: Option<u64>,
    /// Report a lock lost this long *before* its local deadline (the
    /// earlier of the lock's and this process's, see
    /// [`Heartbeater::time_left_ms`]), so the job has this long to stop
    /// before the cluster could free the lock. Default 0: lost at the local
    /// deadline. `locker run` sets it to its `--grace-ms`. Must be below
    /// both ttls minus their safety margins.
    pub stop_grace_ms: u64,
    /// What a lost lock does beyond failing the heartbeat.
    pub on_lost_lock: LostLockPolicy,
    /// Timeout of one HTTP attempt against one node.
    pub request_timeout_ms: u64,
    /// How long one operation may fail over between nodes before giving up.
    pub failover_timeout_ms: u64,
    /// Free-form JSON stored with the process record (`info`).
    pub process_info: Option<serde_json::Value>,
    /// The clock for local deadlines (tests inject a manual one).
    pub clock: Option<Arc<dyn Clock>>,
    /// CA and client certificate for `https://` endpoints.
    pub tls: TlsOptions,
    /// The secret of a token of the nodes' `--tokens-file`, sent as
    /// `Authorization: Bearer` on every request, keep-alives included.
    pub token: Option<BearerToken>,
}

impl Default for LockerOptions {
    fn default() -> Self {
        LockerOptions {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            report_write_ms: 2_000,
            report_ttl_ms: 10_000,
            reporter_spawn_timeout_ms: 15_000,
            lock_recheck_ms: 5_000,
            lock_extend_ms: 60_000,
            lock_ttl_ms: 300_000,
            safety_margin_ms: None,
            stop_grace_ms: 0,
            on_lost_lock: LostLockPolicy::FailHeartbeat,
            request_timeout_ms: 5_000,
            failover_timeout_ms: 10_000,
            process_info: None,
            clock: None,
            tls: TlsOptions::default(),
            token: None,
        }
    }
}

impl LockerOptions {
    /// Defaults with endpoints from `LOCKER_ENDPOINTS` (comma-separated) when
    /// it is set, TLS files from `LOCKER_CA_CERT`, `LOCKER_CLIENT_CERT`
    /// and `LOCKER_CLIENT_KEY` ([`TlsOptions::from_env`]), and the token
    /// from `LOCKER_TOKEN`.
    pub fn from_env() -> Result<LockerOptions, Error> {
        let mut o = LockerOptions {
            tls: TlsOptions::from_env(),
            ..LockerOptions::default()
        };
        if let Ok(t) = std::env::var("LOCKER_TOKEN") {
            if !t.trim().is_empty() {
                o.token = Some(t.trim().into());
            }
        }
        if let Ok(v) = std::env::var("LOCKER_ENDPOINTS") {
            if !v.trim().is_empty() {
                o.endpoints = parse_endpoints(&v)?;
            }
        }
        Ok(o)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("at least one endpoint is needed".into()));
        }
        for (name, v) in [
            ("report_write_ms", self.report_write_ms),
            ("report_ttl_ms", self.report_ttl_ms),
            ("lock_ttl_ms", self.lock_ttl_ms),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        // The job must be told to stop (grace before the local deadline)
        // after the lease starts, or it could never run safely.
        for (name, ttl) in [
            ("report_ttl_ms", self.report_ttl_ms),
            ("lock_ttl_ms", self.lock_ttl_ms),
        ] {
            let margin = safety_margin_ms(ttl, self.safety_margin_ms);
            if self.stop_grace_ms.saturating_add(margin) >= ttl {
                return Err(Error::Config(format!(
                    "stop_grace_ms ({}) + safety margin ({margin}) must be below {name} ({ttl})",
                    self.stop_grace_ms
                )));
            }
        }
        Ok(())
    }
}

/// What [`Locker::acquire`] got.
#[derive(Debug)]
pub enum AcquireResult {
    /// We hold the lock.
    Success(Acquired),
    /// Someone else does; their lock data.
    SomeoneElseHoldsLock(LockData),
}

impl AcquireResult {
    /// `SUCCESS` or `SOMEONE_ELSE_HOLDS_LOCK`.
    pub fn status(&self) -> LockStatus {
        match self {
            AcquireResult::Success(_) => LockStatus::Success,
            AcquireResult::SomeoneElseHoldsLock(_) => LockStatus::SomeoneElseHoldsLock,
        }
    }

    /// Our lock data on success, the holder's otherwise.
    pub fn lock_data(&self) -> &LockData {
        match self {
            AcquireResult::Success(a) => &a.lock_data,
            AcquireResult::SomeoneElseHoldsLock(l) => l,
        }
    }
}

/// A lock we hold, from [`Locker::acquire`].
#[derive(Debug)]
pub struct Acquired {
    /// The lock as granted.
    pub lock_data: LockData,
    pub(crate) state: Arc<LockState>,
}

impl Acquired {
    /// Our owner hash.
    pub fn owner_hash(&self) -> &str {
        &self.lock_data.owner_hash
    }

    /// The fencing token.
    pub fn fencing_token(&self) -> u64 {
        self.lock_data.fencing_token
    }

    /// The seed's extender.
    pub fn extender(&self) -> Extender {
        Extender {
            state: self.state.clone(),
        }
    }

    /// A heartbeater for this lock.
    pub fn heartbeater(&self) -> Heartbeater {
        Heartbeater::from_state(self.state.clone())
    }

    /// Releases the lock (heartbeats fail from now on), retrying transient
    /// errors until the lock would have expired anyway. An unknown outcome
    /// (a try that may have released it lost its answer) is
    /// [`Error::Unavailable`], not `NO_KEY` (see [`Locker::release`]).
    pub async fn release(self) -> Result<LockResponse, Error> {
        let locker = Locker {
            inner: self.state.locker.clone(),
        };
        locker.release_state(&self.state).await
    }
}

/// What [`Locker::acquire_and_run`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult<T> {
    /// We held the lock and the function returned this; the lock is
    /// released by now.
    Success(T),
    /// Someone else holds the lock; the function did not run.
    SomeoneElseHoldsLock(LockData),
}

impl<T> RunResult<T> {
    /// `SUCCESS` or `SOMEONE_ELSE_HOLDS_LOCK`.
    pub fn status(&self) -> LockStatus {
        match self {
            RunResult::Success(_) => LockStatus::Success,
            RunResult::SomeoneElseHoldsLock(_) => LockStatus::SomeoneElseHoldsLock,
        }
    }
}

/// Options of one acquire beyond the key.
#[derive(Debug, Clone, Default)]
pub struct AcquireOptions {
    /// Kept in the lock record and appended to the owner hash (`#trace`).
    pub trace: Option<String>,
    /// Let the cluster queue us (FIFO) this long while someone holds the key.
    pub wait_ms: Option<u64>,
}

/// A stream of recoverable errors (the seed's `errors`), typed
/// reporter / locker / lost_lock. Slow readers miss the oldest events.
#[derive(Debug)]
pub struct ErrorStream {
    rx: broadcast::Receiver<LockerEvent>,
}

impl ErrorStream {
    /// The next event; `None` once the locker is gone.
    pub async fn recv(&mut self) -> Option<LockerEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<LockerEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct LockerInner {
    pub opts: LockerOptions,
    pub clock: Arc<dyn Clock>,
    pub client: Client,
    pub events: broadcast::Sender<LockerEvent>,
    pub lock_margin_ms: u64,
    process_margin_ms: u64,
    reporter: Mutex<Option<Arc<Reporter>>>,
    terminated: AtomicBool,
}

/// Runs "singleton jobs" across machines: the seed's `Locker`, on a Locker
/// cluster.
///
/// * Locks have a long ttl (5 minutes by default), so a blocked runtime does
///   not lose them, but they are bound to this process's liveness, which a
///   dedicated OS thread reports every 2 s: when the process dies, the fleet
///   knows within the process ttl (10 s).
/// * Seppuku: a job whose lock was taken over (or self-fenced, see docs/protocol.md, "Self-fencing")
///   learns it from its next heartbeat.
///
/// Cloning is cheap and shares everything (one reporter, one process hash).
///
/// ```no_run
/// use locker_client::{Locker, LockerOptions, RunResult};
///
/// # async fn demo() -> Result<(), locker_client::Error> {
/// let locker = Locker::new(LockerOptions {
///     endpoints: vec!["http://127.0.0.1:7070".into()],
///     ..Default::default()
/// })?;
/// let res = locker
///     .acquire_and_run("job-key", |hb, _owner_hash| async move {
///         for _ in 0..3 {
///             // do some work, then:
///             hb.heartbeat().await?;
///         }
///         Ok::<_, locker_client::Error>(42)
///     }, None)
///     .await?;
/// assert!(matches!(res, RunResult::Success(42) | RunResult::SomeoneElseHoldsLock(_)));
/// locker.terminate().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Locker {
    inner: Arc<LockerInner>,
}

/// How many runs in a row [`Locker::acquire_with`] starts anew when the
/// node answers `OWNER_HASH_RETIRED`. Each new run has a fresh owner hash,
/// so a node that keeps retiring them is not answering about late copies;
/// after this many the refusal reaches the caller instead of looping.
const RETIRED_RUNS_RETRIED: u32 = 2;

impl Locker {
    /// Builds a locker; does not connect. The reporter thread starts with
    /// the first acquire, as in the seed.
    pub fn new(opts: LockerOptions) -> Result<Locker, Error> {
        opts.validate()?;
        let client = Client::new(ClientOptions {
            endpoints: opts.endpoints.clone(),
            request_timeout_ms: opts.request_timeout_ms,
            failover_timeout_ms: opts.failover_timeout_ms,
            tls: opts.tls.clone(),
            token: opts.token.clone(),
            ..Default::default()
        })?;
        let clock = opts.clock.clone().unwrap_or_else(default_clock);
        let (events, _) = broadcast::channel(256);
        Ok(Locker {
            inner: Arc::new(LockerInner {
                lock_margin_ms: safety_margin_ms(opts.lock_ttl_ms, opts.safety_margin_ms),
                process_margin_ms: safety_margin_ms(opts.report_ttl_ms, opts.safety_margin_ms),
                opts,
                clock,
                client,
                events,
                reporter: Mutex::new(None),
                terminated: AtomicBool::new(false),
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &LockerOptions {
        &self.inner.opts
    }

    /// The raw HTTP client this locker uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Subscribes to recoverable errors (the seed's `errors`).
    ///
    /// ```no_run
    /// # async fn demo(locker: locker_client::Locker) {
    /// let mut errors = locker.errors();
    /// tokio::spawn(async move {
    ///     while let Some(ev) = errors.recv().await {
    ///         eprintln!("locker {}: {}", ev.kind, ev.error);
    ///     }
    /// });
    /// # }
    /// ```
    pub fn errors(&self) -> ErrorStream {
        ErrorStream {
            rx: self.inner.events.subscribe(),
        }
    }

    /// This process's current process hash, once the reporter has started.
    pub fn process_hash(&self) -> Option<String> {
        self.reporter_opt()
            .map(|r| r.view().process_hash.to_string())
    }

    fn reporter_opt(&self) -> Option<Arc<Reporter>> {
        self.inner
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check_alive(&self) -> Result<(), Error> {
        if self.inner.terminated.load(Ordering::Acquire) {
            Err(Error::Terminated)
        } else {
            Ok(())
        }
    }

    fn reporter(&self) -> Result<Arc<Reporter>, Error> {
        let mut g = self
            .inner
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(r) = g.as_ref() {
            return Ok(r.clone());
        }
        self.check_alive()?;
        let o = &self.inner.opts;
        let r = Arc::new(Reporter::spawn(
            ReporterConfig {
                client: ClientOptions {
                    endpoints: o.endpoints.clone(),
                    request_timeout_ms: o.request_timeout_ms,
                    failover_timeout_ms: o.failover_timeout_ms,
                    tls: o.tls.clone(),
                    token: o.token.clone(),
                    ..Default::default()
                },
                sibling_of: self.inner.client.clone(),
                report_write_ms: o.report_write_ms,
                report_ttl_ms: o.report_ttl_ms,
                margin_ms: self.inner.process_margin_ms,
                info: o.process_info.clone(),
            },
            self.inner.clock.clone(),
            self.inner.events.clone(),
        )?);
        *g = Some(r.clone());
        Ok(r)
    }

    /// Starts the reporter if needed and waits (up to
    /// `reporter_spawn_timeout_ms`) until this process is live by local
    /// reckoning.
    async fn live_process(&self) -> Result<(Arc<Reporter>, ProcessView), Error> {
        self.check_alive()?;
        let rep = self.reporter()?;
        let mut rx = rep.subscribe();
        let timeout = Duration::from_millis(self.inner.opts.reporter_spawn_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut woke = false;
        loop {
            let v = rx.borrow_and_update().clone();
            if v.terminated {
                return Err(Error::Terminated);
            }
            // Alive with the stop grace to spare: otherwise a lock taken now
            // would be reported lost at once.
            let now = self.inner.clock.now_ms();
            if v.is_alive_at(now.saturating_add(self.inner.opts.stop_grace_ms)) {
                return Ok((rep, v));
            }
            if !woke {
                rep.wake();
                woke = true;
            }
            // Re-evaluate at least every 50 ms: "alive" also depends on the
            // clock, not only on the reporter's messages.
            let step = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReporterTimeout(timeout.as_millis() as u64));
            }
            let _ = tokio::time::timeout_at(step.min(deadline), rx.changed()).await;
        }
    }

    /// Note: low level; prefer [`acquire_and_run`](Locker::acquire_and_run).
    ///
    /// Tries to acquire the lock for this process (it dies with the process).
    /// On success returns an [`Acquired`] with the seed's extender; otherwise
    /// the holder's data. A second acquire of a held key from the same
    /// process is refused too: every acquire is a new owner.
    ///
    /// ```no_run
    /// # async fn demo(locker: locker_client::Locker) -> Result<(), locker_client::Error> {
    /// use locker_client::AcquireResult;
    /// match locker.acquire("report", Some("trace-1")).await? {
    ///     AcquireResult::Success(acq) => {
    ///         acq.extender().extend().await?;
    ///         locker.release("report", &acq.lock_data).await?;
    ///     }
    ///     AcquireResult::SomeoneElseHoldsLock(holder) => println!("held by {holder}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, key: &str, trace: Option<&str>) -> Result<AcquireResult, Error> {
        self.acquire_with(
            key,
            AcquireOptions {
                trace: trace.map(str::to_string),
                wait_ms: None,
            },
        )
        .await
    }

    /// [`acquire`](Locker::acquire) with options (server-side waiting).
    pub async fn acquire_with(
        &self,
        key: &str,
        opts: AcquireOptions,
    ) -> Result<AcquireResult, Error> {
        if key.is_empty() {
            return Err(Error::Config("the key must not be empty".into()));
        }
        let mut rotations = 0;
        let mut retired = 0u32;
        loop {
            let (rep, view) = self.live_process().await?;
            let sent = self.inner.clock.now_ms();
            let mut retired_run = false;
            let resp = match self.send_acquire(key, &opts, &view, &mut retired_run).await {
                // Another copy of this very request was granted and its run
                // already ended (its lease ran out, its process was counted
                // dead) before this copy arrived. Nothing was done by this
                // one, and that run is over: start a new one. The client
                // answers that case as an unknown outcome (`retired_run`):
                // the lost copy's grant was real, but it is over, and no
                // caller of ours ever held it.
                Err(Error::Api { code, .. })
                    if code == ErrorCode::OwnerHashRetired && retired < RETIRED_RUNS_RETRIED =>
                {
                    retired += 1;
                    continue;
                }
                Err(Error::Unavailable { .. }) if retired_run && retired < RETIRED_RUNS_RETRIED => {
                    retired += 1;
                    continue;
                }
                other => other?,
            };
            let no_lock = || Error::Protocol {
                endpoint: key.to_string(),
                detail: format!("{} answer without lock data", resp.status),
            };
            match resp.status {
                LockStatus::Success => {
                    let lock = resp.lock.clone().ok_or_else(no_lock)?;
                    let state = Arc::new(LockState::new(
                        self.inner.clone(),
                        &lock,
                        view.incarnation,
                        sent,
                        rep.view_sender(),
                    ));
                    if opts.wait_ms.unwrap_or(0) > 0 {
                        // After a queued wait the grant time is unknown
                        // locally; an immediate extend gives the lease a
                        // known start.
                        if let Err(e) = state.extend_now().await {
                            self.emit(ErrorKind::Locker, e);
                        }
                    }
                    return Ok(AcquireResult::Success(Acquired {
                        lock_data: lock,
                        state,
                    }));
                }
                LockStatus::SomeoneElseHoldsLock => {
                    let lock = resp.lock.clone().ok_or_else(no_lock)?;
                    return Ok(AcquireResult::SomeoneElseHoldsLock(lock));
                }
                LockStatus::NoRunningProcess if rotations < 2 => {
                    // The cluster counts our process dead although our
                    // keep-alive looked fine: take a new process hash.
                    rotations += 1;
                    rep.rotate_if_current(view.incarnation);
                }
                other => {
                    return Err(Error::Protocol {
                        endpoint: key.to_string(),
                        detail: format!("acquire answered {other}"),
                    })
                }
            }
        }
    }

    /// One acquire as a new run (a new owner hash) of this locker's process.
    async fn send_acquire(
        &self,
        key: &str,
        opts: &AcquireOptions,
        view: &ProcessView,
        retired_run: &mut bool,
    ) -> Result<LockResponse, Error> {
        // A key or trace no owner hash can carry (a line break, a trace
        // that reads as another owner hash's end) is refused up front.
        let owner = make_owner_hash(key, &view.process_hash, next_seq(), opts.trace.as_deref())
            .map_err(|e| Error::Config(e.to_string()))?;
        let req = AcquireRequest {
            owner_hash: Some(owner),
            process_hash: Some(view.process_hash.to_string()),
            trace: opts.trace.clone(),
            ttl_ms: Some(self.inner.opts.lock_ttl_ms),
            wait_ms: opts.wait_ms.filter(|w| *w > 0),
        };
        self.inner
            .client
            .acquire_noting(key, &req, retired_run)
            .await
    }

    fn emit(&self, kind: ErrorKind, e: Error) {
        let _ = self.inner.events.send(LockerEvent {
            kind,
            error: Arc::new(e),
        });
    }

    /// Note: low level; prefer [`acquire_and_run`](Locker::acquire_and_run).
    ///
    /// Releases a lock by its owner hash: `SUCCESS`, `NO_KEY`, or
    /// `SOMEONE_ELSE_HOLDS_LOCK` with the holder. Transient errors are
    /// retried (and reported on [`errors`](Locker::errors)) for up to the
    /// lock ttl. When a try whose answer was lost may have released the
    /// lock, a later `NO_KEY` or `SOMEONE_ELSE_HOLDS_LOCK` proves nothing
    /// and the result is [`Error::Unavailable`] (outcome unknown; see
    /// [`Client::release`]).
    pub async fn release(&self, key: &str, lock_data: &LockData) -> Result<LockResponse, Error> {
        let horizon = self.inner.clock.now_ms() + self.inner.opts.lock_ttl_ms;
        self.release_until(key, &lock_data.owner_hash, horizon)
            .await
    }

    /// Releases, retrying transient errors until `horizon_ms`. Whether any
    /// try may have been applied is carried across the retried calls: a
    /// call that gave up after a try of unknown fate may have released the
    /// lock, so a later call's NO_KEY (or SOMEONE_ELSE_HOLDS_LOCK) is no
    /// definite answer either, and the result is then
    /// [`Error::Unavailable`] (see [`Client::release`]), never a refusal
    /// that would read as "the lease had already ended".
    async fn release_until(
        &self,
        key: &str,
        owner_hash: &str,
        horizon_ms: u64,
    ) -> Result<LockResponse, Error> {
        let client = &self.inner.client;
        let started = std::time::Instant::now();
        let mut uncertain = false;
        loop {
            // No try outlives the horizon: past it the lock has expired
            // anyway, and a client cut off from the cluster would otherwise
            // spend a whole failover budget more on an unreachable cluster
            // before its process could exit.
            let left = horizon_ms
                .saturating_sub(self.inner.clock.now_ms())
                .max(100);
            let attempt = tokio::time::timeout(
                Duration::from_millis(left),
                client.release_noting(key, owner_hash, None, &mut uncertain),
            );
            let answer = match attempt.await {
                Ok(answer) => answer,
                Err(_) => {
                    // Cut off mid-try: that try's fate is unknown.
                    uncertain = true;
                    Err(Error::Unavailable {
                        elapsed_ms: left,
                        endpoints: String::from("(every endpoint)"),
                        last: String::from("no answer before the lock would have expired anyway"),
                    })
                }
            };
            match answer {
                Err(e) if e.is_transient() && self.inner.clock.now_ms() < horizon_ms => {
                    self.emit(ErrorKind::Locker, e);
                    let pause = self.inner.opts.lock_recheck_ms.clamp(50, 1_000);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                answer => return client.settle_release(key, started, uncertain, answer),
            }
        }
    }

    pub(crate) async fn release_state(&self, state: &LockState) -> Result<LockResponse, Error> {
        if !state.mark_released() {
            // Taken over or already gone: nothing of ours to free.
            return Ok(LockResponse {
                status: LockStatus::NoKey,
                lock: None,
            });
        }
        let horizon = state
            .release_horizon_ms()
            .min(self.inner.clock.now_ms() + self.inner.opts.lock_ttl_ms);
        self.release_until(&state.key, &state.owner_hash, horizon)
            .await
    }

    /// Tries to acquire the lock and, if that works, runs `func(heartbeater,
    /// owner_hash)`, then releases the lock (also when `func` fails, panics
    /// or is cancelled). The function should call
    /// [`Heartbeater::heartbeat`] often; it fails once the lock is lost.
    ///
    /// Errors of the locker itself convert into `E` (use
    /// [`Error`] or any type with `From<locker_client::Error>`).
    ///
    /// ```no_run
    /// # async fn demo(locker: locker_client::Locker) -> Result<(), locker_client::Error> {
    /// use locker_client::RunResult;
    /// let res = locker
    ///     .acquire_and_run("nightly-report", |hb, owner_hash| async move {
    ///         println!("running as {owner_hash}, token {:?}", hb.fencing_token());
    ///         hb.delay(1_000).await?; // sleep while heartbeating
    ///         Ok::<_, locker_client::Error>("done")
    ///     }, Some("trace-42"))
    ///     .await?;
    /// match res {
    ///     RunResult::Success(v) => println!("{v}"),
    ///     RunResult::SomeoneElseHoldsLock(holder) => println!("busy: {holder}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire_and_run<T, E, F, Fut>(
        &self,
        key: &str,
        func: F,
        trace: Option<&str>,
    ) -> Result<RunResult<T>, E>
    where
        F: FnOnce(Heartbeater, String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        match self.acquire(key, trace).await? {
            AcquireResult::SomeoneElseHoldsLock(holder) => {
                Ok(RunResult::SomeoneElseHoldsLock(holder))
            }
            AcquireResult::Success(acq) => {
                let owner = acq.lock_data.owner_hash.clone();
                self.run_acquired(acq, |hb| func(hb, owner))
                    .await
                    .map(RunResult::Success)
            }
        }
    }

    async fn run_acquired<T, E, F, Fut>(&self, acq: Acquired, func: F) -> Result<T, E>
    where
        F: FnOnce(Heartbeater) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut guard = ReleaseGuard {
            locker: self.clone(),
            state: Some(acq.state.clone()),
        };
        let result = func(acq.heartbeater()).await;
        if let Some(state) = guard.state.take() {
            if let Err(e) = self.release_state(&state).await {
                // The job's own result matters more; the lock expires anyway.
                self.emit(ErrorKind::Locker, e);
            }
        }
        result
    }

    /// Runs `func` while holding `key` exclusively. While someone else holds
    /// it, retries every `recheck_delay_ms` until `timeout_ms` has passed,
    /// then fails with [`Error::Mutex`] naming the holder.
    ///
    /// ```no_run
    /// # async fn demo(locker: locker_client::Locker) -> Result<(), locker_client::Error> {
    /// let n = locker
    ///     .mutex("counter", 10_000, |hb| async move {
    ///         hb.heartbeat().await?;
    ///         Ok::<_, locker_client::Error>(1)
    ///     }, 100, None)
    ///     .await?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub async fn mutex<T, E, F, Fut>(
        &self,
        key: &str,
        timeout_ms: u64,
        func: F,
        recheck_delay_ms: u64,
        trace: Option<&str>,
    ) -> Result<T, E>
    where
        F: FnOnce(Heartbeater) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let start = tokio::time::Instant::now();
        loop {
            match self.acquire(key, trace).await? {
                AcquireResult::Success(acq) => return self.run_acquired(acq, func).await,
                AcquireResult::SomeoneElseHoldsLock(holder) => {
                    if start.elapsed() >= Duration::from_millis(timeout_ms) {
                        return Err(E::from(Error::Mutex(MutexError {
                            key: key.to_string(),
                            holder: Box::new(holder),
                        })));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(recheck_delay_ms)).await;
        }
    }

    /// Watches every change to locks and processes under `prefix` from now
    /// on, resuming across reconnects and node failover (see
    /// [`Client::watch`]).
    pub fn watch(&self, prefix: &str) -> crate::Watch {
        self.client().watch(prefix)
    }

    /// The live lock under `key`, or `None` ("maybe unlocked"). As in the
    /// seed, the answer may be stale a moment later.
    pub async fn read_lock_data(&self, key: &str) -> Result<Option<LockData>, Error> {
        self.inner.client.read_lock(key).await
    }

    /// Whether the run named by `owner_hash` is running somewhere. For
    /// debugging only: the answer is racy by nature. A malformed owner hash
    /// answers `MALFORMED_OWNER_HASH` without asking the cluster.
    ///
    /// ```
    /// # async fn demo() -> Result<(), locker_client::Error> {
    /// let locker = locker_client::Locker::new(Default::default())?;
    /// let st = locker.read_owner_hash_status("not an owner hash").await?;
    /// assert_eq!(st.status, locker_client::OwnerHashStatus::MalformedOwnerHash);
    /// assert_eq!(st.key, None);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn read_owner_hash_status(
        &self,
        owner_hash: &str,
    ) -> Result<OwnerStatusResponse, Error> {
        if parse_owner_hash(owner_hash).is_none() {
            return Ok(OwnerStatusResponse {
                status: OwnerHashStatus::MalformedOwnerHash,
                key: None,
                lock: None,
            });
        }
        self.inner.client.owner_status(owner_hash).await
    }

    /// Stops the reporter and ends this process's record in the cluster,
    /// freeing all its locks at once; heartbeats fail afterwards. The locker
    /// cannot be used again.
    pub async fn terminate(&self) {
        if self.inner.terminated.swap(true, Ordering::AcqRel) {
            return;
        }
        let rep = self
            .inner
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rep) = rep {
            if let Some(handle) = rep.stop(true) {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        }
    }

    /// Simulates a sudden death of this process for tests: the reporter
    /// stops without ending the process record, so the cluster learns of the
    /// death only when the process ttl runs out (as after SIGKILL).
    #[doc(hidden)]
    pub async fn simulate_crash(&self) {
        self.inner.terminated.store(true, Ordering::Release);
        let rep = self
            .inner
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rep) = rep {
            let handle = rep.stop(false);
            // Keep the Reporter from ending the process when dropped.
            std::mem::forget(rep);
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        }
    }
}

/// Releases the lock if `acquire_and_run` is dropped mid-flight (cancelled
/// or unwinding from a panic): async code cannot run in `drop`, so the
/// release is spawned on the current runtime.
struct ReleaseGuard {
    locker: Locker,
    state: Option<Arc<LockState>>,
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let locker = self.locker.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let _ = locker.release_state(&state).await;
                });
            }
            Err(_) => {
                // No runtime: mark it released so heartbeats stop; the lock
                // expires with its ttl or with the process.
                state.mark_released();
            }
        }
    }
}
