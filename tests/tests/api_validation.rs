//! Bad input gets a 4xx with `{"error":{"code","message"}}` and changes nothing.

use locker_proto::{
    ClusterAnswer, ErrorAnswer, LockAnswer, LockOpStatus, OwnerAnswer, OwnerStatus,
};
use locker_tests::{api, enc, get, http, post_raw, put_raw, Cluster};
use serde_json::json;

fn assert_error(a: &locker_tests::Answer, code: u16, error: &str) {
    assert_eq!(a.code, code, "{:?}", a.body);
    assert_eq!(a.error_code(), error, "{:?}", a.body);
    assert!(!a.json::<ErrorAnswer>().error.message.is_empty());
}

#[test]
fn every_bad_input_is_refused_and_changes_nothing() {
    let c = Cluster::start(3);
    for id in [c.leader().expect("leader"), c.followers()[0]] {
        let url = c.url(id);
        let before = api::cluster(&url)
            .json::<ClusterAnswer>()
            .last_applied_index;
        bad_acquires_are_refused(&url);
        bad_extend_release_and_keepalives_are_refused(&url);
        bad_queries_routes_and_methods_are_refused(&url);

        // Nothing was written: no lock, and the applied index did not move.
        assert_eq!(api::read(&url, "k").body, json!({"locked": false}));
        let after = api::cluster(&url)
            .json::<ClusterAnswer>()
            .last_applied_index;
        assert_eq!(before, after, "a refused request changed the log");
    }
}

/// Bad keys, bodies, ttls, waits, owner and process hashes, and an
/// oversized body on the acquire route.
fn bad_acquires_are_refused(url: &str) {
    let acquire = |key: &str| format!("{url}/v1/locks/{key}/acquire");
    assert_error(&post_raw(&acquire(""), "{}"), 400, "INVALID_KEY");
    assert_error(
        &post_raw(&acquire(&"k".repeat(1025)), "{}"),
        400,
        "INVALID_KEY",
    );
    assert_error(&post_raw(&acquire("%FF%FE"), "{}"), 400, "INVALID_KEY");
    assert_error(&post_raw(&acquire("k"), "{not json"), 400, "INVALID_JSON");
    assert_error(
        &post_raw(&acquire("k"), r#"{"ttl":5}"#),
        400,
        "INVALID_JSON",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"ttl_ms":"soon"}"#),
        400,
        "INVALID_JSON",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"ttl_ms":99}"#),
        400,
        "INVALID_TTL",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"ttl_ms":604800001}"#),
        400,
        "INVALID_TTL",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"wait_ms":600001}"#),
        400,
        "INVALID_WAIT",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"owner_hash":"nope"}"#),
        400,
        "INVALID_OWNER_HASH",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"owner_hash":"other@h/1.2.3"}"#),
        400,
        "INVALID_OWNER_HASH",
    );
    assert_error(
        &post_raw(&acquire("k"), r#"{"process_hash":"no-pid"}"#),
        400,
        "INVALID_PROCESS_HASH",
    );
    let big = format!(r#"{{"trace":"{}"}}"#, "x".repeat(70_000));
    assert_error(&post_raw(&acquire("k"), big), 413, "PAYLOAD_TOO_LARGE");
}

/// Bodies the extend and release routes cannot read; bad process hashes
/// and ttls on the keep-alive route.
fn bad_extend_release_and_keepalives_are_refused(url: &str) {
    assert_error(
        &post_raw(&format!("{url}/v1/locks/k/extend"), ""),
        400,
        "INVALID_JSON",
    );
    assert_error(
        &post_raw(&format!("{url}/v1/locks/k/release"), "{}"),
        400,
        "INVALID_JSON",
    );
    let put = |p: &str, body: &'static str| put_raw(&format!("{url}/v1/processes/{p}"), body);
    assert_error(&put("bad-process", "{}"), 400, "INVALID_PROCESS_HASH");
    assert_error(
        &put(&enc("h/1.2"), r#"{"ttl_ms":3600001}"#),
        400,
        "INVALID_TTL",
    );
    assert_error(&put(&enc("h/1.2"), r#"{"ttl_ms":50}"#), 400, "INVALID_TTL");
}

/// Bad list queries, an unknown route and a wrong method.
fn bad_queries_routes_and_methods_are_refused(url: &str) {
    assert_error(
        &get(&format!("{url}/v1/locks?limit=0")),
        400,
        "INVALID_LIMIT",
    );
    assert_error(
        &get(&format!("{url}/v1/locks?limit=x")),
        400,
        "INVALID_QUERY",
    );
    assert_error(
        &get(&format!("{url}/v1/locks?bogus=1")),
        400,
        "INVALID_QUERY",
    );
    assert_error(&get(&format!("{url}/v2/nothing")), 404, "NOT_FOUND");
    let r = http()
        .delete(format!("{url}/v1/locks/k/acquire"))
        .send()
        .expect("send");
    assert_eq!(r.status().as_u16(), 405);
}

#[test]
fn membership_changes_need_the_cluster_secret() {
    let c = Cluster::start(1);
    let r = locker_tests::post(
        &format!("{}/v1/cluster/members", c.url(1)),
        json!({"id": 9, "peer_addr": "127.0.0.1:1"}),
    );
    assert_error(&r, 401, "UNAUTHORIZED");
}

/// Keys and traces that no owner hash can carry are refused up front, and
/// nothing is written. Before, the node granted them: a key with a line
/// break got an owner hash that does not parse, and the trace `x@h/1.2.3`
/// one that parses to another key, so extend and release with the owner
/// hash the node itself answered were refused and the lock stuck until its
/// TTL ended.
#[test]
fn keys_and_traces_no_owner_hash_can_carry_are_refused() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let applied = || {
        api::cluster(&url)
            .json::<ClusterAnswer>()
            .last_applied_index
    };
    let before = applied();
    for key in ["line\nbreak", "cr\rkey", "ls\u{2028}key", "ps\u{2029}key"] {
        assert_error(&api::acquire(&url, key, json!({})), 400, "INVALID_KEY");
        assert_error(&api::read(&url, key), 400, "INVALID_KEY");
    }
    for trace in [
        "x@h/1.2.3",
        "a@web-1/42.17.0#more",
        "line\nbreak",
        "u\u{2028}",
    ] {
        let a = api::acquire(&url, "k", json!({ "trace": trace }));
        assert_error(&a, 400, "INVALID_TRACE");
    }
    // Only ASCII digits count in owner and process hashes (the seed's `\d`).
    let arabic = "h/\u{661}.\u{662}";
    let a = api::acquire(&url, "k", json!({ "owner_hash": format!("k@{arabic}.3") }));
    assert_error(&a, 400, "INVALID_OWNER_HASH");
    let a = api::acquire(&url, "k", json!({ "process_hash": arabic }));
    assert_error(&a, 400, "INVALID_PROCESS_HASH");
    assert_error(
        &put_raw(&format!("{url}/v1/processes/{}", enc(arabic)), "{}"),
        400,
        "INVALID_PROCESS_HASH",
    );
    let o = api::owner(&url, "line\nbreak@h/1.2.3");
    assert_eq!(o.code, 200, "{o:?}");
    assert_eq!(
        o.json::<OwnerAnswer>().status,
        OwnerStatus::MalformedOwnerHash
    );

    assert!(!api::read(&url, "k").read().locked);
    assert_eq!(before, applied(), "a refused request changed the log");
}

/// Every lock the node grants under an owner hash it built can be extended
/// and released with that hash: keys and traces with `@`, `/`, `.`, `#`,
/// spaces and unicode are kept, not refused.
#[test]
fn every_owner_hash_the_node_builds_releases_its_lock() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let keys = [
        "plain",
        "a@b",
        "a@h/1.2.3",
        "jobs/x.y",
        "k#t",
        "sp ace",
        "é€😀",
    ];
    let traces = [
        None,
        Some(""),
        Some("req-9"),
        Some("a#b"),
        Some("h/1.2.3"),
        Some("é"),
    ];
    for key in keys {
        for trace in traces {
            let a = api::acquire(&url, key, json!({ "trace": trace }));
            assert_eq!(a.code, 200, "{key:?} {trace:?}: {a:?}");
            let lock = a.json::<LockAnswer>().lock.expect("the granted lock");
            assert_eq!(lock.trace.as_deref(), trace, "{key:?}");
            let owner = lock.owner_hash.as_str();
            let o = api::owner(&url, owner).json::<OwnerAnswer>();
            assert_eq!(o.status, OwnerStatus::Running, "{owner:?}: {o:?}");
            for done in [
                api::extend(&url, key, owner, None),
                api::release(&url, key, owner),
            ] {
                let d = done.json::<LockAnswer>();
                assert_eq!(d.status, LockOpStatus::Success, "{owner:?}: {d:?}");
            }
        }
    }
}
