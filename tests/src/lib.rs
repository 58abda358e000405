//! Test harness: real `locker-node` processes on loopback ports, driven over
//! real HTTP. No mocks of our own service.
//!
//! The binary is `$LOCKER_NODE_BIN`, or `target/debug/locker-node` (built by
//! `cargo build -p locker-node`, which the test script runs first).

pub mod procs;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use locker_proto::{
    ClusterAnswer, ErrorAnswer, ErrorCode, ExtendRequest, KeepaliveRequest, LockAnswer,
    OwnerAnswer, ReadAnswer, ReleaseRequest, StatusAnswer,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub mod auth;
pub mod crash;
pub mod powerloss;
pub mod replicas;

pub const SECRET: &str = "test-cluster-secret";

/// Path of a workspace binary (`locker-node`, `locker`), built beforehand.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not built: run `cargo build --bins` first or set {var}");
}

/// Runs a `locker-node` subcommand (`backup`, `verify-backup`, `restore`)
/// to completion, without a token from the environment.
pub fn node_tool(args: &[&str]) -> Output {
    Command::new(bin("locker-node"))
        .args(args)
        .env_remove("LOCKER_TOKEN")
        .output()
        .expect("run locker-node")
}

/// A finished command's exit code and output, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A free loopback port (checked by binding it, then released for the node
/// to take).
///
/// Not the kernel's pick (`bind(":0")`): that comes from the ephemeral range,
/// which outgoing connections draw from too, and it may hand the same port to
/// two clusters of one test binary started at the same time. Either way a
/// node fails to bind, or, worse, a test talks to another test's node (seen
/// as a read answering `locked:false` right after a SUCCESS). So ports come
/// from below the ephemeral range (32768 on Linux), from a slice of 500 per
/// test process, never the same one twice in a process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 12_000;
    const SLICE: u32 = 500;
    const SLICES: u32 = 40; // BASE + SLICES * SLICE stays below 32768
    let slice = std::process::id() % SLICES;
    for _ in 0..SLICE {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SLICE;
        let Ok(port) = u16::try_from(BASE + slice * SLICE + n) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Every port of the slice is busy: fall back to the kernel's pick.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// One node process and what is needed to restart it.
pub struct NodeProc {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// The `locker-node` binary it starts with; `None`: [`bin`]'s.
    binary: Option<PathBuf>,
}

impl NodeProc {
    pub fn url(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(self.binary())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("LOCKER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn locker-node");
        self.child = Some(child);
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// kill -9: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns its exit status success.
    pub fn stop(&mut self) -> bool {
        self.signal(libc::SIGTERM);
        match self.child.take() {
            Some(mut c) => {
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    if let Ok(Some(st)) = c.try_wait() {
                        return st.success();
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            None => false,
        }
    }

    /// The `locker-node` binary the next start runs.
    pub fn binary(&self) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| bin("locker-node"))
    }

    /// Starts the node with `path` from the next start on (an older release
    /// for the upgrade tests); `None` goes back to [`bin`]'s `locker-node`.
    pub fn set_binary(&mut self, path: Option<PathBuf>) {
        self.binary = path;
    }

    /// Sets `flag` to `value` (or removes it when `value` is None) for the
    /// next start.
    pub fn set_flag(&mut self, flag: &str, value: Option<&str>) {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..(i + 2).min(self.args.len()));
        }
        if let Some(v) = value {
            self.args.push(flag.to_string());
            self.args.push(v.to_string());
        }
    }

    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A cluster of real nodes in a temporary directory.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A process started by a test outside [`Cluster`], killed and reaped when
/// dropped, whatever the test did.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes `cmd` start with the open files limit `soft`/`hard` (as systemd and
/// container runtimes set it), for tests of descriptor exhaustion.
pub fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Sends `req` (bounded by its own timeout) and asserts it answered 200;
/// the failure names `what`, the result and how long it took.
pub fn assert_answers_200(req: reqwest::blocking::RequestBuilder, what: &str) {
    let started = Instant::now();
    let code = req.send().map(|r| r.status().as_u16());
    assert_eq!(
        code.as_ref().ok(),
        Some(&200),
        "{what} got {code:?} after {:?}",
        started.elapsed()
    );
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A decoded answer: HTTP status and JSON body (Null if not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Answer {
    /// The body as a proto type, or `None` when it is not one.
    pub fn try_json<T: DeserializeOwned>(&self) -> Option<T> {
        T::deserialize(&self.body).ok()
    }

    /// The body as a proto type; panics, showing the answer, when it is
    /// not one (a test's expectation of the answer's shape).
    pub fn json<T: DeserializeOwned>(&self) -> T {
        T::deserialize(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not a {}: {e}: {}",
                self.code,
                std::any::type_name::<T>(),
                self.body
            )
        })
    }

    /// The answer of a lock read (`GET /v1/locks/{key}`).
    pub fn read(&self) -> ReadAnswer {
        self.json()
    }

    /// The lock a lock answer or a read carries, if any.
    pub fn lock(&self) -> Option<locker_proto::Lock> {
        self.try_json::<LockAnswer>()
            .and_then(|a| a.lock)
            .or_else(|| self.try_json::<ReadAnswer>().and_then(|a| a.lock))
            .or_else(|| self.try_json::<OwnerAnswer>().and_then(|a| a.lock))
    }

    /// The status word of a lock, owner or process answer (as the proto
    /// types spell it); "" when the body is none of them.
    pub fn status(&self) -> &str {
        if let Some(a) = self.try_json::<LockAnswer>() {
            return a.status.as_str();
        }
        if let Some(a) = self.try_json::<OwnerAnswer>() {
            return a.status.as_str();
        }
        self.try_json::<StatusAnswer>()
            .map_or("", |a| a.status.as_str())
    }

    /// The code of an error body, if the body is one.
    pub fn error(&self) -> Option<ErrorCode> {
        self.try_json::<ErrorAnswer>().map(|e| e.error.code)
    }

    /// The code of an error body as its wire word; "" when the body is not
    /// the error body.
    pub fn error_code(&self) -> &str {
        self.error().map_or("", ErrorCode::as_str)
    }
}

fn answer(r: reqwest::Result<reqwest::blocking::Response>) -> Answer {
    match r {
        Ok(r) => {
            let code = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = r.text().unwrap_or_default();
            Answer {
                code,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                retry_after,
            }
        }
        Err(e) => Answer {
            code: 0,
            body: json!({"transport_error": e.to_string()}),
            retry_after: None,
        },
    }
}

/// Percent-encodes a path segment (keys, owner and process hashes).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn get(url: &str) -> Answer {
    answer(http().get(url).send())
}

pub fn post(url: &str, body: Value) -> Answer {
    answer(http().post(url).json(&body).send())
}

pub fn post_raw(url: &str, body: impl Into<reqwest::blocking::Body>) -> Answer {
    answer(
        http()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
}

pub fn put_raw(url: &str, body: impl Into<reqwest::blocking::Body>) -> Answer {
    answer(
        http()
            .put(url)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
}

pub fn put(url: &str, body: Value) -> Answer {
    answer(http().put(url).json(&body).send())
}

pub fn delete(url: &str) -> Answer {
    answer(http().delete(url).send())
}

/// A proto request body as JSON.
fn body<T: serde::Serialize>(req: &T) -> Value {
    serde_json::to_value(req).expect("a proto request serialises")
}

/// Convenience calls against one node's base URL.
pub mod api {
    use super::*;

    pub fn acquire(base: &str, key: &str, body: Value) -> Answer {
        post(&format!("{base}/v1/locks/{}/acquire", enc(key)), body)
    }
    pub fn extend(base: &str, key: &str, owner: &str, ttl_ms: Option<u64>) -> Answer {
        let b = ExtendRequest {
            owner_hash: owner.to_string(),
            ttl_ms,
        };
        post(&format!("{base}/v1/locks/{}/extend", enc(key)), body(&b))
    }
    pub fn release(base: &str, key: &str, owner: &str) -> Answer {
        let b = ReleaseRequest {
            owner_hash: owner.to_string(),
        };
        post(&format!("{base}/v1/locks/{}/release", enc(key)), body(&b))
    }
    pub fn read(base: &str, key: &str) -> Answer {
        get(&format!("{base}/v1/locks/{}", enc(key)))
    }
    pub fn read_stale(base: &str, key: &str) -> Answer {
        get(&format!("{base}/v1/locks/{}?stale=true", enc(key)))
    }
    pub fn owner(base: &str, owner_hash: &str) -> Answer {
        get(&format!("{base}/v1/owners/{}", enc(owner_hash)))
    }
    pub fn keepalive(base: &str, process: &str, ttl_ms: u64) -> Answer {
        let b = KeepaliveRequest {
            ttl_ms: Some(ttl_ms),
            info: None,
        };
        put(&format!("{base}/v1/processes/{}", enc(process)), body(&b))
    }
    pub fn end_process(base: &str, process: &str) -> Answer {
        delete(&format!("{base}/v1/processes/{}", enc(process)))
    }
    pub fn cluster(base: &str) -> Answer {
        get(&format!("{base}/v1/cluster"))
    }
    /// The live locks under `prefix` (`GET /v1/locks`, linearizable).
    pub fn locks(base: &str, prefix: &str, limit: u32) -> Answer {
        get(&format!(
            "{base}/v1/locks?prefix={}&limit={limit}",
            enc(prefix)
        ))
    }
}

/// The value of counter `name` (a line `name value`) on `base`'s metrics
/// page; 0 when the page or the line is missing.
pub fn metric(base: &str, name: &str) -> u64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Retries `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `timeout`) until `base`'s `/metrics` page has the line
/// `line` exactly (e.g. `locker_waiters 3`).
pub fn wait_for_metric(base: &str, line: &str, timeout: Duration) {
    let metrics = format!("{base}/metrics");
    eventually(timeout, line, || {
        let text = http().get(&metrics).send().ok()?.text().ok()?;
        text.lines().any(|l| l.trim() == line).then_some(())
    });
}

impl Cluster {
    /// Starts `n` nodes (1 = the no-flags single-node mode on free ports) and
    /// waits until a leader serves writes.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// Like [`Cluster::start`], with extra flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let all: Vec<u64> = (1..=n as u64).collect();
        Self::start_only(n, extra, &all)
    }

    /// A cluster of `n` configured members of which only `up` are started
    /// (the others start later with [`Cluster::restart`]); waits until a
    /// leader serves writes.
    pub fn start_only(n: usize, extra: &[&str], up: &[u64]) -> Cluster {
        let mut c = Self::configure(n, extra);
        for p in c.nodes.iter_mut().filter(|p| up.contains(&p.id)) {
            p.spawn();
        }
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.wait_ready(Duration::from_secs(30))
        }));
        if let Err(e) = ready {
            c.print_log_tails();
            std::panic::resume_unwind(e);
        }
        c
    }

    /// A cluster of `n` configured members, none started yet (start each
    /// with [`Cluster::restart`]): for tests that must act between choosing
    /// the addresses and the first start.
    pub fn configure(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes: Vec<NodeProc> = (1..=n as u64)
            .map(|id| NodeProc {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("n{id}")),
                args: Vec::new(),
                child: None,
                binary: None,
            })
            .collect();
        let initial: Vec<String> = nodes
            .iter()
            .map(|p| format!("{}={}", p.id, p.peer_addr))
            .collect();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for p in &mut nodes {
            let mut args = vec![
                "--id".to_string(),
                p.id.to_string(),
                "--data-dir".into(),
                p.data_dir.display().to_string(),
                "--client-addr".into(),
                p.client_addr.clone(),
                "--peer-addr".into(),
                p.peer_addr.clone(),
                "--cluster-secret".into(),
                SECRET.into(),
            ];
            if n > 1 {
                args.push("--initial-cluster".into());
                args.push(initial.join(","));
            }
            args.extend(extra.iter().cloned());
            p.args = args;
        }
        Cluster { nodes, dir, extra }
    }

    /// The last lines of every node's log on stderr (request noise left
    /// out): why a cluster did not become ready.
    pub fn print_log_tails(&self) {
        for n in &self.nodes {
            let text = n.log_text();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("path=/readyz") && !l.contains("__ready_probe"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("=== node {} log tail:\n{}", n.id, tail.join("\n"));
        }
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    pub fn url(&self, id: u64) -> String {
        self.node(id).url()
    }

    /// Counter `name` summed over the running nodes (the proposing moves
    /// with leadership).
    pub fn metric_sum(&self, name: &str) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| metric(&n.url(), name))
            .sum()
    }

    /// The leader as some running node sees it.
    pub fn leader(&self) -> Option<u64> {
        self.nodes.iter().filter(|n| n.is_running()).find_map(|n| {
            api::cluster(&n.url())
                .try_json::<ClusterAnswer>()?
                .leader_id
        })
    }

    /// Ids of running nodes other than the leader.
    pub fn followers(&self) -> Vec<u64> {
        let leader = self.leader();
        self.nodes
            .iter()
            .filter(|n| n.is_running() && Some(n.id) != leader)
            .map(|n| n.id)
            .collect()
    }

    /// Waits until every running node is ready (a leader, caught up) and the
    /// leader answers a write; returns the leader's id.
    pub fn wait_ready(&self, timeout: Duration) -> u64 {
        eventually(timeout, "a ready cluster", || {
            let all_ready = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| get(&format!("{}/readyz", n.url())).code == 200);
            if !all_ready {
                return None;
            }
            let leader = self.leader()?;
            // A read through the leader proves its takeover marker is applied.
            (api::read(&self.url(leader), "__ready_probe").code == 200).then_some(leader)
        })
    }

    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    pub fn restart(&mut self, id: u64) {
        let n = self.node_mut(id);
        if n.is_running() {
            n.kill();
        }
        n.spawn();
    }

    /// Starts node `id` empty with `--join` and adds it through the leader.
    pub fn add_node(&mut self, id: u64) -> Answer {
        let (peer_addr, leader) = self.spawn_joining(id);
        answer(
            http()
                .post(format!("{}/v1/cluster/members", self.url(leader)))
                .header("x-locker-cluster-secret", SECRET)
                .json(&json!({"id": id, "peer_addr": peer_addr}))
                .send(),
        )
    }

    /// Starts node `id` empty with `--join` (not added yet); returns its
    /// peer address. Call `wait_ready` only once it is added: until then
    /// it is not ready.
    pub fn start_joining(&mut self, id: u64) -> String {
        self.spawn_joining(id).0
    }

    /// `start_joining`, also returning the leader then.
    fn spawn_joining(&mut self, id: u64) -> (String, u64) {
        let mut p = NodeProc {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("n{id}")),
            args: Vec::new(),
            child: None,
            binary: None,
        };
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--data-dir".into(),
            p.data_dir.display().to_string(),
            "--client-addr".into(),
            p.client_addr.clone(),
            "--peer-addr".into(),
            p.peer_addr.clone(),
            "--cluster-secret".into(),
            SECRET.into(),
            "--join".into(),
        ];
        args.extend(self.extra.iter().cloned());
        p.args = args;
        p.spawn();
        let peer_addr = p.peer_addr.clone();
        let health = format!("{}/healthz", p.url());
        eventually(Duration::from_secs(10), "the new node to start", || {
            (get(&health).code == 200).then_some(())
        });
        // Not a member yet, so not counted by `wait_ready` until added.
        let leader = self.wait_ready(Duration::from_secs(20));
        self.nodes.push(p);
        (peer_addr, leader)
    }
}

#[cfg(test)]
mod port_tests {
    use super::free_port;

    /// Ports outside the ephemeral range, never handed out twice by one test
    /// process (the kernel's `:0` pick fails the first half of this).
    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let p = free_port();
            assert!(p < 32_768, "port {p} is in the ephemeral range");
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }
}
