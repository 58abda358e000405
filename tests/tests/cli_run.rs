//! The `locker` command-line tool against a real node: `run` passes exit
//! codes on and releases, refuses a held lock naming the holder, stops its
//! command once the lock is taken away, and dies together with its command
//! (SIGKILL of `locker` kills the command and frees the lock within the
//! process ttl). Also the one-shot subcommands.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use locker_proto::{ClusterAnswer, ListAnswer, Lock, OwnerAnswer, OwnerStatus, ReadAnswer};
use locker_tests::{api, bin, eventually, Cluster};
use serde_json::json;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn start() -> Cluster {
    // A node start-up flake must not read as a CLI failure: retry, loudly.
    for attempt in 1..=3 {
        match std::panic::catch_unwind(|| Cluster::start(1)) {
            Ok(c) => return c,
            Err(_) if attempt < 3 => eprintln!("NOTE: test node not ready; retrying ({attempt}/3)"),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!("returns or panics")
}

fn key(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli/{name}/{nanos}")
}

fn locker(url: &str) -> Command {
    let mut c = Command::new(bin("locker"));
    c.arg("--endpoints").arg(url).env_remove("LOCKER_ENDPOINTS");
    c
}

fn run_out(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run locker")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 'R', 'S', 'Z'... from /proc, or None once the process is gone (reaped).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesized command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

fn is_dead(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

fn read_pid(path: &std::path::Path) -> i32 {
    eventually(
        Duration::from_secs(15),
        "the command to write its pid",
        || {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        },
    )
}

fn held_lock(url: &str, key: &str) -> Lock {
    eventually(Duration::from_secs(15), "the lock to be held", || {
        api::read(url, key).try_json::<ReadAnswer>()?.lock
    })
}

#[test]
fn run_passes_the_exit_code_on_and_releases_the_lock() {
    let c = start();
    let url = c.url(1);
    let k = key("exit");
    let out = run_out(locker(&url).args([
        "run",
        &k,
        "--",
        "sh",
        "-c",
        "test -n \"$LOCKER_OWNER_HASH\" && test -n \"$LOCKER_FENCING_TOKEN\" && exit 7",
    ]));
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert!(!api::read(&url, &k).read().locked);
    // A command that is not there: 127, and the lock is not left behind.
    let out = run_out(locker(&url).args(["run", &k, "--", "/nonexistent/command"]));
    assert_eq!(
        out.status.code(),
        Some(127),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(!api::read(&url, &k).read().locked);
}

#[test]
fn run_refuses_a_held_lock_with_a_distinct_code_naming_the_holder() {
    let c = start();
    let url = c.url(1);
    let k = key("held");
    let holder = format!("{k}@elsewhere/77.1.1");
    let a = api::acquire(&url, &k, json!({"owner_hash": holder, "ttl_ms": 60_000}));
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("ran");
    // Debug logging on: its lines go to a pipe, so they carry no colour codes.
    let out = run_out(locker(&url).env("LOCKER_LOG", "debug").args([
        "run",
        &k,
        "--",
        "touch",
        marker.to_str().expect("utf8 path"),
    ]));
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&holder), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("DEBUG") && !text(&out.stderr).contains('\x1b'),
        "debug lines without colour codes expected:\n{}",
        text(&out.stderr)
    );
    assert!(
        !marker.exists(),
        "the command must not run without the lock"
    );

    // With --wait-ms it gets the lock once the holder releases it.
    let mut waiting = locker(&url)
        .args(["run", "--wait-ms", "20000", &k, "--", "touch"])
        .arg(&marker)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api::release(&url, &k, &holder).status(), "SUCCESS");
    let st = waiting.wait().expect("wait");
    assert_eq!(st.code(), Some(0));
    assert!(marker.exists());
}

#[test]
fn run_stops_the_command_within_recheck_plus_grace_after_the_lock_is_taken() {
    const RECHECK_MS: u64 = 500;
    const GRACE_MS: u64 = 1_000;
    let c = start();
    let url = c.url(1);
    let k = key("taken");
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    // The command ignores SIGTERM, so only SIGKILL after the grace stops it.
    let script = format!(
        "echo $$ > '{}'; trap '' TERM; while :; do sleep 0.1; done",
        pidfile.display()
    );
    let mut child = locker(&url)
        .args([
            "run",
            "--recheck-ms",
            &RECHECK_MS.to_string(),
            "--grace-ms",
            &GRACE_MS.to_string(),
            &k,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locker run");
    let cmd_pid = read_pid(&pidfile);
    let lock = held_lock(&url, &k);
    let process = lock.process_hash.as_deref().expect("bound to a process");

    // Take the lock away: end locker's process record, give the key to another.
    let taken_at = Instant::now();
    assert_eq!(api::end_process(&url, process).status(), "SUCCESS");
    let thief = format!("{k}@thief/1.2.3");
    let a = api::acquire(&url, &k, json!({"owner_hash": thief, "ttl_ms": 60_000}));
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);

    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            taken_at.elapsed() < Duration::from_secs(20),
            "locker run did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = taken_at.elapsed();
    let limit = Duration::from_millis(RECHECK_MS + GRACE_MS + 1_500);
    assert!(took <= limit, "stopped after {took:?}, limit {limit:?}");
    assert!(is_dead(cmd_pid), "the command still runs");
    assert_eq!(status.code(), Some(5));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains(&k), "{err}");
    assert!(err.contains("SIGKILL"), "{err}");
    // The thief still holds it: locker did not release someone else's lock.
    assert_eq!(
        api::read(&url, &k).lock().map(|l| l.owner_hash),
        Some(thief)
    );
}

#[test]
fn sigkill_of_locker_kills_the_command_and_frees_the_lock_within_the_process_ttl() {
    const PROCESS_TTL_MS: u64 = 2_000;
    let c = start();
    let url = c.url(1);
    let k = key("sigkill");
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 1000", pidfile.display());
    let mut first = locker(&url)
        .args([
            "run",
            "--report-ttl-ms",
            &PROCESS_TTL_MS.to_string(),
            "--report-write-ms",
            "300",
            // The default 5 s grace cannot fit in a 2 s process ttl: refused.
            "--grace-ms",
            "500",
            &k,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn locker run");
    let cmd_pid = read_pid(&pidfile);
    held_lock(&url, &k);

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    let _ = first.wait();
    eventually(
        Duration::from_secs(3),
        "the orphaned command to die",
        || is_dead(cmd_pid).then_some(()),
    );

    let out = run_out(locker(&url).args(["run", "--wait-ms", "20000", &k, "--", "true"]));
    let took = killed_at.elapsed();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        took < Duration::from_millis(PROCESS_TTL_MS + 2_000),
        "the lock was free only after {took:?}"
    );
}

#[test]
fn one_shot_subcommands() {
    let c = start();
    let url = c.url(1);
    let k = key("oneshot");
    let out = run_out(locker(&url).args(["acquire", "--ttl-ms", "60000", "--trace", "t1", &k]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let owner = text(&out.stdout).trim().to_string();
    assert!(
        owner.starts_with(&format!("{k}@")) && owner.ends_with("#t1"),
        "{owner}"
    );

    let out = run_out(locker(&url).args(["acquire", &k]));
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains(&owner));

    let out = run_out(locker(&url).args(["--json", "show", &k]));
    let v: ReadAnswer = serde_json::from_slice(&out.stdout).expect("a read answer");
    let lock = v.lock.expect("held");
    assert_eq!(lock.owner_hash, owner);
    assert_eq!(lock.trace.as_deref(), Some("t1"));

    let out = run_out(locker(&url).args(["--json", "owner", &owner]));
    let v: OwnerAnswer = serde_json::from_slice(&out.stdout).expect("an owner answer");
    assert_eq!(v.status, OwnerStatus::Running);

    let out = run_out(locker(&url).args(["extend", "--ttl-ms", "30000", &k, &owner]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let out = run_out(locker(&url).args(["--json", "list", "--prefix", &k]));
    let v: ListAnswer = serde_json::from_slice(&out.stdout).expect("a list answer");
    assert_eq!(v.locks.len(), 1, "{v:?}");

    let out = run_out(locker(&url).args(["release", &k, &owner]));
    assert_eq!(out.status.code(), Some(0));
    let out = run_out(locker(&url).args(["release", &k, &owner]));
    assert_eq!(out.status.code(), Some(4), "NO_KEY has its own code");

    let out = run_out(locker(&url).args(["--json", "cluster"]));
    let v: ClusterAnswer = serde_json::from_slice(&out.stdout).expect("a cluster view");
    assert_eq!(v.leader_id, Some(1));

    // LOCKER_ENDPOINTS is honoured when --endpoints is absent.
    let out = run_out(
        Command::new(bin("locker"))
            .env("LOCKER_ENDPOINTS", &url)
            .args(["show", &k]),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("unlocked"));
}
