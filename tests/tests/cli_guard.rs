//! The job's own children must not outlive `locker run`.
//! `sh -c 'sleep N; true'` forks `sleep`; after `kill -9` of locker, after
//! SIGTERM to locker, and after the main command exits, no process of the
//! job may survive, and the lock is freed only once they are all dead. A job
//! that escapes into its own session with `setsid` is found and killed too.
//!
//! Each test uses a unique sleep duration to find its processes in /proc.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use locker_tests::{bin, eventually, procs, Cluster};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROCESS_TTL_MS: u64 = 3_000;

fn key(name: &str) -> String {
    format!("cli/{name}/{}", procs::wall_ns())
}

/// Kills whatever a failing test left behind.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in &self.0 {
            for pid in procs::sleepers(s) {
                // SAFETY: kill(2) of a stray test process found by its argv.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Polls until the lock is free; returns (when every process of `sleeps`
/// was first seen gone, when the lock was first seen free), both measured
/// from `t0`. Panics if the lock is seen free while one still runs.
fn watch_until_free(url: &str, k: &str, sleeps: &[String], t0: Instant) -> (Duration, Duration) {
    let mut gone_at = None;
    loop {
        let alive: Vec<i32> = sleeps.iter().flat_map(|s| procs::sleepers(s)).collect();
        if alive.is_empty() && gone_at.is_none() {
            gone_at = Some(t0.elapsed());
        }
        if !procs::is_locked(url, k) {
            let freed = t0.elapsed();
            // Processes seen after the lock was seen free: a definite
            // overlap. (Seen alive just before the lock check, gone just
            // after it, is not: the job died and the lock was released both
            // within one poll; demanding a sample in between failed now and
            // then in CI with the job already gone.)
            let still: Vec<i32> = sleeps.iter().flat_map(|s| procs::sleepers(s)).collect();
            assert!(
                still.is_empty(),
                "the lock was free after {freed:?} while the job's processes {still:?} still ran"
            );
            return (gone_at.unwrap_or(freed), freed);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the lock was never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_of_locker_kills_the_whole_job_before_the_lock_is_freed() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-kill9");
    let (inner, escaper) = (procs::unique_sleep(4_000), procs::unique_sleep(4_000) + "1");
    let _cleanup = Cleanup(vec![inner.clone(), escaper.clone()]);
    // A plain child, and one that escapes into its own session.
    let script = format!("setsid sleep {escaper} & sleep {inner}; true");
    let mut locker = procs::spawn_locker_run(&url, &k, &script, PROCESS_TTL_MS);
    eventually(Duration::from_secs(15), "the job's sleeps", || {
        (procs::sleepers(&inner).len() == 1 && procs::sleepers(&escaper).len() == 1).then_some(())
    });
    assert!(procs::is_locked(&url, &k));

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(locker.id() as i32, libc::SIGKILL) };
    let t0 = Instant::now();
    let _ = locker.wait();
    let (gone, freed) = watch_until_free(&url, &k, &[inner, escaper], t0);
    eprintln!("FIGURES kill -9: job gone after {gone:?}, lock free after {freed:?}");
    assert!(
        gone < Duration::from_secs(2),
        "job gone only after {gone:?}"
    );
}

#[test]
fn sigterm_to_locker_stops_the_whole_job_before_the_lock_is_freed() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-term");
    let inner = procs::unique_sleep(4_000);
    let _cleanup = Cleanup(vec![inner.clone()]);
    let mut locker =
        procs::spawn_locker_run(&url, &k, &format!("sleep {inner}; true"), PROCESS_TTL_MS);
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(locker.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let (gone, freed) = watch_until_free(&url, &k, std::slice::from_ref(&inner), t0);
    eprintln!("FIGURES SIGTERM: job gone after {gone:?}, lock free after {freed:?}");
    assert!(
        gone < Duration::from_secs(3),
        "job gone only after {gone:?}"
    );
    let st = eventually(Duration::from_secs(10), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    // sh died of the SIGTERM: 128 + 15.
    assert_eq!(st.code(), Some(143));
}

#[test]
fn background_children_left_by_the_main_command_are_killed_when_it_exits() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-leftover");
    let (bg, escaper) = (procs::unique_sleep(4_000), procs::unique_sleep(4_000) + "2");
    let _cleanup = Cleanup(vec![bg.clone(), escaper.clone()]);
    let script = format!("sleep {bg} & setsid sleep {escaper} & sleep 0.5; exit 3");
    let mut locker = procs::spawn_locker_run(&url, &k, &script, PROCESS_TTL_MS);
    let st = eventually(Duration::from_secs(20), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert_eq!(st.code(), Some(3), "the main command's exit code");
    assert!(
        procs::sleepers(&bg).is_empty(),
        "a background child survived"
    );
    assert!(
        procs::sleepers(&escaper).is_empty(),
        "a setsid child survived"
    );
    assert!(!procs::is_locked(&url, &k));
}

#[test]
fn kill_9_of_the_guard_leaves_no_process_of_the_job_behind_the_released_lock() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-killed");
    let inner = procs::unique_sleep(4_000);
    let _cleanup = Cleanup(vec![inner.clone()]);
    // `kill -9` of the guard by mistake.
    let mut locker =
        procs::spawn_locker_run(&url, &k, &format!("sleep {inner}; true"), PROCESS_TTL_MS);
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    let guard = eventually(Duration::from_secs(5), "the guard", || {
        procs::children_of(locker.id() as i32).first().copied()
    });

    // SAFETY: kill(2) of the guard, a child of our child.
    unsafe { libc::kill(guard, libc::SIGKILL) };
    let t0 = Instant::now();
    let (gone, freed) = watch_until_free(&url, &k, std::slice::from_ref(&inner), t0);
    eprintln!("FIGURES guard killed: job gone after {gone:?}, lock free after {freed:?}");
    let st = eventually(Duration::from_secs(10), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert_ne!(st.code(), Some(0), "a killed guard is not a success");
}

/// systemd's default stop (KillMode=control-group) sends SIGTERM to every
/// process of the unit, locker and the guard at once: the job must get its
/// SIGTERM and grace period, not an immediate SIGKILL from the guard.
#[test]
fn sigterm_to_locker_and_guard_together_gives_the_job_its_grace() {
    use std::os::unix::process::CommandExt;
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-term-both");
    let inner = procs::unique_sleep(4_000);
    let _cleanup = Cleanup(vec![inner.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("term");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; sleep {inner} & wait",
        marker.display()
    );
    let mut locker = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(&url)
        .args(["run", "--report-ttl-ms", "3000", "--report-write-ms", "300"])
        .args(["--grace-ms", "1000", &k, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn locker run");
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    let guard = eventually(Duration::from_secs(5), "the guard", || {
        procs::children_of(locker.id() as i32).first().copied()
    });
    // SAFETY: kill(2) of our child (locker) and its child (the guard).
    unsafe {
        libc::kill(locker.id() as i32, libc::SIGTERM);
        libc::kill(guard, libc::SIGTERM);
    }
    let st = eventually(Duration::from_secs(10), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert!(
        marker.exists(),
        "the job was killed without its SIGTERM (locker exited {st:?})"
    );
    assert_eq!(st.code(), Some(0), "the job's trap exits 0");
    eventually(Duration::from_secs(5), "the sleep to go", || {
        procs::sleepers(&inner).is_empty().then_some(())
    });
    assert!(!procs::is_locked(&url, &k));
}

/// `pkill -9 -f PATTERN` kills every process whose command line matches:
/// locker (its argv holds the command), the main command, and, while its
/// argv held the command too, the guard: the job's children were left to
/// init and the lock was freed a process ttl later with them still running.
#[test]
fn pkill_9_of_the_command_line_leaves_no_process_of_the_job_behind() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-pkill");
    let inner = procs::unique_sleep(4_000);
    let _cleanup = Cleanup(vec![inner.clone()]);
    let script = format!("sleep {inner}; true");
    let mut locker = procs::spawn_locker_run(&url, &k, &script, PROCESS_TTL_MS);
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    let matching = procs::find_by_cmdline_part(&script);
    assert!(
        matching.contains(&(locker.id() as i32)),
        "locker's command line holds the script: {matching:?}"
    );
    for pid in &matching {
        // SAFETY: kill(2) of our child and the processes under it that a
        // `pkill -9 -f SCRIPT` would hit.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let t0 = Instant::now();
    let _ = locker.wait();
    let (gone, freed) = watch_until_free(&url, &k, std::slice::from_ref(&inner), t0);
    eprintln!(
        "FIGURES pkill -9 -f ({} processes): job gone after {gone:?}, lock free after {freed:?}",
        matching.len()
    );
}

/// A job stopped with SIGSTOP (or Ctrl-Z) cannot act on SIGTERM until it is
/// continued: the stop sequence must continue it, or its grace period is
/// wasted and it always ends by SIGKILL.
#[test]
fn a_stopped_job_gets_its_sigterm_and_grace_too() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-stopped-job");
    let inner = procs::unique_sleep(4_000);
    let _cleanup = Cleanup(vec![inner.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("term");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; sleep {inner} & wait",
        marker.display()
    );
    let mut locker = procs::spawn_locker_run(&url, &k, &script, PROCESS_TTL_MS);
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    let guard = eventually(Duration::from_secs(5), "the guard", || {
        procs::children_of(locker.id() as i32).first().copied()
    });
    let sh = eventually(Duration::from_secs(5), "the command", || {
        procs::children_of(guard).first().copied()
    });
    // SAFETY: kill(2) of the job's process group (led by sh), then of
    // locker, our child.
    unsafe {
        libc::kill(-sh, libc::SIGSTOP);
        libc::kill(locker.id() as i32, libc::SIGTERM);
    }
    let st = eventually(Duration::from_secs(10), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert!(
        marker.exists(),
        "the stopped job never ran its SIGTERM trap (locker exited {st:?})"
    );
    assert_eq!(st.code(), Some(0), "the job's trap exits 0");
}

/// The guard is told the lock's local deadline when it starts. If that has
/// passed already (locker paused or slow between the acquire and starting
/// the guard), the command must not start at all: the lock may belong to
/// someone else by now.
#[test]
fn the_guard_does_not_start_the_command_past_the_deadline() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("ran");
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors (inherited by the guard, like
    // locker's control pipe).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let script = format!("echo ran > {}", marker.display());
    let mut argv = Vec::new();
    for a in ["sh", "-c", &script] {
        argv.extend_from_slice(a.as_bytes());
        argv.push(0);
    }
    let cmd_file = tempfile::tempfile().expect("tmp file");
    std::fs::write(format!("/proc/self/fd/{}", cmd_file.as_raw_fd()), &argv).expect("write");
    // SAFETY: clear close-on-exec on our own descriptor.
    unsafe { libc::fcntl(cmd_file.as_raw_fd(), libc::F_SETFD, 0) };
    // Deadline 1 ms after boot on CLOCK_MONOTONIC: long past.
    let st = Command::new(bin("locker"))
        .args(["__guard", &fds[0].to_string(), "500", "1"])
        .arg(cmd_file.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .status()
        .expect("run the guard");
    // SAFETY: our own descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert!(
        !marker.exists(),
        "the command ran past its deadline ({st:?})"
    );
    assert_ne!(st.code(), Some(0));
}

/// On a terminal the command's group becomes the foreground group (Ctrl-C
/// and terminal input reach it), though the guard leads a group of its own.
/// `script` gives locker a pseudo-terminal.
#[test]
fn on_a_terminal_the_command_is_the_foreground_group() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` here: skipped");
        return;
    }
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = key("guard-tty");
    let line = format!(
        "{} --endpoints {url} run --report-ttl-ms 3000 --report-write-ms 300 --grace-ms 1000 \
         {k} -- sh -c 'cat /proc/$$/stat'",
        bin("locker").display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("LOCKER_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    // pid (sh) state ppid pgrp session tty_nr tpgid ...
    let fields: Vec<&str> = text
        .lines()
        .find(|l| l.contains("(sh)"))
        .unwrap_or_else(|| panic!("no stat line in {text:?}"))
        .split_whitespace()
        .collect();
    assert!(fields.len() > 7, "{fields:?}");
    assert_eq!(
        fields[4], fields[7],
        "the command's group {} is not the terminal's foreground group {}",
        fields[4], fields[7]
    );
    assert!(out.status.success(), "{out:?}");
}
