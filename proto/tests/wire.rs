//! Round trip of every wire type, the spelling of every enum, and the
//! ErrorCode to HTTP status table.

use std::fmt::Debug;

use locker_proto::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: T) {
    let text = serde_json::to_string(&v).expect("serialises");
    let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(back, v, "{text}");
}

fn lock(trace: Option<&str>, process: Option<&str>) -> Lock {
    Lock {
        key: "jobs/é@x".into(),
        owner_hash: "jobs/é@x@h/1.2.3".into(),
        process_hash: process.map(Into::into),
        trace: trace.map(Into::into),
        acquired_at: 1_700_000_000_000,
        extended_at: 1_700_000_000_001,
        expires_at: u64::MAX,
        ttl_ms: 300_000,
        fencing_token: 42,
    }
}

#[test]
fn every_answer_round_trips() {
    lock_answers_round_trip();
    owner_and_process_answers_round_trip();
    cluster_answers_round_trip();
    node_answers_round_trip();
    for code in ErrorCode::ALL {
        round_trip(ErrorAnswer::new(*code, "why"));
    }
}

/// A lock, and the answers of the lock routes (every status).
fn lock_answers_round_trip() {
    round_trip(lock(Some("t"), Some("h/1.2")));
    round_trip(lock(None, None));
    for status in LockOpStatus::ALL {
        round_trip(LockAnswer {
            status: *status,
            lock: Some(lock(None, None)),
        });
        round_trip(LockAnswer {
            status: *status,
            lock: None,
        });
    }
    round_trip(ReadAnswer {
        locked: true,
        lock: Some(lock(Some(""), None)),
    });
    round_trip(ReadAnswer {
        locked: false,
        lock: None,
    });
    round_trip(ListAnswer {
        locks: vec![lock(None, None), lock(Some("x"), Some("h/1.2"))],
    });
    round_trip(ListAnswer { locks: vec![] });
}

/// The owner-status and process routes' answers (every status).
fn owner_and_process_answers_round_trip() {
    for status in OwnerStatus::ALL {
        round_trip(OwnerAnswer {
            status: *status,
            key: Some("k".into()),
            lock: Some(lock(None, None)),
        });
        round_trip(OwnerAnswer {
            status: *status,
            key: None,
            lock: None,
        });
    }
    for status in ProcessStatus::ALL {
        round_trip(KeepaliveAnswer {
            status: *status,
            alive_until: 7,
        });
        round_trip(StatusAnswer { status: *status });
    }
}

/// The cluster view in every Raft state.
fn cluster_answers_round_trip() {
    let member = Member {
        id: 1,
        client_addr: "a:1".into(),
        peer_addr: "a:2".into(),
        voter: true,
    };
    for state in RaftState::ALL {
        round_trip(ClusterAnswer {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            state: *state,
            members: vec![member.clone()],
            last_log_index: Some(9),
            last_applied_index: Some(9),
            committed_index: Some(9),
            snapshot_index: None,
            purged_index: None,
        });
    }
}

/// Readiness, health, digest and leader answers.
fn node_answers_round_trip() {
    round_trip(ReadyAnswer {
        ready: false,
        leader_id: None,
        committed_index: 0,
        applied_index: 0,
    });
    round_trip(HealthAnswer {
        status: "ok".into(),
    });
    round_trip(DigestAnswer {
        node_id: 2,
        applied_index: 5,
        digest: "ab".repeat(32),
        locks: 1,
        processes: 0,
    });
    round_trip(LeaderAnswer { leader_id: 2 });
}

#[test]
fn every_request_round_trips() {
    round_trip(AcquireRequest::default());
    round_trip(AcquireRequest {
        owner_hash: Some("k@h/1.2.3".into()),
        process_hash: Some("h/1.2".into()),
        trace: Some("t".into()),
        ttl_ms: Some(1000),
        wait_ms: Some(0),
    });
    round_trip(ExtendRequest {
        owner_hash: "k@h/1.2.3".into(),
        ttl_ms: Some(100),
    });
    round_trip(ExtendRequest {
        owner_hash: "k@h/1.2.3".into(),
        ttl_ms: None,
    });
    round_trip(ReleaseRequest {
        owner_hash: "k@h/1.2.3".into(),
    });
    round_trip(KeepaliveRequest::default());
    round_trip(KeepaliveRequest {
        ttl_ms: Some(10_000),
        info: Some(json!({"v": [1, "x"]})),
    });
    round_trip(AddMemberRequest {
        id: 4,
        peer_addr: "127.0.0.1:7084".into(),
    });
    round_trip(TransferLeaderRequest { id: 2 });
    round_trip(ReadQuery { stale: Some(true) });
    round_trip(ReadQuery::default());
    round_trip(ListQuery {
        prefix: Some("jobs/".into()),
        limit: Some(10),
        stale: Some(false),
    });
    round_trip(ListQuery::default());
}

#[test]
fn requests_read_as_the_node_reads_them() {
    // Absent and null optional fields are the same; unknown fields are refused.
    let a: AcquireRequest =
        serde_json::from_str(r#"{"owner_hash":null,"ttl_ms":5000}"#).expect("ok");
    assert_eq!(
        a,
        AcquireRequest {
            ttl_ms: Some(5000),
            ..Default::default()
        }
    );
    assert_eq!(
        serde_json::from_str::<AcquireRequest>("{}").expect("ok"),
        AcquireRequest::default()
    );
    assert!(serde_json::from_str::<AcquireRequest>(r#"{"nope":1}"#).is_err());
    assert!(
        serde_json::from_str::<ExtendRequest>(r#"{"ttl_ms":5}"#).is_err(),
        "owner_hash is required"
    );
    assert!(serde_json::from_str::<ReleaseRequest>(r#"{"owner_hash":"k@h/1.2.3","x":1}"#).is_err());
    assert!(serde_json::from_str::<KeepaliveRequest>(r#"{"ttl_ms":-1}"#).is_err());
    // Absent fields are left out when sending.
    assert_eq!(
        serde_json::to_string(&AcquireRequest::default()).expect("ser"),
        "{}"
    );
    assert_eq!(
        serde_json::to_string(&ExtendRequest {
            owner_hash: "o".into(),
            ttl_ms: None
        })
        .expect("ser"),
        r#"{"owner_hash":"o"}"#
    );
}

#[test]
fn the_stale_flag_takes_exactly_four_spellings() {
    for (text, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        let q: ReadQuery = serde_json::from_value(json!({ "stale": text })).expect(text);
        assert_eq!(q.stale, Some(want), "{text}");
    }
    for bad in ["yes", "TRUE", "", "2"] {
        assert!(
            serde_json::from_value::<ReadQuery>(json!({ "stale": bad })).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn answers_accept_fields_a_newer_node_may_add() {
    let a: LockAnswer =
        serde_json::from_str(r#"{"status":"NO_KEY","lock":null,"new":1}"#).expect("ok");
    assert_eq!(a.status, LockOpStatus::NoKey);
}

#[test]
fn statuses_refuse_what_their_route_cannot_answer() {
    assert!(serde_json::from_str::<LockOpStatus>(r#""RUNNING""#).is_err());
    assert!(serde_json::from_str::<LockOpStatus>(r#""MALFORMED_OWNER_HASH""#).is_err());
    assert!(serde_json::from_str::<OwnerStatus>(r#""SUCCESS""#).is_err());
    assert!(serde_json::from_str::<ProcessStatus>(r#""SOMEONE_ELSE_HOLDS_LOCK""#).is_err());
}

#[test]
fn error_codes_and_their_http_statuses() {
    // The table of docs/http-api.md.
    let table: &[(&str, u16)] = &[
        ("INVALID_KEY", 400),
        ("INVALID_OWNER_HASH", 400),
        ("INVALID_PROCESS_HASH", 400),
        ("INVALID_TTL", 400),
        ("INVALID_WAIT", 400),
        ("INVALID_LIMIT", 400),
        ("INVALID_TRACE", 400),
        ("INVALID_INFO", 400),
        ("INVALID_QUERY", 400),
        ("INVALID_JSON", 400),
        ("INVALID_NODE", 400),
        ("UNAUTHORIZED", 401),
        ("UNAUTHENTICATED", 401),
        ("FORBIDDEN", 403),
        ("UNKNOWN_NODE", 404),
        ("NOT_FOUND", 404),
        ("METHOD_NOT_ALLOWED", 405),
        ("OWNER_HASH_RETIRED", 409),
        ("COMPACTED", 410),
        ("PAYLOAD_TOO_LARGE", 413),
        ("UNSUPPORTED_MEDIA_TYPE", 415),
        ("HOST_NOT_ALLOWED", 421),
        ("LIMIT_EXCEEDED", 429),
        ("RATE_LIMITED", 429),
        ("INTERNAL", 500),
        ("NO_LEADER", 503),
        ("TIMEOUT", 503),
        ("MEMBERSHIP_CHANGE_FAILED", 503),
        ("INVALID_PATH", 400),
        ("MALFORMED_REQUEST", 400),
        ("URI_TOO_LONG", 414),
        ("HEADERS_TOO_LARGE", 431),
    ];
    assert_eq!(
        ErrorCode::ALL.len(),
        table.len(),
        "every code is in the table once"
    );
    for (word, http) in table {
        let code: ErrorCode = word.parse().expect(word);
        assert_eq!(code.as_str(), *word);
        assert_eq!(code.http_status(), *http, "{word}");
        assert_eq!(
            serde_json::to_string(&code).expect("ser"),
            format!("\"{word}\"")
        );
        assert_eq!(code.is_retryable(), *http == 503, "{word}");
    }
    assert!(ErrorCode::NoLeader.nothing_was_done());
    assert!(!ErrorCode::Timeout.nothing_was_done());
    assert!("SOMETHING_NEW".parse::<ErrorCode>().is_err());
}

#[test]
fn status_spellings_and_http_statuses() {
    let ops: Vec<(&str, u16)> = LockOpStatus::ALL
        .iter()
        .map(|s| (s.as_str(), s.http_status()))
        .collect();
    assert_eq!(
        ops,
        [
            ("SUCCESS", 200),
            ("SOMEONE_ELSE_HOLDS_LOCK", 409),
            ("NO_KEY", 404),
            ("NO_RUNNING_PROCESS", 409)
        ]
    );
    let owners: Vec<&str> = OwnerStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        owners,
        [
            "RUNNING",
            "SOMEONE_ELSE_HOLDS_LOCK",
            "NO_KEY",
            "NO_RUNNING_PROCESS",
            "MALFORMED_OWNER_HASH"
        ]
    );
    for s in OwnerStatus::ALL {
        assert_eq!(s.as_str().parse::<OwnerStatus>().expect("parses"), *s);
        assert_eq!(s.to_string(), s.as_str());
    }
}
