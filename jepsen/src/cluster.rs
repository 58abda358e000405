//! Hosts and node processes.
//!
//! Two kinds of hosts:
//!
//! * `netns` (default): one network namespace per node, all attached to a
//!   Linux bridge that lives in its own namespace, plus a namespace for the
//!   harness. Addresses 10.77.0.0/24 exist only inside namespaces this run
//!   created, so nothing in the machine's own network changes, and two runs
//!   never collide (each has its own bridge namespace). The harness's HTTP
//!   clients run on threads that entered the harness namespace (see
//!   [`enter_netns`]). Partitions and packet loss are iptables rules inside
//!   node namespaces.
//! * `local`: plain processes on 127.0.0.1 ports; kill, pause and clock
//!   faults work, network faults are skipped.

use crate::rng::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where the nodes run (`--hosts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HostKind {
    /// One network namespace per node (needs root; network faults work).
    Netns,
    /// Plain processes on 127.0.0.1 (no network faults).
    Local,
}

pub const CLIENT_PORT: u16 = 7070;
pub const PEER_PORT: u16 = 7080;
const HARNESS_ADDR: &str = "10.77.0.2";

/// Network layout of a run.
#[derive(Clone, Debug)]
pub struct Hosts {
    pub kind: HostKind,
    /// Namespace name prefix, unique per run (`lkj<pid>`).
    pub prefix: String,
    /// Base port for local mode.
    pub base_port: u16,
}

impl Hosts {
    pub fn new(kind: HostKind, rng: &mut Rng) -> Hosts {
        let pid = std::process::id();
        Hosts {
            kind,
            prefix: format!("lkj{pid}"),
            // Spread runs over 20000..40000 to avoid other test suites.
            base_port: 20_000 + (rng.below(1_000) as u16) * 20,
        }
    }

    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }
    pub fn harness_ns(&self) -> String {
        format!("{}-h", self.prefix)
    }
    pub fn node_ns(&self, id: u64) -> String {
        format!("{}-n{id}", self.prefix)
    }
    pub fn node_ip(&self, id: u64) -> String {
        match self.kind {
            HostKind::Netns => format!("10.77.0.{}", 10 + id),
            HostKind::Local => "127.0.0.1".into(),
        }
    }
    pub fn client_addr(&self, id: u64) -> String {
        match self.kind {
            HostKind::Netns => format!("{}:{CLIENT_PORT}", self.node_ip(id)),
            HostKind::Local => format!("127.0.0.1:{}", self.base_port + id as u16),
        }
    }
    pub fn peer_addr(&self, id: u64) -> String {
        match self.kind {
            HostKind::Netns => format!("{}:{PEER_PORT}", self.node_ip(id)),
            HostKind::Local => format!("127.0.0.1:{}", self.base_port + 10 + id as u16),
        }
    }
    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.client_addr(id))
    }
    pub fn supports_network_faults(&self) -> bool {
        self.kind == HostKind::Netns
    }

    /// Creates namespaces, bridge and veths for node ids `1..=max_id`.
    /// On error, whatever was created is removed again.
    pub fn setup(&self, max_id: u64) -> anyhow::Result<()> {
        if self.kind == HostKind::Local {
            return Ok(());
        }
        let r = self.try_setup(max_id);
        if r.is_err() {
            self.teardown();
        }
        r
    }

    fn try_setup(&self, max_id: u64) -> anyhow::Result<()> {
        let br = self.bridge_ns();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let attach = |ns: &str, port: &str, addr: &str| -> anyhow::Result<()> {
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
                &br,
            ])?;
            ip(&["-n", &br, "link", "set", port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", port, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            Ok(())
        };
        attach(&self.harness_ns(), "ph", HARNESS_ADDR)?;
        for id in 1..=max_id {
            attach(&self.node_ns(id), &format!("p{id}"), &self.node_ip(id))?;
        }
        Ok(())
    }

    /// Removes every namespace of this run, killing what still runs in them.
    pub fn teardown(&self) {
        if self.kind == HostKind::Local {
            return;
        }
        cleanup_prefix(&self.prefix);
    }

    /// Runs iptables inside a node's namespace.
    pub fn iptables(&self, id: u64, args: &[&str]) -> anyhow::Result<()> {
        if self.kind != HostKind::Netns {
            return Err(anyhow::anyhow!("network faults need --hosts netns"));
        }
        let ns = self.node_ns(id);
        let mut full = vec!["netns", "exec", ns.as_str(), "iptables", "-w", "5"];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Drops, inside node `id`, all traffic arriving from node `from`.
    pub fn drop_from(&self, id: u64, from: u64) -> anyhow::Result<()> {
        let src = self.node_ip(from);
        self.iptables(id, &["-A", "INPUT", "-s", &src, "-j", "DROP"])
    }

    /// Removes every rule inside node `id`.
    pub fn heal(&self, id: u64) -> anyhow::Result<()> {
        self.iptables(id, &["-F", "INPUT"])
    }
}

/// Removes every namespace whose name starts with `prefix` (also used by
/// `locker-jepsen cleanup` after a crashed run): kills the processes inside,
/// then deletes the namespace.
pub fn cleanup_prefix(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return removed;
    };
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(p) = std::process::Command::new("ip")
            .args(["netns", "pids", name])
            .output()
        {
            for pid in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain signal to a pid found inside our namespace.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        // Deleting the namespace removes its veths (and the peers with them).
        let _ = ip(&["netns", "del", name]);
        removed.push(name.to_string());
    }
    removed
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_cmd("ip", args)
}

fn run_cmd(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread into a named network namespace. Threads it
/// creates afterwards (a tokio runtime's workers) inherit the namespace, so
/// every socket the harness opens lives there.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("open {path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(anyhow::anyhow!(
            "setns {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sends a signal; errors (process already gone) are not interesting.
pub fn signal(pid: u32, sig: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: sending a signal to a pid we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Extra flags a node is (re)started with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFlags {
    pub clock_offset_ms: i64,
    pub clock_rate: f64,
    pub join: bool,
    /// Extra environment (e.g. `FAILPOINTS` to arm crash points at start).
    pub env: Vec<(String, String)>,
}

/// How a clean stop ([`Cluster::stop`]) of a node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The node was not running.
    NotRunning,
    /// It exited by itself with this code, or was ended by this signal.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// It had not exited when the wait ran out: SIGKILLed.
    Killed,
    /// Waiting for it failed (it is gone either way).
    WaitFailed(String),
}

impl Stop {
    /// Exit status 0: the stop the node promises on SIGTERM.
    pub fn clean(&self) -> bool {
        matches!(self, Stop::Exited { code: Some(0), .. })
    }

    /// `exit 0`, `exit 70`, `signal 6`, `killed after the wait`, ...
    pub fn describe(&self) -> String {
        match self {
            Stop::NotRunning => "not running".into(),
            Stop::Exited { code: Some(c), .. } => format!("exit {c}"),
            Stop::Exited {
                signal: Some(s), ..
            } => format!("signal {s}"),
            Stop::Exited { .. } => "exited (no status)".into(),
            Stop::Killed => "no exit in time, SIGKILLed".into(),
            Stop::WaitFailed(e) => format!("wait failed: {e}"),
        }
    }
}

pub struct NodeProc {
    pub id: u64,
    pub child: Option<Child>,
    pub pid: u32,
    pub paused: bool,
    pub flags: NodeFlags,
}

/// The cluster's node processes.
pub struct Cluster {
    pub hosts: Hosts,
    pub node_bin: PathBuf,
    pub dir: PathBuf,
    pub secret: String,
    /// Ids of the nodes that are members (initially 1..=n).
    pub members: Vec<u64>,
    pub initial: Vec<u64>,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub election_timeout_ms: u64,
    /// The power-loss shim every node starts under (`power_loss.rs`), when
    /// the run has power-loss faults: each SIGKILL is then a power cut.
    pub power_shim: Option<PathBuf>,
}

impl Cluster {
    pub fn new(hosts: Hosts, node_bin: PathBuf, dir: PathBuf, n: u64, secret: String) -> Cluster {
        Cluster {
            hosts,
            node_bin,
            dir,
            secret,
            members: (1..=n).collect(),
            initial: (1..=n).collect(),
            nodes: BTreeMap::new(),
            election_timeout_ms: 1000,
            power_shim: None,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|&i| self.hosts.url(i)).collect()
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}"))
    }

    /// The command line of node `id`.
    fn node_args(&self, id: u64, dd: &std::path::Path, flags: &NodeFlags) -> Vec<String> {
        let initial: Vec<String> = self
            .initial
            .iter()
            .map(|&i| format!("{i}={}", self.hosts.peer_addr(i)))
            .collect();
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dd.join("data").display().to_string(),
            "--client-addr".into(),
            self.hosts.client_addr(id),
            "--peer-addr".into(),
            self.hosts.peer_addr(id),
            "--cluster-secret".into(),
            self.secret.clone(),
            "--election-timeout-ms".into(),
            self.election_timeout_ms.to_string(),
        ];
        if flags.join {
            args.push("--join".into());
        } else {
            args.push("--initial-cluster".into());
            args.push(initial.join(","));
        }
        if flags.clock_offset_ms != 0 {
            args.push(format!("--test-clock-offset-ms={}", flags.clock_offset_ms));
        }
        if flags.clock_rate != 0.0 && flags.clock_rate != 1.0 {
            args.push(format!("--test-clock-rate={}", flags.clock_rate));
        }
        args
    }

    /// Starts (or restarts) node `id` with `flags`.
    pub fn start(&mut self, id: u64, flags: NodeFlags) -> anyhow::Result<()> {
        let dd = self.data_dir(id);
        std::fs::create_dir_all(&dd).map_err(|e| anyhow::anyhow!("mkdir {}: {e}", dd.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dd.join("node.log"))
            .map_err(|e| anyhow::anyhow!("node log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| anyhow::anyhow!("node log: {e}"))?;
        let args = self.node_args(id, &dd, &flags);
        let mut cmd = match self.hosts.kind {
            HostKind::Netns => {
                // `ip netns exec` execs the node in place, so the pid we get
                // is the node's own (a shell wrapper would give the wrong one).
                let mut c = Command::new("ip");
                c.arg("netns")
                    .arg("exec")
                    .arg(self.hosts.node_ns(id))
                    .arg(&self.node_bin);
                c
            }
            HostKind::Local => Command::new(&self.node_bin),
        };
        self.under_shim(&mut cmd, &dd);
        cmd.args(&args)
            .envs(flags.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("start node {id}: {e}"))?;
        let pid = child.id().unwrap_or(0);
        self.nodes.insert(
            id,
            NodeProc {
                id,
                child: Some(child),
                pid,
                paused: false,
                flags,
            },
        );
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// kill -9 and reap.
    pub async fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.child.take() {
                signal(n.pid, libc::SIGKILL);
                // A stopped process still dies from SIGKILL; wait bounded.
                let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
            }
            n.paused = false;
        }
    }

    /// A clean stop: SIGTERM (the node stops taking requests, hands
    /// leadership over, flushes and exits 0), then up to `limit` for the
    /// exit; a node still running then is SIGKILLed. A paused node gets
    /// SIGCONT too, so it can act on the SIGTERM.
    pub async fn stop(&mut self, id: u64, limit: Duration) -> Stop {
        let Some(n) = self.nodes.get_mut(&id) else {
            return Stop::NotRunning;
        };
        let Some(mut child) = n.child.take() else {
            return Stop::NotRunning;
        };
        signal(n.pid, libc::SIGTERM);
        signal(n.pid, libc::SIGCONT);
        n.paused = false;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                Stop::Exited {
                    code: status.code(),
                    signal: status.signal(),
                }
            }
            Ok(Err(e)) => Stop::WaitFailed(e.to_string()),
            Err(_) => {
                signal(n.pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                Stop::Killed
            }
        }
    }

    /// Puts the node command under the power-loss shim, if the run uses it
    /// (the environment is inherited through `ip netns exec`).
    fn under_shim(&self, cmd: &mut Command, node_dir: &Path) {
        if let Some(shim) = &self.power_shim {
            cmd.env("LD_PRELOAD", shim)
                .env("LOCKER_POWERLOSS_DIR", node_dir.join("data"));
        }
    }

    /// kill -9 of every node of `ids` before reaping any (a power cut of
    /// several machines at once: none syncs after the first died).
    pub async fn kill_at_once(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(n) = self.nodes.get(id).filter(|n| n.child.is_some()) {
                signal(n.pid, libc::SIGCONT);
                signal(n.pid, libc::SIGKILL);
            }
        }
        for &id in ids {
            self.kill(id).await;
        }
    }

    pub fn pause(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.child.is_some() {
                signal(n.pid, libc::SIGSTOP);
                n.paused = true;
            }
        }
    }

    pub fn resume(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.paused {
                signal(n.pid, libc::SIGCONT);
                n.paused = false;
            }
        }
    }

    pub async fn restart(&mut self, id: u64, flags: NodeFlags) -> anyhow::Result<()> {
        self.kill(id).await;
        self.start(id, flags)
    }

    /// Stops every node (SIGCONT first so paused ones can die cleanly).
    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id);
            self.kill(id).await;
        }
    }

    pub fn node_log_tail(&self, id: u64, lines: usize) -> String {
        let p = self.data_dir(id).join("node.log");
        tail(&p, lines)
    }
}

pub fn tail(p: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Picks `k` distinct elements.
pub fn pick<T: Clone>(rng: &mut Rng, items: &[T], k: usize) -> Vec<T> {
    let mut v: Vec<T> = items.to_vec();
    let mut out = Vec::new();
    while out.len() < k && !v.is_empty() {
        let i = rng.below(v.len() as u64) as usize;
        out.push(v.swap_remove(i));
    }
    out
}
