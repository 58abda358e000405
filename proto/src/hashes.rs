//! Owner hashes and process hashes: the seed's formats, one parser, one
//! builder.
//!
//! * process hash: `{hostname}/{pid}.{nanoseconds}`
//! * owner hash: `{key}@{process_hash}.{seq}`, plus `#{trace}` when there is
//!   a trace.
//!
//! # The one behaviour
//!
//! [`parse_owner_hash`] matches exactly what the seed's pattern
//! `^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$` matches **as JavaScript reads it**,
//! and captures the same parts:
//!
//! * `.` (in the key and the trace) matches any character except the four
//!   JavaScript line terminators `\n`, `\r`, U+2028 and U+2029. A key or a
//!   trace containing one of them has no valid owner hash.
//! * `[^/]` (the host) matches any character but `/`, line terminators
//!   included.
//! * `\d` is an ASCII digit `0-9` only; other Unicode digits do not count.
//! * `(.+)@` is greedy: of all the `@` that leave a well-formed rest, the
//!   last one ends the key, so a key may contain `@`.
//! * `$` is the end of the text (no multi-line mode); no length limit (the
//!   API limits each field on its own, see [`crate::limits`]).
//!
//! [`is_valid_process_hash`] is the `[^/]+/\d+\.\d+` part, read the same way.
//!
//! Because the match is greedy, some parts cannot travel in an owner hash: a
//! trace containing `@{host}/{d}.{d}.{d}`, or a process hash whose host has
//! an `@`, would parse back to another key. [`make_owner_hash`] refuses
//! anything that does not parse back to the parts it was given, so every
//! owner hash it builds round-trips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The characters JavaScript's `.` does not match.
pub fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// The parts of a well-formed owner hash, borrowed from it.
///
/// ```
/// let p = locker_proto::parse_owner_hash("jobs/a@web-1/42.1700000000000000000.7#req-9").unwrap();
/// assert_eq!(p.key, "jobs/a");
/// assert_eq!(p.process_hash, "web-1/42.1700000000000000000");
/// assert_eq!(p.seq, "7");
/// assert_eq!(p.trace, Some("req-9"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerHashParts<'a> {
    /// The key the owner hash names.
    pub key: &'a str,
    /// The process hash, `{hostname}/{pid}.{nanoseconds}`.
    pub process_hash: &'a str,
    /// The sequence number within the process, as written (ASCII digits,
    /// possibly more than a `u64` holds).
    pub seq: &'a str,
    /// The text after `#`, when there is one (may be empty).
    pub trace: Option<&'a str>,
}

impl OwnerHashParts<'_> {
    /// The sequence number, or `None` when it does not fit a `u64`.
    pub fn seq_number(&self) -> Option<u64> {
        self.seq.parse().ok()
    }
}

/// Splits an owner hash as the seed's pattern does; `None` when it does not
/// match (`MALFORMED_OWNER_HASH` in owner queries, `400 INVALID_OWNER_HASH`
/// in lock operations).
///
/// ```
/// use locker_proto::parse_owner_hash;
/// assert_eq!(parse_owner_hash("a@b@h/1.2.3").unwrap().key, "a@b");
/// assert!(parse_owner_hash("no-at-sign").is_none());
/// assert!(parse_owner_hash("line\nbreak@h/1.2.3").is_none());
/// ```
pub fn parse_owner_hash(owner_hash: &str) -> Option<OwnerHashParts<'_>> {
    // The key is `.+`: it ends before the first line terminator, so only the
    // `@` before that one can end it. Greedy: try them from the right.
    let key_room = owner_hash
        .find(is_line_terminator)
        .unwrap_or(owner_hash.len());
    owner_hash[..key_room]
        .rmatch_indices('@')
        .filter(|&(at, _)| at > 0)
        .find_map(|(at, _)| {
            let (process_hash, seq, trace) = split_owner_suffix(&owner_hash[at + 1..])?;
            Some(OwnerHashParts {
                key: &owner_hash[..at],
                process_hash,
                seq,
                trace,
            })
        })
}

/// Matches `([^/]+/\d+\.\d+)\.\d+(#.*)?$` against the whole of `s`. No
/// backtracking is needed: a host ends at the first `/`, a digit run at the
/// first non-digit.
fn split_owner_suffix(s: &str) -> Option<(&str, &str, Option<&str>)> {
    let process_len = process_hash_prefix(s)?;
    let (process_hash, rest) = s.split_at(process_len);
    let (seq, rest) = split_digits(rest.strip_prefix('.')?)?;
    let trace = match rest {
        "" => None,
        _ => {
            let t = rest.strip_prefix('#')?;
            if t.contains(is_line_terminator) {
                return None;
            }
            Some(t)
        }
    };
    Some((process_hash, seq, trace))
}

/// The length of the `[^/]+/\d+\.\d+` that starts `s`, if one does.
fn process_hash_prefix(s: &str) -> Option<usize> {
    let slash = s.find('/').filter(|&i| i > 0)?;
    let (_pid, rest) = split_digits(&s[slash + 1..])?;
    let (_nanos, rest) = split_digits(rest.strip_prefix('.')?)?;
    Some(s.len() - rest.len())
}

/// A non-empty run of ASCII digits at the start of `s`, and what follows.
fn split_digits(s: &str) -> Option<(&str, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// Whether `s` is a process hash, `^[^/]+/\d+\.\d+$` read as JavaScript does
/// (`400 INVALID_PROCESS_HASH` otherwise; the API also limits it to 1024 bytes).
///
/// ```
/// assert!(locker_proto::is_valid_process_hash("host/12.345"));
/// assert!(!locker_proto::is_valid_process_hash("host/12"));
/// ```
pub fn is_valid_process_hash(s: &str) -> bool {
    process_hash_prefix(s) == Some(s.len())
}

/// Why [`make_owner_hash`] refused its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerHashError {
    /// The key is empty.
    #[error("the key is empty")]
    EmptyKey,
    /// The key holds `\n`, `\r`, U+2028 or U+2029, which no owner hash can carry.
    #[error("the key {0:?} contains a line break, which an owner hash cannot carry")]
    LineBreakInKey(String),
    /// The trace holds a line terminator.
    #[error("the trace {0:?} contains a line break, which an owner hash cannot carry")]
    LineBreakInTrace(String),
    /// The process hash is not `{hostname}/{pid}.{nanoseconds}`.
    #[error("{0:?} is not a process hash {{hostname}}/{{pid}}.{{nanoseconds}}")]
    InvalidProcessHash(String),
    /// The result would parse back to other parts (an `@` in the host, or a
    /// trace that looks like the end of an owner hash).
    #[error("owner hash {0:?} would not parse back to its key, process hash and trace")]
    Ambiguous(String),
}

/// Builds the owner hash `{key}@{process_hash}.{seq}[#{trace}]`, refusing
/// parts that would not parse back to themselves.
///
/// ```
/// use locker_proto::make_owner_hash;
/// assert_eq!(make_owner_hash("k", "host/1.2", 3, Some("t")).unwrap(), "k@host/1.2.3#t");
/// assert_eq!(make_owner_hash("k", "host/1.2", 3, None).unwrap(), "k@host/1.2.3");
/// assert!(make_owner_hash("k", "host/1.2", 3, Some("x@h/1.2.3")).is_err());
/// ```
pub fn make_owner_hash(
    key: &str,
    process_hash: &str,
    seq: u64,
    trace: Option<&str>,
) -> Result<String, OwnerHashError> {
    if key.is_empty() {
        return Err(OwnerHashError::EmptyKey);
    }
    if key.contains(is_line_terminator) {
        return Err(OwnerHashError::LineBreakInKey(key.to_string()));
    }
    if let Some(t) = trace.filter(|t| t.contains(is_line_terminator)) {
        return Err(OwnerHashError::LineBreakInTrace(t.to_string()));
    }
    if !is_valid_process_hash(process_hash) {
        return Err(OwnerHashError::InvalidProcessHash(process_hash.to_string()));
    }
    let hash = match trace {
        Some(t) => format!("{key}@{process_hash}.{seq}#{t}"),
        None => format!("{key}@{process_hash}.{seq}"),
    };
    let seq_text = seq.to_string();
    let expected = OwnerHashParts {
        key,
        process_hash,
        seq: &seq_text,
        trace,
    };
    if parse_owner_hash(&hash) != Some(expected) {
        return Err(OwnerHashError::Ambiguous(hash));
    }
    Ok(hash)
}

/// The process hash `{host}/{pid}.{nanos}`, with `host` cleaned by
/// [`clean_hostname`] so the result is always valid and never makes an owner
/// hash ambiguous.
///
/// ```
/// assert_eq!(locker_proto::make_process_hash("web 1", 42, 7), "web_1/42.7");
/// ```
pub fn make_process_hash(host: &str, pid: u32, nanos: u64) -> String {
    format!("{}/{pid}.{nanos}", clean_hostname(host))
}

/// A new process hash for this process: this machine's [`hostname`], its pid,
/// and wall-clock nanoseconds since the Unix epoch forced to strictly increase
/// within the process, so two calls never return the same hash.
///
/// ```
/// let a = locker_proto::new_process_hash();
/// assert_ne!(a, locker_proto::new_process_hash());
/// assert!(locker_proto::is_valid_process_hash(&a));
/// ```
pub fn new_process_hash() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    // u64 nanoseconds last until the year 2554; a clock before 1970 gives 0
    // and the counter below still makes each hash unique.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut prev = LAST.load(Ordering::Relaxed);
    let nanos = loop {
        let candidate = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, candidate, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break candidate,
            Err(p) => prev = p,
        }
    };
    make_process_hash(&hostname(), std::process::id(), nanos)
}

/// The longest host name kept, in bytes (the DNS limit for a full name).
pub const MAX_HOSTNAME_BYTES: usize = 253;

/// This machine's host name (from the `hostname` crate, `gethostname(2)` on
/// Unix), cleaned by [`clean_hostname`]; `localhost` if it cannot be read.
pub fn hostname() -> String {
    let raw = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    clean_hostname(&raw)
}

/// Makes a host name safe for a process hash, one way everywhere: surrounding
/// whitespace is trimmed, every character other than an ASCII letter, digit,
/// `-`, `.` or `_` becomes `_` (so no `/`, `@`, `#`, whitespace, line break
/// or non-ASCII character is left), the result is cut to
/// [`MAX_HOSTNAME_BYTES`], and an empty name becomes `localhost`.
///
/// ```
/// use locker_proto::clean_hostname;
/// assert_eq!(clean_hostname("a/b@c d#e"), "a_b_c_d_e");
/// assert_eq!(clean_hostname(" web-1.example.com\n"), "web-1.example.com");
/// assert_eq!(clean_hostname(""), "localhost");
/// ```
pub fn clean_hostname(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_HOSTNAME_BYTES)
        .collect();
    if cleaned.is_empty() {
        "localhost".to_string()
    } else {
        cleaned
    }
}
