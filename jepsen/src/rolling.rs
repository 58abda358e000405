//! The `rolling-restart` nemesis: what an operator does to restart or
//! upgrade every node (docs/operations.md, "Rolling restart and upgrade"):
//! one member at a time, the leader last, a clean stop (SIGTERM: the node
//! stops taking requests, hands leadership over, flushes and exits 0), a
//! start with the same flags, and a wait for `/readyz` before the next one.
//!
//! A stop that does not end in exit 0 (another status, a signal, or still
//! running after [`STOP_LIMIT`], when it is SIGKILLed) and a node not ready
//! within [`READY_LIMIT`] are findings: the fault's `start` detail in the
//! history lists every step, the nemesis log has a `FINDING` line, and the
//! `clean-restarts` checker judges the run invalid. A node not ready in time
//! ends the round there, as it would end an operator's; the fault's undo
//! starts whatever is not running.

use crate::cluster::{Cluster, Stop};
use crate::nemesis::{Nemesis, Undo};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// How long a SIGTERMed node may take to exit: the node gives requests in
/// flight up to its write timeout + 1 s (6 s) and a leader's hand-over up to
/// an election timeout, so 20 s is generous even on a loaded machine.
pub const STOP_LIMIT: Duration = Duration::from_secs(20);

/// How long a restarted node may take until `/readyz` answers 200.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// One node's restart, as the history records it.
struct Step {
    detail: Value,
    finding: Option<String>,
    ready: bool,
}

impl Nemesis {
    /// Restarts every member in turn, the leader last.
    pub(crate) async fn rolling_restart(
        &mut self,
        c: &mut Cluster,
    ) -> anyhow::Result<(Undo, Value)> {
        let mut left = c.members.clone();
        let (mut steps, mut findings) = (Vec::new(), Vec::new());
        while !left.is_empty() {
            // Asked before every step: leadership may have moved meanwhile.
            let leader = self.leader(c).await;
            let i = left.iter().position(|&m| Some(m) != leader).unwrap_or(0);
            let id = left.remove(i);
            let step = self.restart_one(c, id, leader == Some(id)).await;
            steps.push(step.detail);
            if let Some(f) = step.finding {
                self.say(format!("FINDING: rolling-restart: {f}"));
                findings.push(f);
            }
            if !step.ready {
                break;
            }
        }
        let down: Vec<u64> = c
            .members
            .iter()
            .copied()
            .filter(|&m| !c.is_running(m))
            .collect();
        let detail = json!({
            "steps": steps,
            "complete": left.is_empty(),
            "not_restarted": left,
            "findings": findings,
        });
        let undo = if down.is_empty() {
            Undo::Nothing
        } else {
            Undo::Restart(down)
        };
        Ok((undo, detail))
    }

    /// Waits until node `id` is ready, stops it with SIGTERM, starts it
    /// with its flags, waits for `/readyz`.
    async fn restart_one(&mut self, c: &mut Cluster, id: u64, was_leader: bool) -> Step {
        let flags = c
            .nodes
            .get(&id)
            .map(|n| n.flags.clone())
            .unwrap_or_default();
        // As an operator would: a node only now starting (a kill's undo just
        // started it) is let come up first; it is stopped either way.
        let t = Instant::now();
        let ready_before = self.wait_node_ready(c, id, READY_LIMIT).await.is_ok();
        let waited_ms = t.elapsed().as_millis() as u64;
        let t0 = Instant::now();
        let stop = c.stop(id, STOP_LIMIT).await;
        let stop_ms = t0.elapsed().as_millis() as u64;
        let mut detail = json!({
            "node": id,
            "was_leader": was_leader,
            "stop": stop.describe(),
            "clean": stop.clean(),
            "stop_ms": stop_ms,
            "ready_before": ready_before,
            "waited_before_ms": waited_ms,
        });
        let mut finding = match stop {
            Stop::NotRunning => Some(format!("node {id} was not running")),
            ref s if !s.clean() => Some(format!(
                "node {id}: SIGTERM: {} after {stop_ms} ms (not exit 0)",
                s.describe()
            )),
            _ => None,
        };
        let t1 = Instant::now();
        let ready = match c.start(id, flags) {
            Ok(()) => self.wait_node_ready(c, id, READY_LIMIT).await,
            Err(e) => Err(e),
        };
        match &ready {
            Ok(()) => detail["ready_ms"] = json!(t1.elapsed().as_millis() as u64),
            Err(e) => {
                detail["not_ready"] = json!(format!("{e:#}"));
                let f = format!("node {id} not ready again: {e:#}; the rolling restart stops");
                finding = Some(finding.map_or(f.clone(), |g| format!("{g}; {f}")));
            }
        }
        detail["ready"] = json!(ready.is_ok());
        Step {
            detail,
            finding,
            ready: ready.is_ok(),
        }
    }
}
