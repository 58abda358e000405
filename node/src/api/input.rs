//! Parsing and validating request input. Nothing reaches Raft unless it
//! passed here; every refusal names the problem.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::http::Uri;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;

use super::error::ApiError;
use crate::core::{parse_owner_hash, valid_process_hash};

pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const LOCK_TTL_MS: (u64, u64) = (100, 7 * 24 * 3600 * 1000);
pub const DEFAULT_LOCK_TTL_MS: u64 = 300_000;
pub const PROCESS_TTL_MS: (u64, u64) = (100, 3600 * 1000);
pub const DEFAULT_PROCESS_TTL_MS: u64 = 10_000;
pub const MAX_WAIT_MS: u64 = 600_000;
pub const MAX_TRACE_BYTES: usize = 1024;
pub const MAX_INFO_BYTES: usize = 16 * 1024;
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 10_000;

pub fn path_param(
    p: Result<Path<String>, PathRejection>,
    what: &'static str,
) -> Result<String, ApiError> {
    match p {
        Ok(Path(v)) => Ok(v),
        Err(e) => Err(ApiError::bad_request(
            match what {
                "process hash" => "INVALID_PROCESS_HASH",
                "owner hash" => "INVALID_OWNER_HASH",
                _ => "INVALID_KEY",
            },
            format!("the {what} in the path is not valid percent-encoded UTF-8: {e}"),
        )),
    }
}

pub fn key(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let key = path_param(p, "key")?;
    check_key(&key)?;
    Ok(key)
}

pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("INVALID_KEY", "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            "INVALID_KEY",
            format!(
                "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    Ok(())
}

pub fn process_hash(p: &str) -> Result<(), ApiError> {
    if p.len() > MAX_KEY_BYTES || !valid_process_hash(p) {
        return Err(ApiError::bad_request(
            "INVALID_PROCESS_HASH",
            format!("process hash {p:?} is not {{hostname}}/{{pid}}.{{nanoseconds}}"),
        ));
    }
    Ok(())
}

/// An owner hash given with a lock operation must parse and name the path's key.
pub fn owner_hash_for(key: &str, owner_hash: &str) -> Result<(), ApiError> {
    match parse_owner_hash(owner_hash) {
        None => Err(ApiError::bad_request(
            "INVALID_OWNER_HASH",
            format!("owner hash {owner_hash:?} is not {{key}}@{{hostname}}/{{pid}}.{{nanoseconds}}.{{seq}}[#trace]"),
        )),
        Some(parts) if parts.key != key => Err(ApiError::bad_request(
            "INVALID_OWNER_HASH",
            format!("owner hash {owner_hash:?} names key {:?}, not {key:?}", parts.key),
        )),
        Some(_) => Ok(()),
    }
}

pub fn ttl(
    v: Option<u64>,
    (lo, hi): (u64, u64),
    default: u64,
    what: &str,
) -> Result<u64, ApiError> {
    let t = v.unwrap_or(default);
    if !(lo..=hi).contains(&t) {
        return Err(ApiError::bad_request(
            "INVALID_TTL",
            format!("{what} ttl_ms {t} is out of range {lo}..={hi}"),
        ));
    }
    Ok(t)
}

pub fn wait(v: Option<u64>) -> Result<u64, ApiError> {
    let w = v.unwrap_or(0);
    if w > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "INVALID_WAIT",
            format!("wait_ms {w} is out of range 0..={MAX_WAIT_MS}"),
        ));
    }
    Ok(w)
}

pub fn trace(t: Option<&str>) -> Result<(), ApiError> {
    if t.is_some_and(|t| t.len() > MAX_TRACE_BYTES) {
        return Err(ApiError::bad_request(
            "INVALID_TRACE",
            format!("trace is longer than {MAX_TRACE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Parses a JSON body; an empty body means all defaults when `T: Default` is allowed.
pub fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("INVALID_JSON", format!("cannot read the body: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return Ok(T::default());
        }
        return Err(ApiError::bad_request(
            "INVALID_JSON",
            "a JSON body is required",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid JSON body: {e}")))
}

pub fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError::bad_request(
            "INVALID_QUERY",
            format!("invalid query string: {}", e.body_text()),
        )
    })
}

/// The `stale` query flag: `true`/`1` or `false`/`0`. The one parse shared by
/// the router (which serves stale reads locally) and the read handlers, so
/// they cannot disagree about what is a stale read.
pub fn stale_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(D::Error::custom(format!(
            "stale must be true, false, 1 or 0, not {other:?}"
        ))),
    }
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
