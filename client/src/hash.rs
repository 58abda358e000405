//! Process and owner hashes in the seed's formats.
//!
//! * process hash: `{hostname}/{pid}.{nanoseconds}`
//! * owner hash: `{key}@{process_hash}.{seq}` with an optional `#{trace}`
//!
//! The server parses owner hashes with the seed's pattern
//! `^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$`; [`parse_owner_hash`] implements the
//! same (greedy) semantics by hand so the client and the server agree on which
//! part is the key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The parts of a well-formed owner hash.
///
/// ```
/// let p = locker_client::parse_owner_hash("jobs/a@web-1/42.1700000000000000000.7#req-9").unwrap();
/// assert_eq!(p.key, "jobs/a");
/// assert_eq!(p.process_hash, "web-1/42.1700000000000000000");
/// assert_eq!(p.seq, 7);
/// assert_eq!(p.trace.as_deref(), Some("req-9"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerHashParts {
    /// The lock key the owner hash names.
    pub key: String,
    /// The process hash (`{hostname}/{pid}.{nanoseconds}`).
    pub process_hash: String,
    /// The per-process sequence number of this run.
    pub seq: u64,
    /// The optional trace (the part after `#`).
    pub trace: Option<String>,
}

/// Builds an owner hash `{key}@{process_hash}.{seq}` plus `#{trace}` when a
/// trace is given.
///
/// ```
/// let h = locker_client::make_owner_hash("k", "host/1.2", 3, Some("t"));
/// assert_eq!(h, "k@host/1.2.3#t");
/// assert_eq!(locker_client::make_owner_hash("k", "host/1.2", 3, None), "k@host/1.2.3");
/// ```
pub fn make_owner_hash(key: &str, process_hash: &str, seq: u64, trace: Option<&str>) -> String {
    match trace {
        Some(t) => format!("{key}@{process_hash}.{seq}#{t}"),
        None => format!("{key}@{process_hash}.{seq}"),
    }
}

/// Parses an owner hash the way the seed's regular expression does; `None`
/// means malformed (`MALFORMED_OWNER_HASH`).
///
/// ```
/// assert!(locker_client::parse_owner_hash("no-at-sign").is_none());
/// // A key may itself contain '@': the greedy match takes the last one that works.
/// let p = locker_client::parse_owner_hash("a@b@h/1.2.3").unwrap();
/// assert_eq!(p.key, "a@b");
/// ```
pub fn parse_owner_hash(owner_hash: &str) -> Option<OwnerHashParts> {
    // Greedy `(.+)@`: try the '@' candidates from the right and keep the
    // first whose suffix parses. We cannot split on '#' first because the host
    // part (`[^/]+`) may itself contain '#'. `.` in the seed's regex does not
    // match a newline, hence the newline checks.
    let at_positions: Vec<usize> = owner_hash.match_indices('@').map(|(i, _)| i).collect();
    for &at in at_positions.iter().rev() {
        let key = &owner_hash[..at];
        if key.is_empty() || key.contains('\n') {
            continue;
        }
        if let Some((process_hash, seq, trace)) = parse_owner_suffix(&owner_hash[at + 1..]) {
            return Some(OwnerHashParts {
                key: key.to_string(),
                process_hash,
                seq,
                trace,
            });
        }
    }
    None
}

/// Matches `[^/]+/\d+\.\d+\.\d+(#.*)?` against the whole of `s`.
fn parse_owner_suffix(s: &str) -> Option<(String, u64, Option<String>)> {
    let slash = s.find('/')?;
    let host = &s[..slash];
    if host.is_empty() || host.contains('\n') {
        return None;
    }
    let rest = &s[slash + 1..];
    let (pid, rest) = take_digits(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (nanos, rest) = take_digits(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (seq, rest) = take_digits(rest)?;
    let trace = if rest.is_empty() {
        None
    } else {
        let t = rest.strip_prefix('#')?;
        if t.contains('\n') {
            return None;
        }
        Some(t.to_string())
    };
    // A sequence number too large for u64 is still well-formed per the
    // pattern; saturate rather than calling it malformed.
    let seq_num = seq.parse::<u64>().unwrap_or(u64::MAX);
    Some((format!("{host}/{pid}.{nanos}"), seq_num, trace))
}

fn take_digits(s: &str) -> Option<(&str, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        None
    } else {
        Some((&s[..end], &s[end..]))
    }
}

/// Checks the process hash format `{hostname}/{pid}.{nanoseconds}` (the
/// `[^/]+/\d+\.\d+` part of the seed's pattern).
///
/// ```
/// assert!(locker_client::is_valid_process_hash("host/12.345"));
/// assert!(!locker_client::is_valid_process_hash("host/12"));
/// ```
pub fn is_valid_process_hash(s: &str) -> bool {
    let Some(slash) = s.find('/') else {
        return false;
    };
    let host = &s[..slash];
    if host.is_empty() || host.contains('\n') {
        return false;
    }
    let Some((_, rest)) = take_digits(&s[slash + 1..]) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    matches!(take_digits(rest), Some((_, "")))
}

/// This machine's host name, made safe for a process hash: no '/', '@',
/// whitespace or control characters (they would make owner hashes ambiguous
/// or malformed), never empty.
pub fn hostname() -> String {
    let raw = read_hostname().unwrap_or_default();
    sanitize_hostname(&raw)
}

fn read_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we stop at the first NUL (or the end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

pub(crate) fn sanitize_hostname(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '@' || c == '#' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "localhost".to_string()
    } else {
        cleaned
    }
}

/// Makes a new, unique process hash `{hostname}/{pid}.{nanoseconds}`.
///
/// The nanoseconds are wall-clock nanoseconds since the Unix epoch, forced to
/// strictly increase within this process, so two lockers (or two incarnations
/// of one locker) in one process never share a hash.
///
/// ```
/// let a = locker_client::new_process_hash();
/// let b = locker_client::new_process_hash();
/// assert_ne!(a, b);
/// assert!(locker_client::is_valid_process_hash(&a));
/// ```
pub fn new_process_hash() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let nanos = loop {
        let candidate = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, candidate, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break candidate,
            Err(p) => prev = p,
        }
    };
    format!("{}/{}.{}", hostname(), std::process::id(), nanos)
}

/// Next owner sequence number; process-wide so that owner hashes stay unique
/// even if a process hash were ever reused.
pub(crate) fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_hash_round_trip() {
        let ph = new_process_hash();
        let h = make_owner_hash("jobs/report", &ph, 12, Some("trace-1"));
        let p = parse_owner_hash(&h).expect("well-formed");
        assert_eq!(p.key, "jobs/report");
        assert_eq!(p.process_hash, ph);
        assert_eq!(p.seq, 12);
        assert_eq!(p.trace.as_deref(), Some("trace-1"));
    }

    #[test]
    fn process_hash_format() {
        let ph = new_process_hash();
        assert!(is_valid_process_hash(&ph), "{ph}");
        let (host, rest) = ph.split_once('/').expect("slash");
        assert_eq!(host, hostname());
        let (pid, nanos) = rest.split_once('.').expect("dot");
        assert_eq!(pid, std::process::id().to_string());
        assert!(nanos.parse::<u64>().expect("nanos") > 1_600_000_000_000_000_000);
    }

    #[test]
    fn malformed_owner_hashes() {
        for bad in [
            "",
            "k",
            "@h/1.2.3",
            "k@h/1.2",
            "k@/1.2.3",
            "k@h/1.2.x",
            "k@h/a.2.3",
            "k@h/1.2.3x",
            "k@h/1..3",
            "k\n@h/1.2.3",
            "k@h/1.2.3#a\nb",
        ] {
            assert!(
                parse_owner_hash(bad).is_none(),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn greedy_key_and_odd_traces() {
        let p = parse_owner_hash("a@b@h/1.2.3").expect("ok");
        assert_eq!(p.key, "a@b");
        let p = parse_owner_hash("k@h/1.2.3#").expect("empty trace ok");
        assert_eq!(p.trace.as_deref(), Some(""));
        let p = parse_owner_hash("k@h/1.2.3#x@y/1.2.3").expect("ok");
        // Greedy: the regex takes the longest key that still matches.
        assert_eq!(p.key, "k@h/1.2.3#x");
        assert_eq!(p.trace, None);
        let p = parse_owner_hash("k@h#x/1.2.3#t").expect("host may contain #");
        assert_eq!(p.process_hash, "h#x/1.2");
        assert_eq!(p.trace.as_deref(), Some("t"));
    }

    #[test]
    fn hostname_sanitized() {
        assert_eq!(sanitize_hostname("a/b@c d#e"), "a_b_c_d_e");
        assert_eq!(sanitize_hostname(""), "localhost");
        assert!(!hostname().is_empty());
    }

    #[test]
    fn process_hash_validation() {
        assert!(is_valid_process_hash("h/1.2"));
        for bad in ["", "h", "/1.2", "h/1", "h/1.", "h/.2", "h/1.2.3", "h/1.2x"] {
            assert!(!is_valid_process_hash(bad), "{bad:?}");
        }
    }

    #[test]
    fn seq_increases() {
        let a = next_seq();
        let b = next_seq();
        assert!(b > a);
    }
}
