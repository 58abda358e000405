//! `/openapi.json` is generated from the code: every route of docs/protocol.md ("HTTP API")
//! is in it, and every documented operation is really routed.

use locker_tests::{get, http, Cluster};

const CONTRACT_ROUTES: [(&str, &str); 14] = [
    ("put", "/v1/processes/{process_hash}"),
    ("delete", "/v1/processes/{process_hash}"),
    ("post", "/v1/locks/{key}/acquire"),
    ("post", "/v1/locks/{key}/extend"),
    ("post", "/v1/locks/{key}/release"),
    ("get", "/v1/locks/{key}"),
    ("get", "/v1/locks"),
    ("get", "/v1/owners/{owner_hash}"),
    ("get", "/v1/cluster"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/digest"),
    ("post", "/v1/cluster/leader"),
];

#[test]
fn openapi_documents_every_route_and_only_real_ones() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let doc = get(&format!("{url}/openapi.json"));
    assert_eq!(doc.code, 200);
    let paths = doc.body["paths"].as_object().expect("paths").clone();
    for (method, path) in CONTRACT_ROUTES {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    for (path, ops) in &paths {
        let concrete = path
            .replace("{key}", "doc-probe")
            .replace("{owner_hash}", "doc-probe%40h%2F1.2.3")
            .replace("{process_hash}", "h%2F1.2")
            .replace("{id}", "99");
        for method in ops.as_object().expect("operations").keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = http()
                .request(m, format!("{url}{concrete}"))
                .body("{}")
                .send()
                .expect("send");
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().unwrap_or_default();
            let unrouted = body["error"]["code"] == "NOT_FOUND" || code == 405;
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed ({code} {body})"
            );
        }
    }
}
