//! The reporter: this process's keep-alive, on its own OS thread.
//!
//! It runs its own single-threaded tokio runtime and its own HTTP client, so
//! an application runtime that is blocked or starved (a job that blocks its
//! thread for a minute) does not stop the keep-alives: that is what lets a
//! lock's own TTL be long while the fleet still learns within seconds that a
//! process died.

use crate::client::{Client, ClientOptions};
use crate::error::{ErrorKind, LockerEvent};
use crate::fence::{lease_deadline, Clock, ProcessView};
use crate::hash::new_process_hash;
use crate::Error;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

#[derive(Debug, Clone)]
pub(crate) struct ReporterConfig {
    pub client: ClientOptions,
    /// The locker's client: the reporter's own client shares its
    /// remembered good endpoint.
    pub sibling_of: Client,
    pub report_write_ms: u64,
    pub report_ttl_ms: u64,
    pub margin_ms: u64,
    pub info: Option<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Control {
    stop: bool,
    /// End the process record on the way out (graceful: frees locks now).
    end_process: bool,
    /// Write a keep-alive now (someone is waiting for one).
    wake: bool,
    /// Replace the process hash if this incarnation is still current (the
    /// cluster said our process is not running).
    rotate_incarnation: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    ctl: Mutex<Control>,
    cv: Condvar,
}

#[derive(Debug)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    view_tx: Arc<watch::Sender<ProcessView>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reporter {
    /// Starts the reporter thread with a fresh process hash.
    pub fn spawn(
        cfg: ReporterConfig,
        clock: Arc<dyn Clock>,
        events: broadcast::Sender<LockerEvent>,
    ) -> Result<Reporter, Error> {
        let view = ProcessView {
            process_hash: Arc::from(new_process_hash()),
            incarnation: 0,
            alive_deadline: None,
            terminated: false,
        };
        let (tx, _rx) = watch::channel(view);
        let view_tx = Arc::new(tx);
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Control::default()),
            cv: Condvar::new(),
        });
        let (s2, v2) = (shared.clone(), view_tx.clone());
        let thread = std::thread::Builder::new()
            .name("locker-reporter".into())
            .spawn(move || run(cfg, clock, events, s2, v2))
            .map_err(|e| Error::Config(format!("cannot spawn the reporter thread: {e}")))?;
        Ok(Reporter {
            shared,
            view_tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn view(&self) -> ProcessView {
        self.view_tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ProcessView> {
        self.view_tx.subscribe()
    }

    pub fn view_sender(&self) -> Arc<watch::Sender<ProcessView>> {
        self.view_tx.clone()
    }

    fn poke(&self, f: impl FnOnce(&mut Control)) {
        let mut c = self.shared.ctl.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c);
        self.shared.cv.notify_all();
    }

    /// Asks for a keep-alive now.
    pub fn wake(&self) {
        self.poke(|c| c.wake = true);
    }

    /// The cluster says our process is not running: unless that was already
    /// handled, give up this process hash and start a new incarnation.
    pub fn rotate_if_current(&self, incarnation: u64) {
        self.poke(|c| {
            c.rotate_incarnation = Some(incarnation);
            c.wake = true;
        });
    }

    /// Stops the thread; with `end_process` it first deletes the process
    /// record (freeing its locks at once). Returns the join handle so the
    /// caller can decide whether to wait.
    pub fn stop(&self, end_process: bool) -> Option<JoinHandle<()>> {
        self.poke(|c| {
            c.stop = true;
            c.end_process |= end_process;
        });
        self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // Dropping the locker without terminate(): still end the process so
        // its locks do not linger for a process ttl; the thread does it on
        // its own, we do not wait for it.
        let _ = self.stop(true);
    }
}

fn emit(events: &broadcast::Sender<LockerEvent>, e: Error) {
    tracing::warn!(error = %e, "locker reporter");
    let _ = events.send(LockerEvent {
        kind: ErrorKind::Reporter,
        error: Arc::new(e),
    });
}

fn run(
    cfg: ReporterConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<LockerEvent>,
    shared: Arc<Shared>,
    view_tx: Arc<watch::Sender<ProcessView>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            emit(&events, Error::Config(format!("reporter runtime: {e}")));
            return;
        }
    };
    // Its own HTTP client: connections are bound to the runtime that opened
    // them, and this thread must not depend on the application's runtime.
    let client = match cfg.sibling_of.sibling(cfg.client.clone()) {
        Ok(c) => c,
        Err(e) => {
            emit(&events, e);
            return;
        }
    };
    // One keep-alive attempt (with failover) may take at most a write
    // interval (but at least a second), so a hung node cannot delay the next
    // attempt past the process ttl.
    let attempt_budget = Duration::from_millis(
        cfg.report_write_ms
            .max(1_000)
            .min(cfg.report_ttl_ms.max(100)),
    );
    let view = view_tx.borrow().clone();
    let mut r = Reporting {
        cfg,
        clock,
        events,
        shared,
        view_tx,
        rt,
        client,
        attempt_budget,
        view,
    };
    r.run();
}

/// The reporter thread's state: what it needs to keep its process alive.
struct Reporting {
    cfg: ReporterConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<LockerEvent>,
    shared: Arc<Shared>,
    view_tx: Arc<watch::Sender<ProcessView>>,
    rt: tokio::runtime::Runtime,
    client: Client,
    attempt_budget: Duration,
    view: ProcessView,
}

/// Time allowed for ending a process record.
const END_BUDGET: Duration = Duration::from_millis(2_000);

impl Reporting {
    fn run(&mut self) {
        loop {
            let (rotate_req, stop, end_process) = {
                let mut c = self.shared.ctl.lock().unwrap_or_else(|p| p.into_inner());
                c.wake = false;
                (c.rotate_incarnation.take(), c.stop, c.end_process)
            };
            if stop {
                self.stop(end_process);
                return;
            }
            let now = self.clock.now_ms();
            let lapsed = self.view.alive_deadline.is_some_and(|d| now >= d);
            if lapsed || rotate_req == Some(self.view.incarnation) {
                self.rotate();
            }
            let sent = self.clock.now_ms();
            let Some(next_in) = self.keepalive(sent) else {
                // Confirmed too late: rotate at the top of the loop.
                continue;
            };
            self.sleep_until(sent + next_in);
        }
    }

    /// Ends the process record if asked, and tells the view it is over.
    fn stop(&mut self, end_process: bool) {
        if end_process {
            let end = self
                .client
                .end_process_within(&self.view.process_hash, Some(END_BUDGET));
            if let Err(e) = self.rt.block_on(end) {
                emit(&self.events, e);
            }
        }
        self.view.terminated = true;
        self.view.alive_deadline = None;
        self.view.incarnation += 1;
        self.view_tx.send_replace(self.view.clone());
    }

    /// Our process may already count as dead in the cluster, and the locks
    /// we hold under it are self-fenced. Never revive that hash (it would
    /// revive its old locks with nobody behind them): end it and carry on
    /// under a new one.
    fn rotate(&mut self) {
        let old = self.view.process_hash.clone();
        self.view = ProcessView {
            process_hash: Arc::from(new_process_hash()),
            incarnation: self.view.incarnation + 1,
            alive_deadline: None,
            terminated: false,
        };
        self.view_tx.send_replace(self.view.clone());
        emit(
            &self.events,
            Error::Unavailable {
                elapsed_ms: 0,
                endpoints: self.cfg.client.endpoints.join(","),
                last: format!(
                    "process {old} lapsed (keep-alive not confirmed within the process ttl); \
                     continuing as {}",
                    self.view.process_hash
                ),
            },
        );
        let end = self.client.end_process_within(&old, Some(END_BUDGET));
        if let Err(e) = self.rt.block_on(end) {
            emit(&self.events, e);
        }
    }

    /// One keep-alive sent at `sent`: the time until the next one, or
    /// `None` if it was confirmed only after our own deadline.
    fn keepalive(&mut self, sent: u64) -> Option<u64> {
        let res = self.rt.block_on(self.client.keepalive_within(
            &self.view.process_hash,
            self.cfg.report_ttl_ms,
            self.cfg.info.as_ref(),
            Some(self.attempt_budget),
        ));
        match res {
            Ok(_) => {
                let answered = self.clock.now_ms();
                if self.view.alive_deadline.is_some_and(|d| answered >= d) {
                    // The answer came back after our own deadline: heartbeats
                    // may already have fenced their locks. Stay consistent with
                    // them and rotate at the top of the loop.
                    return None;
                }
                let (ttl, margin) = (self.cfg.report_ttl_ms, self.cfg.margin_ms);
                self.view.alive_deadline = Some(lease_deadline(sent, ttl, margin));
                self.view_tx.send_replace(self.view.clone());
                Some(self.cfg.report_write_ms)
            }
            Err(e) => {
                emit(&self.events, e);
                Some(self.cfg.report_write_ms.min(500))
            }
        }
    }

    /// Sleeps until `wake_at`, a wake-up or stop request, or the process
    /// deadline (so a lapse is noticed, and the hash rotated, promptly even
    /// with a long write interval).
    fn sleep_until(&self, wake_at: u64) {
        let mut c = self.shared.ctl.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if c.stop || c.wake {
                break;
            }
            let now = self.clock.now_ms();
            if now >= wake_at {
                break;
            }
            let until = self
                .view
                .alive_deadline
                .map_or(wake_at, |d| d.max(now + 1).min(wake_at));
            let wait = Duration::from_millis((until - now).clamp(1, 1_000));
            c = match self.shared.cv.wait_timeout(c, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if self
                .view
                .alive_deadline
                .is_some_and(|d| self.clock.now_ms() >= d)
            {
                break;
            }
        }
    }
}
