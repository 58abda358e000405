//! `/openapi.json` is generated from the code: every route of docs/protocol.md ("HTTP API")
//! is in it, and every documented operation is really routed.

use locker_proto::{ErrorCode, LockOpStatus, OwnerStatus};
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
                .header("content-type", "application/json")
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

/// The document's schemas are the wire types of `locker-proto`: the routes
/// name them, and the enums list exactly the spellings that travel.
#[test]
fn openapi_schemas_are_the_proto_wire_types() {
    let c = Cluster::start(1);
    let doc = get(&format!("{}/openapi.json", c.url(1)));
    let body = &doc.body;
    let words = |name: &str| -> Vec<String> {
        body["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum schema"))
            .iter()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect()
    };
    let wire = |all: &[&str]| all.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(words("ErrorCode"), wire(&codes));
    let ops: Vec<&str> = LockOpStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(words("LockOpStatus"), wire(&ops));
    let owner: Vec<&str> = OwnerStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(words("OwnerStatus"), wire(&owner));

    let acquire = &body["paths"]["/v1/locks/{key}/acquire"]["post"];
    let schema_ref =
        |v: &serde_json::Value| v["content"]["application/json"]["schema"]["$ref"].clone();
    assert_eq!(
        schema_ref(&acquire["requestBody"]),
        "#/components/schemas/AcquireRequest"
    );
    assert_eq!(
        schema_ref(&acquire["responses"]["200"]),
        "#/components/schemas/LockAnswer"
    );
    assert_eq!(
        schema_ref(&acquire["responses"]["400"]),
        "#/components/schemas/ErrorAnswer"
    );
    // Query strings are optional query parameters, not path parameters.
    for p in body["paths"]["/v1/locks"]["get"]["parameters"]
        .as_array()
        .expect("list parameters")
    {
        assert_eq!(p["in"], "query", "{p}");
        assert_ne!(p["required"], true, "{p}");
    }
}
