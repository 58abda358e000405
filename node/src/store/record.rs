//! Stored records with a checksum (data directory format 4): every value
//! this node keeps in sled's trees (log entries, vote, commit index, purge
//! mark, lock/process/retired/token records, state metadata, the snapshot's
//! header and chunks) is [`MAGIC`], the CRC-32 of the body as a big-endian
//! `u32`, then the body (bincode, or a snapshot chunk's raw bytes, as in
//! formats 0 to 3). A read verifies the checksum, so a flipped bit is a
//! clear error naming the record, never a wrong state.
//!
//! Opening a database of format 0 to 3 frames every record ([`migrate`])
//! before anything reads one, so a format 4 database holds no bare record,
//! and one is refused.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::to_io;

/// The first bytes of a record with a checksum.
pub const MAGIC: &[u8; 8] = b"LOCKREC1";
const HEADER_LEN: usize = MAGIC.len() + 4;
/// The trees whose values are records (sled's default tree holds only the
/// format record, a bare `u32`).
pub const TREES: &[&str] = &["raft_log", "raft_meta", "state_machine", "snapshots"];

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `body` with the header and its checksum (a record of raw bytes).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A record: header with the checksum, then the bincode of `v`.
pub fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    Ok(frame(&super::encode(v)?))
}

/// The body of a record whose checksum holds.
pub fn body(b: &[u8]) -> io::Result<&[u8]> {
    let Some(rest) = b.strip_prefix(MAGIC.as_slice()) else {
        return Err(invalid(
            "has no checksum header: the database is corrupt".into(),
        ));
    };
    let (crc, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("is cut short inside its header: the database is corrupt".into()))?;
    let stored = u32::from_be_bytes(*crc);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(invalid(format!(
            "fails its checksum (stored {stored:08x}, computed {computed:08x}): the database is corrupt"
        )));
    }
    Ok(body)
}

/// Decodes a record, verifying its checksum.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    super::decode(body(b)?)
}

/// How a record's key reads in a message.
pub fn key_name(tree: &str, key: &[u8]) -> String {
    if tree == "raft_log" {
        if let Ok(index) = <[u8; 8]>::try_from(key) {
            return format!("raft_log entry {}", u64::from_be_bytes(index));
        }
    }
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{tree} record {s:?}"),
        _ => format!(
            "{tree} record 0x{}",
            key.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// [`decode`], its error naming the record.
pub fn decode_at<T: DeserializeOwned>(tree: &str, key: &[u8], b: &[u8]) -> io::Result<T> {
    decode(b).map_err(|e| io::Error::new(e.kind(), format!("{} {e}", key_name(tree, key))))
}

/// Where [`migrate`] notes a tree done (sled's default tree), by name.
const FRAMED_PREFIX: &str = "locker:framed/";

/// Frames every record (formats 0 to 3: all bare) of `db`, each tree in
/// one sled transaction together with a note in the default tree that it
/// is done, so a crash part way leaves every tree framed whole or not at
/// all, and a rerun frames only the trees not done. Returns how many
/// records were framed. The caller flushes, then records format 4.
pub fn migrate(db: &sled::Db) -> io::Result<u64> {
    use sled::Transactional;
    let mut total = 0u64;
    for name in TREES {
        let done = format!("{FRAMED_PREFIX}{name}");
        if db.get(&done).map_err(to_io)?.is_some() {
            continue;
        }
        let tree = db.open_tree(name).map_err(to_io)?;
        let records: Vec<(sled::IVec, sled::IVec)> =
            tree.iter().collect::<Result<_, _>>().map_err(to_io)?;
        let default: &sled::Tree = db;
        (&tree, default)
            .transaction(|(t, d)| {
                for (k, v) in &records {
                    t.insert(k, frame(v))?;
                }
                d.insert(done.as_bytes(), &[1u8][..])?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => to_io(e),
                sled::transaction::TransactionError::Abort(()) => io::Error::other("aborted"),
            })?;
        total += records.len() as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_flipped_bit_is_refused() {
        let rec = encode(&(7u64, "lock".to_string())).expect("encode");
        assert!(rec.starts_with(MAGIC));
        let back: (u64, String) = decode(&rec).expect("decode");
        assert_eq!(back, (7, "lock".to_string()));
        for i in MAGIC.len()..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                let err = decode::<(u64, String)>(&bad).expect_err("a flipped bit was read");
                assert!(err.to_string().contains("checksum"), "{err}");
            }
        }
    }

    #[test]
    fn a_bare_record_is_refused_and_named() {
        let bare = bincode::serialize(&5u64).expect("encode");
        let err = decode_at::<u64>("raft_log", &9u64.to_be_bytes(), &bare).expect_err("bare");
        let msg = err.to_string();
        assert!(
            msg.contains("raft_log entry 9") && msg.contains("no checksum"),
            "{msg}"
        );
    }

    #[test]
    fn migrate_frames_bare_records_once() {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::open(dir.path()).expect("sled");
        let sm = db.open_tree("state_machine").expect("tree");
        sm.insert(b"M:now", bincode::serialize(&42u64).expect("encode"))
            .expect("insert");
        assert_eq!(migrate(&db).expect("migrate"), 1);
        assert_eq!(migrate(&db).expect("again"), 0);
        let now: u64 = decode(&sm.get(b"M:now").expect("get").expect("kept")).expect("decode");
        assert_eq!(now, 42);
    }
}
