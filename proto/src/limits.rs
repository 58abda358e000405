//! Validation limits and defaults of the HTTP API, as the node enforces them.
//!
//! Every range is inclusive. A request outside a range is refused with the
//! [`ErrorCode`](crate::ErrorCode) named on the constant, and nothing changes.

use std::ops::RangeInclusive;

use crate::hashes::is_line_terminator;

/// A key is 1 to this many bytes of UTF-8 (`INVALID_KEY`). A list prefix and
/// a process hash may not be longer either.
pub const MAX_KEY_BYTES: usize = 1024;
/// A trace is at most this many bytes (`INVALID_TRACE`).
pub const MAX_TRACE_BYTES: usize = 1024;
/// A keep-alive's `info`, as compact JSON text, is at most this many bytes
/// (`INVALID_INFO`).
pub const MAX_INFO_BYTES: usize = 16 * 1024;
/// A request body is at most this many bytes (`413 PAYLOAD_TOO_LARGE`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A lock's `ttl_ms`: 100 ms to 7 days (`INVALID_TTL`).
pub const LOCK_TTL_MS: RangeInclusive<u64> = 100..=7 * 24 * 3600 * 1000;
/// The lock `ttl_ms` when a request names none: 5 minutes.
pub const DEFAULT_LOCK_TTL_MS: u64 = 300_000;
/// A process's `ttl_ms`: 100 ms to 1 hour (`INVALID_TTL`).
pub const PROCESS_TTL_MS: RangeInclusive<u64> = 100..=3600 * 1000;
/// The process `ttl_ms` when a keep-alive names none: 10 seconds.
pub const DEFAULT_PROCESS_TTL_MS: u64 = 10_000;
/// An acquire's `wait_ms`: 0 to 10 minutes (`INVALID_WAIT`).
pub const WAIT_MS: RangeInclusive<u64> = 0..=600_000;
/// The `wait_ms` when an acquire names none: do not wait.
pub const DEFAULT_WAIT_MS: u64 = 0;
/// A list's `limit` (`INVALID_LIMIT`).
pub const LIST_LIMIT: RangeInclusive<usize> = 1..=10_000;
/// The list `limit` when the query names none.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// Why a key is refused, or `None` when it is a valid key: 1..=1024 bytes
/// without a line break (`\n`, `\r`, U+2028, U+2029). A key with a line
/// break has no owner hash that parses (see [`crate::hashes`]), so a lock on
/// it could never be extended or released by its owner: it is refused up
/// front, by every route that takes a key.
///
/// ```
/// assert!(locker_proto::limits::key_problem("jobs/report").is_none());
/// assert!(locker_proto::limits::key_problem("").is_some());
/// assert!(locker_proto::limits::key_problem("a\nb").is_some());
/// ```
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("the key is empty".to_string());
    }
    if key.len() > MAX_KEY_BYTES {
        return Some(format!(
            "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
            key.len()
        ));
    }
    if key.contains(is_line_terminator) {
        return Some(format!(
            "the key {key:?} contains a line break, which an owner hash cannot carry"
        ));
    }
    None
}

/// Why a trace is refused (`INVALID_TRACE`), or `None`: at most 1024 bytes
/// without a line break, for the same reason as [`key_problem`]: a trace
/// travels at the end of an owner hash, where a line break does not parse.
///
/// A trace can still make an owner hash ambiguous (`x@h/1.2.3` looks like
/// the end of one); [`crate::make_owner_hash`] refuses those, since whether
/// it is ambiguous depends on the whole hash.
///
/// ```
/// assert!(locker_proto::limits::trace_problem("req-9").is_none());
/// assert!(locker_proto::limits::trace_problem("a\rb").is_some());
/// ```
pub fn trace_problem(trace: &str) -> Option<String> {
    if trace.len() > MAX_TRACE_BYTES {
        return Some(format!(
            "the trace is {} bytes; at most {MAX_TRACE_BYTES} are allowed",
            trace.len()
        ));
    }
    if trace.contains(is_line_terminator) {
        return Some(format!(
            "the trace {trace:?} contains a line break, which an owner hash cannot carry"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_the_documented_ones() {
        assert_eq!(LOCK_TTL_MS, 100..=604_800_000);
        assert_eq!(PROCESS_TTL_MS, 100..=3_600_000);
        assert_eq!(WAIT_MS, 0..=600_000);
        assert!(LOCK_TTL_MS.contains(&DEFAULT_LOCK_TTL_MS));
        assert!(PROCESS_TTL_MS.contains(&DEFAULT_PROCESS_TTL_MS));
        assert!(WAIT_MS.contains(&DEFAULT_WAIT_MS));
        assert!(LIST_LIMIT.contains(&DEFAULT_LIST_LIMIT));
    }

    #[test]
    fn key_lengths() {
        assert!(key_problem(&"k".repeat(MAX_KEY_BYTES)).is_none());
        assert!(key_problem(&"k".repeat(MAX_KEY_BYTES + 1)).is_some());
        // Bytes, not chars: 512 two-byte chars fit, 513 do not.
        assert!(key_problem(&"é".repeat(512)).is_none());
        assert!(key_problem(&"é".repeat(513)).is_some());
    }

    #[test]
    fn line_breaks_are_refused_in_keys_and_traces() {
        for lt in ["\n", "\r", "\u{2028}", "\u{2029}"] {
            assert!(key_problem(&format!("a{lt}b")).is_some(), "{lt:?}");
            assert!(trace_problem(&format!("a{lt}b")).is_some(), "{lt:?}");
        }
        // What the owner-hash pattern's `.` matches stays allowed.
        for ok in ["a b", "a\tb", "é", "a@b", "a#b", "a/b.c"] {
            assert!(key_problem(ok).is_none(), "{ok:?}");
            assert!(trace_problem(ok).is_none(), "{ok:?}");
        }
        assert!(trace_problem("").is_none());
        assert!(trace_problem(&"t".repeat(MAX_TRACE_BYTES)).is_none());
        assert!(trace_problem(&"t".repeat(MAX_TRACE_BYTES + 1)).is_some());
    }
}
