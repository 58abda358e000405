//! Backup and restore round trip: a 3-node cluster with locks (bound to a
//! process and not), processes and a retired run is backed up through
//! `locker-node backup` (from a follower), checked with `verify-backup`,
//! restored into 3 fresh data directories of a new cluster, which starts
//! with every lock and process of the backup, fencing tokens above every
//! backed-up one, the retired run still refused, and a short lease still
//! held though more than its ttl passed between backup and restore (each
//! lease keeps its remaining time). A corrupted backup and a non-empty
//! data directory are refused, changing nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locker_proto::DigestAnswer;
use locker_tests::{api, get, node_tool, output_text, Cluster};
use serde_json::json;

const PROCESS: &str = "h/100.1";

/// Locks and processes of every kind; returns the highest fencing token.
fn populate(url: &str) -> u64 {
    assert_eq!(api::keepalive(url, PROCESS, 600_000).code, 200);
    assert_eq!(api::keepalive(url, "h/300.1", 600_000).code, 200);
    let mut max = 0;
    let mut take = |key: &str, body: serde_json::Value| {
        let r = api::acquire(url, key, body);
        assert_eq!(r.status(), "SUCCESS", "{key}: {:?}", r.body);
        max = max.max(r.lock().expect("lock").fencing_token);
    };
    take(
        "backup/with-process",
        json!({"owner_hash": "backup/with-process@h/100.1.0", "process_hash": PROCESS, "ttl_ms": 600_000}),
    );
    take(
        "backup/plain",
        json!({"owner_hash": "backup/plain@h/200.1.0", "ttl_ms": 600_000}),
    );
    for i in 0..20 {
        take(
            &format!("backup/many/{i}"),
            json!({"owner_hash": format!("backup/many/{i}@h/200.1.{}", i + 1), "ttl_ms": 600_000}),
        );
    }
    take(
        "backup/retired",
        json!({"owner_hash": "backup/retired@h/100.1.1", "process_hash": PROCESS}),
    );
    let r = api::release(url, "backup/retired", "backup/retired@h/100.1.1");
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    max
}

fn digest(url: &str) -> DigestAnswer {
    get(&format!("{url}/v1/digest")).json()
}

/// Restores `file` into every member's data directory of a new cluster
/// and starts it.
fn restore_cluster(file: &Path) -> Cluster {
    let mut c = Cluster::configure(3, &[]);
    let initial: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer_addr))
        .collect();
    let initial = initial.join(",");
    let dirs: Vec<(u64, PathBuf)> = c.nodes.iter().map(|n| (n.id, n.data_dir.clone())).collect();
    for (id, dir) in &dirs {
        let out = node_tool(&[
            "restore",
            "--in",
            &file.display().to_string(),
            "--id",
            &id.to_string(),
            "--data-dir",
            &dir.display().to_string(),
            "--initial-cluster",
            &initial,
        ]);
        assert!(
            out.status.success(),
            "restore of node {id}: {}",
            output_text(&out)
        );
    }
    for (id, _) in &dirs {
        c.restart(*id);
    }
    c.wait_ready(Duration::from_secs(30));
    c
}

fn refusals(file: &Path, dir: &Path) {
    // A corrupted copy: verify and restore refuse it, nothing is created.
    let mut bytes = std::fs::read(file).expect("backup");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let bad = dir.join("corrupt.backup");
    std::fs::write(&bad, &bytes).expect("write");
    let bad_s = bad.display().to_string();
    let v = node_tool(&["verify-backup", &bad_s]);
    assert_eq!(v.status.code(), Some(1), "{}", output_text(&v));
    assert!(output_text(&v).contains("checksum"), "{}", output_text(&v));
    let target = dir.join("never");
    let r = node_tool(&[
        "restore",
        "--in",
        &bad_s,
        "--id",
        "1",
        "--data-dir",
        &target.display().to_string(),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", output_text(&r));
    assert!(
        !target.exists(),
        "a refused restore created the data directory"
    );

    // A non-empty data directory: refused, its file untouched.
    let full = dir.join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    std::fs::write(full.join("keep"), b"mine").expect("write");
    let r = node_tool(&[
        "restore",
        "--in",
        &file.display().to_string(),
        "--id",
        "1",
        "--data-dir",
        &full.display().to_string(),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", output_text(&r));
    assert!(output_text(&r).contains("not empty"), "{}", output_text(&r));
    assert_eq!(std::fs::read(full.join("keep")).expect("kept"), b"mine");
    assert_eq!(std::fs::read_dir(&full).expect("dir").count(), 1);
}

#[test]
fn a_backup_restored_into_a_new_cluster_keeps_every_lock_and_process_and_tokens_rise() {
    let old = Cluster::start(3);
    let leader = old.leader().expect("leader");
    let url = old.url(leader);
    let max_token = populate(&url);
    let short = api::acquire(
        &url,
        "backup/short",
        json!({"owner_hash": "backup/short@h/200.1.99", "ttl_ms": 12_000}),
    );
    assert_eq!(short.status(), "SUCCESS", "{:?}", short.body);
    let short_taken = Instant::now();
    let max_token = max_token.max(short.lock().expect("lock").fencing_token);
    let before = digest(&url);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("locker.backup");
    let file_s = file.display().to_string();
    let follower = old.followers()[0];
    let out = node_tool(&["backup", "--from", &old.url(follower), "--out", &file_s]);
    assert!(out.status.success(), "backup: {}", output_text(&out));
    streamed_alike(&old.url(follower), &file);
    for args in [
        &["verify-backup", &file_s][..],
        &["backup", "--verify", &file_s][..],
    ] {
        let v = node_tool(args);
        assert!(v.status.success(), "{args:?}: {}", output_text(&v));
        let t = output_text(&v);
        assert!(t.contains(&format!("locks: {} (", before.locks)), "{t}");
        assert!(
            t.contains(&format!("processes: {} (", before.processes)),
            "{t}"
        );
        assert!(
            t.contains(&format!("max fencing token: {max_token}")),
            "{t}"
        );
        assert!(t.contains("retired runs: 1"), "{t}");
    }
    refusals(&file, dir.path());
    offline_backup(old, &before, dir.path());

    // More than the short lease's ttl passes before the new cluster runs.
    std::thread::sleep(Duration::from_millis(14_000).saturating_sub(short_taken.elapsed()));
    let new = restore_cluster(&file);
    let nurl = new.url(new.leader().expect("leader"));
    check_restored(&nurl, &before, max_token);
    new.assert_replicas_agree(Duration::from_secs(20));
}

/// `GET /v1/backup` is streamed as it is encoded (chunked, no length known
/// to the server up front; it used to be built whole in memory first), and
/// holds the same bytes the tool wrote (nothing changed in between).
fn streamed_alike(url: &str, file: &Path) {
    let resp = locker_tests::http()
        .get(format!("{url}/v1/backup"))
        .send()
        .expect("GET /v1/backup");
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers();
    assert!(h.get("content-length").is_none(), "not streamed: {h:?}");
    assert_eq!(
        h.get("transfer-encoding").and_then(|v| v.to_str().ok()),
        Some("chunked")
    );
    let body = resp.bytes().expect("body");
    assert_eq!(body.as_ref(), std::fs::read(file).expect("backup file"));
}

/// Disaster recovery without a quorum: `backup --data-dir` of a stopped
/// node reads the table it applied.
fn offline_backup(mut old: Cluster, before: &DigestAnswer, dir: &Path) {
    let id = old.followers()[0];
    assert!(old.node_mut(id).stop(), "node {id} did not stop cleanly");
    let data = old.node(id).data_dir.display().to_string();
    let out_file = dir.join("offline.backup").display().to_string();
    let out = node_tool(&["backup", "--data-dir", &data, "--out", &out_file]);
    assert!(
        out.status.success(),
        "offline backup: {}",
        output_text(&out)
    );
    let v = node_tool(&["verify-backup", &out_file]);
    let t = output_text(&v);
    assert!(v.status.success(), "{t}");
    assert!(t.contains(&format!("locks: {} (", before.locks)), "{t}");
    assert!(
        t.contains(&format!("processes: {} (", before.processes)),
        "{t}"
    );
    // Nothing there: refused.
    let empty = dir.join("no-such-node").display().to_string();
    let r = node_tool(&["backup", "--data-dir", &empty, "--out", &out_file]);
    assert_eq!(r.status.code(), Some(1), "{}", output_text(&r));
}

fn check_restored(nurl: &str, before: &DigestAnswer, max_token: u64) {
    let after = digest(nurl);
    assert_eq!(
        (after.locks, after.processes),
        (before.locks, before.processes)
    );
    let held = |key: &str, owner: &str| {
        let r = api::read(nurl, key);
        let lock = r
            .lock()
            .unwrap_or_else(|| panic!("{key} not held: {:?}", r.body));
        assert_eq!(lock.owner_hash, owner);
        lock
    };
    let bound = held("backup/with-process", "backup/with-process@h/100.1.0");
    assert_eq!(bound.process_hash.as_deref(), Some(PROCESS));
    held("backup/plain", "backup/plain@h/200.1.0");
    for i in 0..20 {
        held(
            &format!("backup/many/{i}"),
            &format!("backup/many/{i}@h/200.1.{}", i + 1),
        );
    }
    held("backup/short", "backup/short@h/200.1.99");
    assert!(api::read(nurl, "backup/retired").lock().is_none());
    // The process lives on, and its holder keeps it alive in the new cluster.
    assert_eq!(api::keepalive(nurl, PROCESS, 600_000).code, 200);
    let o = api::owner(nurl, "backup/with-process@h/100.1.0");
    assert_eq!(o.status(), "RUNNING", "{:?}", o.body);
    // The ended run stays ended.
    let again = api::acquire(
        nurl,
        "backup/retired",
        json!({"owner_hash": "backup/retired@h/100.1.1"}),
    );
    assert_eq!(again.error_code(), "OWNER_HASH_RETIRED", "{:?}", again.body);
    // Held locks stay held; new grants get larger tokens than any backed up.
    let taken = api::acquire(nurl, "backup/plain", json!({}));
    assert_eq!(
        taken.status(),
        "SOMEONE_ELSE_HOLDS_LOCK",
        "{:?}",
        taken.body
    );
    let fresh = api::acquire(nurl, "backup/new", json!({}));
    assert_eq!(fresh.status(), "SUCCESS", "{:?}", fresh.body);
    let token = fresh.lock().expect("lock").fencing_token;
    assert!(token > max_token, "new token {token} not above {max_token}");
    let e = api::extend(nurl, "backup/plain", "backup/plain@h/200.1.0", None);
    assert_eq!(e.status(), "SUCCESS", "{:?}", e.body);
}
