//! Versions of everything this node writes to disk or sends to a peer, so a
//! later release can read what this one wrote, and this release refuses,
//! with a message naming both versions, data it does not know.
//!
//! * **Data directory format** ([`DB_FORMAT`]): a record under
//!   [`FORMAT_KEY`] in sled's default tree, written at the first open. A
//!   database without it was written before formats were recorded: format
//!   0, whose log entries, vote, state records and snapshot records are
//!   those of format 1 byte for byte. Format 2 stores the snapshot record
//!   in chunks (`snapshot_record.rs`) and still reads the single record of
//!   formats 0 and 1; its next snapshot is stored chunked. Format 3 has
//!   the records of format 2, and keeps the identity file beside the
//!   database (`store::identity`): a format 3 database without one is
//!   refused. Format 4 gives every stored record a checksum
//!   (`store::record`); opening an older database gives its records
//!   theirs, then records format 4. Format 5 stores each lock record's
//!   deadline relative to the table-wide lock shift, a record of the state
//!   machine's metadata (`store::lock_shift`); without that record the
//!   shift is 0 and the records are those of format 4, so an older
//!   database is read as it is and recorded as format 5 at its first open
//!   (no record rewritten). Recorded at open, not at the first shift: the
//!   identity file, checked before sled opens, names the format at every
//!   start, and a build of format 4 must refuse a directory that may hold
//!   a shift before it reads a record. A later release
//!   that changes a record's encoding raises [`DB_FORMAT`] and decodes each
//!   record by the format the database records.
//! * **Snapshot data** ([`SNAPSHOT_FORMAT`]): [`SNAPSHOT_MAGIC`], the format
//!   as a big-endian `u32`, then the bincode of the `TableImage`. Format 0
//!   data (no header) is the bare bincode image, and is told apart by its
//!   first 8 bytes: there they are the image's log time `now` in Unix
//!   milliseconds (little-endian), which would have to be some 184 million
//!   years away to spell the magic. Format 2 appends the tokens of locks
//!   and processes (`lock_tokens`, `process_tokens`) to the image of
//!   formats 0 and 1, which is otherwise unchanged.
//! * **Peer protocol** ([`PEER_PROTOCOL`]): see `network::PROTOCOL_HEADER`.

use std::io;

use serde::Deserialize;

use crate::core::{Lock, Process, Retired, TableImage};

/// The image of snapshot formats 0 and 1: [`TableImage`] before tokens.
#[derive(Deserialize)]
struct ImageV1 {
    now: u64,
    locks: Vec<Lock>,
    processes: Vec<Process>,
    retired: Vec<Retired>,
}

/// The data directory format this build writes, and the newest it reads.
pub const DB_FORMAT: u32 = 5;
/// The first data directory format whose stored records carry a checksum
/// (`store::record`).
pub const CHECKSUMS_SINCE: u32 = 4;
/// Where the data directory's format is recorded (sled's default tree).
pub const FORMAT_KEY: &[u8] = b"locker:format";
/// The snapshot data format this build writes, and the newest it reads.
pub const SNAPSHOT_FORMAT: u32 = 2;
/// The first bytes of versioned snapshot data.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"LOCKSNAP";
/// The peer protocol this build speaks, and the newest it accepts.
/// Protocol 2: log entries may hold [`crate::core::Op::As`] (a request's
/// token and limits), and snapshot data is of format 2; a peer of protocol
/// 0 or 1 reads neither, so a leader sends it snapshot data of format 0 and
/// proposes no `Op::As` while one is a member (`Node::propose`).
/// Protocol 3: log entries may hold [`crate::core::Op::Batch`] (several
/// client ops in one entry); a leader puts each op in an entry of its own
/// while a peer of protocol 2 or older is a member (`Node::may_batch`).
pub const PEER_PROTOCOL: u32 = 3;

const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 4;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The data directory's recorded format, as found at open.
#[derive(Debug, Clone, Copy)]
pub struct DbFormat {
    /// The recorded format; `None` if there is no record.
    pub recorded: Option<u32>,
    /// Whether the database held any tree besides sled's default one.
    pub had_data: bool,
}

impl DbFormat {
    /// The format the data was written in (no record and no data: this build's).
    pub fn written(&self) -> u32 {
        match (self.recorded, self.had_data) {
            (Some(f), _) => f,
            (None, true) => 0,
            (None, false) => DB_FORMAT,
        }
    }
}

/// Reads the data directory's recorded format without changing anything,
/// refusing a newer format than this build knows: its records may mean
/// something this build would misread. Call before any tree is opened.
pub fn read_db(db: &sled::Db) -> io::Result<DbFormat> {
    let had_data = db.tree_names().len() > 1;
    let Some(raw) = db.get(FORMAT_KEY).map_err(super::to_io)? else {
        return Ok(DbFormat {
            recorded: None,
            had_data,
        });
    };
    let format = <[u8; 4]>::try_from(raw.as_ref())
        .map(u32::from_be_bytes)
        .map_err(|_| {
            invalid(format!(
                "the data directory's format record is unreadable ({} bytes); refusing to start",
                raw.len()
            ))
        })?;
    if format > DB_FORMAT {
        return Err(invalid(format!(
            "the data directory is in storage format {format}, newer than format {DB_FORMAT}, the newest this build (locker-node {}) reads; refusing to start: run a release that reads format {format}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(DbFormat {
        recorded: Some(format),
        had_data,
    })
}

/// Records [`DB_FORMAT`] if the database records another format or none
/// (a new directory, or one of an older format), and flushes it.
pub fn record_db(db: &sled::Db, found: DbFormat) -> io::Result<()> {
    if found.recorded == Some(DB_FORMAT) {
        return Ok(());
    }
    if found.recorded.is_none() && found.had_data {
        tracing::info!(
            from = 0,
            to = DB_FORMAT,
            "data directory written before formats were recorded: recording format {DB_FORMAT} (same records)"
        );
    }
    db.insert(FORMAT_KEY, &DB_FORMAT.to_be_bytes())
        .map_err(super::to_io)?;
    db.flush().map_err(super::to_io)?;
    Ok(())
}

/// Snapshot data of this build's format: header, then the bincode image.
pub fn encode_snapshot(image: &TableImage) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    encode_snapshot_into(&mut data, image, 0)?;
    Ok(data)
}

/// Appends [`encode_snapshot`]'s bytes to `out`, encoding the image in
/// place (no copy of it: a snapshot can be most of a node's memory), with
/// room for `trailer` bytes more after it.
pub fn encode_snapshot_into(
    out: &mut Vec<u8>,
    image: &TableImage,
    trailer: usize,
) -> io::Result<()> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    let size = bincode::serialized_size(image).map_err(invalid)?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    out.reserve(HEADER_LEN.saturating_add(size).saturating_add(trailer));
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    bincode::serialize_into(&mut *out, image).map_err(invalid)
}

/// The length of [`encode_snapshot`]'s bytes, without encoding the image.
pub fn snapshot_len(image: &TableImage) -> io::Result<u64> {
    let size = bincode::serialized_size(image)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(size.saturating_add(HEADER_LEN as u64))
}

/// Writes [`encode_snapshot`]'s bytes to `w` as the image is encoded, never
/// whole in memory (a backup streamed to its client).
pub fn write_snapshot(w: &mut impl io::Write, image: &TableImage) -> io::Result<()> {
    w.write_all(SNAPSHOT_MAGIC)?;
    w.write_all(&SNAPSHOT_FORMAT.to_be_bytes())?;
    bincode::serialize_into(w, image).map_err(|e| match *e {
        bincode::ErrorKind::Io(io) => io,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    })
}

/// The snapshot data's format and its image bytes (format 0: all of it).
fn split_snapshot(data: &[u8]) -> io::Result<(u32, &[u8])> {
    let Some(rest) = data.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return Ok((0, data));
    };
    let (version, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("snapshot data cut short inside its header".into()))?;
    Ok((u32::from_be_bytes(*version), body))
}

/// [`split_snapshot`], refusing a format newer than this build reads.
fn split_known_snapshot(data: &[u8]) -> io::Result<(u32, &[u8])> {
    let (format, body) = split_snapshot(data)?;
    if format > SNAPSHOT_FORMAT {
        return Err(invalid(format!(
            "snapshot data in format {format}, newer than format {SNAPSHOT_FORMAT}, the newest this build (locker-node {}) reads; refusing it: upgrade this node",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok((format, body))
}

/// Snapshot data's format, or the refusal of a newer one, naming both
/// (also checked by the peer port before a snapshot reaches Raft).
pub fn snapshot_format(data: &[u8]) -> io::Result<u32> {
    split_known_snapshot(data).map(|(format, _)| format)
}

/// Reads snapshot data of formats 0 to 2; refuses a newer format with a
/// message naming both, before anything of it is used.
pub fn decode_snapshot(data: &[u8]) -> io::Result<TableImage> {
    let (format, body) = split_known_snapshot(data)?;
    if format >= 2 {
        return super::decode(body);
    }
    // Formats 0 and 1 carry the same image encoding, without tokens.
    let ImageV1 {
        now,
        locks,
        processes,
        retired,
    } = super::decode(body)?;
    Ok(TableImage {
        now,
        locks,
        processes,
        retired,
        lock_tokens: Vec::new(),
        process_tokens: Vec::new(),
    })
}

/// The same snapshot in format 0, for a peer of protocol 0 (the release
/// before versions), which reads only bare images. `None` if the data is in
/// a format newer than 2. A format 2 image is a format 0 image followed by
/// the tokens, which that release's decoder (bincode, trailing bytes
/// allowed) reads past: it knows nothing of tokens.
pub fn snapshot_as_format_0(data: &[u8]) -> Option<&[u8]> {
    match split_snapshot(data).ok()? {
        (0..=2, body) => Some(body),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::LockTable;

    fn image() -> TableImage {
        LockTable::from_parts(1_764_000_000_000, Vec::new(), Vec::new(), Vec::new()).to_image()
    }

    /// Data written before snapshots had a header still installs.
    #[test]
    fn format_0_snapshot_data_decodes() {
        let old = bincode::serialize(&image()).expect("encode");
        assert_eq!(
            decode_snapshot(&old).expect("decode").now,
            1_764_000_000_000
        );
        assert_eq!(snapshot_as_format_0(&old), Some(old.as_slice()));
    }

    #[test]
    fn format_2_snapshot_data_round_trips_and_strips_to_format_0() {
        let data = encode_snapshot(&image()).expect("encode");
        assert!(data.starts_with(SNAPSHOT_MAGIC));
        assert_eq!(
            decode_snapshot(&data).expect("decode").now,
            1_764_000_000_000
        );
        let old = bincode::serialize(&image()).expect("encode");
        assert_eq!(snapshot_as_format_0(&data), Some(old.as_slice()));
    }

    /// Tokens survive a snapshot; data of format 1 (no tokens) still reads,
    /// and a protocol 0 peer reads a format 2 image as its own.
    #[test]
    fn tokens_travel_in_format_2_and_format_1_still_decodes() {
        use crate::core::{Caller, Command, Op};
        let mut t = LockTable::new();
        let caller = Caller {
            token: Some("billing".into()),
            ..Caller::default()
        };
        let acquire = Op::Acquire {
            key: "billing/x".into(),
            owner_hash: "billing/x@h/1.2.3".into(),
            process_hash: None,
            trace: None,
            ttl_ms: 60_000,
        };
        let cmd = Command {
            time_ms: 1_000,
            op: Op::As {
                caller,
                op: Box::new(acquire),
            },
        };
        t.apply(1, &cmd);
        let data = encode_snapshot(&t.to_image()).expect("encode");
        let back = LockTable::from_image(decode_snapshot(&data).expect("decode"));
        assert_eq!(back, t);
        assert_eq!(back.token_lock_records("billing"), 1);
        let body = snapshot_as_format_0(&data).expect("strips");
        let v1: ImageV1 = bincode::deserialize(body).expect("a format 0 reader reads it");
        assert_eq!(v1.locks.len(), 1);
        let mut v1_data = SNAPSHOT_MAGIC.to_vec();
        v1_data.extend_from_slice(&1u32.to_be_bytes());
        let image = t.to_image();
        v1_data.extend_from_slice(
            &bincode::serialize(&(image.now, &image.locks, &image.processes, &image.retired))
                .expect("encode"),
        );
        let old = decode_snapshot(&v1_data).expect("format 1 decodes");
        assert_eq!(old.locks.len(), 1);
        assert!(old.lock_tokens.is_empty());
    }

    #[test]
    fn newer_snapshot_format_is_refused_by_name() {
        let mut data = encode_snapshot(&image()).expect("encode");
        data[8..12].copy_from_slice(&7u32.to_be_bytes());
        let err = decode_snapshot(&data).expect_err("format 7 accepted");
        let msg = err.to_string();
        assert!(
            msg.contains("format 7") && msg.contains("format 2"),
            "{msg}"
        );
        assert_eq!(snapshot_as_format_0(&data), None);
        let cut = decode_snapshot(&data[..10]).expect_err("cut header accepted");
        assert!(cut.to_string().contains("header"), "{cut}");
    }
}
