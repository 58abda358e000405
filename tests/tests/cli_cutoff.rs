//! A `locker run` cut off from the cluster (every packet
//! swallowed) must have its command dead (SIGKILL delivered, reaped) before
//! the cluster frees the lock and a second `locker run` of the key starts.
//!
//! Both jobs append `TAG <ns>` heartbeats (CLOCK_REALTIME via `date +%s%N`,
//! one clock on one machine) to one record every ~50 ms; the first job's last
//! heartbeat must come before the second job's first one, with default
//! timings, for a command that stops on SIGTERM and for one that ignores it.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use locker_tests::proxy::Proxy;
use locker_tests::{api, bin, eventually, procs, Cluster};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

fn key(name: &str) -> String {
    format!("cli/{name}/{}", procs::wall_ns())
}

/// A job command: writes its pid, then heartbeats into `record` forever.
fn job_script(tag: &str, record: &Path, pidfile: &Path, on_term: &str) -> String {
    format!(
        "echo $$ > '{pid}'; trap {on_term} TERM; \
         while :; do echo \"{tag} $(date +%s%N)\" >> '{rec}'; sleep 0.05; done",
        pid = pidfile.display(),
        rec = record.display(),
    )
}

/// `(tag, ns)` records in file order.
fn records(record: &Path) -> Vec<(String, u128)> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (tag, ns) = l.split_once(' ')?;
            Some((tag.to_string(), ns.trim().parse().ok()?))
        })
        .collect()
}

fn cut_off_job_is_dead_before_the_lock_is_free(on_term: &str) {
    let c = Cluster::start(3);
    c.wait_ready(Duration::from_secs(30));
    let proxies: Vec<Proxy> = (1..=3)
        .map(|i| Proxy::start(&c.node(i).client_addr))
        .collect();
    let via_proxies: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let direct: Vec<String> = (1..=3).map(|i| c.url(i)).collect();
    let k = key("cutoff");
    let dir = tempfile::tempdir().expect("tmp");
    let record = dir.path().join("record");

    let (a, a_pid) = start_job_a(
        &via_proxies,
        &k,
        &record,
        &dir.path().join("pid-a"),
        on_term,
    );
    let lock = api::read(&direct[0], &k);
    assert!(lock.read().locked, "{:?}", lock.body);

    // Cut A off: connections hang, nothing answers.
    for p in &proxies {
        p.black_hole();
    }
    let cut = CutOff {
        at: procs::wall_ns(),
        on_term: on_term.to_string(),
    };
    let b = start_job_b(&direct, &k, &record);
    let ended = wait_for_both(a, a_pid, b);
    cut.assert_a_was_dead_before_b_started(&record, &ended);
}

/// Job A, with default timings, talks to the cluster only through the
/// proxies; returns once its command heartbeats, with the command's pid.
fn start_job_a(
    via_proxies: &[String],
    k: &str,
    record: &Path,
    pid_a: &Path,
    on_term: &str,
) -> (Child, i32) {
    let a = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(via_proxies.join(","))
        .args(["run", k, "--", "sh", "-c"])
        .arg(job_script("A", record, pid_a, on_term))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn job A");
    let a_pid: i32 = eventually(Duration::from_secs(20), "job A to start", || {
        std::fs::read_to_string(pid_a).ok()?.trim().parse().ok()
    });
    eventually(Duration::from_secs(10), "job A's heartbeats", || {
        (records(record).len() >= 3).then_some(())
    });
    (a, a_pid)
}

/// Job B, straight to the cluster, queued until the lock is free.
fn start_job_b(direct: &[String], k: &str, record: &Path) -> Child {
    Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(direct.join(","))
        .args(["run", "--wait-ms", "60000", k, "--", "sh", "-c"])
        .arg(format!(
            "for i in 1 2 3 4 5; do echo \"B $(date +%s%N)\" >> '{}'; sleep 0.05; done",
            record.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn job B")
}

/// How job A ended.
struct Ended {
    a_pid: i32,
    /// When A's command was first seen gone (dead and reaped).
    a_gone_seen: Option<u128>,
    a_status: ExitStatus,
    a_err: String,
}

/// Waits for B to finish (it must succeed), watching A's command, then for
/// A's locker to exit.
fn wait_for_both(mut a: Child, a_pid: i32, mut b: Child) -> Ended {
    let mut a_gone_seen: Option<u128> = None;
    let b_status = eventually(Duration::from_secs(60), "job B to finish", || {
        if a_gone_seen.is_none() && procs::is_gone(a_pid) {
            a_gone_seen = Some(procs::wall_ns());
        }
        b.try_wait().expect("try_wait B")
    });
    assert_eq!(b_status.code(), Some(0), "job B");
    let b_done = std::time::Instant::now();
    let mut a_status = None;
    while a_status.is_none() && b_done.elapsed() < Duration::from_secs(30) {
        a_status = a.try_wait().expect("try_wait A");
        std::thread::sleep(Duration::from_millis(50));
    }
    if a_status.is_none() {
        // Say what it was doing: its stderr, after a SIGKILL.
        let _ = a.kill();
        let _ = a.wait();
    }
    let mut a_err = String::new();
    if let Some(mut e) = a.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut a_err);
    }
    let Some(a_status) = a_status else {
        panic!("job A's locker still ran 30 s after job B ended; its stderr:\n{a_err}");
    };
    Ended {
        a_pid,
        a_gone_seen,
        a_status,
        a_err,
    }
}

/// The moment A was cut off, and how its command treats SIGTERM.
struct CutOff {
    at: u128,
    on_term: String,
}

impl CutOff {
    /// A's last heartbeat came before B's first, A's command was gone before
    /// B started, and A's locker exited 5 (lock lost).
    fn assert_a_was_dead_before_b_started(&self, record: &Path, e: &Ended) {
        let recs = records(record);
        let last_a = recs.iter().filter(|(t, _)| t == "A").map(|r| r.1).max();
        let first_b = recs.iter().filter(|(t, _)| t == "B").map(|r| r.1).min();
        let (Some(last_a), Some(first_b)) = (last_a, first_b) else {
            panic!("records of both jobs expected: {recs:?}");
        };
        let (cut_at, a_err) = (self.at, &e.a_err);
        let ms = |ns: u128| ns as f64 / 1e6;
        eprintln!(
            "FIGURES ({}): cut off -> A's last heartbeat {:.0} ms, A seen gone {:?} ms, \
             B's first heartbeat {:.0} ms; A's last heartbeat was {:.0} ms before B's first; \
             A's locker exited {:?}: {a_err}",
            self.on_term,
            ms(last_a.saturating_sub(cut_at)),
            e.a_gone_seen.map(|g| ms(g.saturating_sub(cut_at)).round()),
            ms(first_b.saturating_sub(cut_at)),
            (first_b as f64 - last_a as f64) / 1e6,
            e.a_status,
        );
        assert!(
            last_a < first_b,
            "job A heartbeated {:.0} ms after job B started (cut off at +0: A's last at +{:.0} ms, \
             B's first at +{:.0} ms); A's stderr: {a_err}",
            ms(last_a - first_b),
            ms(last_a.saturating_sub(cut_at)),
            ms(first_b.saturating_sub(cut_at)),
        );
        let gone = e.a_gone_seen.unwrap_or(u128::MAX);
        assert!(
            gone < first_b,
            "job A's command (pid {}) was still there when job B started \
             (seen gone at +{:.0} ms, B started at +{:.0} ms)",
            e.a_pid,
            ms(gone.saturating_sub(cut_at)),
            ms(first_b.saturating_sub(cut_at)),
        );
        assert_eq!(e.a_status.code(), Some(5), "A lost its lock: {a_err}");
    }
}

#[test]
fn a_cut_off_command_that_stops_on_sigterm_is_dead_before_the_lock_is_free() {
    cut_off_job_is_dead_before_the_lock_is_free("'exit 0'");
}

#[test]
fn a_cut_off_command_that_ignores_sigterm_is_dead_before_the_lock_is_free() {
    cut_off_job_is_dead_before_the_lock_is_free("''");
}

#[test]
fn timings_that_cannot_be_safe_are_refused_with_exit_2() {
    for (flags, needle) in [
        (
            &["--grace-ms", "9500"][..],
            "--grace-ms (9500) + safety margin (1000)",
        ),
        (
            &[
                "--report-ttl-ms",
                "3000",
                "--safety-margin-ms",
                "3000",
                "--grace-ms",
                "0",
            ][..],
            "safety margin (3000) must be below --report-ttl-ms (3000)",
        ),
        (
            &["--report-write-ms", "5000"][..],
            "--report-write-ms (5000) + --grace-ms (5000)",
        ),
        (
            &["--ttl-ms", "12000", "--extend-ms", "6000"][..],
            "--extend-ms (6000) + --grace-ms (5000) + safety margin (1200)",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let marker = dir.path().join("ran");
        let out = Command::new(bin("locker"))
            .env_remove("LOCKER_ENDPOINTS")
            .args(["--endpoints", "http://127.0.0.1:9", "run"])
            .args(flags)
            .args(["k", "--", "touch"])
            .arg(&marker)
            .stdin(Stdio::null())
            .output()
            .expect("run locker");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!marker.exists(), "{flags:?}: the command must not run");
    }
}
