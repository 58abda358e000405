//! Parsing and validating request input. Nothing reaches Raft unless it
//! passed here; every refusal names the problem.

use std::ops::RangeInclusive;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::http::Uri;
use locker_proto::limits::{self, MAX_BODY_BYTES, MAX_KEY_BYTES};
use locker_proto::requests::stale_flag;
use locker_proto::{is_valid_process_hash, parse_owner_hash, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;

/// A path parameter as text; `code` is the refusal when it is not valid
/// percent-encoded UTF-8, so each route refuses with its own parameter's code.
pub fn path_param(
    p: Result<Path<String>, PathRejection>,
    what: &'static str,
    code: ErrorCode,
) -> Result<String, ApiError> {
    match p {
        Ok(Path(v)) => Ok(v),
        Err(e) => Err(ApiError::new(
            code,
            format!("the {what} in the path is not valid percent-encoded UTF-8: {e}"),
        )),
    }
}

/// The path's key, checked by [`check_key`].
pub fn key(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let key = path_param(p, "key", ErrorCode::InvalidKey)?;
    check_key(&key)?;
    Ok(key)
}

/// A key must be 1..=1024 bytes without a line break: one with a line break
/// has no owner hash that parses, so a lock on it could not be released by
/// its owner. Refused by every key route, so the rule is the same everywhere.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    match limits::key_problem(key) {
        Some(why) => Err(ApiError::new(ErrorCode::InvalidKey, why)),
        None => Ok(()),
    }
}

/// A process hash must be `{hostname}/{pid}.{nanoseconds}` (as the seed's
/// pattern reads it) and no longer than a key.
pub fn process_hash(p: &str) -> Result<(), ApiError> {
    if p.len() > MAX_KEY_BYTES || !is_valid_process_hash(p) {
        return Err(ApiError::new(
            ErrorCode::InvalidProcessHash,
            format!("process hash {p:?} is not {{hostname}}/{{pid}}.{{nanoseconds}}"),
        ));
    }
    Ok(())
}

/// An owner hash given with a lock operation must parse and name the path's key.
pub fn owner_hash_for(key: &str, owner_hash: &str) -> Result<(), ApiError> {
    match parse_owner_hash(owner_hash) {
        None => Err(ApiError::new(ErrorCode::InvalidOwnerHash,
            format!("owner hash {owner_hash:?} is not {{key}}@{{hostname}}/{{pid}}.{{nanoseconds}}.{{seq}}[#trace]"),
        )),
        Some(parts) if parts.key != key => Err(ApiError::new(ErrorCode::InvalidOwnerHash,
            format!("owner hash {owner_hash:?} names key {:?}, not {key:?}", parts.key),
        )),
        // Bounded like the parts a request sends alone: a trace suffix of
        // 64 KB made every copy of the lock 64 KB.
        Some(parts) if parts.process_hash.len() > MAX_KEY_BYTES || parts.seq.len() > 20 => {
            Err(ApiError::new(ErrorCode::InvalidOwnerHash,
                format!("the owner hash's process hash is over {MAX_KEY_BYTES} bytes or its sequence number over 20 digits"),
            ))
        }
        Some(parts) => match parts.trace.and_then(limits::trace_problem) {
            Some(why) => Err(ApiError::new(ErrorCode::InvalidOwnerHash,
                format!("the owner hash's trace suffix is refused: {why}"),
            )),
            None => Ok(()),
        },
    }
}

/// `v` (`default` when absent) if it lies in `range`; else `code`, naming
/// the field (`what`) and the range. The one range check of every numeric
/// input, so every refusal reads alike.
pub fn within<T: Copy + PartialOrd + std::fmt::Display>(
    v: Option<T>,
    range: &RangeInclusive<T>,
    default: T,
    code: ErrorCode,
    what: &str,
) -> Result<T, ApiError> {
    let x = v.unwrap_or(default);
    if range.contains(&x) {
        return Ok(x);
    }
    Err(ApiError::new(
        code,
        format!(
            "{what} {x} is out of range {}..={}",
            range.start(),
            range.end()
        ),
    ))
}

/// A TTL (`default` when absent) within `range`.
pub fn ttl(
    v: Option<u64>,
    range: RangeInclusive<u64>,
    default: u64,
    what: &str,
) -> Result<u64, ApiError> {
    within(
        v,
        &range,
        default,
        ErrorCode::InvalidTtl,
        &format!("{what} ttl_ms"),
    )
}

/// An acquire's `wait_ms` (0 when absent) within [`limits::WAIT_MS`].
pub fn wait(v: Option<u64>) -> Result<u64, ApiError> {
    within(
        v,
        &limits::WAIT_MS,
        limits::DEFAULT_WAIT_MS,
        ErrorCode::InvalidWait,
        "wait_ms",
    )
}

/// A trace must fit and carry no line break (it ends the owner hash).
pub fn trace(t: Option<&str>) -> Result<(), ApiError> {
    match t.and_then(limits::trace_problem) {
        Some(why) => Err(ApiError::new(ErrorCode::InvalidTrace, why)),
        None => Ok(()),
    }
}

/// Parses a JSON body; an empty body means all defaults when `T: Default` is allowed.
pub fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::InvalidJson, format!("cannot read the body: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return Ok(T::default());
        }
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "a JSON body is required",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")))
}

pub fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("invalid query string: {}", e.body_text()),
        )
    })
}

/// Only the `stale` flag of a query; other parameters are the handler's.
#[derive(Debug, Default, Deserialize)]
struct StaleOnly {
    #[serde(default, deserialize_with = "stale_flag")]
    stale: Option<bool>,
}

/// Whether a GET asks for a stale read. A query the handler would refuse is
/// not stale, so it goes to the leader and is refused there the same way.
pub fn is_stale_read(uri: &Uri) -> bool {
    Query::<StaleOnly>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.stale)
        .unwrap_or(false)
}
