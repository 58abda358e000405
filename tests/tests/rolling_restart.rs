//! A rolling restart with no failed client call: every node of a 3-node
//! cluster is stopped with SIGTERM and started again in turn (the next one
//! only once it is back and caught up) while clients keep working:
//!
//! * the Rust library: a `Locker` holding a lock and extending it, its
//!   reporter thread keeping its process alive;
//! * a `locker run` job whose command must run from start to end;
//! * curl-style single requests (one connection each) that retry only on a
//!   503 or a refused connection, rotating over the endpoints: cycles of
//!   acquire, extend, release, and blocking acquires of a held key.
//!
//! Zero failed calls, zero lost locks (same holder, same fencing token), no
//! job interrupted.
//!
//! The second test is a rolling upgrade: the same clients and checks on a
//! cluster started on an older release (`$LOCKER_OLD_NODE_BIN`), each node
//! restarted onto this build in turn. In each mixed state (one node new,
//! then two) leadership is moved to a new node, then to an old one, so both
//! a new leader replicating to old followers and an old leader replicating
//! to new ones serve the clients. `scripts/mixed_version.sh [REV]` builds
//! REV's `locker-node` and runs it; without the variable it is ignored.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locker_client::{AcquireResult, LockStatus, Locker, LockerOptions};
use locker_proto::ReadAnswer;
use locker_tests::{api, bin, enc, eventually, get, http, Cluster, NodeProc, SECRET};
use serde_json::{json, Value};

/// What the clients did: calls made, and every one that failed.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    retries: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// The client URL of a node of the older release being stopped (the
    /// rolling upgrade): that release could reset a connection as it
    /// stopped (fixed since; see `a_rolling_upgrade_...`), so a curl-style
    /// call it resets is retried as if it answered 503 `TIMEOUT`, and
    /// counted here instead of failing.
    old_stopping: Mutex<Option<String>>,
    old_resets: AtomicU64,
}

impl Tally {
    fn old_stopping(&self, url: &str) -> bool {
        self.old_stopping
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|u| url.starts_with(u.as_str())))
            .unwrap_or(false)
    }

    fn fail(&self, what: String) {
        eprintln!("FAILED CALL: {what}");
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }
}

/// One curl-style call: a new connection per request; on a 503 or a refused
/// connection the same request goes to the next endpoint, anything else is
/// the answer. Returns the status, the body, and whether an attempt
/// answered 503 `TIMEOUT` (the request may have been applied).
fn call(
    http: &reqwest::blocking::Client,
    endpoints: &[String],
    path: &str,
    body: &Value,
    tally: &Tally,
) -> Result<(u16, Value, bool), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ambiguous = false;
    let mut i = 0usize;
    loop {
        let url = format!("{}{path}", endpoints[i % endpoints.len()]);
        let sent = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        let retry = match sent {
            Ok(r) if r.status().as_u16() == 503 => {
                let v: Value = r.json().unwrap_or(Value::Null);
                ambiguous |= v["error"]["code"] == "TIMEOUT";
                format!("503 {v}")
            }
            Ok(r) => {
                let code = r.status().as_u16();
                let v: Value = r.json().unwrap_or(Value::Null);
                return Ok((code, v, ambiguous));
            }
            Err(e) if e.is_connect() => format!("connect: {e}"),
            Err(e) if tally.old_stopping(&url) => {
                tally.old_resets.fetch_add(1, Ordering::Relaxed);
                eprintln!("reset by a stopping node of the older release: {url}: {e}");
                ambiguous = true;
                format!("reset by the older release: {e}")
            }
            Err(e) => return Err(format!("{url}: {e:?}")),
        };
        tally.retries.fetch_add(1, Ordering::Relaxed);
        if Instant::now() > deadline {
            return Err(format!("{url}: still {retry} after 30 s"));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl_http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// Cycles of acquire, extend, release of one key, each with a new owner.
fn curl_cycles(id: u64, endpoints: Vec<String>, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let http = curl_http();
    let key = format!("rolling/curl/{id}");
    let path = |op: &str| format!("/v1/locks/{}/{op}", enc(&key));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let owner = format!("{key}@h/{id}.1.{n}");
        let steps = [
            ("acquire", json!({"owner_hash": owner, "ttl_ms": 60_000})),
            ("extend", json!({"owner_hash": owner, "ttl_ms": 60_000})),
            ("release", json!({"owner_hash": owner})),
        ];
        for (op, body) in steps {
            tally.calls.fetch_add(1, Ordering::Relaxed);
            match call(&http, &endpoints, &path(op), &body, &tally) {
                Ok((200, v, _)) if v["status"] == "SUCCESS" => {}
                // A release whose first copy was applied before its answer
                // was lost: the retry finds the key free.
                Ok((404, v, true)) if op == "release" && v["status"] == "NO_KEY" => {}
                Ok((code, v, _)) => tally.fail(format!("{op} {owner}: {code} {v}")),
                Err(e) => tally.fail(format!("{op} {owner}: {e}")),
            }
        }
    }
}

/// Blocking acquires of a key the library holds all along: each must end
/// with `SOMEONE_ELSE_HOLDS_LOCK` when its wait runs out, or be retried
/// after a 503 (a node shutting down answers its waiters at once).
fn curl_waiter(endpoints: Vec<String>, key: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let http = curl_http();
    let path = format!("/v1/locks/{}/acquire", enc(&key));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"owner_hash": format!("{key}@h/99.1.{n}"), "wait_ms": 1_500});
        tally.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match call(&http, &endpoints, &path, &body, &tally) {
            Ok((409, v, _)) if v["status"] == "SOMEONE_ELSE_HOLDS_LOCK" => {}
            Ok((code, v, _)) => tally.fail(format!("blocking acquire: {code} {v}")),
            Err(e) => tally.fail(format!("blocking acquire: {e}")),
        }
        let took = started.elapsed();
        if took > Duration::from_secs(10) {
            tally.fail(format!("a blocking acquire of 1.5 s took {took:?}"));
        }
    }
}

/// The library's lock: taken once, extended every 300 ms until `stop`,
/// then released. Returns the owner hash and fencing token through `held`.
fn library_client(
    endpoints: Vec<String>,
    key: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    held: Arc<Mutex<Option<(String, u64)>>>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let locker = Locker::new(LockerOptions {
            endpoints,
            ..LockerOptions::default()
        })
        .expect("locker");
        let mut errors = locker.errors();
        let acquired = match locker.acquire(&key, Some("rolling")).await {
            Ok(AcquireResult::Success(a)) => a,
            other => panic!("library acquire: {other:?}"),
        };
        let token = acquired.fencing_token();
        if let Ok(mut h) = held.lock() {
            *h = Some((acquired.owner_hash().to_string(), token));
        }
        let extender = acquired.extender();
        while !stop.load(Ordering::Relaxed) {
            tally.calls.fetch_add(1, Ordering::Relaxed);
            match extender.extend().await {
                Ok(r) if r.status == LockStatus::Success => {
                    let got = r.lock.as_ref().map(|l| l.fencing_token);
                    if got != Some(token) {
                        tally.fail(format!("library extend: token {got:?}, not {token}"));
                    }
                }
                other => tally.fail(format!("library extend: {other:?}")),
            }
            while let Some(e) = errors.try_recv() {
                tally.fail(format!("library event: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tally.calls.fetch_add(1, Ordering::Relaxed);
        match acquired.release().await {
            Ok(r) if r.status == LockStatus::Success => {}
            other => tally.fail(format!("library release: {other:?}")),
        }
        locker.terminate().await;
    });
}

/// `locker run` of a command that records its start, runs until the test
/// creates `stop`, and records its end.
fn start_job(endpoints: &[String], dir: &std::path::Path, key: &str) -> Child {
    let script = format!(
        "echo started >> {out}; while [ ! -e {stop} ]; do sleep 0.1; done; echo finished >> {out}",
        out = dir.join("job.out").display(),
        stop = dir.join("job.stop").display(),
    );
    Command::new(bin("locker"))
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .env_remove("LOCKER_ENDPOINTS")
        .args(["run", key, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locker run")
}

/// The holder and token of `key`, as the cluster answers a linearizable read.
fn holder(c: &Cluster, key: &str) -> Option<(String, u64)> {
    let leader = c.leader()?;
    let lock = api::read(&c.url(leader), key)
        .try_json::<ReadAnswer>()?
        .lock?;
    Some((lock.owner_hash, lock.fencing_token))
}

/// Stops node `id` with SIGTERM (a clean exit), leaves it down a moment
/// (an upgrade's binary swap: `swap`, called once it has exited), starts
/// it and waits until it is ready.
fn restart_in_turn(c: &mut Cluster, id: u64, swap: impl FnOnce(&mut NodeProc)) {
    let was_leader = c.leader() == Some(id);
    let stopped = Instant::now();
    assert!(c.node_mut(id).stop(), "node {id} did not exit cleanly");
    eprintln!(
        "node {id} (leader: {was_leader}) stopped in {:?}",
        stopped.elapsed()
    );
    swap(c.node_mut(id));
    std::thread::sleep(Duration::from_millis(1_000));
    c.restart(id);
    let ready = format!("{}/readyz", c.url(id));
    eventually(Duration::from_secs(30), "the restarted node ready", || {
        (get(&ready).code == 200).then_some(())
    });
    c.wait_ready(Duration::from_secs(30));
    eprintln!("node {id} back and caught up after {:?}", stopped.elapsed());
}

struct Clients {
    /// Stops the curl-style clients (the waiter first: once the library
    /// releases its lock, a waiter would rightly get it).
    stop: Arc<AtomicBool>,
    /// Stops the library client, once the others have stopped.
    stop_library: Arc<AtomicBool>,
    library: Option<std::thread::JoinHandle<()>>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
    library_lock: Arc<Mutex<Option<(String, u64)>>>,
}

fn start_clients(endpoints: &[String], lib_key: &str) -> Clients {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_library = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let library_lock = Arc::new(Mutex::new(None));
    let mut threads = Vec::new();
    let library = {
        let (e, k, s, t, h) = (
            endpoints.to_vec(),
            lib_key.to_string(),
            stop_library.clone(),
            tally.clone(),
            library_lock.clone(),
        );
        std::thread::spawn(move || library_client(e, k, s, t, h))
    };
    for id in 1..=3 {
        let (e, s, t) = (endpoints.to_vec(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || curl_cycles(id, e, s, t)));
    }
    let held = eventually(Duration::from_secs(20), "the library's lock", || {
        library_lock.lock().ok()?.clone()
    });
    eprintln!("library holds {lib_key} as {held:?}");
    let (e, k, s, t) = (
        endpoints.to_vec(),
        lib_key.to_string(),
        stop.clone(),
        tally.clone(),
    );
    threads.push(std::thread::spawn(move || curl_waiter(e, k, s, t)));
    Clients {
        stop,
        stop_library,
        library: Some(library),
        tally,
        threads,
        library_lock,
    }
}

/// The clients at work, and the locks they hold, through a whole roll.
struct Workload {
    clients: Clients,
    job: Child,
    dir: tempfile::TempDir,
    job_lock: (String, u64),
    lib_lock: (String, u64),
}

/// Starts the `locker run` job and the clients on a ready cluster, and lets
/// them work 2 s.
fn start_workload(c: &Cluster) -> Workload {
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let job = start_job(&endpoints, dir.path(), "rolling/job");
    let job_lock = eventually(Duration::from_secs(20), "the job's lock", || {
        holder(c, "rolling/job")
    });
    let clients = start_clients(&endpoints, "rolling/library");
    let lib_lock = clients
        .library_lock
        .lock()
        .ok()
        .and_then(|h| h.clone())
        .expect("library lock");
    std::thread::sleep(Duration::from_secs(2));
    Workload {
        clients,
        job,
        dir,
        job_lock,
        lib_lock,
    }
}

impl Workload {
    /// Neither lock changed holder or fencing token; the clients then work
    /// 2 s more in the cluster's present state.
    fn check_locks_then_work(&self, c: &Cluster) {
        assert_eq!(holder(c, "rolling/job"), Some(self.job_lock.clone()));
        assert_eq!(holder(c, "rolling/library"), Some(self.lib_lock.clone()));
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The nodes in restart order: the leader last, so that both kinds of node
/// are restarted with leadership where it was, then the leader hands over.
fn leader_last(c: &Cluster) -> Vec<u64> {
    let leader = c.leader().expect("leader");
    let mut order: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    order.push(leader);
    order
}

#[test]
fn every_node_restarted_in_turn_without_a_failed_call_a_lost_lock_or_an_interrupted_job() {
    let mut c = Cluster::start(3);
    let w = start_workload(&c);
    for id in leader_last(&c) {
        restart_in_turn(&mut c, id, |_| {});
        w.check_locks_then_work(&c);
    }
    finish(c, w);
}

/// `POST /v1/cluster/leader`: moves leadership to `id` (200 once it leads).
fn move_leader(c: &Cluster, id: u64) {
    let started = Instant::now();
    let r = http()
        .post(format!("{}/v1/cluster/leader", c.url(id)))
        .header("x-locker-cluster-secret", SECRET)
        .json(&json!({ "id": id }))
        .send()
        .map(|r| r.status().as_u16());
    if r.as_ref().ok() != Some(&200) {
        c.print_log_tails();
        panic!("moving leadership to node {id}: {r:?}");
    }
    eprintln!("node {id} leads after {:?}", started.elapsed());
}

/// The rolling upgrade: the cluster starts on `$LOCKER_OLD_NODE_BIN`, each
/// node is stopped and started on this build in turn, and in each mixed
/// state leadership goes to a new node, then to an old one. The checks of
/// the rolling restart, with one allowance: a curl-style call reset by a
/// node of the older release while it stops is retried (and counted). The
/// release `scripts/mixed_version.sh` starts from (a7a0d81) did that, 1
/// stop in 3 (fixed since by 42c83b7 and f3c1522); this build's stops and
/// every mixed state must not fail a call.
#[test]
#[ignore = "needs LOCKER_OLD_NODE_BIN: run scripts/mixed_version.sh"]
fn a_rolling_upgrade_from_the_previous_release_without_a_failed_call_a_lost_lock_or_an_interrupted_job(
) {
    let old = std::env::var_os("LOCKER_OLD_NODE_BIN")
        .map(std::path::PathBuf::from)
        .expect("LOCKER_OLD_NODE_BIN: the previous release's locker-node");
    assert!(old.is_file(), "LOCKER_OLD_NODE_BIN {old:?} is not a file");
    assert_ne!(
        std::fs::canonicalize(&old).ok(),
        std::fs::canonicalize(bin("locker-node")).ok(),
        "LOCKER_OLD_NODE_BIN is this build's locker-node"
    );
    // Only the flags the older release understands: those of the harness.
    let mut c = Cluster::configure(3, &[]);
    for id in 1..=3 {
        c.node_mut(id).set_binary(Some(old.clone()));
        c.restart(id);
    }
    c.wait_ready(Duration::from_secs(30));
    let w = start_workload(&c);
    let mut new = Vec::new();
    for id in leader_last(&c) {
        let tally = w.clients.tally.clone();
        if let Ok(mut s) = tally.old_stopping.lock() {
            *s = Some(c.url(id));
        }
        restart_in_turn(&mut c, id, |n| {
            if let Ok(mut s) = tally.old_stopping.lock() {
                *s = None;
            }
            n.set_binary(None);
        });
        new.push(id);
        w.check_locks_then_work(&c);
        let old_ids: Vec<u64> = (1..=3).filter(|i| !new.contains(i)).collect();
        if let (Some(&o), Some(&n)) = (old_ids.first(), new.last()) {
            eprintln!("mixed: new {new:?}, old {old_ids:?}");
            move_leader(&c, n);
            w.check_locks_then_work(&c);
            move_leader(&c, o);
            w.check_locks_then_work(&c);
        }
    }
    finish(c, w);
}

/// Stops the clients, ends the job, and checks what they saw: the job ran
/// start to end and released its lock, and no call failed.
fn finish(c: Cluster, w: Workload) {
    let Workload {
        mut clients,
        mut job,
        dir,
        job_lock,
        ..
    } = w;
    let dir = dir.path();
    clients.stop.store(true, Ordering::Relaxed);
    for t in clients.threads.drain(..) {
        t.join().expect("client thread");
    }
    clients.stop_library.store(true, Ordering::Relaxed);
    if let Some(l) = clients.library.take() {
        l.join().expect("library thread");
    }
    std::fs::write(dir.join("job.stop"), b"").expect("stop file");
    let status = eventually(Duration::from_secs(20), "the job to end", || {
        job.try_wait().ok().flatten()
    });
    let out = job.wait_with_output().expect("job output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran = std::fs::read_to_string(dir.join("job.out")).unwrap_or_default();
    assert!(status.success(), "locker run exited {status:?}: {stderr}");
    assert_eq!(
        ran, "started\nfinished\n",
        "the job's command was interrupted: {stderr}"
    );
    assert_eq!(
        holder(&c, "rolling/job"),
        None,
        "the job's lock {job_lock:?} was not released"
    );

    let tally = clients.tally;
    let calls = tally.calls.load(Ordering::Relaxed);
    let retries = tally.retries.load(Ordering::Relaxed);
    let old_resets = tally.old_resets.load(Ordering::Relaxed);
    let failures = tally.failures.lock().map(|f| f.clone()).unwrap_or_default();
    println!(
        "{calls} client calls, {retries} retried attempts ({old_resets} reset by a stopping node \
         of the older release), {} failed",
        failures.len()
    );
    assert!(calls > 100, "the clients made only {calls} calls");
    assert!(failures.is_empty(), "failed calls: {failures:#?}");
}
