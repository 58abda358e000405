//! Crash-point helpers: start a node with crash points armed (`FAILPOINTS`),
//! arm them at runtime on the peer port, wait for the abort, and check what
//! must hold after a restart (acknowledged writes present, replicas agree).
//!
//! Needs the node built with `--features locker-node/failpoints`.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use locker_proto::ReadAnswer;
use serde_json::json;

use super::{answer, api, bin, eventually, get, http, Cluster, NodeProc, SECRET};

impl NodeProc {
    /// Starts the (stopped) node with extra environment variables, e.g.
    /// `FAILPOINTS=store::purge::after_mark=return`.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(bin("locker-node"));
        cmd.args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("LOCKER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn locker-node"));
    }

    /// Starts the stopped node as it was configured.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// The node's stderr log file (kept across restarts).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.data_dir.with_extension("log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The exit status if the process ended on its own (reaped here).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(st)
    }

    /// Waits up to `timeout` for the process to end on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `st` is death by `abort()` (SIGABRT).
pub fn aborted(st: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.signal() == Some(libc::SIGABRT)
}

/// `PUT /internal/failpoints/{name}` on the node's peer port.
pub fn arm(node: &NodeProc, name: &str, action: &str) -> super::Answer {
    answer(
        http()
            .put(format!(
                "http://{}/internal/failpoints/{name}",
                node.peer_addr
            ))
            .header("x-locker-cluster-secret", SECRET)
            .body(action.to_string())
            .send(),
    )
}

/// Every crash point the node knows (`GET /internal/failpoints`).
pub fn crash_points(node: &NodeProc) -> Vec<String> {
    let a = answer(
        http()
            .get(format!("http://{}/internal/failpoints", node.peer_addr))
            .header("x-locker-cluster-secret", SECRET)
            .send(),
    );
    assert_eq!(a.code, 200, "failpoint list: {:?}", a.body);
    a.body["failpoints"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Every error point the node knows (reads that fail when armed).
pub fn error_points(node: &NodeProc) -> Vec<String> {
    let a = answer(
        http()
            .get(format!("http://{}/internal/failpoints", node.peer_addr))
            .header("x-locker-cluster-secret", SECRET)
            .send(),
    );
    assert_eq!(a.code, 200, "failpoint list: {:?}", a.body);
    a.body["error_points"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Acquires with a short client timeout: true only when the
/// cluster acknowledged the write (200 SUCCESS).
pub fn try_acquire(base: &str, key: &str, owner: &str) -> bool {
    let a = answer(
        http()
            .post(format!("{base}/v1/locks/{}/acquire", super::enc(key)))
            .timeout(Duration::from_secs(3))
            .json(&json!({"owner_hash": owner, "ttl_ms": 3_600_000}))
            .send(),
    );
    a.code == 200 && a.status() == "SUCCESS"
}

/// The owner hash the crash tests use for `key`.
pub fn owner_of(key: &str) -> String {
    format!("{key}@crash-host/1.1.1")
}

/// Acknowledged writes, recorded as they are acknowledged.
#[derive(Default)]
pub struct Acked {
    pub keys: Vec<String>,
    next: u64,
}

impl Acked {
    /// One write of a fresh key through any running node; recorded if acknowledged.
    pub fn write_one(&mut self, c: &Cluster, prefix: &str) -> bool {
        let key = format!("{prefix}/{}", self.next);
        self.next += 1;
        let running: Vec<&NodeProc> = c.nodes.iter().filter(|n| n.is_running()).collect();
        if running.is_empty() {
            return false;
        }
        let node = running[(self.next as usize) % running.len()];
        let ok = try_acquire(&node.url(), &key, &owner_of(&key));
        if ok {
            self.keys.push(key);
        }
        ok
    }
}

/// Every acknowledged key is held by its owner (linearizable read), every
/// running node's replica holds it too (stale local reads), and the
/// replicas' digests are equal at equal applied indexes.
pub fn assert_acked_and_agreeing(c: &Cluster, acked: &Acked) {
    let leader = c.wait_ready(Duration::from_secs(60));
    for key in &acked.keys {
        let r = api::read(&c.url(leader), key);
        assert_eq!(r.code, 200, "read {key}: {:?}", r.body);
        assert_eq!(
            r.read().lock.map(|l| l.owner_hash),
            Some(owner_of(key)),
            "acknowledged write of {key} lost: {:?}",
            r.body
        );
    }
    for n in c.nodes.iter().filter(|n| n.is_running()) {
        for key in &acked.keys {
            eventually(
                Duration::from_secs(20),
                "every replica to hold the key",
                || {
                    let r = api::read_stale(&n.url(), key);
                    let owner = r.try_json::<ReadAnswer>().and_then(|a| a.lock);
                    (owner.map(|l| l.owner_hash) == Some(owner_of(key))).then_some(())
                },
            );
        }
    }
    // Owners alone could hide diverged deadlines or tokens: compare whole
    // tables at one applied index (log time ticks move indexes, hence a
    // digest per node in one answer rather than many reads).
    c.assert_replicas_agree(Duration::from_secs(30));
}

/// The node answers /healthz (it opened its store).
pub fn wait_healthy(node: &NodeProc, timeout: Duration) {
    let url = format!("{}/healthz", node.url());
    eventually(timeout, "the node to open and answer /healthz", || {
        (get(&url).code == 200).then_some(())
    });
}

/// A single-node cluster (no `--initial-cluster`) on `data_dir`, started
/// and serving; for tests that need the data dir somewhere special.
pub fn single_node(data_dir: std::path::PathBuf, extra: &[&str]) -> NodeProc {
    let client_addr = format!("127.0.0.1:{}", super::free_port());
    let peer_addr = format!("127.0.0.1:{}", super::free_port());
    let mut args = vec![
        "--id".to_string(),
        "1".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--client-addr".into(),
        client_addr.clone(),
        "--peer-addr".into(),
        peer_addr.clone(),
        "--cluster-secret".into(),
        SECRET.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut n = NodeProc {
        id: 1,
        client_addr,
        peer_addr,
        data_dir,
        args,
        child: None,
        binary: None,
    };
    n.start();
    wait_serving(&n, Duration::from_secs(30));
    n
}

/// Waits until a single node leads and answers reads.
pub fn wait_serving(n: &NodeProc, timeout: Duration) {
    eventually(timeout, "the node to serve", || {
        (get(&format!("{}/readyz", n.url())).code == 200
            && api::read(&n.url(), "__ready_probe").code == 200)
            .then_some(())
    });
}
