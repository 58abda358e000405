//! A data directory that is not this node's, or whose database lost what it
//! once held, is refused at start with a clear message and exit code 1,
//! never served: sled recovers whatever prefix of its file it can read, so
//! a truncated or corrupted database comes up with fewer entries (or none)
//! and no error of its own; serving it would grant fencing tokens again
//! and could vote twice. The identity file beside the database
//! (`locker.identity`: node id, cluster id, the log's high-water mark and
//! the vote) is what notices. Each test then puts the directory back as it
//! was and checks that the node serves it again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use locker_tests::crash::{single_node, wait_serving};
use locker_tests::{api, NodeProc};
use serde_json::json;

/// Locks granted before the damage: enough that sled's file holds them
/// well past its first half.
const LOCKS: usize = 200;

/// A single node on `dir/n1` that granted [`LOCKS`] locks, stopped
/// cleanly; and the highest fencing token it granted.
fn written(dir: &Path) -> (NodeProc, u64) {
    let mut n = single_node(dir.join("n1"), &[]);
    let mut max = 0;
    for i in 0..LOCKS {
        let a = api::acquire(&n.url(), &format!("k/{i}"), json!({"ttl_ms": 3_600_000}));
        max = a.lock().expect("granted").fencing_token;
    }
    assert!(n.stop(), "the node did not stop cleanly");
    (n, max)
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "{cmd} failed");
}

/// A copy of the node's data directory, to put back after the damage.
fn backup(n: &NodeProc) -> std::path::PathBuf {
    let copy = n.data_dir.with_extension("copy");
    sh(&format!(
        "cp -a '{}' '{}'",
        n.data_dir.display(),
        copy.display()
    ));
    copy
}

fn restore(n: &NodeProc, copy: &Path) {
    sh(&format!(
        "rm -rf '{0}' && cp -a '{1}' '{0}'",
        n.data_dir.display(),
        copy.display()
    ));
}

/// Starts the node and asserts it refuses: exits 1 by itself, saying it
/// refuses to start; returns what it logged.
fn refused(n: &mut NodeProc, what: &str) -> String {
    let before = n.log_text().len();
    n.start();
    let Some(st) = n.wait_exit(Duration::from_secs(30)) else {
        panic!(
            "{what}: the node did not refuse to start:\n{}",
            &n.log_text()[before..]
        )
    };
    let log = n.log_text()[before..].to_string();
    assert_eq!(st.code(), Some(1), "{what}: exit {st:?}:\n{log}");
    assert!(
        log.to_lowercase().contains("refusing to start"),
        "{what}: no clear refusal:\n{log}"
    );
    log
}

/// The node serves its locks again, and grants tokens above `max`.
fn served_again(n: &mut NodeProc, max: u64) {
    n.start();
    wait_serving(n, Duration::from_secs(30));
    for i in [0, LOCKS - 1] {
        let r = api::read(&n.url(), &format!("k/{i}"));
        assert!(r.read().locked, "k/{i} lost after a healthy restart: {r:?}");
    }
    let a = api::acquire(&n.url(), "k/new", json!({"ttl_ms": 60_000}));
    let token = a.lock().expect("granted").fencing_token;
    assert!(token > max, "token {token} not above {max}");
}

/// Damages sled's data file with `damage` (a shell command, `$DB` is the
/// file), expects a refusal whose log contains `says`, then puts the
/// directory back and expects the node to serve it.
fn refused_when(damage: &str, says: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let (mut n, max) = written(dir.path());
    let copy = backup(&n);
    let db = n.data_dir.join("sled").join("db");
    sh(&format!("DB='{}'; {damage}", db.display()));
    let log = refused(&mut n, damage);
    assert!(log.contains(says), "{damage}: expected {says:?}:\n{log}");
    // Refused again: a refusal changes nothing that would let the next
    // start through.
    let again = refused(&mut n, damage);
    assert!(again.contains(says), "{damage}, second start:\n{again}");
    restore(&n, &copy);
    served_again(&mut n, max);
}

#[test]
fn sled_file_truncated_to_half_is_refused() {
    refused_when(
        r#"truncate -s $(( $(stat -c %s "$DB") / 2 )) "$DB""#,
        "the database lost data",
    );
}

#[test]
fn sled_file_truncated_to_zero_is_refused() {
    refused_when(r#"truncate -s 0 "$DB""#, "the database is empty");
}

#[test]
fn sled_file_with_flipped_bytes_is_refused() {
    // One byte in every 997 of the file's middle half inverted.
    let flip = r#"python3 -c "
import sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
for i in range(len(d) // 4, 3 * len(d) // 4, 997):
    d[i] ^= 0xff
open(p, 'r+b').write(d)
" "$DB""#;
    refused_when(flip, "identity file records log entry");
}

#[test]
fn sled_files_deleted_with_the_directory_kept_is_refused() {
    refused_when(r#"rm -rf "$(dirname "$DB")""#, "the database is empty");
}

/// One bit of a lock record's fencing token flipped inside the database
/// (sled's own checksums pass: the record was rewritten whole): the
/// record's checksum refuses it, naming it. Without the checksum the token
/// decodes to another number and is served.
#[test]
fn a_flipped_bit_in_a_stored_record_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut n, max) = written(dir.path());
    let copy = backup(&n);
    {
        // A node creates its store with 4 MiB segments (sled refuses another size).
        let db = sled::Config::new()
            .path(n.data_dir.join("sled"))
            .segment_size(4 << 20)
            .open()
            .expect("sled");
        let sm = db.open_tree("state_machine").expect("tree");
        let key = b"Lk/7";
        let mut v = sm.get(key).expect("get").expect("lock record").to_vec();
        // The token is the record's last field, a little-endian u64.
        let low = v.len() - 8;
        v[low] ^= 0x01;
        sm.insert(key, v).expect("insert");
        db.flush().expect("flush");
    }
    let log = refused(&mut n, "a flipped bit in Lk/7");
    assert!(
        log.contains(r#"state_machine record "Lk/7" fails its checksum"#),
        "{log}"
    );
    restore(&n, &copy);
    served_again(&mut n, max);
}

/// The identity file gone from a directory whose database says it kept
/// one: refused (the file is what proves the database whole).
#[test]
fn a_deleted_identity_file_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut n, max) = written(dir.path());
    let copy = backup(&n);
    std::fs::remove_file(n.data_dir.join("locker.identity")).expect("rm");
    let log = refused(&mut n, "identity file deleted");
    assert!(log.contains("locker.identity is missing"), "{log}");
    restore(&n, &copy);
    served_again(&mut n, max);
}

/// Another `--id` on a node's directory: refused before anything in it
/// changes (it used to join as a learner that said ready and answered 503
/// to everything).
#[test]
fn another_id_is_refused_and_the_directory_left_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut n, max) = written(dir.path());
    let identity = std::fs::read(n.data_dir.join("locker.identity")).ok();
    n.set_flag("--id", Some("2"));
    let log = refused(&mut n, "--id 2");
    assert!(
        log.contains("belongs to node 1") && log.contains("not to node 2 (--id 2)"),
        "{log}"
    );
    let after = std::fs::read(n.data_dir.join("locker.identity")).ok();
    assert!(identity.is_some(), "no identity file");
    assert_eq!(identity, after, "the refusal changed the identity file");
    n.set_flag("--id", Some("1"));
    served_again(&mut n, max);
}

/// A directory of a cluster formed with other members than this node's
/// `--initial-cluster` says: refused, naming both clusters.
#[test]
fn another_clusters_directory_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut n, max) = written(dir.path());
    // The cluster formed as node 1 alone at its peer address.
    let own = format!("1={}", n.peer_addr);
    n.set_flag(
        "--initial-cluster",
        Some(&format!("{own},2=127.0.0.1:9,3=127.0.0.1:10")),
    );
    let log = refused(&mut n, "another --initial-cluster");
    assert!(
        log.contains("this data directory belongs to cluster")
            && log.contains("but --initial-cluster describes cluster"),
        "{log}"
    );
    n.set_flag("--initial-cluster", Some(&own));
    served_again(&mut n, max);
}

/// The data directory is created private (mode 0700); an existing one
/// open to others is served, with a warning saying so.
#[test]
fn the_data_directory_is_created_private_and_an_open_one_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let n = single_node(dir.path().join("n1"), &[]);
    let mode = std::fs::metadata(&n.data_dir)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "mode {:o}", mode & 0o777);
    let open = dir.path().join("n2");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let n2 = single_node(open, &[]);
    let log = n2.log_text();
    assert!(
        log.contains("WARN") && log.contains("accessible to group or others"),
        "no warning about mode 755:\n{log}"
    );
}
