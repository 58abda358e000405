//! Power-loss helpers: nodes run under the LD_PRELOAD shim of
//! `tests/powerloss/powerloss.c`, which keeps every write under the node's
//! data dir in the process's memory until an fsync. A `kill -9` then loses
//! exactly what was never synced, as a power cut does (without the shim the
//! page cache survives the process and nothing is lost).
//!
//! The shim is compiled here with `gcc` on first use (once per test process,
//! into `$CARGO_TARGET_DIR/powerloss/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{bin, Cluster};

/// The shim's C source, in the repository.
pub fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("powerloss/powerloss.c")
}

/// Path of the compiled shim; compiles it on first use (panics with gcc's
/// message if it cannot).
pub fn shim() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        // Next to the binaries under test: the same target dir.
        let dir = bin("locker-node")
            .parent()
            .map(|p| p.join("powerloss"))
            .expect("target dir");
        std::fs::create_dir_all(&dir).expect("mkdir powerloss");
        let out = dir.join("powerloss.so");
        // Built under a private name, then renamed: test processes running
        // at the same time never load a half-written library.
        let tmp = dir.join(format!("powerloss.{}.so", std::process::id()));
        let st = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&tmp)
            .arg(source())
            .args(["-ldl", "-lpthread"])
            .status()
            .expect("run gcc (the power-loss shim needs gcc)");
        assert!(st.success(), "gcc could not build the power-loss shim");
        std::fs::rename(&tmp, &out).expect("rename the shim");
        out
    })
    .clone()
}

/// Environment that starts a node under the shim, for its data dir, plus
/// `LOCKER_TEST_MUTATION` when `mutation` is set.
pub fn env(data_dir: &Path, mutation: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("LD_PRELOAD".to_string(), shim().display().to_string()),
        (
            "LOCKER_POWERLOSS_DIR".to_string(),
            data_dir.display().to_string(),
        ),
    ];
    if let Some(m) = mutation {
        env.push(("LOCKER_TEST_MUTATION".to_string(), m.to_string()));
    }
    env
}

/// Starts every stopped node of `c` under the shim (and `mutation`).
pub fn power_on(c: &mut Cluster, mutation: Option<&str>) {
    for n in c.nodes.iter_mut().filter(|n| !n.is_running()) {
        let env = env(&n.data_dir, mutation);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        n.start_with_env(&env);
    }
}

/// A power cut of every node at once: SIGKILL to all before reaping any, so
/// no node syncs anything after the first one died.
pub fn power_cut(c: &mut Cluster) {
    for n in &c.nodes {
        if let Some(pid) = n.pid() {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
    for n in &mut c.nodes {
        n.kill();
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// Whether every node's log says it runs under the shim (the shim prints a
/// line at start), and, with `mutation`, that the mutation is active.
pub fn assert_under_shim(c: &Cluster, mutation: Option<&str>) {
    for n in &c.nodes {
        let log = n.log_text();
        assert!(
            log.contains("powerloss: unsynced writes under"),
            "node {} is not running under the power-loss shim",
            n.id
        );
        if mutation.is_some() {
            assert!(
                log.contains("TEST MUTATION ACTIVE"),
                "node {} runs without the mutation: build it with --features locker-node/mutations",
                n.id
            );
        }
    }
}
