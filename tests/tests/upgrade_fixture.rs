//! Upgrades: this build reads data directories written by the release
//! before storage formats were recorded (format 0), and refuses, with a
//! message naming both formats, a data directory of a newer format.
//!
//! The fixture `tests/fixtures/format0.tar.gz` was written by that release
//! (`tests/fixtures/make_format0.sh`): one single-node data directory
//! stopped cleanly (`stopped/`) and one killed with kill -9 right after an
//! acknowledged write (`killed/`). Both hold a snapshot record, a purged log
//! and entries after the snapshot, live locks (with and without a process),
//! a released key and an ended process (a retired record). Their locks and
//! processes live for a day of log time, and a takeover keeps the remaining
//! time, so they are still live whenever this test runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use locker_proto::{ClusterAnswer, Lock};
use locker_tests::{api, bin, eventually, free_port, get, SECRET};
use serde_json::json;

/// The fencing tokens the old release granted (see `make_format0.sh`).
const TOKEN_A: u64 = 4;
const TOKEN_B: u64 = 5;
/// The highest token in `stopped/` (`tmp/6`) and in `killed/` (`jobs/e`).
const MAX_TOKEN_STOPPED: u64 = 16;
const MAX_TOKEN_KILLED: u64 = 19;
/// The owner hash of `jobs/d`, whose process has ended: retired.
const RETIRED_OWNER: &str = "jobs/d@vm/11112.1796115618950902645.3";

/// A node on a data directory, killed when dropped.
struct Node {
    child: Child,
    url: String,
    peer: String,
    log: PathBuf,
}

impl Node {
    fn start(data_dir: &Path) -> Node {
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let log = data_dir.with_extension("log");
        let child = Command::new(bin("locker-node"))
            .args(["--id", "1", "--data-dir"])
            .arg(data_dir)
            .args(["--client-addr", &client, "--peer-addr", &peer])
            .args(["--cluster-secret", SECRET])
            // No sweep while the test runs: the restart's takeover marker
            // moves log time to today, so the fixture's retired record
            // (kept an hour of log time after its last change) is already
            // past its hour, and a sweep before the retired owner's acquire
            // would drop it (the check below then saw a grant, now and then).
            .args(["--sweep-ms", "3600000"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn locker-node");
        Node {
            child,
            url: format!("http://{client}"),
            peer: format!("http://{peer}"),
            log,
        }
    }

    /// Waits for the process to exit by itself; its exit code and log.
    fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (st.code(), log);
            }
            assert!(Instant::now() < deadline, "the node did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unpacks the fixture into a fresh temp dir (the fixture stays untouched).
fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format0.tar.gz");
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(st.success(), "cannot unpack {}", archive.display());
    dir
}

fn wait_served(url: &str) {
    eventually(
        Duration::from_secs(30),
        "the upgraded node to serve",
        || (get(&format!("{url}/readyz")).code == 200).then_some(()),
    );
}

fn held(url: &str, key: &str) -> Lock {
    let r = api::read(url, key);
    assert_eq!(r.code, 200, "read {key}: {r:?}");
    r.read()
        .lock
        .unwrap_or_else(|| panic!("{key} written by the old release is not held: {r:?}"))
}

/// What the old release wrote is served: the locks with their tokens, the
/// process, the retired owner; and a new grant gets a higher token.
fn check_served(url: &str, max_token: u64) {
    let a = held(url, "jobs/a");
    assert_eq!(a.fencing_token, TOKEN_A);
    assert_eq!(a.process_hash.as_deref(), Some("fixhost/100.1"));
    assert_eq!(api::owner(url, &a.owner_hash).status(), "RUNNING");
    let b = held(url, "jobs/b");
    assert_eq!(
        (b.fencing_token, b.trace.as_deref()),
        (TOKEN_B, Some("t-b"))
    );
    assert!(
        !api::read(url, "jobs/c").read().locked,
        "a released key came back"
    );
    assert!(
        !api::read(url, "jobs/d").read().locked,
        "an ended process's lock came back"
    );
    let other = api::acquire(url, "jobs/b", json!({"ttl_ms": 60_000}));
    assert_eq!(other.status(), "SOMEONE_ELSE_HOLDS_LOCK", "{other:?}");
    let retired = api::acquire(url, "jobs/d", json!({"owner_hash": RETIRED_OWNER}));
    assert_eq!(retired.error_code(), "OWNER_HASH_RETIRED", "{retired:?}");
    let new = api::acquire(url, "jobs/new", json!({"ttl_ms": 60_000}));
    let token = new.lock().expect("new grant").fencing_token;
    assert!(
        token > max_token,
        "new token {token} not above the fixture's {max_token}"
    );
    let c: ClusterAnswer = api::cluster(url).json();
    assert!(
        c.snapshot_index.is_some(),
        "the old snapshot record was not read: {c:?}"
    );
}

/// Starts this build on a copy of the fixture's `variant`, checks it, and
/// starts it again on the same directory; returns the running node.
fn upgrade(variant: &str, max_token: u64) -> (Node, tempfile::TempDir) {
    let dir = unpack();
    let data = dir.path().join(variant);
    let node = Node::start(&data);
    wait_served(&node.url);
    check_served(&node.url, max_token);
    drop(node);
    {
        // The first open recorded this build's format (same records) ...
        let db = sled::open(data.join("sled")).expect("sled");
        let format = db.get(b"locker:format").expect("get");
        assert_eq!(format.as_deref(), Some(&5u32.to_be_bytes()[..]));
        // ... gave every record its checksum ...
        for tree in ["raft_log", "raft_meta", "state_machine", "snapshots"] {
            for kv in db.open_tree(tree).expect("tree").iter() {
                let (k, v) = kv.expect("record");
                assert!(v.starts_with(b"LOCKREC1"), "{tree} {k:?} has no checksum");
            }
        }
    }
    // ... and the identity file, with the node id and how far the log got.
    let identity = std::fs::read_to_string(data.join("locker.identity")).expect("identity file");
    assert!(
        identity.starts_with("locker identity 1 crc32 ") && identity.contains(r#""node_id":1,"#),
        "{identity}"
    );
    assert!(
        identity.contains(r#""log_mark":{"#),
        "no high-water mark: {identity}"
    );
    // Reopened by this build, now that it recorded its own format.
    let node = Node::start(&data);
    wait_served(&node.url);
    assert_eq!(held(&node.url, "jobs/a").fencing_token, TOKEN_A);
    assert!(held(&node.url, "jobs/new").fencing_token > max_token);
    (node, dir)
}

#[test]
fn a_cleanly_stopped_format_0_directory_is_served() {
    upgrade("stopped", MAX_TOKEN_STOPPED);
}

#[test]
fn a_killed_format_0_directory_is_served() {
    let (node, _dir) = upgrade("killed", MAX_TOKEN_KILLED);
    assert_eq!(held(&node.url, "jobs/e").fencing_token, MAX_TOKEN_KILLED);
}

/// A data directory that records a newer format than this build reads: the
/// node refuses to start, names both formats, and changes nothing.
#[test]
fn a_newer_format_is_refused_with_both_versions_named() {
    let log = refused_with_record(&99u32.to_be_bytes());
    assert!(
        log.contains("storage format 99") && log.contains("format 5,"),
        "the refusal does not name both formats:\n{log}"
    );
}

/// A format record that is not 4 bytes is refused too, not guessed at.
#[test]
fn an_unreadable_format_record_is_refused() {
    let log = refused_with_record(b"v2");
    assert!(log.contains("format record is unreadable"), "{log}");
}

/// Starts a node on a data directory whose format record is `record`;
/// checks it exits 1 without touching the record; returns its log.
fn refused_with_record(record: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("n1");
    {
        let db = sled::open(data.join("sled")).expect("sled");
        db.insert(b"locker:format", record).expect("insert");
        db.flush().expect("flush");
    }
    let mut node = Node::start(&data);
    let (code, log) = node.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "exit code; log:\n{log}");
    let db = sled::open(data.join("sled")).expect("sled");
    let kept = db.get(b"locker:format").expect("get").expect("record");
    assert_eq!(kept.as_ref(), record, "the refusal changed the record");
    log
}

/// A peer request of a newer protocol is refused by name, at warn, before
/// its body is looked at; one without the header (the release before
/// protocols were numbered) is still read.
#[test]
fn a_peer_of_a_newer_protocol_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(&dir.path().join("n1"));
    wait_served(&node.url);
    let vote = |protocol: Option<&str>| {
        let mut req = locker_tests::http()
            .post(format!("{}/raft/vote", node.peer))
            .header("x-locker-cluster-secret", SECRET)
            .body(vec![0xff_u8; 3]);
        if let Some(p) = protocol {
            req = req.header("x-locker-protocol", p);
        }
        let resp = req.send().expect("peer port answers");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    let (code, text) = vote(Some("4"));
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("peer protocol 4") && text.contains("protocol 3,"),
        "the refusal does not name both protocols: {text}"
    );
    for old_or_same in [None, Some("1"), Some("2"), Some("3")] {
        let (code, text) = vote(old_or_same);
        assert_eq!(code, 400, "{text}");
        assert!(
            text.contains("bincode"),
            "{old_or_same:?} was not read: {text}"
        );
    }
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("newer protocol")),
        "no warning logged:\n{log}"
    );
}
