//! Power loss: every node of a 3-node cluster runs under the power-loss shim
//! (`tests/powerloss/powerloss.c`: writes stay in the process's memory until
//! an fsync), and all of them are killed at once right after acknowledged
//! writes, then restarted. A plain `kill -9` cannot show a missing fsync,
//! because the page cache outlives the process; under the shim it can.
//!
//! * every acknowledged write survives and the replicas agree;
//! * the negative control: a node built with the `ack-before-fsync`
//!   mutation (`--features locker-node/mutations`) must lose an
//!   acknowledged write, which proves the fault able to catch the bug.

use std::time::{Duration, Instant};

use locker_proto::ReadAnswer;

use locker_tests::crash::{self, Acked};
use locker_tests::{api, powerloss, Cluster};

const MUTATION: &str = "ack-before-fsync";
/// Writes acknowledged right before each power cut.
const WRITES: usize = 15;

/// A 3-node cluster whose nodes run under the shim (and `mutation`). The
/// cluster is initialized plain, then restarted under the shim: the test
/// harness starts nodes without extra environment.
fn cluster(mutation: Option<&str>) -> Cluster {
    let mut c = Cluster::start(3);
    powerloss::power_cut(&mut c);
    powerloss::power_on(&mut c, mutation);
    c.wait_ready(Duration::from_secs(60));
    powerloss::assert_under_shim(&c, mutation);
    c
}

/// Writes `WRITES` fresh keys, cuts the power of every node right after the
/// last acknowledgement, and powers them on again.
fn round(c: &mut Cluster, acked: &mut Acked, prefix: &str, mutation: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < WRITES {
        assert!(Instant::now() < deadline, "{n} of {WRITES} writes in 60 s");
        if acked.write_one(c, prefix) {
            n += 1;
        }
    }
    powerloss::power_cut(c);
    powerloss::power_on(c, mutation);
}

/// The acknowledged keys a linearizable read through the leader no longer
/// finds held by their owner, once a leader answers every read.
///
/// A mutated cluster may not recover whole: a node that applied entries the
/// new leader lost stops its Raft core and exits, so nodes that exit are
/// restarted and only a serving leader is needed.
fn lost(c: &mut Cluster, acked: &Acked, mutation: Option<&str>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for n in &mut c.nodes {
            n.exited();
        }
        powerloss::power_on(c, mutation);
        if let Some(leader) = c.leader() {
            let reads: Option<Vec<String>> = acked
                .keys
                .iter()
                .map(|key| {
                    let r = api::read(&c.url(leader), key);
                    let owner = r.try_json::<ReadAnswer>().and_then(|a| a.lock);
                    let held = owner.map(|l| l.owner_hash) == Some(crash::owner_of(key));
                    (r.code == 200).then(|| if held { None } else { Some(key.clone()) })
                })
                .collect::<Option<Vec<Option<String>>>>()
                .map(|v| v.into_iter().flatten().collect());
            if let Some(missing) = reads {
                return missing;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader answered reads within 60 s of the power cut"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn acknowledged_writes_survive_a_power_cut_of_every_node() {
    let mut c = cluster(None);
    let mut acked = Acked::default();
    for r in 0..3 {
        round(&mut c, &mut acked, &format!("round{r}"), None);
        c.wait_ready(Duration::from_secs(60));
        let missing = lost(&mut c, &acked, None);
        assert!(
            missing.is_empty(),
            "round {r}: acknowledged writes lost by a power cut: {missing:?}"
        );
    }
    crash::assert_acked_and_agreeing(&c, &acked);
}

#[test]
fn ack_before_fsync_loses_acknowledged_writes_in_a_power_cut() {
    let mut c = cluster(Some(MUTATION));
    let mut acked = Acked::default();
    // A round loses writes unless sled's own periodic fsync (every second)
    // lands between the last acknowledgement and the cut: retry, bounded.
    for r in 0..5 {
        if r > 0 {
            c.wait_ready(Duration::from_secs(60));
        }
        round(&mut c, &mut acked, &format!("round{r}"), Some(MUTATION));
        let missing = lost(&mut c, &acked, Some(MUTATION));
        if !missing.is_empty() {
            eprintln!(
                "round {r}: {} of {} acknowledged writes lost, as expected: {missing:?}",
                missing.len(),
                acked.keys.len()
            );
            return;
        }
    }
    panic!(
        "5 power cuts of every node lost none of {} writes acknowledged before fsync: \
         the power-loss fault cannot catch the missing fsync",
        acked.keys.len()
    );
}

/// sled 0.34 writes a tree node bigger than a quarter of a segment to a file
/// of its own under `sled/blobs/`, and nothing orders that file's sync
/// before the sync of the log that points at it (sled's periodic fsync
/// syncs the log alone). After a power cut the log pointed at an empty blob
/// and no node could open its store. The snapshot record of a big table
/// was such a node: it is now stored in small chunks in a store with 4 MiB
/// segments, so no blob is ever written, and the table survives the cut.
#[test]
fn a_big_snapshot_is_never_a_sled_blob_and_survives_a_power_cut() {
    let mut c = Cluster::start_with(1, &["--snapshot-every", "10"]);
    powerloss::power_cut(&mut c);
    powerloss::power_on(&mut c, None);
    c.wait_ready(Duration::from_secs(60));
    powerloss::assert_under_shim(&c, None);
    let url = c.url(1);
    let pad = "x".repeat(15 * 1024);
    // 12 processes of 15 KiB each: a table image of some 180 KiB, and more
    // than 10 entries, so a snapshot of it is built.
    for i in 0..12 {
        let p = locker_tests::put(
            &format!(
                "{url}/v1/processes/{}",
                locker_tests::enc(&format!("blob-{i}/1.1"))
            ),
            serde_json::json!({"ttl_ms": 3_600_000, "info": {"pad": pad}}),
        );
        assert_eq!(p.code, 200, "{:?}", p.body);
        hold(&url, &format!("blob-{i}/1.1"));
    }
    let log = c.node(1).data_dir.with_extension("log");
    let bytes = locker_tests::eventually(Duration::from_secs(20), "a big snapshot built", || {
        biggest_snapshot(&std::fs::read_to_string(&log).ok()?).filter(|b| *b > 150_000)
    });
    let blobs = c.node(1).data_dir.join("sled/blobs");
    let names: Vec<_> = std::fs::read_dir(&blobs)
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name())).collect())
        .unwrap_or_default();
    assert!(
        names.is_empty(),
        "a snapshot of {bytes} bytes left sled blob files {names:?} in {}",
        blobs.display()
    );
    // One more acknowledged write: the flush that acknowledges it must
    // have made the blob durable too.
    let last = locker_tests::put(
        &format!("{url}/v1/processes/{}", locker_tests::enc("blob-last/1.1")),
        serde_json::json!({"ttl_ms": 3_600_000}),
    );
    assert_eq!(last.code, 200, "{:?}", last.body);
    hold(&url, "blob-last/1.1");
    powerloss::power_cut(&mut c);
    powerloss::power_on(&mut c, None);
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.wait_ready(Duration::from_secs(30))
    }));
    if served.is_err() {
        c.print_log_tails();
        panic!("the node did not serve again after the power cut");
    }
    for i in (0..12)
        .map(|i| format!("blob-{i}/1.1"))
        .chain(["blob-last/1.1".into()])
    {
        let owner = format!("blob/{i}@{i}.1");
        let r = locker_tests::get(&format!("{url}/v1/owners/{}", locker_tests::enc(&owner)));
        let status = r.try_json::<locker_proto::OwnerAnswer>().map(|a| a.status);
        assert_eq!(
            status,
            Some(locker_proto::OwnerStatus::Running),
            "{owner} lost by the power cut: {:?}",
            r.body
        );
    }
}

/// Not only snapshots: a tree node of 17 log entries or process records of
/// 15 KiB each passed the blob threshold of sled's default 512 KiB segments.
/// A new store's 4 MiB segments keep every node our records make inline.
#[test]
fn big_log_entries_and_records_are_never_sled_blobs() {
    let c = Cluster::start_with(1, &["--snapshot-every", "100000"]);
    let url = c.url(1);
    let pad = "y".repeat(15 * 1024);
    for i in 0..40 {
        let process = format!("big-{i}/1.1");
        let p = locker_tests::put(
            &format!("{url}/v1/processes/{}", locker_tests::enc(&process)),
            serde_json::json!({"ttl_ms": 3_600_000, "info": {"pad": pad}}),
        );
        assert_eq!(p.code, 200, "{:?}", p.body);
    }
    // sled writes a node when it flushes: every acknowledged write did.
    let blobs = c.node(1).data_dir.join("sled/blobs");
    let names: Vec<_> = std::fs::read_dir(&blobs)
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name())).collect())
        .unwrap_or_default();
    assert!(
        names.is_empty(),
        "sled blob files {names:?} in {}",
        blobs.display()
    );
}

/// The size of the biggest snapshot the node's log says it built.
fn biggest_snapshot(log: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("built snapshot"))
        .map(without_colours)
        .filter_map(|l| {
            l.split("bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Acquires `blob/PROCESS` for an owner bound to `process`.
fn hold(url: &str, process: &str) {
    let a = api::acquire(
        url,
        &format!("blob/{process}"),
        serde_json::json!({"owner_hash": format!("blob/{process}@{process}.1"), "ttl_ms": 3_600_000}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
}
