//! The request parsing and validation a fuzz target drives (`fuzz/`,
//! feature `fuzzing`): the same functions the handlers call, on arbitrary
//! bytes. Each must answer or refuse, never panic.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::Uri;
use locker_proto::requests::{
    AcquireRequest, ExtendRequest, KeepaliveRequest, ListQuery, ReadQuery, ReleaseRequest,
};
use locker_proto::{limits, make_owner_hash, parse_owner_hash};

use super::{hygiene, input};

/// Runs every input check on `data` read as a path, a path parameter, a
/// query string and each request body.
pub fn request_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = hygiene::path_problem(&text);
    let _ = crate::wire_errors::rewrite(data);
    if let Ok(uri) = Uri::try_from(data) {
        let _ = input::is_stale_read(&uri);
        let _ = Query::<ListQuery>::try_from_uri(&uri);
        let _ = Query::<ReadQuery>::try_from_uri(&uri);
    }
    let decoded = percent_encoding::percent_decode(data).decode_utf8_lossy();
    let _ = input::check_key(&decoded);
    let _ = input::process_hash(&decoded);
    let _ = input::trace(Some(&decoded));
    owner_hash(&decoded);
    bodies(data);
}

/// An owner hash that parses names a key the node accepts or refuses, and
/// builds back to itself: parsing and building agree.
fn owner_hash(s: &str) {
    let (key, hash) = s.split_once('\n').unwrap_or(("k", s));
    let _ = input::owner_hash_for(key, hash);
    if let Some(parts) = parse_owner_hash(hash) {
        let _ = limits::key_problem(parts.key);
        if let Some(seq) = parts.seq_number() {
            if parts.seq == seq.to_string() {
                let rebuilt = make_owner_hash(parts.key, parts.process_hash, seq, parts.trace);
                assert_eq!(
                    rebuilt.as_deref().ok(),
                    Some(hash),
                    "an owner hash that parses builds back to itself"
                );
            }
        }
    }
}

/// Each request body through `json_body` and the handler's checks.
fn bodies(data: &[u8]) {
    let body = || Ok(Bytes::copy_from_slice(data));
    if let Ok(b) = input::json_body::<AcquireRequest>(body(), true) {
        let _ = input::ttl(
            b.ttl_ms,
            limits::LOCK_TTL_MS,
            limits::DEFAULT_LOCK_TTL_MS,
            "lock",
        );
        let _ = input::wait(b.wait_ms);
        let _ = input::trace(b.trace.as_deref());
        if let Some(p) = &b.process_hash {
            let _ = input::process_hash(p);
        }
        if let Some(o) = &b.owner_hash {
            let _ = input::owner_hash_for("k", o);
        }
    }
    if let Ok(b) = input::json_body::<ExtendRequest>(body(), false) {
        let _ = input::owner_hash_for("k", &b.owner_hash);
        let _ = input::ttl(
            b.ttl_ms,
            limits::LOCK_TTL_MS,
            limits::DEFAULT_LOCK_TTL_MS,
            "lock",
        );
    }
    if let Ok(b) = input::json_body::<ReleaseRequest>(body(), false) {
        let _ = input::owner_hash_for("k", &b.owner_hash);
    }
    if let Ok(b) = input::json_body::<KeepaliveRequest>(body(), true) {
        let _ = b.info.map(|v| v.to_string());
    }
}
