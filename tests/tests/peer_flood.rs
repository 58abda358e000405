//! A stranger who can reach the peer port floods it with silent sockets,
//! reopened as fast as they are closed. The port's connection limit (256)
//! used to be all theirs: a peer's new connection waited in the kernel's
//! queue behind theirs, so a leader change (whose votes and appends need new
//! connections) never completed. Connections that never showed the cluster
//! secret now make room for new ones, and the cluster keeps committing.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use locker_tests::{api, http, Cluster, SECRET};

/// Silent sockets held open to `addr`, `held` at most (the oldest dropped
/// past that), a new one every 4 ms until `stop`.
fn flood(
    addr: String,
    held: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut open = VecDeque::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(s) = TcpStream::connect_timeout(
                &addr.parse().expect("a socket address"),
                Duration::from_millis(500),
            ) {
                open.push_back(s);
                opened.fetch_add(1, Ordering::Relaxed);
            }
            if open.len() > held {
                open.pop_front();
            }
            std::thread::sleep(Duration::from_millis(4));
        }
    })
}

/// Acquires `n` fresh keys through `url`; every one must succeed.
fn writes_succeed(url: &str, tag: &str, n: usize) {
    for i in 0..n {
        let key = format!("flood/{tag}/{i}");
        let started = Instant::now();
        let r = api::acquire(url, &key, serde_json::json!({}));
        assert_eq!(
            r.code,
            200,
            "{key}: a write during the flood failed after {:?}: {:?}",
            started.elapsed(),
            r.body
        );
    }
}

/// A peer's new connection is served: `/peer/info` with the secret, on a
/// fresh connection, within 3 s.
fn assert_peer_port_serves(c: &Cluster) {
    for n in &c.nodes {
        let client = reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(3))
            .build()
            .expect("client");
        let r = client
            .get(format!("http://{}/peer/info", n.peer_addr))
            .header("x-locker-cluster-secret", SECRET)
            .send()
            .map(|r| r.status().as_u16());
        assert_eq!(
            r.as_ref().ok(),
            Some(&200),
            "node {}: a new peer connection during the flood: {r:?}",
            n.id
        );
    }
}

fn assert_healthy(c: &Cluster) {
    for n in &c.nodes {
        let r = http()
            .get(format!("{}/healthz", n.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .map(|r| r.status().as_u16());
        assert_eq!(r.ok(), Some(200), "node {} /healthz during the flood", n.id);
    }
}

#[test]
fn a_flood_of_silent_sockets_on_the_peer_ports_does_not_stop_commits() {
    // A shorter idle timeout than the default 40 s: the peers' pooled
    // connections that go quiet are closed, so the leader change below
    // needs new ones, which is what the flood used to stop. It also closes
    // the flood's sockets sooner, so the flood must outpace it: 256 slots
    // freed every 10 s against ~150 new sockets a second per port.
    let c = Cluster::start_with(3, &["--idle-timeout-ms", "10000"]);
    let leader = c.wait_ready(Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let floods: Vec<JoinHandle<()>> = c
        .nodes
        .iter()
        .map(|n| flood(n.peer_addr.clone(), 3000, stop.clone(), opened.clone()))
        .collect();
    // Past the 256 connections each peer port allows, and past the idle
    // timeout of the peers' quiet connections.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        opened.load(Ordering::Relaxed) > 3 * 300,
        "the flood opened only {} sockets",
        opened.load(Ordering::Relaxed)
    );
    assert_peer_port_serves(&c);
    let flooding = Instant::now();
    writes_succeed(&c.url(leader), "before", 20);
    assert_healthy(&c);
    // A leader change once the quiet connections between followers are
    // closed: votes and appends over new connections.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(flooding.elapsed()));
    let target = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    let moved = http()
        .post(format!("{}/v1/cluster/leader", c.url(leader)))
        .header("x-locker-cluster-secret", SECRET)
        .json(&serde_json::json!({ "id": target }))
        .timeout(Duration::from_secs(20))
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(
        moved.ok(),
        Some(200),
        "leadership moved to node {target} during the flood"
    );
    writes_succeed(&c.url(target), "after", 20);
    // Through the old leader too (forwarded to the new one).
    writes_succeed(&c.url(leader), "forwarded", 5);
    assert_healthy(&c);
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        let _ = f.join();
    }
    c.assert_replicas_agree(Duration::from_secs(20));
}
