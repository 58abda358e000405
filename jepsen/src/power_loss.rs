//! The `power-loss` and `power-loss-majority` nemeses: every node of the
//! run starts under the LD_PRELOAD shim of `tests/powerloss/powerloss.c`,
//! which keeps the node's writes in its own memory until an fsync; the
//! nemesis then kills every node (`power-loss`) or a random majority
//! (`power-loss-majority`) at once with SIGKILL and restarts them. What was
//! not fsynced is gone, as after a power cut. A plain `kill-all` cannot show
//! a missing fsync: the kernel's page cache outlives the process.
//!
//! Right before the cut the nemesis takes the durability probe lock
//! (`durable_probe.rs`), so a node that acknowledges before its fsync (the
//! `ack-before-fsync` mutation) loses a grant the checkers know was made.
//!
//! The shim is compiled with `gcc` from its source, embedded in this binary,
//! into the run's output folder. Under the shim, every SIGKILL of the run
//! (kill faults, crash points' aborts too) is a power cut of that node.

use crate::cluster::{pick, Cluster};
use crate::nemesis::{Fault, Nemesis, Undo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shim's C source (one file, kept in `tests/powerloss/`).
pub const SHIM_SOURCE: &str = include_str!("../../tests/powerloss/powerloss.c");

/// Whether any fault of the run needs its nodes under the shim.
pub fn needed(faults: &[Fault]) -> bool {
    faults
        .iter()
        .any(|f| matches!(f, Fault::PowerLoss | Fault::PowerLossMajority))
}

/// Compiles the shim into `out/powerloss/powerloss.so`.
pub fn build_shim(out: &Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("powerloss");
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("mkdir {}: {e}", dir.display()))?;
    let src = dir.join("powerloss.c");
    std::fs::write(&src, SHIM_SOURCE)
        .map_err(|e| anyhow::anyhow!("write {}: {e}", src.display()))?;
    let so = dir.join("powerloss.so");
    let o = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("the power-loss nemesis needs gcc: {e}"))?;
    if !o.status.success() {
        return Err(anyhow::anyhow!(
            "gcc could not build the power-loss shim: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(so)
}

/// Before the first node starts: puts every node of the run under the shim
/// when a power-loss fault is on the list.
pub fn prepare(c: &mut Cluster, faults: &[Fault], out: &Path) -> anyhow::Result<()> {
    if needed(faults) {
        let so = build_shim(out)?;
        eprintln!(
            "[setup] nodes run under the power-loss shim {}",
            so.display()
        );
        c.power_shim = Some(so);
    }
    Ok(())
}

impl Nemesis {
    /// Cuts the power of every node (`all`) or of a random majority.
    pub(crate) async fn power_loss(
        &mut self,
        c: &mut Cluster,
        all: bool,
    ) -> anyhow::Result<(Undo, Value)> {
        if c.power_shim.is_none() {
            return Err(anyhow::anyhow!("nodes are not under the power-loss shim"));
        }
        let members = c.members.clone();
        let victims = if all {
            members.clone()
        } else {
            pick(&mut self.rng, &members, members.len() / 2 + 1)
        };
        // Durability: a grant acknowledged now must survive the cut.
        self.probe_before_kill().await;
        c.kill_at_once(&victims).await;
        Ok((Undo::Restart(victims.clone()), json!({"nodes": victims})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_compiles() {
        let dir = std::env::temp_dir().join(format!("lkj-shim-{}", std::process::id()));
        let so = build_shim(&dir).expect("gcc builds the shim");
        assert!(so.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
