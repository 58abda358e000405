//! Per-lock state, the [`Heartbeater`] and the low-level [`Extender`].

use crate::error::{DrainingSignal, ErrorKind, LockError, LockerEvent, LostReason};
use crate::fence::{lease_deadline, self_fence_check, ProcessView};
use crate::locker::{LockerInner, LostLockPolicy};
use crate::types::{LockData, LockResponse, LockStatus};
use crate::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

static DRAINING: AtomicBool = AtomicBool::new(false);
static DRAINING_REASON: Mutex<String> = Mutex::new(String::new());

/// Everything one acquired lock needs to heartbeat, shared by its
/// [`Heartbeater`]s and its [`Extender`].
#[derive(Debug)]
pub(crate) struct LockState {
    pub locker: Arc<LockerInner>,
    pub key: String,
    pub owner_hash: String,
    pub incarnation: u64,
    pub fencing_token: u64,
    pub ttl_ms: u64,
    pub view: Arc<watch::Sender<ProcessView>>,
    lease_deadline: AtomicU64,
    last_recheck: AtomicU64,
    last_extend: AtomicU64,
    /// No network attempt before this (backoff after a failed one).
    next_attempt: AtomicU64,
    lost_flag: AtomicBool,
    lost: Mutex<Option<LockError>>,
    /// Bumped whenever the lock is lost or its lease moves, to wake waiters.
    notify: watch::Sender<u64>,
    /// Serializes network operations so concurrent heartbeats coalesce.
    op: tokio::sync::Mutex<()>,
}

impl LockState {
    pub fn new(
        locker: Arc<LockerInner>,
        lock: &LockData,
        incarnation: u64,
        sent_at_ms: u64,
        view: Arc<watch::Sender<ProcessView>>,
    ) -> LockState {
        let ttl_ms = locker.opts.lock_ttl_ms;
        let margin = locker.lock_margin_ms;
        LockState {
            key: lock.key.clone(),
            owner_hash: lock.owner_hash.clone(),
            incarnation,
            fencing_token: lock.fencing_token,
            ttl_ms,
            view,
            lease_deadline: AtomicU64::new(lease_deadline(sent_at_ms, ttl_ms, margin)),
            last_recheck: AtomicU64::new(sent_at_ms),
            last_extend: AtomicU64::new(sent_at_ms),
            next_attempt: AtomicU64::new(0),
            lost_flag: AtomicBool::new(false),
            lost: Mutex::new(None),
            notify: watch::channel(0).0,
            op: tokio::sync::Mutex::new(()),
            locker,
        }
    }

    fn now(&self) -> u64 {
        self.locker.clock.now_ms()
    }

    pub fn lease_deadline(&self) -> u64 {
        self.lease_deadline.load(Ordering::SeqCst)
    }

    pub fn lost_error(&self) -> Option<LockError> {
        if !self.lost_flag.load(Ordering::Acquire) {
            return None;
        }
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost_error().map(|e| e.reason)
    }

    /// Records the loss (the first verdict wins), tells the error stream and
    /// applies the lost-lock policy.
    pub fn mark_lost(&self, reason: LostReason, holder: Option<LockData>) -> LockError {
        let err = {
            let mut g = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = g.as_ref() {
                return e.clone();
            }
            let e = LockError {
                key: self.key.clone(),
                owner_hash: self.owner_hash.clone(),
                holder: holder.map(Box::new),
                reason,
            };
            *g = Some(e.clone());
            self.lost_flag.store(true, Ordering::Release);
            e
        };
        self.notify.send_modify(|v| *v += 1);
        if reason != LostReason::Released {
            tracing::warn!(key = %self.key, owner_hash = %self.owner_hash, error = %err, "lock lost");
            let _ = self.locker.events.send(LockerEvent {
                kind: ErrorKind::LostLock,
                error: Arc::new(Error::Lost(err.clone())),
            });
            if let LostLockPolicy::ExitProcess { code } = self.locker.opts.on_lost_lock {
                // The seed's seppuku: a process that may be double-working
                // must stop at once, whatever its tasks are doing.
                eprintln!("locker: {err}; exiting the process with code {code}");
                std::process::exit(code);
            }
        }
        err
    }

    /// Draining, an earlier loss, or self-fencing, without the network.
    fn check_local(&self) -> Result<(), Error> {
        if DRAINING.load(Ordering::Acquire) {
            let reason = DRAINING_REASON
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(Error::Draining(DrainingSignal {
                key: self.key.clone(),
                reason,
            }));
        }
        if let Some(e) = self.lost_error() {
            return Err(Error::Lost(e));
        }
        if let Some(r) = self.fence_verdict(self.now()) {
            return Err(Error::Lost(self.mark_lost(r, None)));
        }
        Ok(())
    }

    /// The self-fencing verdict at `now`, judged `stop_grace_ms` early: the
    /// job is told while it still has its grace period left before the
    /// local deadline.
    fn fence_verdict(&self, now: u64) -> Option<LostReason> {
        let judged_at = now.saturating_add(self.locker.opts.stop_grace_ms);
        let view = self.view.borrow();
        self_fence_check(judged_at, self.lease_deadline(), self.incarnation, &view)
    }

    /// The earliest local deadline: the lock's lease, or this process's
    /// record (send time of the last successful keep-alive + process ttl -
    /// margin). 0 once the process incarnation the lock lives with is gone.
    pub fn local_deadline(&self) -> u64 {
        let view = self.view.borrow();
        if view.incarnation != self.incarnation || view.terminated {
            return 0;
        }
        let process = view.alive_deadline.unwrap_or(0);
        self.lease_deadline().min(process)
    }

    /// When the lock will be reported lost unless a keep-alive or an extend
    /// succeeds first: the local deadline minus the stop grace.
    pub fn report_loss_at(&self) -> u64 {
        self.local_deadline()
            .saturating_sub(self.locker.opts.stop_grace_ms)
    }

    fn net_due(&self, now: u64) -> bool {
        let opts = &self.locker.opts;
        now >= self.next_attempt.load(Ordering::SeqCst)
            && (now.saturating_sub(self.last_extend.load(Ordering::SeqCst)) >= opts.lock_extend_ms
                || now.saturating_sub(self.last_recheck.load(Ordering::SeqCst))
                    >= opts.lock_recheck_ms)
    }

    /// When the next network operation (or a self-fencing deadline) is due.
    fn next_event_at(&self) -> u64 {
        let opts = &self.locker.opts;
        let recheck = self
            .last_recheck
            .load(Ordering::SeqCst)
            .saturating_add(opts.lock_recheck_ms);
        let extend = self
            .last_extend
            .load(Ordering::SeqCst)
            .saturating_add(opts.lock_extend_ms);
        let net = recheck
            .min(extend)
            .max(self.next_attempt.load(Ordering::SeqCst));
        net.min(self.report_loss_at())
    }

    fn op_budget(&self, now: u64) -> Duration {
        // No point waiting for an answer past the moment the loss must be
        // reported (the earliest local deadline, lock or process, minus the
        // stop grace): by then the job must be told to stop, whatever the
        // network does.
        let left = self.report_loss_at().saturating_sub(now).max(50);
        Duration::from_millis(left.min(self.locker.opts.failover_timeout_ms))
    }

    fn backoff(&self, now: u64, err: Error) {
        let ms = self.locker.opts.lock_recheck_ms.clamp(100, 1_000);
        self.next_attempt.store(now + ms, Ordering::SeqCst);
        tracing::debug!(key = %self.key, error = %err, "heartbeat network operation failed; will retry");
        let _ = self.locker.events.send(LockerEvent {
            kind: ErrorKind::Locker,
            error: Arc::new(err),
        });
    }

    /// Applies an extend answer; `Ok` with the response unless it was not
    /// SUCCESS, in which case the lock is marked lost.
    fn apply_extend(&self, sent: u64, resp: &LockResponse) {
        match resp.status {
            LockStatus::Success => {
                let dl = lease_deadline(sent, self.ttl_ms, self.locker.lock_margin_ms);
                self.lease_deadline.fetch_max(dl, Ordering::SeqCst);
                self.last_extend.fetch_max(sent, Ordering::SeqCst);
                self.last_recheck.fetch_max(sent, Ordering::SeqCst);
                self.notify.send_modify(|v| *v += 1);
            }
            LockStatus::SomeoneElseHoldsLock => {
                self.mark_lost(LostReason::TakenOver, resp.lock.clone());
            }
            LockStatus::NoKey | LockStatus::NoRunningProcess => {
                self.mark_lost(LostReason::NotHeld, None);
            }
        }
    }

    pub async fn extend_now(&self) -> Result<LockResponse, Error> {
        let sent = self.now();
        let resp = self
            .locker
            .client
            .extend(&self.key, &self.owner_hash, Some(self.ttl_ms))
            .await?;
        self.apply_extend(sent, &resp);
        Ok(resp)
    }

    pub async fn heartbeat(&self) -> Result<(), Error> {
        self.check_local()?;
        if !self.net_due(self.now()) {
            return Ok(());
        }
        let _guard = self.op.lock().await;
        // Whoever held the guard before us may have just done the work (or
        // found the lock lost): re-evaluate instead of repeating it.
        self.check_local()?;
        let now = self.now();
        if !self.net_due(now) {
            return Ok(());
        }
        let opts = &self.locker.opts;
        let client = &self.locker.client;
        let budget = Some(self.op_budget(now));
        if now.saturating_sub(self.last_extend.load(Ordering::SeqCst)) >= opts.lock_extend_ms {
            match client
                .extend_within(&self.key, &self.owner_hash, Some(self.ttl_ms), budget)
                .await
            {
                Ok(resp) => self.apply_extend(now, &resp),
                Err(e) => self.backoff(self.now(), e),
            }
        } else {
            match client.read_lock_within(&self.key, budget).await {
                Ok(Some(lock)) if lock.owner_hash == self.owner_hash => {
                    self.last_recheck.fetch_max(now, Ordering::SeqCst);
                }
                Ok(Some(other)) => {
                    self.mark_lost(LostReason::TakenOver, Some(other));
                }
                Ok(None) => {
                    self.mark_lost(LostReason::NotHeld, None);
                }
                Err(e) => self.backoff(self.now(), e),
            }
        }
        self.check_local()
    }

    /// Marks the lock released (heartbeats fail from now on) and says
    /// whether a release request is still worth sending.
    pub fn mark_released(&self) -> bool {
        let before = self.lost_reason();
        self.mark_lost(LostReason::Released, None);
        !matches!(
            before,
            Some(LostReason::TakenOver) | Some(LostReason::NotHeld) | Some(LostReason::Released)
        )
    }

    /// Until when a release is worth retrying: past the cluster's own expiry
    /// of our lease there is nothing left to free.
    pub fn release_horizon_ms(&self) -> u64 {
        self.lease_deadline()
            .saturating_add(2 * self.locker.lock_margin_ms)
            .saturating_add(1_000)
    }
}

/// Passed to a job by [`Locker::acquire_and_run`](crate::Locker::acquire_and_run):
/// call [`heartbeat`](Heartbeater::heartbeat) often (it is cheap); it extends
/// the lock now and then, rechecks that nobody took it over, and fails with
/// [`Error::Lost`] once the lock is lost ("seppuku"), or with
/// [`Error::Draining`] while the process is draining.
///
/// Cloning is cheap; clones share one lock, and concurrent heartbeats from
/// several tasks coalesce into one network request.
///
/// ```
/// # async fn demo() -> Result<(), locker_client::Error> {
/// // A heartbeater that never loses anything, for short jobs and tests.
/// let hb = locker_client::Heartbeater::noop("short-job");
/// for _ in 0..1000 {
///     hb.heartbeat().await?; // cheap in a tight loop
/// }
/// assert_eq!(hb.fencing_token(), None);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Heartbeater {
    inner: HbInner,
}

#[derive(Debug, Clone)]
enum HbInner {
    Lock(Arc<LockState>),
    Noop(Arc<str>),
}

impl Heartbeater {
    pub(crate) fn from_state(state: Arc<LockState>) -> Heartbeater {
        Heartbeater {
            inner: HbInner::Lock(state),
        }
    }

    /// A heartbeater bound to no lock: `heartbeat` only reports draining.
    pub fn noop(name: &str) -> Heartbeater {
        Heartbeater {
            inner: HbInner::Noop(Arc::from(name)),
        }
    }

    /// Marks the whole process as draining: every heartbeat of every lock
    /// fails with [`Error::Draining`] from now on (e.g. on SIGTERM, so
    /// long jobs stop and hand their keys over).
    ///
    /// ```
    /// # async fn demo() {
    /// use locker_client::{Error, Heartbeater};
    /// let hb = Heartbeater::noop("job");
    /// Heartbeater::set_draining("deploy");
    /// assert!(matches!(hb.heartbeat().await, Err(Error::Draining(_))));
    /// Heartbeater::clear_draining();
    /// assert!(hb.heartbeat().await.is_ok());
    /// # }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo());
    /// ```
    pub fn set_draining(reason: impl Into<String>) {
        *DRAINING_REASON.lock().unwrap_or_else(|p| p.into_inner()) = reason.into();
        DRAINING.store(true, Ordering::Release);
    }

    /// Leaves draining mode.
    pub fn clear_draining() {
        DRAINING.store(false, Ordering::Release);
    }

    /// The draining reason, when the process is draining.
    pub fn draining_reason() -> Option<String> {
        DRAINING.load(Ordering::Acquire).then(|| {
            DRAINING_REASON
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Extends and rechecks the lock when due (at most every
    /// `lock_extend_ms` and `lock_recheck_ms`), and checks the local
    /// self-fencing deadlines on every call. Cheap when nothing is due.
    ///
    /// Transient network errors do not fail it (they go to
    /// [`Locker::errors`](crate::Locker::errors) and are retried); only
    /// losing the lock or draining does.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        match &self.inner {
            HbInner::Lock(s) => s.heartbeat().await,
            HbInner::Noop(name) => match Heartbeater::draining_reason() {
                Some(reason) => Err(Error::Draining(DrainingSignal {
                    key: name.to_string(),
                    reason,
                })),
                None => Ok(()),
            },
        }
    }

    /// Sleeps `ms` milliseconds while heartbeating (at least every second),
    /// so a loss or draining interrupts the sleep.
    pub async fn delay(&self, ms: u64) -> Result<(), Error> {
        let start = tokio::time::Instant::now();
        let total = Duration::from_millis(ms);
        loop {
            self.heartbeat().await?;
            let left = total.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
    }

    /// Completes when the lock is known lost: found lost by any heartbeat,
    /// or its local self-fencing deadline passes (no extend in time, or this
    /// process's keep-alives failing for longer than the process ttl). It
    /// does not itself talk to the cluster; pair it with
    /// [`keep_alive`](Heartbeater::keep_alive) or regular heartbeats.
    ///
    /// ```no_run
    /// # async fn demo(hb: locker_client::Heartbeater) {
    /// tokio::select! {
    ///     _ = do_the_work() => {}
    ///     lost = hb.lost() => eprintln!("stopping at once: {lost}"),
    /// }
    /// # }
    /// # async fn do_the_work() {}
    /// ```
    pub async fn lost(&self) -> LockError {
        let s = match &self.inner {
            HbInner::Lock(s) => s.clone(),
            HbInner::Noop(_) => return std::future::pending().await,
        };
        let mut notify = s.notify.subscribe();
        let mut view = s.view.subscribe();
        loop {
            if let Some(e) = s.lost_error() {
                return e;
            }
            let now = s.now();
            if let Some(r) = s.fence_verdict(now) {
                return s.mark_lost(r, None);
            }
            let wake = s.report_loss_at();
            let wait = Duration::from_millis(wake.saturating_sub(now).clamp(1, 1_000));
            tokio::select! {
                _ = notify.changed() => {}
                _ = view.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Heartbeats whenever something is due, forever, and returns the error
    /// that ended it ([`Error::Lost`] or [`Error::Draining`]). Spawn it, or
    /// `select!` on it next to work that cannot call `heartbeat` itself.
    ///
    /// ```no_run
    /// # async fn demo(hb: locker_client::Heartbeater) {
    /// tokio::select! {
    ///     _ = long_opaque_call() => {}
    ///     err = hb.keep_alive() => eprintln!("stopping: {err}"),
    /// }
    /// # }
    /// # async fn long_opaque_call() {}
    /// ```
    pub async fn keep_alive(&self) -> Error {
        loop {
            if let Err(e) = self.heartbeat().await {
                return e;
            }
            let wait = match &self.inner {
                HbInner::Lock(s) => {
                    let now = s.now();
                    Duration::from_millis(s.next_event_at().saturating_sub(now).clamp(5, 1_000))
                }
                HbInner::Noop(_) => Duration::from_secs(1),
            };
            match &self.inner {
                HbInner::Lock(s) => {
                    let mut n = s.notify.subscribe();
                    tokio::select! {
                        _ = n.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                HbInner::Noop(_) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Milliseconds left until the earliest local deadline (the lock's
    /// lease or this process's record, each counted from the *send* time of
    /// its last successful request: ttl - safety margin), after which the
    /// cluster may free the lock at any moment (from one margin later). `0`
    /// once past it or once the process record was replaced; `None` for a
    /// noop heartbeater. A lost lock keeps its last deadline: a job that is
    /// told late can still see how long it has to stop.
    pub fn time_left_ms(&self) -> Option<u64> {
        match &self.inner {
            HbInner::Lock(s) => Some(s.local_deadline().saturating_sub(s.now())),
            HbInner::Noop(_) => None,
        }
    }

    /// Whether the lock is already known lost (no network, no clock check).
    pub fn is_lost(&self) -> bool {
        match &self.inner {
            HbInner::Lock(s) => s.lost_flag.load(Ordering::Acquire),
            HbInner::Noop(_) => false,
        }
    }

    /// The fencing token of the lock (`None` for a noop heartbeater): pass it
    /// to resources so they can refuse a stale holder.
    pub fn fencing_token(&self) -> Option<u64> {
        match &self.inner {
            HbInner::Lock(s) => Some(s.fencing_token),
            HbInner::Noop(_) => None,
        }
    }

    /// The lock key (the name for a noop heartbeater).
    pub fn key(&self) -> &str {
        match &self.inner {
            HbInner::Lock(s) => &s.key,
            HbInner::Noop(n) => n,
        }
    }

    /// Our owner hash (`None` for a noop heartbeater).
    pub fn owner_hash(&self) -> Option<&str> {
        match &self.inner {
            HbInner::Lock(s) => Some(&s.owner_hash),
            HbInner::Noop(_) => None,
        }
    }
}

/// The seed's extender, from [`Locker::acquire`](crate::Locker::acquire):
/// each [`extend`](Extender::extend) call extends the lock by its ttl right
/// away and tells whether we still hold it. Prefer a [`Heartbeater`].
#[derive(Debug, Clone)]
pub struct Extender {
    pub(crate) state: Arc<LockState>,
}

impl Extender {
    /// Extends the lock now. `SUCCESS` moves the local self-fencing deadline
    /// forward; any other status marks the lock lost.
    pub async fn extend(&self) -> Result<LockResponse, Error> {
        self.state.extend_now().await
    }

    /// A heartbeater for the same lock.
    pub fn heartbeater(&self) -> Heartbeater {
        Heartbeater::from_state(self.state.clone())
    }
}
