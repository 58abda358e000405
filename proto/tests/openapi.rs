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

/// The request fields carry the bounds of `limits`, taken from the very
/// constants (the schemas are built from them).
#[test]
fn request_schemas_carry_the_enforced_bounds() {
    let components = ComponentsBuilder::new()
        .schema_from::<AcquireRequest>()
        .schema_from::<ExtendRequest>()
        .schema_from::<KeepaliveRequest>()
        .build();
    let doc = OpenApiBuilder::new().components(Some(components)).build();
    let v: Value = serde_json::from_str(&doc.to_json().expect("json")).expect("parses");
    let s = &v["components"]["schemas"];
    let range = |v: &Value| {
        (
            v["minimum"].as_u64(),
            v["maximum"].as_u64(),
            v["default"].as_u64(),
        )
    };
    let acquire = &s["AcquireRequest"]["properties"];
    use locker_proto::limits::*;
    let lock_ttl = (
        Some(*LOCK_TTL_MS.start()),
        Some(*LOCK_TTL_MS.end()),
        Some(DEFAULT_LOCK_TTL_MS),
    );
    assert_eq!(range(&acquire["ttl_ms"]), lock_ttl);
    assert_eq!(range(&s["ExtendRequest"]["properties"]["ttl_ms"]), lock_ttl);
    assert_eq!(
        range(&acquire["wait_ms"]),
        (
            Some(*WAIT_MS.start()),
            Some(*WAIT_MS.end()),
            Some(DEFAULT_WAIT_MS)
        )
    );
    assert_eq!(
        range(&s["KeepaliveRequest"]["properties"]["ttl_ms"]),
        (
            Some(*PROCESS_TTL_MS.start()),
            Some(*PROCESS_TTL_MS.end()),
            Some(DEFAULT_PROCESS_TTL_MS)
        )
    );
    let bytes = |v: &Value| v[schemas::MAX_BYTES_EXT].as_u64().map(|n| n as usize);
    assert_eq!(bytes(&acquire["trace"]), Some(MAX_TRACE_BYTES));
    assert_eq!(bytes(&acquire["process_hash"]), Some(MAX_KEY_BYTES));
    assert_eq!(
        s["KeepaliveRequest"]["properties"]["info"][schemas::MAX_JSON_BYTES_EXT].as_u64(),
        Some(MAX_INFO_BYTES as u64)
    );
    // Optional fields stay optional; the holder of extend is required.
    assert!(s["AcquireRequest"]["required"]
        .as_array()
        .is_none_or(|r| r.is_empty()));
    assert_eq!(
        s["ExtendRequest"]["required"],
        serde_json::json!(["owner_hash"])
    );
}

/// Texts the pattern checks below are tried on: valid and invalid keys,
/// traces, process and owner hashes, and their edges.
const TEXTS: &[&str] = &[
    "12",
    "12.1",
    "12.0",
    "0",
    "",
    "k",
    ".",
    "..",
    "...",
    ".a",
    "a.",
    "a b",
    "é",
    "a\nb",
    "a\rb",
    "a\u{2028}b",
    "a\u{2029}",
    "\n",
    "h/1.2",
    "h/1.2.3",
    "h/1",
    "/1.2",
    "h//1.2",
    "h/1.2\n",
    "h\n/1.2",
    "h@x/1.2",
    "h/١.2",
    "k@h/1.2.3",
    "a@b@h/1.2.3",
    "k@h/1.2.3#t",
    "k@h/1.2.3#",
    "k@h/1.2.3#x@h/1.2.3",
    "k@h/1.2",
    "@h/1.2.3",
    "k@/1.2.3",
    "k\n@h/1.2.3",
    "k@h/1.2.3#a\nb",
    "k@h/1.2.123456789012345678901",
    "k@h/1.2.12345678901234567890",
    "x@h/1.2.3",
    "x@h/1.2.3#y",
    "x@h/1.2",
    "@h/1.2.3.4",
    "a#b",
];

/// Each documented pattern accepts exactly what the node's own check does
/// (`key_problem`, `trace_problem`, `is_valid_process_hash`,
/// `parse_owner_hash` with its bounds, `make_owner_hash`'s ambiguity).
#[test]
fn patterns_agree_with_the_node_checks() {
    use locker_proto::limits::{key_problem, trace_problem};
    use regex::Regex;
    let re = |p: &str| Regex::new(p).expect("a pattern regex reads");
    let (key, trace, process) = (
        re(schemas::KEY_PATTERN),
        re(schemas::TRACE_PATTERN),
        re(schemas::PROCESS_HASH_PATTERN),
    );
    let event_id = re(schemas::EVENT_ID_PATTERN);
    let (owner, ambiguous) = (
        re(schemas::OWNER_HASH_PATTERN),
        re(schemas::AMBIGUOUS_TRACE_PATTERN),
    );
    for &t in TEXTS {
        let dot = t == "." || t == "..";
        assert_eq!(
            key.is_match(t),
            key_problem(t).is_none() && !dot,
            "key {t:?}"
        );
        assert_eq!(trace.is_match(t), trace_problem(t).is_none(), "trace {t:?}");
        assert_eq!(
            process.is_match(t),
            is_valid_process_hash(t),
            "process hash {t:?}"
        );
        if t.parse::<EventId>().is_ok() {
            assert!(event_id.is_match(t), "event id {t:?}");
        }
        let parsed = parse_owner_hash(t).filter(|p| p.seq.len() <= 20);
        assert_eq!(owner.is_match(t), parsed.is_some(), "owner hash {t:?}");
        if trace_problem(t).is_none() {
            let built = make_owner_hash("k", "h/1.2", 3, Some(t));
            assert_eq!(
                ambiguous.is_match(t),
                matches!(built, Err(OwnerHashError::Ambiguous(_))),
                "trace {t:?} in a built owner hash"
            );
        }
    }
}
