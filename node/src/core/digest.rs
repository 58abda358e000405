//! A digest of the whole lock table, to compare replicas (TigerBeetle's
//! state checker does the same): two replicas at the same applied index must
//! hold byte-identical tables, so their digests must be equal.
//!
//! Pure: SHA-256 over a canonical encoding that depends only on the table's
//! contents. Every field is written with its length or a tag, so no two
//! different tables encode to the same bytes. Records are destructured
//! without `..`, so a field added to [`Lock`] or [`Process`] fails to compile
//! here until the encoding covers it.

use sha2::{Digest, Sha256};

use super::model::{Lock, Process};
use super::retired::Retired;
use super::table::LockTable;

/// Encoding version, written first so a change of encoding changes every digest.
const VERSION: &[u8] = b"locker-table-digest/3";

/// SHA-256 of the canonical encoding of `table`, as 64 lowercase hex chars.
pub fn table_digest(table: &LockTable) -> String {
    let image = table.to_image();
    let mut h = Enc(Sha256::new());
    h.bytes(VERSION);
    h.u64(image.now);
    // `to_image` yields records in key order (BTreeMap iteration).
    h.u64(image.locks.len() as u64);
    for l in &image.locks {
        h.lock(l);
    }
    h.u64(image.processes.len() as u64);
    for p in &image.processes {
        h.process(p);
    }
    h.u64(image.retired.len() as u64);
    for r in &image.retired {
        h.retired(r);
    }
    h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

struct Enc(Sha256);

impl Enc {
    fn u64(&mut self, v: u64) {
        self.0.update(v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.0.update([0u8]),
            Some(s) => {
                self.0.update([1u8]);
                self.bytes(s.as_bytes());
            }
        }
    }

    fn lock(&mut self, l: &Lock) {
        let Lock {
            key,
            owner_hash,
            process_hash,
            trace,
            acquired_at,
            extended_at,
            expires_at,
            ttl_ms,
            fencing_token,
            token,
        } = l;
        self.bytes(key.as_bytes());
        self.bytes(owner_hash.as_bytes());
        self.opt(process_hash.as_deref());
        self.opt(trace.as_deref());
        for v in [acquired_at, extended_at, expires_at, ttl_ms, fencing_token] {
            self.u64(*v);
        }
        self.opt(token.as_deref());
    }

    fn process(&mut self, p: &Process) {
        let Process {
            process_hash,
            ttl_ms,
            alive_until,
            since,
            info,
            token,
        } = p;
        self.bytes(process_hash.as_bytes());
        for v in [ttl_ms, alive_until, since] {
            self.u64(*v);
        }
        self.opt(info.as_deref());
        self.opt(token.as_deref());
    }

    fn retired(&mut self, r: &Retired) {
        let Retired {
            process_hash,
            runs,
            at,
        } = r;
        self.bytes(process_hash.as_bytes());
        self.u64(runs.len() as u64);
        for (seq, key_hash) in runs {
            self.u64(*seq);
            self.u64(*key_hash);
        }
        self.u64(*at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Command, Op};

    fn acquire(key: &str, trace: Option<&str>) -> Command {
        Command {
            time_ms: 1_000,
            op: Op::Acquire {
                key: key.into(),
                owner_hash: format!("{key}@h/1.2.3"),
                process_hash: None,
                trace: trace.map(str::to_string),
                ttl_ms: 10_000,
            },
        }
    }

    #[test]
    fn equal_tables_have_equal_digests_and_any_difference_shows() {
        let empty = table_digest(&LockTable::new());
        assert_eq!(empty.len(), 64);
        assert!(empty.bytes().all(|b| b.is_ascii_hexdigit()));
        let (mut a, mut b) = (LockTable::new(), LockTable::new());
        a.apply(1, &acquire("k", None));
        b.apply(1, &acquire("k", None));
        assert_eq!(table_digest(&a), table_digest(&b));
        assert_ne!(table_digest(&a), empty);
        // Same lock, another fencing token.
        let mut c = LockTable::new();
        c.apply(2, &acquire("k", None));
        assert_ne!(table_digest(&a), table_digest(&c));
        // A trace of "" is not the absence of a trace.
        let mut d = LockTable::new();
        d.apply(1, &acquire("k", Some("")));
        assert_ne!(table_digest(&a), table_digest(&d));
    }

    #[test]
    fn the_digest_does_not_depend_on_insertion_order() {
        let mut a = LockTable::new();
        a.apply(1, &acquire("x", None));
        a.apply(2, &acquire("y", None));
        let locks = a.to_image().locks;
        let b = LockTable::from_parts(a.now(), locks.into_iter().rev(), Vec::new(), Vec::new());
        assert_eq!(table_digest(&a), table_digest(&b));
    }
}
