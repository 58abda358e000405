//! With the `openapi` feature, the wire types describe themselves to utoipa
//! with the same field names and enum spellings they travel with.
#![cfg(feature = "openapi")]

use locker_proto::*;
use serde_json::Value;
use utoipa::openapi::{ComponentsBuilder, OpenApiBuilder};

fn schemas() -> Value {
    let components = ComponentsBuilder::new()
        .schema_from::<Lock>()
        .schema_from::<LockAnswer>()
        .schema_from::<ClusterAnswer>()
        .schema_from::<KeepaliveRequest>()
        .schema_from::<ErrorAnswer>()
        .schema_from::<LockOpStatus>()
        .schema_from::<ErrorCode>()
        .build();
    let doc = OpenApiBuilder::new().components(Some(components)).build();
    let v: Value = serde_json::from_str(&doc.to_json().expect("json")).expect("parses");
    v["components"]["schemas"].clone()
}

#[test]
fn schemas_use_the_wire_names() {
    let s = schemas();
    let props = |name: &str| -> Vec<String> {
        let mut p: Vec<String> = s[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has properties: {s}"))
            .keys()
            .cloned()
            .collect();
        p.sort();
        p
    };
    let cluster = props("ClusterAnswer");
    for f in [
        "state",
        "committed_index",
        "snapshot_index",
        "purged_index",
        "members",
    ] {
        assert!(cluster.iter().any(|p| p == f), "{f} in {cluster:?}");
    }
    assert!(props("KeepaliveRequest").contains(&"info".to_string()));
    let ops: Vec<&str> = s["LockOpStatus"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        ops,
        LockOpStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
    );
    let codes: Vec<&str> = s["ErrorCode"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        codes,
        ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
    );
}

/// The read and list queries are optional query parameters, not required
/// path parameters (what utoipa assumes unless told).
#[test]
fn queries_are_optional_query_parameters() {
    use utoipa::IntoParams;
    let params = ListQuery::into_params(|| None)
        .into_iter()
        .chain(ReadQuery::into_params(|| None));
    let mut names = Vec::new();
    for p in params {
        let v = serde_json::to_value(&p).expect("serialises");
        assert_eq!(v["in"], "query", "{v}");
        assert_ne!(v["required"], true, "{v}");
        names.push(v["name"].as_str().expect("name").to_string());
    }
    assert_eq!(names, ["prefix", "limit", "stale", "stale"]);
}
