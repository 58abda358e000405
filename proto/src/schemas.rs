//! The OpenAPI schemas of the validated inputs (feature `openapi`): every
//! range, length and pattern the node enforces, built from the constants of
//! [`crate::limits`] and the formats of [`crate::hashes`], so the document
//! cannot state another bound than the one enforced. The request types name
//! these with `#[schema(schema_with = ...)]`, the node's path parameters too.
//!
//! JSON Schema counts `maxLength` in characters; the node counts UTF-8
//! bytes. Each string bound therefore also travels as `x-locker-max-bytes`
//! (the exact rule); `maxLength` is the same number, which a longer string in
//! characters always exceeds in bytes too. Patterns are ECMA-262 (as JSON
//! Schema reads them) written so the Rust `regex` crate reads them the same:
//! explicit classes, no `\d`, no `.`.

use serde_json::json;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use crate::limits::{
    DEFAULT_LIST_LIMIT, DEFAULT_LOCK_TTL_MS, DEFAULT_PROCESS_TTL_MS, DEFAULT_WAIT_MS, LIST_LIMIT,
    LOCK_TTL_MS, MAX_INFO_BYTES, MAX_KEY_BYTES, MAX_TRACE_BYTES, PROCESS_TTL_MS, WAIT_MS,
};

/// The extension carrying a string's exact bound, in UTF-8 bytes.
pub const MAX_BYTES_EXT: &str = "x-locker-max-bytes";
/// The extension carrying the bound of `info` as compact JSON text, in bytes.
pub const MAX_JSON_BYTES_EXT: &str = "x-locker-max-json-bytes";
/// The extension carrying the bounds of an owner hash's parts, in bytes:
/// `{"process_hash": N, "trace": N}` (the key is the path's).
pub const PART_MAX_BYTES_EXT: &str = "x-locker-part-max-bytes";
/// The extension carrying a pattern a trace must *not* match when the node
/// builds the owner hash itself (an acquire without `owner_hash`).
pub const AMBIGUOUS_TRACE_EXT: &str = "x-locker-refused-pattern";

/// A key: no line break (`\n`, `\r`, U+2028, U+2029), not `.` or `..`
/// (a path segment the node refuses, see `INVALID_PATH`).
pub const KEY_PATTERN: &str = r"^(?:[^.\n\r\u2028\u2029][^\n\r\u2028\u2029]*|\.[^.\n\r\u2028\u2029][^\n\r\u2028\u2029]*|\.\.[^\n\r\u2028\u2029]+)$";
/// A trace: no line break.
pub const TRACE_PATTERN: &str = r"^[^\n\r\u2028\u2029]*$";
/// A trace that would make the owner hash the node builds parse back to
/// another key (`INVALID_TRACE` when the acquire names no owner hash).
pub const AMBIGUOUS_TRACE_PATTERN: &str = r"@[^/]+/[0-9]+\.[0-9]+\.[0-9]+(?:#|$)";
/// A process hash, `{hostname}/{pid}.{nanoseconds}`.
pub const PROCESS_HASH_PATTERN: &str = r"^[^/]+/[0-9]+\.[0-9]+$";
/// An owner hash, `{key}@{process_hash}.{seq}[#{trace}]`: the seed's
/// `^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$` as JavaScript reads it, with the
/// sequence number bounded as the node bounds it (at most 20 digits).
pub const OWNER_HASH_PATTERN: &str =
    r"^[^\n\r\u2028\u2029]+@[^/]+/[0-9]+\.[0-9]+\.[0-9]{1,20}(?:#[^\n\r\u2028\u2029]*)?$";
/// An owner hash as a path segment (`GET /v1/owners/{owner_hash}`): any
/// text but `.` and `..`; one that does not parse is answered
/// `MALFORMED_OWNER_HASH`, not refused.
pub const SEGMENT_PATTERN: &str = r"^(?:[^.][\s\S]*|\.[^.][\s\S]*|\.\.[\s\S]+)$";
/// The longest owner hash the node accepts, in bytes: a key, `@`, a process
/// hash, `.`, a 20-digit sequence number, `#` and a trace.
pub const MAX_OWNER_HASH_BYTES: usize =
    MAX_KEY_BYTES + 1 + MAX_KEY_BYTES + 1 + 20 + 1 + MAX_TRACE_BYTES;

fn integer(
    range: &std::ops::RangeInclusive<u64>,
    default: u64,
    nullable: bool,
    what: &str,
) -> RefOr<Schema> {
    let ty = if nullable {
        SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        SchemaType::new(Type::Integer)
    };
    ObjectBuilder::new()
        .schema_type(ty)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(*range.start()))
        .maximum(Some(*range.end()))
        .default(Some(json!(default)))
        .description(Some(format!(
            "{what}: {}..={}, default {default}",
            range.start(),
            range.end()
        )))
        .into()
}

fn string(
    min: usize,
    max_bytes: usize,
    pattern: Option<&str>,
    nullable: bool,
    what: &str,
) -> ObjectBuilder {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(ty)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max_bytes))
        .pattern(pattern)
        .description(Some(format!("{what} (at most {max_bytes} bytes of UTF-8)")))
        .extensions(Some(
            ExtensionsBuilder::new()
                .add(MAX_BYTES_EXT, max_bytes)
                .build(),
        ))
}

/// A lock's `ttl_ms` ([`LOCK_TTL_MS`], `INVALID_TTL`).
pub fn lock_ttl_ms() -> RefOr<Schema> {
    integer(
        &LOCK_TTL_MS,
        DEFAULT_LOCK_TTL_MS,
        true,
        "The lock's TTL in ms (INVALID_TTL outside)",
    )
}

/// A process's `ttl_ms` ([`PROCESS_TTL_MS`], `INVALID_TTL`).
pub fn process_ttl_ms() -> RefOr<Schema> {
    integer(
        &PROCESS_TTL_MS,
        DEFAULT_PROCESS_TTL_MS,
        true,
        "The process TTL in ms (INVALID_TTL outside)",
    )
}

/// An acquire's `wait_ms` ([`WAIT_MS`], `INVALID_WAIT`).
pub fn wait_ms() -> RefOr<Schema> {
    integer(
        &WAIT_MS,
        DEFAULT_WAIT_MS,
        true,
        "How long to wait in line when the key is held, in ms (INVALID_WAIT outside)",
    )
}

/// A list's `limit` ([`LIST_LIMIT`], `INVALID_LIMIT`).
pub fn list_limit() -> RefOr<Schema> {
    let (lo, hi) = (*LIST_LIMIT.start() as u64, *LIST_LIMIT.end() as u64);
    integer(
        &(lo..=hi),
        DEFAULT_LIST_LIMIT as u64,
        false,
        "At most this many entries (INVALID_LIMIT outside)",
    )
}

/// A key in a path ([`crate::limits::key_problem`], `INVALID_KEY`; `.` and
/// `..` are `INVALID_PATH`).
pub fn key() -> RefOr<Schema> {
    string(
        1,
        MAX_KEY_BYTES,
        Some(KEY_PATTERN),
        false,
        "The lock's key, percent-encoded in the path; no line break, not `.` or `..` (INVALID_KEY, INVALID_PATH)",
    )
    .into()
}

/// A list's `prefix` (`INVALID_KEY` for locks, `INVALID_PROCESS_HASH` for
/// processes).
pub fn prefix() -> RefOr<Schema> {
    string(
        0,
        MAX_KEY_BYTES,
        None,
        false,
        "Only entries whose key (or process hash) starts with this; longer is refused: INVALID_KEY for locks and watches, INVALID_PROCESS_HASH for processes",
    )
    .into()
}

/// An event id of the watch stream (`since`, `INVALID_QUERY` otherwise).
pub const EVENT_ID_PATTERN: &str = r"^[0-9]+(?:\.[0-9]+)?$";

/// A watch's `since`: an event id, `<index>` or `<index>.<n>`.
pub fn event_id() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(EVENT_ID_PATTERN))
        .description(Some(
            "Start after this event id, `<index>` or `<index>.<n>` (index within u64, n from 1 to 4294967294; INVALID_QUERY otherwise); absent: from now. `Last-Event-ID` takes precedence",
        ))
        .into()
}

/// A trace ([`crate::limits::trace_problem`], `INVALID_TRACE`).
pub fn trace() -> RefOr<Schema> {
    string(
        0,
        MAX_TRACE_BYTES,
        Some(TRACE_PATTERN),
        true,
        "Free text kept with the lock; no line break (INVALID_TRACE). Without `owner_hash`, a trace matching `x-locker-refused-pattern` (it would make the node's owner hash ambiguous) is INVALID_TRACE too",
    )
    .extensions(Some(
        ExtensionsBuilder::new()
            .add(MAX_BYTES_EXT, MAX_TRACE_BYTES)
            .add(AMBIGUOUS_TRACE_EXT, AMBIGUOUS_TRACE_PATTERN)
            .build(),
    ))
    .into()
}

/// A process hash in a body ([`crate::is_valid_process_hash`],
/// `INVALID_PROCESS_HASH`).
pub fn process_hash() -> RefOr<Schema> {
    process_hash_schema(true)
}

/// A process hash in a path.
pub fn process_hash_path() -> RefOr<Schema> {
    process_hash_schema(false)
}

fn process_hash_schema(nullable: bool) -> RefOr<Schema> {
    string(
        1,
        MAX_KEY_BYTES,
        Some(PROCESS_HASH_PATTERN),
        nullable,
        "`{hostname}/{pid}.{nanoseconds}` (INVALID_PROCESS_HASH)",
    )
    .into()
}

/// An owner hash in a lock operation's body ([`crate::parse_owner_hash`],
/// `INVALID_OWNER_HASH`).
pub fn owner_hash() -> RefOr<Schema> {
    owner_hash_schema(false)
}

/// The optional owner hash of an acquire.
pub fn owner_hash_opt() -> RefOr<Schema> {
    owner_hash_schema(true)
}

fn owner_hash_schema(nullable: bool) -> RefOr<Schema> {
    let parts = json!({"process_hash": MAX_KEY_BYTES, "trace": MAX_TRACE_BYTES});
    string(
        1,
        MAX_OWNER_HASH_BYTES,
        Some(OWNER_HASH_PATTERN),
        nullable,
        &format!(
            "`{{key}}@{{hostname}}/{{pid}}.{{nanoseconds}}.{{seq}}[#{{trace}}]` naming the path's key, its process hash at most {MAX_KEY_BYTES} bytes, its trace at most {MAX_TRACE_BYTES} bytes (`x-locker-part-max-bytes`) (INVALID_OWNER_HASH)"
        ),
    )
    .extensions(Some(
        ExtensionsBuilder::new()
            .add(MAX_BYTES_EXT, MAX_OWNER_HASH_BYTES)
            .add(PART_MAX_BYTES_EXT, parts)
            .build(),
    ))
    .into()
}

/// An owner hash in the path of the owner query: any text (one that does not
/// parse is answered `MALFORMED_OWNER_HASH`).
pub fn owner_hash_path() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .min_length(Some(1))
        .pattern(Some(SEGMENT_PATTERN))
        .description(Some(
            "`{key}@{hostname}/{pid}.{nanoseconds}.{seq}[#trace]`, percent-encoded; one that does not parse is answered 200 MALFORMED_OWNER_HASH; not valid UTF-8: INVALID_OWNER_HASH; `.` or `..`: INVALID_PATH",
        ))
        .into()
}

/// A keep-alive's `info`: any JSON value, at most [`MAX_INFO_BYTES`] as
/// compact JSON text (`INVALID_INFO`).
pub fn info() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(format!(
            "Any JSON about the process (host, version...), at most {MAX_INFO_BYTES} bytes as compact JSON text (INVALID_INFO)"
        )))
        .extensions(Some(
            ExtensionsBuilder::new()
                .add(MAX_JSON_BYTES_EXT, MAX_INFO_BYTES)
                .build(),
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_hash_bound_is_the_sum_of_its_parts() {
        assert_eq!(MAX_OWNER_HASH_BYTES, 3095);
    }
}
