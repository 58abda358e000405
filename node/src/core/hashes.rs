//! The seed's identifier formats, as the core reads them.
//!
//! A process hash is `{hostname}/{pid}.{nanoseconds}`; an owner hash is
//! `{key}@{process_hash}.{seq}` with an optional `#{trace}` suffix. The one
//! parser lives in `locker-proto` (pure string code, no IO), shared with the
//! client so both read a hash the same way; this module only names it for the
//! core. Its reading is the seed's pattern as JavaScript applies it: a key or
//! trace with a line break, or a non-ASCII digit, does not parse.
//!
//! Apply parses owner hashes too: an acquire or release names a run (process
//! part and sequence number) that the table retires (see `core::retired`).
//! So the parser's behaviour is part of the replicated state: every replica
//! of a cluster must read a hash the same way, and a change to what it
//! accepts or captures is a change of the replicated format (the API refuses
//! a hash it cannot parse before proposing, so entries in the log parse).

pub use locker_proto::OwnerHashParts;
pub use locker_proto::{is_valid_process_hash as valid_process_hash, parse_owner_hash};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_format() {
        let p = parse_owner_hash("jobs/report@web-1/4242.1700000000000000000.7#abc").unwrap();
        assert_eq!(p.key, "jobs/report");
        assert_eq!(p.process_hash, "web-1/4242.1700000000000000000");
        assert_eq!(p.trace, Some("abc"));
        let p = parse_owner_hash("k@h/1.2.3").unwrap();
        assert_eq!((p.key, p.trace), ("k", None));
    }

    #[test]
    fn key_may_contain_at_signs_greedy_like_the_seed() {
        let p = parse_owner_hash("a@b@h/1.2.3").unwrap();
        assert_eq!(p.key, "a@b");
        assert_eq!(p.process_hash, "h/1.2");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "k",
            "k@h/1.2",
            "k@h/x.2.3",
            "@h/1.2.3",
            "k@/1.2.3",
            "k@h/1.2.3x",
            // The core's former `(?s)` regex accepted these three.
            "line\nbreak@h/1.2.3",
            "k@h/1.2.3#line\rbreak",
            "k@h/\u{661}.\u{662}.\u{663}",
        ] {
            assert!(
                parse_owner_hash(bad).is_none(),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn process_hash_shape() {
        assert!(valid_process_hash("host/12.345"));
        assert!(!valid_process_hash("host/12"));
        assert!(!valid_process_hash("a/b/1.2"));
        assert!(!valid_process_hash("/1.2"));
        assert!(!valid_process_hash("h/\u{661}.2"));
    }
}
