//! Client hosts: network namespaces for client processes (`locker run`
//! runners of the `run` workload), so faults can cut one client off from the
//! cluster while the others still reach it.
//!
//! Client `i` lives in namespace `<prefix>-c<i>` at 10.77.0.(100+i), on the
//! run's bridge like the nodes. Its faults are iptables rules:
//!
//! * `client-cut`: every node drops every packet from the client, and the
//!   client drops every packet from the nodes. Nothing is refused, so
//!   connections hang as they do behind a dead route (DROP in the client's
//!   OUTPUT chain would fail `connect` at once, which is not the fault);
//! * `client-loss`: the same with probability 0.4 per packet and direction.
//!
//! Rules are removed one by one (`-D`), so a client heal never touches the
//! rules of other faults. With `--hosts local` there are no client hosts:
//! clients run in the harness's network and these faults are skipped.
//!
//! `run-pause` needs no namespace: it SIGSTOPs the client process of a
//! running job (`locker run` itself, not its guard or job; for `run-lib` the
//! library-driven job process) for the fault's duration, then SIGCONTs it.

use crate::cluster::{Cluster, HostKind, Hosts};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// Per-packet drop probability of `client-loss`.
pub const LOSS_PROBABILITY: &str = "0.4";

/// The node every client lists first, and the one `hung-endpoint` pauses.
pub const FIRST_NODE: u64 = 1;

/// Faults prefer clients whose job runs at least this much longer.
const LONG_JOB: Duration = Duration::from_millis(3_000);

#[derive(Clone, Debug, Default)]
struct ClientState {
    /// A job of this client is running (its `STARTED` line was seen).
    running: bool,
    /// Rules currently installed for this client: (node, rule args).
    rules: Vec<(Option<u64>, Vec<String>)>,
    /// The client process while a job runs (`locker run` or `lib-job`).
    pid: u32,
    /// When that job will finish by itself.
    job_end: Option<std::time::Instant>,
    /// The pid this client's `run-pause` stopped.
    paused: Option<u32>,
    /// A process was started on this host (faults pick only such hosts).
    used: bool,
}

pub struct ClientHosts {
    pub hosts: Hosts,
    /// Number of client hosts (0 with `--hosts local`).
    pub count: u64,
    state: Mutex<Vec<ClientState>>,
}

impl ClientHosts {
    pub fn new(hosts: &Hosts, count: u64) -> ClientHosts {
        let clients = count.min(100);
        ClientHosts {
            hosts: hosts.clone(),
            // Namespaces only with netns hosts; pauses work everywhere.
            count: if hosts.kind == HostKind::Netns {
                clients
            } else {
                0
            },
            state: Mutex::new(vec![ClientState::default(); clients as usize]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ClientState>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn ns(&self, i: u64) -> String {
        format!("{}-c{i}", self.hosts.prefix)
    }

    pub fn ip(&self, i: u64) -> String {
        format!("10.77.0.{}", 100 + i)
    }

    /// Creates the client namespaces on the run's bridge (after
    /// `Hosts::setup`); `Hosts::teardown` removes them with the rest, since
    /// they share the run's prefix.
    pub fn setup(&self) -> anyhow::Result<()> {
        let br = self.hosts.bridge_ns();
        for i in 1..=self.count {
            let ns = self.ns(i);
            let port = format!("pc{i}");
            let addr = format!("{}/24", self.ip(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// A command that runs `program` on client host `i` (directly when there
    /// are no client hosts). `ip netns exec` execs in place: the child's pid
    /// is the program's own.
    pub fn command(&self, i: u64, program: &std::path::Path) -> tokio::process::Command {
        if i == 0 || i > self.count {
            return tokio::process::Command::new(program);
        }
        if let Some(s) = self.lock().get_mut(i as usize - 1) {
            s.used = true;
        }
        let mut c = tokio::process::Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns(i)).arg(program);
        c
    }

    /// Marks client `i` as running a job in process `pid` for `run_ms`
    /// more (`None`: idle).
    pub fn set_running(&self, i: u64, pid: Option<(u32, u64)>) {
        if let Some(s) = self.lock().get_mut((i as usize).wrapping_sub(1)) {
            s.running = pid.is_some();
            s.pid = pid.map_or(0, |p| p.0);
            s.job_end = pid.map(|p| std::time::Instant::now() + Duration::from_millis(p.1));
        }
    }

    /// Of `cands`, those whose job still has more than `LONG_JOB` to run (a
    /// fault there outlasts the lock), if any; else all of them.
    fn prefer_long(g: &[ClientState], cands: Vec<usize>) -> Vec<usize> {
        let soon = std::time::Instant::now() + LONG_JOB;
        let long: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&k| g[k].job_end.is_some_and(|e| e > soon))
            .collect();
        if long.is_empty() {
            cands
        } else {
            long
        }
    }

    /// `run-pause`: SIGSTOPs the process of a client whose job is running.
    pub fn pause_running(&self, rng: &mut Rng) -> Option<(u64, u32)> {
        let mut g = self.lock();
        let cands: Vec<usize> = (0..g.len())
            .filter(|&k| g[k].running && g[k].pid > 0 && g[k].paused.is_none())
            .collect();
        let cands = Self::prefer_long(&g, cands);
        if cands.is_empty() {
            return None;
        }
        let k = cands[rng.below(cands.len() as u64) as usize];
        let pid = g[k].pid;
        crate::cluster::signal(pid, libc::SIGSTOP);
        g[k].paused = Some(pid);
        Some((k as u64 + 1, pid))
    }

    /// A client to fault: one running a job if any (that is where a cut
    /// matters), else any; never one that is already faulted.
    pub fn pick_target(&self, rng: &mut Rng) -> Option<u64> {
        let g = self.lock();
        let free: Vec<u64> = (1..=self.count)
            .filter(|&i| g[i as usize - 1].used && g[i as usize - 1].rules.is_empty())
            .collect();
        let running: Vec<usize> = free
            .iter()
            .map(|&i| i as usize - 1)
            .filter(|&k| g[k].running)
            .collect();
        let running: Vec<u64> = Self::prefer_long(&g, running)
            .into_iter()
            .map(|k| k as u64 + 1)
            .collect();
        let from = if running.is_empty() { &free } else { &running };
        if from.is_empty() {
            return None;
        }
        Some(from[rng.below(from.len() as u64) as usize])
    }

    /// Starts `client-cut` (`loss == false`) or `client-loss` on client `i`.
    pub fn fault(&self, c: &Cluster, i: u64, loss: bool) -> anyhow::Result<Value> {
        if i == 0 || i > self.count {
            return Err(anyhow::anyhow!("no client host {i}"));
        }
        let stat: Vec<String> = if loss {
            ["-m", "statistic", "--mode", "random", "--probability"]
                .iter()
                .map(|s| s.to_string())
                .chain([LOSS_PROBABILITY.to_string()])
                .collect()
        } else {
            Vec::new()
        };
        let rule = |src: &str| -> Vec<String> {
            let mut r: Vec<String> = vec!["INPUT".into(), "-s".into(), src.into()];
            r.extend(stat.iter().cloned());
            r.extend(["-j".to_string(), "DROP".to_string()]);
            r
        };
        let mut added = Vec::new();
        let mut result = Ok(());
        for &m in &c.members {
            // At the node: drop what comes from the client...
            let r = rule(&self.ip(i));
            if let Err(e) = self.iptables(Some(m), "-A", &r) {
                result = Err(e);
                break;
            }
            added.push((Some(m), r));
            // ...and at the client: drop what comes from the node.
            let r = rule(&self.hosts.node_ip(m));
            if let Err(e) = self.iptables_client(i, "-A", &r) {
                result = Err(e);
                break;
            }
            added.push((None, r));
        }
        if let Some(s) = self.lock().get_mut(i as usize - 1) {
            s.rules.extend(added);
        }
        if let Err(e) = result {
            let _ = self.heal(i);
            return Err(e);
        }
        Ok(
            json!({"client": i, "client_ip": self.ip(i), "nodes": c.members,
            "probability": if loss { LOSS_PROBABILITY } else { "1" }}),
        )
    }

    /// Removes the rules of client `i`'s fault (a rule already flushed by a
    /// node heal is not an error worth keeping).
    pub fn heal(&self, i: u64) -> anyhow::Result<()> {
        let rules = match self.lock().get_mut((i as usize).wrapping_sub(1)) {
            Some(s) => {
                if let Some(pid) = s.paused.take() {
                    crate::cluster::signal(pid, libc::SIGCONT);
                }
                std::mem::take(&mut s.rules)
            }
            None => return Ok(()),
        };
        let mut first_err = None;
        for (node, r) in rules {
            let res = match node {
                Some(m) => self.iptables(Some(m), "-D", &r),
                None => self.iptables_client(i, "-D", &r),
            };
            if let (Err(e), None) = (res, &first_err) {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn heal_all(&self) {
        let n = self.lock().len() as u64;
        for i in 1..=n {
            let _ = self.heal(i);
        }
    }

    fn iptables(&self, node: Option<u64>, op: &str, rule: &[String]) -> anyhow::Result<()> {
        let Some(m) = node else {
            return Err(anyhow::anyhow!("no node"));
        };
        let mut args: Vec<&str> = vec![op];
        args.extend(rule.iter().map(String::as_str));
        self.hosts.iptables(m, &args)
    }

    fn iptables_client(&self, i: u64, op: &str, rule: &[String]) -> anyhow::Result<()> {
        let ns = self.ns(i);
        let mut args: Vec<&str> = vec!["netns", "exec", &ns, "iptables", "-w", "5", op];
        args.extend(rule.iter().map(String::as_str));
        ip(&args)
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
