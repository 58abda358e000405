//! A paused `locker` (SIGSTOP, a VM freeze, a long GC-like stall) must not
//! leave its job running past the lock: the cluster frees the lock a process
//! ttl after the last keep-alive, whatever locker is doing, so the guard
//! (which is not paused with locker) must kill the job at the local deadline
//! on its own. On SIGCONT locker must notice its deadline passed and exit 5.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use locker_tests::{bin, eventually, procs, proxy::Proxy, Cluster};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROCESS_TTL_MS: u64 = 3_000;

/// Resumes locker and kills whatever a failing test left behind.
struct Cleanup(i32, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child and of stray test sleeps.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
        for pid in procs::sleepers(&self.1) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_paused_locker_does_not_keep_its_job_alive_past_the_lock() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = format!("cli/pause/{}", procs::wall_ns());
    let inner = procs::unique_sleep(5_000);
    let mut locker =
        procs::spawn_locker_run(&url, &k, &format!("sleep {inner}; true"), PROCESS_TTL_MS);
    let _cleanup = Cleanup(locker.id() as i32, inner.clone());
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    assert!(procs::is_locked(&url, &k));

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(locker.id() as i32, libc::SIGSTOP) };
    let t0 = Instant::now();
    let mut gone_at = None;
    let freed = loop {
        if gone_at.is_none() && procs::sleepers(&inner).is_empty() {
            gone_at = Some(t0.elapsed());
        }
        if !procs::is_locked(&url, &k) {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let still = procs::sleepers(&inner);
    eprintln!("FIGURES paused locker: job gone after {gone_at:?}, lock free after {freed:?}");
    assert!(
        still.is_empty() && gone_at.is_some(),
        "locker paused: the lock was free after {freed:?} while its job {still:?} still ran"
    );

    // SAFETY: as above.
    unsafe { libc::kill(locker.id() as i32, libc::SIGCONT) };
    let resumed = Instant::now();
    let st = eventually(Duration::from_secs(15), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    eprintln!(
        "FIGURES paused locker: exited {:?} after SIGCONT",
        resumed.elapsed()
    );
    assert_eq!(st.code(), Some(5), "a lock lost while paused is exit 5");
}

/// A guard stopped by mistake (`kill -STOP` of the wrong pid): a stopped guard cannot act on locker's SIGKILL, so locker must
/// not rely on it when the lock is running out.
#[test]
fn a_stopped_guard_does_not_keep_the_job_alive_past_the_lock() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let proxy = Proxy::start(&c.node(1).client_addr);
    let k = format!("cli/guard-stopped/{}", procs::wall_ns());
    let inner = procs::unique_sleep(5_000);
    let mut locker = procs::spawn_locker_run(
        &proxy.url(),
        &k,
        &format!("sleep {inner}; true"),
        PROCESS_TTL_MS,
    );
    let _cleanup = Cleanup(locker.id() as i32, inner.clone());
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    let guard = eventually(Duration::from_secs(5), "the guard", || {
        procs::children_of(locker.id() as i32).first().copied()
    });
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            // SAFETY: kill(2) of the guard we stopped.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let _resume = Resume(guard);
    // SAFETY: kill(2) of the guard, a child of our child.
    unsafe { libc::kill(guard, libc::SIGSTOP) };
    proxy.black_hole();
    let t0 = Instant::now();
    let mut gone_at = None;
    let freed = loop {
        if gone_at.is_none() && procs::sleepers(&inner).is_empty() {
            gone_at = Some(t0.elapsed());
        }
        if !procs::is_locked(&url, &k) {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let still = procs::sleepers(&inner);
    eprintln!("FIGURES stopped guard: job gone after {gone_at:?}, lock free after {freed:?}");
    assert!(
        still.is_empty() && gone_at.is_some(),
        "guard stopped: the lock was free after {freed:?} while the job {still:?} still ran"
    );
    let st = eventually(Duration::from_secs(15), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert_eq!(st.code(), Some(5), "a lost lock is exit 5");
}

/// `kill -STOP -PGID` of locker's process group stopped locker and the
/// guard (which was in that group) but not the job (its own group): nobody
/// was left to stop the job when the lock ran out.
#[test]
fn stopping_lockers_whole_group_does_not_keep_the_job_alive_past_the_lock() {
    use std::os::unix::process::CommandExt;
    let c = Cluster::start(1);
    let url = c.url(1);
    let k = format!("cli/group-stop/{}", procs::wall_ns());
    let inner = procs::unique_sleep(5_000);
    let mut locker = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(&url)
        .args(["run", "--report-ttl-ms", "3000", "--report-write-ms", "300"])
        .args(["--grace-ms", "1000", &k, "--", "sh", "-c"])
        .arg(format!("sleep {inner}; true"))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn locker run");
    let pgid = locker.id() as i32;
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            // SAFETY: kill(2) of the process group we stopped.
            unsafe { libc::kill(-self.0, libc::SIGCONT) };
        }
    }
    let _cleanup = Cleanup(pgid, inner.clone());
    let _resume = Resume(pgid);
    eventually(Duration::from_secs(15), "the job's sleep", || {
        (procs::sleepers(&inner).len() == 1).then_some(())
    });
    // SAFETY: kill(2) of our child's process group.
    unsafe { libc::kill(-pgid, libc::SIGSTOP) };
    let t0 = Instant::now();
    let mut gone_at = None;
    let freed = loop {
        if gone_at.is_none() && procs::sleepers(&inner).is_empty() {
            gone_at = Some(t0.elapsed());
        }
        if !procs::is_locked(&url, &k) {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let still = procs::sleepers(&inner);
    eprintln!("FIGURES group stop: job gone after {gone_at:?}, lock free after {freed:?}");
    assert!(
        still.is_empty() && gone_at.is_some(),
        "locker's group stopped: the lock was free after {freed:?} while the job {still:?} ran"
    );
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGCONT) };
    let st = eventually(Duration::from_secs(15), "locker to exit", || {
        locker.try_wait().expect("try_wait")
    });
    assert_eq!(st.code(), Some(5));
}
