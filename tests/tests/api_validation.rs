//! Bad input gets a 4xx with `{"error":{"code","message"}}` and changes nothing.

use locker_proto::{ClusterAnswer, ErrorAnswer};
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

        // Nothing was written: no lock, and the applied index did not move.
        assert_eq!(api::read(&url, "k").body, json!({"locked": false}));
        let after = api::cluster(&url)
            .json::<ClusterAnswer>()
            .last_applied_index;
        assert_eq!(before, after, "a refused request changed the log");
    }
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
