//! Process and owner hashes in the seed's formats.
//!
//! * process hash: `{hostname}/{pid}.{nanoseconds}`
//! * owner hash: `{key}@{process_hash}.{seq}` with an optional `#{trace}`
//!
//! The format, the one parser, the builders and the host-name cleaning live
//! in `locker-proto`, so this client and the node agree on which part of an
//! owner hash is the key; only the per-process sequence number is ours.

use std::sync::atomic::{AtomicU64, Ordering};

pub use locker_proto::{
    hostname, is_valid_process_hash, make_owner_hash, make_process_hash, new_process_hash,
    parse_owner_hash, OwnerHashError, OwnerHashParts,
};

/// Next owner sequence number; process-wide so that owner hashes stay unique
/// even if a process hash were ever reused.
pub(crate) fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

// The parser's edge cases (greedy keys, line breaks, traces, digits) are
// tested once, in locker-proto (`tests/owner_hash_corpus.rs`), against the
// seed's pattern; here only what the client builds.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_hash_round_trip() {
        let ph = new_process_hash();
        let h = make_owner_hash("jobs/report", &ph, 12, Some("trace-1")).expect("buildable");
        let p = parse_owner_hash(&h).expect("well-formed");
        assert_eq!(p.key, "jobs/report");
        assert_eq!(p.process_hash, ph);
        assert_eq!(p.seq_number(), Some(12));
        assert_eq!(p.trace, Some("trace-1"));
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
    fn unbuildable_owner_hashes_are_refused() {
        let ph = new_process_hash();
        // A line break cannot travel in an owner hash; a trace that looks
        // like an owner hash's end would parse back to another key.
        assert!(make_owner_hash("a\nb", &ph, 1, None).is_err());
        assert!(make_owner_hash("k", &ph, 1, Some("x@h/1.2.3")).is_err());
        assert!(make_owner_hash("", &ph, 1, None).is_err());
    }

    #[test]
    fn seq_increases() {
        let a = next_seq();
        let b = next_seq();
        assert!(b > a);
    }
}
