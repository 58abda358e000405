//! The node and this client read owner hashes the same way, end to end: for
//! every hash of a corpus (the seed's examples; keys with `@`, `/`, `.`, `#`,
//! spaces, line breaks and unicode; non-ASCII digits; keys and traces at and
//! over the length limits), the node's owner route names the key the
//! client's parser finds, or answers `MALFORMED_OWNER_HASH` exactly when the
//! client's parser refuses the hash; and the node's acquire route takes the
//! hash for that key (and no other), or refuses it with the reason the
//! client can tell in advance.
//!
//! The parser's own cases against the seed's pattern are in locker-proto
//! (`tests/owner_hash_corpus.rs`); this test is about the running node.

mod common;

use common::{cluster_slot, start_cluster, with_logs_on_panic};
use locker_client::parse_owner_hash;
use locker_client::proto::{limits, OwnerAnswer, OwnerStatus};
use locker_tests::{api, enc, get};
use serde_json::json;
use std::collections::HashSet;

/// Owner hashes, well-formed or not.
fn corpus() -> Vec<String> {
    let long_key = "k".repeat(limits::MAX_KEY_BYTES);
    let long_trace = "t".repeat(limits::MAX_TRACE_BYTES);
    let mut c: Vec<String> = [
        "jobs/report@web-1/4242.1700000000000000000.7#req-9",
        "k@h/1.2.3",
        "a@b@h/1.2.3",
        "@@h/1.2.3",
        "user@example.com@h/1.2.3",
        "a/b/c@h/1.2.3",
        "a.1.2@h/1.2.3",
        "a#b@h/1.2.3",
        " k @h/1.2.3",
        "k@h#x/1.2.3#t",
        "k@h/1.2.3#a@b",
        "k@h/1.2.3#x@h/4.5.6",
        "k@a@b/1.2.3",
        "ключ/日本@h/1.2.3#трасса",
        "🔒@hôte/1.2.3",
        "k@h\nx/1.2.3",
        "",
        "k",
        "k@h/1.2",
        "k@h/1.2.3 ",
        "k@h/1.2.3#a\nb",
        "a\nb@h/1.2.3",
        "a\u{2028}b@h/1.2.3",
        "k@h/1.2.٣",
        "k@h/１.2.3",
        "no-at-sign",
    ]
    .map(String::from)
    .to_vec();
    c.push(format!("{long_key}@h/1.2.3#{long_trace}"));
    c.push(format!("{long_key}k@h/1.2.3"));
    c
}

#[test]
fn the_node_reads_every_owner_hash_as_the_client_does() {
    let _slot = cluster_slot();
    let mut cluster = start_cluster(1);
    let url = cluster.url(1);
    with_logs_on_panic(&mut cluster, |_| {
        let mut ended = HashSet::new();
        for h in corpus() {
            owner_route_agrees(&url, &h);
            acquire_route_agrees(&url, &h, &mut ended);
        }
    });
}

/// The owner route names the key the client finds, or calls the hash
/// malformed exactly when the client's parser refuses it.
fn owner_route_agrees(url: &str, h: &str) {
    if h.is_empty() {
        return; // `/v1/owners/` is no route; the acquire route covers "".
    }
    let r = get(&format!("{url}/v1/owners/{}", enc(h)));
    assert_eq!(r.code, 200, "{h:?}: {:?}", r.body);
    let o: OwnerAnswer = r.json();
    match parse_owner_hash(h) {
        None => assert_eq!(
            (o.status, o.key),
            (OwnerStatus::MalformedOwnerHash, None),
            "{h:?}"
        ),
        Some(p) => {
            assert_ne!(o.status, OwnerStatus::MalformedOwnerHash, "{h:?}");
            assert_eq!(o.key.as_deref(), Some(p.key), "{h:?}");
        }
    }
}

/// An acquire with the hash: taken for the client's key (then the owner
/// route says RUNNING, and it is released), refused for any other key; a
/// hash the client cannot parse is refused as an invalid owner hash, and a
/// key the client's limits refuse as an invalid key. A run (key, process,
/// seq: the trace is not part of it) already released is refused as
/// retired, so the node splits the hash where the client does.
fn acquire_route_agrees(url: &str, h: &str, ended: &mut HashSet<(String, String, String)>) {
    let body = json!({ "owner_hash": h, "ttl_ms": 60_000 });
    let Some(p) = parse_owner_hash(h) else {
        let r = api::acquire(url, "agreement/any", body);
        assert_eq!(
            (r.code, r.error_code()),
            (400, "INVALID_OWNER_HASH"),
            "{h:?}"
        );
        return;
    };
    if limits::key_problem(p.key).is_some() {
        let r = api::acquire(url, p.key, body);
        assert_eq!((r.code, r.error_code()), (400, "INVALID_KEY"), "{h:?}");
        return;
    }
    let other = if p.key == "agreement/other" {
        "agreement/other-2"
    } else {
        "agreement/other"
    };
    let r = api::acquire(url, other, body.clone());
    assert_eq!(
        (r.code, r.error_code()),
        (400, "INVALID_OWNER_HASH"),
        "{h:?}"
    );
    let r = api::acquire(url, p.key, body);
    let run = (
        p.key.to_string(),
        p.process_hash.to_string(),
        p.seq.to_string(),
    );
    if ended.contains(&run) {
        assert_eq!(
            (r.code, r.error_code()),
            (409, "OWNER_HASH_RETIRED"),
            "{h:?}"
        );
        return;
    }
    assert_eq!(
        (r.code, r.status()),
        (200, "SUCCESS"),
        "{h:?}: {:?}",
        r.body
    );
    ended.insert(run);
    let o: OwnerAnswer = get(&format!("{url}/v1/owners/{}", enc(h))).json();
    assert_eq!(o.status, OwnerStatus::Running, "{h:?}");
    assert_eq!(api::release(url, p.key, h).status(), "SUCCESS", "{h:?}");
}
