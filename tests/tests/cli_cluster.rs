//! `locker cluster add|remove|promote` against a real 3-node cluster: the
//! documented replacement of a dead node 2 by a fresh node 4 (docs/
//! operations.md, "Replacing a node"), with writes served after every step;
//! a wrong or missing secret changes nothing; --help never shows the secret.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use locker_proto::ClusterAnswer;
use locker_tests::{api, bin, Cluster, SECRET};
use serde_json::json;

fn locker(c: &Cluster, ids: &[u64]) -> Command {
    let urls: Vec<String> = ids.iter().map(|&id| c.url(id)).collect();
    let mut cmd = Command::new(bin("locker"));
    cmd.arg("--endpoints")
        .arg(urls.join(","))
        .arg("--timeout-ms")
        .arg("20000")
        .env_remove("LOCKER_ENDPOINTS")
        .env_remove("LOCKER_CLUSTER_SECRET");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run locker");
    eprintln!(
        "{:?}: {}\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn voters(c: &Cluster, id: u64) -> BTreeSet<u64> {
    let v: ClusterAnswer = api::cluster(&c.url(id)).json();
    v.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

fn members(c: &Cluster, id: u64) -> BTreeSet<u64> {
    let v: ClusterAnswer = api::cluster(&c.url(id)).json();
    v.members.iter().map(|m| m.id).collect()
}

/// A write through any live node succeeds: a quorum of voters is healthy.
fn write(c: &Cluster, key: &str) {
    let leader = c.wait_ready(Duration::from_secs(30));
    let a = api::acquire(
        &c.url(leader),
        key,
        json!({"owner_hash": format!("{key}@h/1.1.1"), "ttl_ms": 600_000}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
}

#[test]
fn replace_dead_node_2_with_node_4_using_the_cli() {
    let mut c = Cluster::start(3);
    write(&c, "before");
    // Node 2's machine dies.
    c.kill(2);
    write(&c, "two-down");

    // Bad input first: nothing changes.
    let peer4 = c.start_joining(4);
    let out =
        run(locker(&c, &[1, 3]).args(["cluster", "add", "4", &peer4, "--cluster-secret", "wrong"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHORIZED")
            || String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
    );
    let out = run(locker(&c, &[1, 3]).args(["cluster", "add", "4", &peer4]));
    assert_eq!(out.status.code(), Some(2), "no secret is a usage error");
    assert_eq!(members(&c, 1), BTreeSet::from([1, 2, 3]));

    // 1. Add the fresh node 4: learner, caught up, then voter.
    let out = run(locker(&c, &[1, 3])
        .args(["cluster", "add", "4", &peer4])
        .env("LOCKER_CLUSTER_SECRET", SECRET));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&peer4));
    assert_eq!(voters(&c, 1), BTreeSet::from([1, 2, 3, 4]));
    write(&c, "four-added");
    let r = api::read(&c.url(4), "before");
    assert_eq!(r.code, 200, "{:?}", r.body);

    // 2. Remove the dead node 2.
    let out = run(locker(&c, &[1, 3, 4])
        .args(["--json", "cluster", "remove", "2"])
        .env("LOCKER_CLUSTER_SECRET", SECRET));
    assert!(out.status.success());
    let v: ClusterAnswer = serde_json::from_slice(&out.stdout).expect("json answer");
    assert!(v.members.iter().all(|m| m.id != 2), "{v:?}");
    assert_eq!(voters(&c, 4), BTreeSet::from([1, 3, 4]));
    write(&c, "two-removed");

    // Removing it again: a clear refusal, nothing changes.
    let out = run(locker(&c, &[1])
        .args(["cluster", "remove", "2"])
        .env("LOCKER_CLUSTER_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
    // Promote of a voter: refused.
    let out = run(locker(&c, &[1])
        .args(["cluster", "promote", "4"])
        .env("LOCKER_CLUSTER_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(voters(&c, 1), BTreeSet::from([1, 3, 4]));

    // The new three tolerate the loss of one more node.
    c.kill(1);
    write(&c, "one-down");
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn help_never_shows_the_secret() {
    let out = Command::new(bin("locker"))
        .args(["cluster", "add", "--help"])
        .env("LOCKER_CLUSTER_SECRET", "sekrit-value-123")
        .output()
        .expect("run locker");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LOCKER_CLUSTER_SECRET"), "{text}");
    assert!(!text.contains("sekrit-value-123"), "{text}");
}
