//! The `crash-point` nemesis: arms a random crash point (a `fail` crate
//! failpoint at a durable step: flush, purge, truncate, snapshot build or
//! install, vote, state-machine batch) on a random node through the peer
//! port's `PUT /internal/failpoints/{name}`, waits for the node to abort
//! there, and restarts it without failpoints; if traffic never reached the
//! point, it is disarmed again. Needs a node built with
//! `--features locker-node/failpoints`; the run must stay valid (a crash at
//! any step must leave a store that opens, loses nothing acknowledged, and
//! agrees with the other replicas).

use crate::cluster::{pick, Cluster};
use crate::nemesis::{Nemesis, Undo};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Actions in the fail crate's syntax; `return` aborts the node when reached.
const ACTIONS: [&str; 4] = ["return", "1*off->return", "3*off->return", "25%return"];

/// Whether node `id`'s process has exited (and reaps it if so).
pub fn exited(c: &mut Cluster, id: u64) -> bool {
    let Some(n) = c.nodes.get_mut(&id) else {
        return false;
    };
    match n.child.as_mut().map(|ch| ch.try_wait()) {
        Some(Ok(Some(_))) | Some(Err(_)) => {
            n.child = None;
            true
        }
        _ => false,
    }
}

impl Nemesis {
    /// Arms a crash point and waits up to `wait` for the abort.
    pub(crate) async fn crash_point(
        &mut self,
        c: &mut Cluster,
        wait: Duration,
    ) -> anyhow::Result<(Undo, Value)> {
        let admin = self.admin(c)?;
        let running: Vec<u64> = c
            .members
            .iter()
            .copied()
            .filter(|&m| c.is_running(m))
            .collect();
        let node = pick(&mut self.rng, &running, 1)
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no running member"))?;
        let peer = format!("http://{}", c.hosts.peer_addr(node));
        if self.state.failpoints.is_empty() {
            self.state.failpoints = admin.failpoints(&peer).await.map_err(|e| {
                anyhow::anyhow!("{e} (is the node built with --features locker-node/failpoints?)")
            })?;
        }
        // JEPSEN_CRASH_POINTS=substring narrows the choice (by hand).
        let only = std::env::var("JEPSEN_CRASH_POINTS").unwrap_or_default();
        let pool: Vec<String> = self
            .state
            .failpoints
            .iter()
            .filter(|f| f.contains(only.as_str()))
            .cloned()
            .collect();
        let name = pick(&mut self.rng, &pool, 1)
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the node lists no failpoints"))?;
        if name.contains("snapshot_install") {
            return self.crash_on_install(c, node, name, wait).await;
        }
        let action = ACTIONS[self.rng.below(ACTIONS.len() as u64) as usize];
        no_core_dumps(c, node);
        admin.set_failpoint(&peer, &name, action).await?;
        let t0 = Instant::now();
        if name.contains("::vote::") {
            // A vote is written only in an election: start one by moving
            // leadership (to this node, or away from it if it leads); either
            // way it records a new term's vote. Failure is not interesting:
            // the point is then disarmed later like any unreached one.
            self.trigger_election(c, node).await;
        }
        let mut crashed = false;
        while t0.elapsed() < wait {
            if exited(c, node) {
                crashed = true;
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
        let detail = json!({
            "node": node, "failpoint": name, "action": action, "crashed": crashed,
            "after_ms": crashed.then(|| t0.elapsed().as_millis() as u64),
        });
        Ok((Undo::CrashPoint(node, name), detail))
    }

    async fn trigger_election(&mut self, c: &Cluster, node: u64) {
        let Ok(admin) = self.admin(c) else { return };
        let to = match self.leader(c).await {
            Some(l) if l == node => c.members.iter().copied().find(|&m| m != node),
            _ => Some(node),
        };
        if let Some(to) = to {
            let r = admin.transfer_leader(&c.hosts.url(to), to).await;
            if let Err(e) = r {
                self.say(format!("crash-point: election to reach a vote point: {e}"));
            }
        }
    }

    /// A snapshot is installed only by a node that fell behind the leader's
    /// purged log, so arming it on a running node rarely bites: stop the node
    /// (kill -9) for a few seconds while the others go on (crash-point runs
    /// snapshot every few hundred entries, see [`small_snapshots`]), then
    /// start it with the point armed through `FAILPOINTS`: it installs the
    /// leader's snapshot and aborts at that step (the bricked-follower scenario).
    async fn crash_on_install(
        &mut self,
        c: &mut Cluster,
        node: u64,
        name: String,
        wait: Duration,
    ) -> anyhow::Result<(Undo, Value)> {
        c.kill(node).await;
        sleep(Duration::from_secs(4)).await;
        let mut flags = c
            .nodes
            .get(&node)
            .map(|n| n.flags.clone())
            .unwrap_or_default();
        flags.env = vec![("FAILPOINTS".into(), format!("{name}=return"))];
        c.start(node, flags)?;
        let t0 = Instant::now();
        let mut crashed = false;
        while t0.elapsed() < wait {
            if exited(c, node) {
                crashed = true;
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
        let detail = json!({
            "node": node, "failpoint": name, "action": "return", "armed": "at start, after 4 s down",
            "crashed": crashed, "after_ms": crashed.then(|| t0.elapsed().as_millis() as u64),
        });
        Ok((Undo::CrashPoint(node, name), detail))
    }

    /// Restarts the node if it crashed; else disarms the point (restarting
    /// the node if that fails, so nothing stays armed). A node armed at
    /// start is always restarted without `FAILPOINTS`.
    pub(crate) async fn undo_crash_point(
        &mut self,
        c: &mut Cluster,
        node: u64,
        name: &str,
    ) -> anyhow::Result<()> {
        let mut flags = c
            .nodes
            .get(&node)
            .map(|n| n.flags.clone())
            .unwrap_or_default();
        let armed_at_start = !flags.env.is_empty();
        if !exited(c, node) && c.is_running(node) && !armed_at_start {
            let peer = format!("http://{}", c.hosts.peer_addr(node));
            let admin = self.admin(c)?;
            match admin.set_failpoint(&peer, name, "off").await {
                Ok(()) => {
                    // It may have aborted between our check and the disarm.
                    sleep(Duration::from_millis(100)).await;
                    if !exited(c, node) {
                        return Ok(());
                    }
                }
                Err(e) => self.say(format!("disarm {name} on node {node}: {e}; restarting it")),
            }
        }
        flags.env.clear();
        c.restart(node, flags).await
    }
}

/// An aborting node must not leave core files behind (they can be large).
fn no_core_dumps(c: &Cluster, node: u64) {
    let Some(pid) = c.nodes.get(&node).map(|n| n.pid).filter(|&p| p > 0) else {
        return;
    };
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on a pid we spawned, with a valid rlimit struct and no
    // old-value pointer.
    unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_CORE,
            &zero,
            std::ptr::null_mut(),
        );
    }
}

/// Crash-point runs make the nodes snapshot every 200 entries and keep 50
/// behind (`LOCKER_SNAPSHOT_EVERY`, `LOCKER_KEEP_LOGS`, unless already set),
/// so snapshot build, purge and install happen within seconds and their
/// crash points can be reached. Call before any thread starts: it sets the
/// process environment, which every node inherits.
pub fn small_snapshots() {
    for (k, v) in [("LOCKER_SNAPSHOT_EVERY", "200"), ("LOCKER_KEEP_LOGS", "50")] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}
