//! Workloads: client loops that drive the cluster and record the history.
//! Every loop is bounded both by the run's deadline and by an operation
//! count, so a misbehaving cluster can never make the harness spin forever.

use crate::api::{Answer, Api, Call};
use crate::history::{Fields, Op, OpType, Process, Recorder, WORKER_STRIDE};
use crate::rng::Rng;
use locker_proto::ErrorCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Hard cap on operations per worker, whatever the time limit.
pub const MAX_OPS_PER_WORKER: u64 = 200_000;

pub struct Ctx {
    pub rec: Arc<Recorder>,
    pub api: Api,
    pub urls: Vec<String>,
    /// Workers stop issuing operations at this instant.
    pub deadline: Instant,
    pub stop: Arc<AtomicBool>,
    /// Pending simulated client pauses (taken by protected-set workers
    /// inside their critical section); see [`Resource`].
    pub stall_requests: AtomicU64,
    /// Ask the takeover workload to kill its current holder now.
    pub kill_holder: tokio::sync::Notify,
    pub run_tag: String,
    /// Client hosts (namespaces) of the `run` workload and their faults.
    pub clients: Arc<crate::client_hosts::ClientHosts>,
}

impl Ctx {
    pub fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// A logical client. Its process id changes after an indeterminate result,
/// as Jepsen does, so a process never has two operations open.
pub struct Worker {
    pub id: u64,
    gen: u64,
    node: usize,
    pub ops: u64,
    pub ctx: Arc<Ctx>,
    pub rng: Rng,
}

impl Worker {
    pub fn new(id: u64, ctx: Arc<Ctx>, rng: Rng) -> Worker {
        let node = id as usize % ctx.urls.len().max(1);
        Worker {
            id,
            gen: 0,
            node,
            ops: 0,
            ctx,
            rng,
        }
    }

    pub fn process(&self) -> Process {
        Process::Client(self.id + self.gen * WORKER_STRIDE)
    }

    pub fn alive(&self) -> bool {
        !self.ctx.done() && self.ops < MAX_OPS_PER_WORKER
    }

    /// Runs one call against the worker's current node and records it.
    pub async fn call(&mut self, key: &str, call: Call) -> Answer {
        self.ops += 1;
        let f = call.f();
        let rec_key = match &call {
            Call::Keepalive { process_hash, .. } => process_hash.clone(),
            _ => key.to_string(),
        };
        self.ctx.rec.record(Op::new(
            self.process(),
            OpType::Invoke,
            f,
            Some(&rec_key),
            call.request_fields().to_value(),
        ));
        let base = self.ctx.urls.get(self.node).cloned().unwrap_or_default();
        let a = self.ctx.api.exec(&base, key, &call).await;
        let mut v = a.value();
        v["node"] = json!(self.node + 1);
        self.ctx
            .rec
            .record(Op::new(self.process(), a.kind, f, Some(&rec_key), v));
        if a.kind == OpType::Info {
            self.gen += 1;
        }
        // No definite answer: try another node next time, as a real client
        // with several endpoints would.
        if a.kind == OpType::Info || (a.kind == OpType::Fail && a.fields.status.is_none()) {
            self.node = (self.node + 1) % self.ctx.urls.len().max(1);
        }
        a
    }

    /// Like [`Worker::call`], through the Rust client library (which fails
    /// over between nodes by itself).
    pub async fn call_client(
        &mut self,
        client: &locker_client::Client,
        key: &str,
        call: Call,
    ) -> Answer {
        self.ops += 1;
        let f = call.f();
        self.ctx.rec.record(Op::new(
            self.process(),
            OpType::Invoke,
            f,
            Some(key),
            call.request_fields().to_value(),
        ));
        let a = crate::client_api::exec(client, key, &call).await;
        let mut v = a.value();
        v["via"] = json!("client");
        self.ctx
            .rec
            .record(Op::new(self.process(), a.kind, f, Some(key), v));
        if a.kind == OpType::Info {
            self.gen += 1;
        }
        a
    }

    pub async fn pause_ms(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.range(lo, hi);
        sleep(Duration::from_millis(ms)).await;
    }

    /// An owner hash in the seed's format, unique per attempt:
    /// `{key}@{host}/{pid}.{nanos}.{seq}`.
    pub fn owner(&mut self, key: &str) -> String {
        format!(
            "{key}@jw{}-{}/{}.{}.{}",
            self.id,
            self.ctx.run_tag,
            std::process::id(),
            self.gen,
            self.ops
        )
    }
}

/// The fenced mutex workload: acquire, extend, re-acquire, read, release,
/// sometimes abandon a lock to let it expire.
pub async fn mutex_worker(mut w: Worker, key: String) {
    while w.alive() {
        let owner = w.owner(&key);
        let ttl = if w.rng.chance(0.5) { 1_000 } else { 3_000 };
        let a = w
            .call(
                &key,
                Call::Acquire {
                    owner: owner.clone(),
                    ttl_ms: ttl,
                    process_hash: None,
                },
            )
            .await;
        if a.kind == OpType::Ok {
            let steps = w.rng.range(0, 3);
            for _ in 0..steps {
                if !w.alive() {
                    break;
                }
                w.pause_ms(50, 400).await;
                let c = match w.rng.below(3) {
                    0 => Call::Extend {
                        owner: owner.clone(),
                        ttl_ms: ttl,
                    },
                    1 => Call::Read,
                    _ => Call::Acquire {
                        owner: owner.clone(),
                        ttl_ms: ttl,
                        process_hash: None,
                    },
                };
                w.call(&key, c).await;
            }
            // Mostly release; sometimes walk away and let the lease expire.
            if w.rng.chance(0.85) {
                w.call(&key, Call::Release { owner }).await;
            }
        } else if a.kind == OpType::Info {
            // We may hold it: try to release so others are not blocked a
            // whole ttl (harmless if we do not).
            w.call(&key, Call::Release { owner }).await;
        } else if w.rng.chance(0.3) {
            w.call(&key, Call::Read).await;
        }
        w.pause_ms(10, 150).await;
    }
}

/// A harness-side resource guarded by the lock: a set stored as one value,
/// updated by read-modify-write. The fenced variant refuses any access with a
/// token below the highest it has seen (Kleppmann's fencing); the unfenced
/// variant accepts everything and so loses updates when a paused client
/// writes after its lease ran out.
pub struct Resource {
    pub name: String,
    pub fenced: bool,
    state: Mutex<(u64, Vec<u64>)>,
}

impl Resource {
    pub fn new(name: &str, fenced: bool) -> Resource {
        Resource {
            name: name.into(),
            fenced,
            state: Mutex::new((0, Vec::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<u64>)> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reads the current value; `None` if the token is stale.
    pub fn read(&self, token: u64) -> Option<Vec<u64>> {
        let mut g = self.lock();
        if self.fenced && token < g.0 {
            return None;
        }
        g.0 = g.0.max(token);
        Some(g.1.clone())
    }

    /// Replaces the value; false if the token is stale.
    pub fn write(&self, token: u64, v: Vec<u64>) -> bool {
        let mut g = self.lock();
        if self.fenced && token < g.0 {
            return false;
        }
        g.0 = g.0.max(token);
        g.1 = v;
        true
    }

    pub fn contents(&self) -> Vec<u64> {
        self.lock().1.clone()
    }
}

static NEXT_ELEMENT: AtomicU64 = AtomicU64::new(1);

/// Protected set: under the lock, read the resource, work a little, write it
/// back with one new element. The append is acknowledged (`ok`) only when the
/// resource accepted the write.
pub async fn set_worker(mut w: Worker, key: String, res: Arc<Resource>) {
    let ttl = 1_500u64;
    while w.alive() {
        let owner = w.owner(&key);
        let a = w
            .call(
                &key,
                Call::Acquire {
                    owner: owner.clone(),
                    ttl_ms: ttl,
                    process_hash: None,
                },
            )
            .await;
        if a.kind == OpType::Ok {
            let Some(token) = a.fields.token else {
                w.call(&key, Call::Release { owner }).await;
                continue;
            };
            let e = NEXT_ELEMENT.fetch_add(1, Ordering::Relaxed);
            let p = w.process();
            w.ctx.rec.record(Op::new(
                p,
                OpType::Invoke,
                "append",
                Some(&key),
                json!({"element": e, "token": token}),
            ));
            let mut outcome = OpType::Fail;
            if let Some(mut v) = res.read(token) {
                w.pause_ms(5, 40).await;
                // A simulated GC pause / SIGSTOP of this client, requested by
                // the client-pause nemesis: longer than the lease, so another
                // client takes over meanwhile.
                if w.ctx
                    .stall_requests
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    sleep(Duration::from_millis(ttl * 3)).await;
                }
                v.push(e);
                if res.write(token, v) {
                    outcome = OpType::Ok;
                }
            }
            w.ctx.rec.record(Op::new(
                p,
                outcome,
                "append",
                Some(&key),
                json!({"element": e, "token": token}),
            ));
            w.call(&key, Call::Release { owner }).await;
        } else if a.kind == OpType::Info {
            w.call(&key, Call::Release { owner }).await;
        }
        w.pause_ms(10, 80).await;
    }
}

/// Records the final read of a protected resource.
pub fn final_read(rec: &Recorder, process: u64, res: &Resource) {
    let p = Process::Client(process);
    rec.record(Op::new(
        p,
        OpType::Invoke,
        "final-read",
        Some(&res.name),
        Value::Null,
    ));
    rec.record(Op::new(
        p,
        OpType::Ok,
        "final-read",
        Some(&res.name),
        json!({"elements": res.contents()}),
    ));
}

/// Takeover latency: a helper process (`locker-jepsen holder`) registers a
/// process, keeps it alive and takes the lock bound to it; the harness kills
/// it with SIGKILL and measures how long until a waiter gets the lock.
pub struct TakeoverCfg {
    pub exe: std::path::PathBuf,
    pub process_ttl_ms: u64,
    pub keepalive_ms: u64,
    pub via: Via,
    /// The client host the holder runs on (see `client_hosts`; 0: none).
    pub host: u64,
}

/// How the takeover workload talks to the cluster (`holder --via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Raw HTTP: the holder writes its own keep-alives and acquire, the
    /// waiter polls `POST /acquire`.
    Http,
    /// The Rust client library: the holder is a `locker_client::Locker`
    /// (reporter thread, process-bound lock), the waiter polls through a
    /// failover `locker_client::Client`.
    Client,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Client => "client",
        }
    }
}

/// What the holder reported when it got the lock.
#[derive(Clone, Debug, Default)]
struct Grant {
    owner: Option<String>,
    process_hash: Option<String>,
}

pub async fn takeover_worker(mut w: Worker, holder_id: u64, key: String, cfg: Arc<TakeoverCfg>) {
    let client = match cfg.via {
        Via::Http => None,
        Via::Client => match crate::client_api::client(&w.ctx.urls, 8_000) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("[takeover-client] {e}");
                return;
            }
        },
    };
    let mut round = 0u64;
    while w.alive() && round < 10_000 {
        round += 1;
        let ph = format!(
            "jh{}-{}/{}.{}",
            holder_id,
            w.ctx.run_tag,
            std::process::id(),
            crate::history::monotonic_ns()
        );
        let owner = format!("{key}@{ph}.1");
        let hp = holder_id + round * WORKER_STRIDE;
        let Ok(child) = spawn_holder(&w, &cfg, &key, &owner, &ph) else {
            w.pause_ms(500, 1000).await;
            continue;
        };
        let Some(grant) = hold_then_kill(&mut w, child, hp).await else {
            continue;
        };
        // The client-driven holder makes its own owner and process hashes.
        let owner = grant.owner.unwrap_or(owner);
        let ph = grant.process_hash.unwrap_or(ph);
        // Recorded under the waiter's process: the holder's own process may
        // still have an operation open (killed mid-request).
        w.ctx.rec.record(Op::new(
            w.process(),
            OpType::Info,
            "crash",
            Some(&key),
            Fields {
                owner: Some(owner.clone()),
                process_hash: Some(ph.clone()),
                process_ttl_ms: Some(cfg.process_ttl_ms),
                ..Fields::default()
            }
            .to_value(),
        ));
        take_over(&mut w, client.as_ref(), &key, &cfg).await;
    }
}

/// Records the holder's history lines (under process `hp`) and reports its
/// grant on `tx`.
fn read_holder_output(
    out: tokio::process::ChildStdout,
    rec: Arc<Recorder>,
    hp: u64,
    tx: tokio::sync::watch::Sender<Option<Grant>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(out).lines();
        let mut n = 0u64;
        while let Ok(Some(l)) = lines.next_line().await {
            n += 1;
            if n > 100_000 {
                break;
            }
            let Ok(mut op) = serde_json::from_str::<Op>(&l) else {
                continue;
            };
            op.process = Process::Client(hp);
            op.time_ns = rec.relative(op.time_ns);
            if op.f == "acquire" && op.kind == OpType::Ok {
                let req = Fields::parse(&op.value);
                let _ = tx.send(Some(Grant {
                    owner: req.owner,
                    process_hash: req.process_hash,
                }));
            }
            rec.record_at(op);
        }
    })
}

/// Waits (15 s at most) for the holder's grant, lets it hold a moment (or
/// until the nemesis says kill), then kills it -9: no release, no
/// end-process, keep-alives stop. The grant, if there was one.
async fn hold_then_kill(
    w: &mut Worker,
    mut child: tokio::process::Child,
    hp: u64,
) -> Option<Grant> {
    let pid = child.id().unwrap_or(0);
    let (tx, mut rx) = tokio::sync::watch::channel(None::<Grant>);
    let reader = child
        .stdout
        .take()
        .map(|out| read_holder_output(out, w.ctx.rec.clone(), hp, tx));
    let grant: Option<Grant> =
        match tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|g| g.is_some())).await {
            Ok(Ok(g)) => g.clone(),
            _ => None,
        };
    if grant.is_some() {
        let hold = w.rng.range(500, 2_500);
        tokio::select! {
            _ = sleep(Duration::from_millis(hold)) => {}
            _ = w.ctx.kill_holder.notified() => {}
        }
    }
    crate::cluster::signal(pid, libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    if let Some(r) = reader {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    grant
}

/// Polls until the waiter gets the lock the killed holder had, bounded by
/// time (not by the run's deadline: the takeover must be measured to the
/// end), then releases it.
async fn take_over(
    w: &mut Worker,
    client: Option<&locker_client::Client>,
    key: &str,
    cfg: &TakeoverCfg,
) {
    let give_up = Instant::now() + Duration::from_millis(cfg.process_ttl_ms + 60_000);
    let mut mine = w.owner(key);
    let mut got = false;
    while Instant::now() < give_up
        && !w.ctx.stop.load(Ordering::Relaxed)
        && w.ops < MAX_OPS_PER_WORKER
    {
        let call = Call::Acquire {
            owner: mine.clone(),
            ttl_ms: 5_000,
            process_hash: None,
        };
        let a = match client {
            Some(c) => w.call_client(c, key, call).await,
            None => w.call(key, call).await,
        };
        if a.kind == OpType::Ok {
            got = true;
            break;
        }
        if a.error.as_deref() == Some(ErrorCode::OwnerHashRetired.as_str()) {
            // That run is over (a lost try was fenced, or it was granted
            // and ended): polling with it would be refused forever.
            mine = w.owner(key);
        }
        sleep(Duration::from_millis(100)).await;
    }
    if got || !w.ctx.stop.load(Ordering::Relaxed) {
        let call = Call::Release { owner: mine };
        match client {
            Some(c) => w.call_client(c, key, call).await,
            None => w.call(key, call).await,
        };
    }
}

fn spawn_holder(
    w: &Worker,
    cfg: &TakeoverCfg,
    key: &str,
    owner: &str,
    ph: &str,
) -> anyhow::Result<tokio::process::Child> {
    w.ctx
        .clients
        .command(cfg.host, &cfg.exe)
        .arg("holder")
        .arg("--urls")
        .arg(w.ctx.urls.join(","))
        .arg("--key")
        .arg(key)
        .arg("--owner")
        .arg(owner)
        .arg("--process-hash")
        .arg(ph)
        .arg("--process-ttl-ms")
        .arg(cfg.process_ttl_ms.to_string())
        .arg("--keepalive-ms")
        .arg(cfg.keepalive_ms.to_string())
        .arg("--max-secs")
        .arg("120")
        .arg("--via")
        .arg(cfg.via.name())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawn holder: {e}"))
}

/// The longest a holder lives (`--max-secs` is capped at this).
pub const MAX_HOLDER_SECS: u64 = 3_600;

/// `locker-jepsen holder` flags, for both drivers (`--via`).
#[derive(clap::Args, Debug, Clone)]
pub struct HolderArgs {
    /// The cluster's client URLs (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub key: String,
    /// The owner hash to acquire with (http; the client makes its own).
    #[arg(long)]
    pub owner: String,
    /// The process to keep alive and bind the lock to (http; the client
    /// makes its own).
    #[arg(long)]
    pub process_hash: String,
    #[arg(long)]
    pub process_ttl_ms: u64,
    /// Milliseconds between keep-alives.
    #[arg(long)]
    pub keepalive_ms: u64,
    /// Exit after this many seconds if not killed before (at most 3600).
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
    /// http (raw API calls) or client (the locker_client library).
    #[arg(long, value_enum, default_value_t = Via::Http)]
    pub via: Via,
}

/// The helper process: keep-alives every `keepalive_ms` from the start,
/// acquire the lock bound to the process, then just keep the process alive
/// until killed (or `max_secs`). Each operation is printed as one history
/// line with an absolute CLOCK_MONOTONIC time, which the harness rebases.
pub async fn holder_main(a: HolderArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let api = Api::new(Duration::from_millis(2_000))?;
    let end = Instant::now() + Duration::from_secs(a.max_secs.min(MAX_HOLDER_SECS));
    let emit = |kind: OpType, f: &str, key: &str, v: Value| {
        let op =
            Op::new(Process::Client(0), kind, f, Some(key), v).at(crate::history::monotonic_ns());
        if let Ok(l) = serde_json::to_string(&op) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{l}");
            let _ = out.flush();
        }
    };
    // Keepalives and acquires are sequential on one "process" so the history
    // never has two operations open for it.
    let mut node = 0usize;
    let mut have_lock = false;
    let mut next_ka = Instant::now();
    let mut ops = 0u64;
    while Instant::now() < end && ops < 100_000 {
        let base = a
            .urls
            .get(node % a.urls.len().max(1))
            .cloned()
            .unwrap_or_default();
        let call = if Instant::now() >= next_ka || !have_lock && ops == 0 {
            next_ka = Instant::now() + Duration::from_millis(a.keepalive_ms);
            Call::Keepalive {
                process_hash: a.process_hash.clone(),
                ttl_ms: a.process_ttl_ms,
            }
        } else if !have_lock {
            Call::Acquire {
                owner: a.owner.clone(),
                ttl_ms: 60_000,
                process_hash: Some(a.process_hash.clone()),
            }
        } else {
            sleep(next_ka.saturating_duration_since(Instant::now())).await;
            continue;
        };
        ops += 1;
        let key = match &call {
            Call::Keepalive { process_hash, .. } => process_hash.clone(),
            _ => a.key.clone(),
        };
        emit(
            OpType::Invoke,
            call.f(),
            &key,
            call.request_fields().to_value(),
        );
        let ans = api.exec(&base, &a.key, &call).await;
        emit(ans.kind, call.f(), &key, ans.value());
        if ans.kind == OpType::Info {
            // Unknown outcome: the helper is one process in the history and
            // must not leave an operation open; stop here, the harness treats
            // a helper that never got the lock as a failed round.
            if matches!(call, Call::Acquire { .. }) {
                return Ok(());
            }
        }
        if ans.kind != OpType::Ok {
            node += 1;
            if !matches!(call, Call::Keepalive { .. }) {
                sleep(Duration::from_millis(100)).await;
            }
        } else if matches!(call, Call::Acquire { .. }) {
            have_lock = true;
        }
    }
    Ok(())
}
