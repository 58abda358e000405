//! The seed's identifier formats.
//!
//! A process hash is `{hostname}/{pid}.{nanoseconds}`; an owner hash is
//! `{key}@{process_hash}.{seq}` with an optional `#{trace}` suffix, matched by
//! the seed's pattern `^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$`.

use std::sync::LazyLock;

use regex::Regex;

static OWNER_HASH: LazyLock<Regex> = LazyLock::new(|| {
    // `(?s)` so a key or trace containing a newline still parses as the seed's
    // JavaScript regex would not; keys are arbitrary UTF-8 and must round-trip.
    Regex::new(r"(?s)^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$").expect("static regex")
});

static PROCESS_HASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^/]+/\d+\.\d+$").expect("static regex"));

/// The parts of a well-formed owner hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerHashParts<'a> {
    pub key: &'a str,
    pub process_hash: &'a str,
    pub trace: Option<&'a str>,
}

/// Splits an owner hash with the seed's pattern, or `None` when it does not match.
pub fn parse_owner_hash(owner_hash: &str) -> Option<OwnerHashParts<'_>> {
    let caps = OWNER_HASH.captures(owner_hash)?;
    Some(OwnerHashParts {
        key: caps.get(1)?.as_str(),
        process_hash: caps.get(2)?.as_str(),
        trace: caps.get(3).map(|m| &m.as_str()[1..]),
    })
}

/// Whether `process_hash` has the seed's `{hostname}/{pid}.{nanoseconds}` shape.
pub fn valid_process_hash(process_hash: &str) -> bool {
    PROCESS_HASH.is_match(process_hash)
}

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
    }
}
