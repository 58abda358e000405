//! Lock records on disk keep their deadline relative to one table-wide
//! lock shift `S` (data directory format 5): stored `expires_at` =
//! real `expires_at - S`, read back as stored `+ S`, both wrapping, so
//! any value round-trips exactly.
//!
//! Why: a takeover marker moves the deadline of every live lock by the
//! leaderless gap. Written record by record, a marker over 1,000,000 live
//! locks was one sled batch of a million records (sled 0.34 keeps every
//! tree node such a batch copies until it ends: gigabytes, minutes). With
//! the shift stored once, the marker adds its gap to `S` and rewrites only
//! the records it did not move ([`crate::core::Change::ShiftLocks`]).
//!
//! Every lock record this node encodes or decodes goes through
//! [`LockShift::encode`] / [`LockShift::decode`]; `S` itself is a record
//! of the state machine's metadata, absent (0) in directories written
//! before it, so they read unchanged. A snapshot install writes its
//! records with `S = 0` and removes the record, in one batch.

use std::io;

use super::record::{decode_at, encode};
use crate::core::Lock;

/// The table-wide shift of stored lock deadlines (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockShift(u64);

impl LockShift {
    /// The shift `s` (as stored in the metadata).
    pub fn new(s: u64) -> LockShift {
        LockShift(s)
    }

    /// The shift as stored in the metadata.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The shift after a marker moved every deadline by `gap`.
    pub fn moved_by(self, gap: u64) -> LockShift {
        LockShift(self.0.wrapping_add(gap))
    }

    /// The stored record of `lock`: its deadline relative to this shift.
    pub fn encode(self, lock: &Lock) -> io::Result<Vec<u8>> {
        if self.0 == 0 {
            return encode(lock);
        }
        let stored = Lock {
            expires_at: lock.expires_at.wrapping_sub(self.0),
            ..lock.clone()
        };
        // Right before it is written: it must read back as `lock`.
        assert_eq!(self.real(stored.expires_at), lock.expires_at);
        encode(&stored)
    }

    /// The lock of the stored record `bytes` (under `key` of `tree`, for
    /// error messages), its deadline made real again with this shift.
    pub fn decode(self, tree: &str, key: &[u8], bytes: &[u8]) -> io::Result<Lock> {
        let mut lock: Lock = decode_at(tree, key, bytes)?;
        lock.expires_at = self.real(lock.expires_at);
        Ok(lock)
    }

    fn real(self, stored: u64) -> u64 {
        stored.wrapping_add(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(expires_at: u64) -> Lock {
        Lock {
            key: "k".into(),
            owner_hash: "k@h/1.1.1".into(),
            process_hash: None,
            trace: None,
            acquired_at: 1,
            extended_at: 1,
            expires_at,
            ttl_ms: 5,
            fencing_token: 1,
            token: None,
        }
    }

    #[test]
    fn every_deadline_round_trips_under_every_shift() {
        for s in [0, 1, 7_000, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            for at in [0, 1, 6, 1_700_000_000_000, u64::MAX - 3, u64::MAX] {
                let shift = LockShift::new(s);
                let bytes = shift.encode(&lock(at)).expect("encode");
                let back = shift
                    .decode("state_machine", b"Lk", &bytes)
                    .expect("decode");
                assert_eq!(back, lock(at), "shift {s}, deadline {at}");
            }
        }
    }

    #[test]
    fn a_moved_shift_moves_every_stored_deadline_by_the_gap() {
        let (s, gap) = (LockShift::new(u64::MAX - 2), 10);
        let bytes = s.encode(&lock(1_000)).expect("encode");
        let moved = s.moved_by(gap).decode("sm", b"Lk", &bytes).expect("decode");
        assert_eq!(moved.expires_at, 1_010);
        // With no shift the stored record is the record of formats 0 to 4.
        let plain = LockShift::default().encode(&lock(9)).expect("encode");
        assert_eq!(plain, encode(&lock(9)).expect("encode"));
    }
}
