//! Backups of the lock table: the file format (`docs/formats.md`, "Backup
//! files"), written by `GET /v1/backup` and checked by
//! `locker-node verify-backup` and `locker-node restore`.
//!
//! A backup is the table image at one applied log index, taken after a
//! linearizable read (ReadIndex), so it holds every write acknowledged before
//! the request and nothing that was not committed:
//!
//! ```text
//! "LOCKBKUP"                 8 bytes
//! format                     u32, big-endian (BACKUP_FORMAT)
//! index                      u64, big-endian: the log index of the image
//! log time                   u64, big-endian: Unix ms, the table's clock
//! data length                u64, big-endian
//! data                       snapshot data ("LOCKSNAP", its format, bincode image)
//! SHA-256                    32 bytes, of everything before it
//! ```

use std::io::{self, Write as _};

use sha2::{Digest, Sha256};

use crate::core::TableImage;
use crate::store::format;

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"LOCKBKUP";
/// The backup file format this build writes and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;
/// Bytes before the data: magic, format, index, log time, data length.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
/// Bytes of the checksum at the end.
const SUM_LEN: usize = 32;

/// A decoded, checked backup.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The log index the image is at: every fencing token in it is at most this.
    pub index: u64,
    /// The table's log time at that index (Unix ms).
    pub log_time_ms: u64,
    /// The lock table.
    pub image: TableImage,
}

/// What `verify-backup` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The log index of the image.
    pub index: u64,
    /// Its log time (Unix ms).
    pub log_time_ms: u64,
    /// Lock records, and how many are live at the log time.
    pub locks: (usize, usize),
    /// Process records, and how many are alive at the log time.
    pub processes: (usize, usize),
    /// Retired-runs records.
    pub retired: usize,
    /// The highest fencing token in the backup (0: no lock).
    pub max_fencing_token: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The backup file of `image` at log `index`, whole in memory.
pub fn encode(index: u64, image: &TableImage) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write(index, image, &mut out)?;
    Ok(out)
}

/// Writes the backup file of `image` at log `index` to `w` as it is
/// encoded, so that `GET /v1/backup` never holds the file in memory (only
/// the table's copy): the data length is computed first, the SHA-256 along
/// the way. Returns the bytes written.
pub fn write(index: u64, image: &TableImage, w: impl io::Write) -> io::Result<u64> {
    let data_len = format::snapshot_len(image)?;
    let mut w = Summing {
        inner: w,
        sum: Sha256::new(),
        written: 0,
    };
    w.write_all(BACKUP_MAGIC)?;
    w.write_all(&BACKUP_FORMAT.to_be_bytes())?;
    w.write_all(&index.to_be_bytes())?;
    w.write_all(&image.now.to_be_bytes())?;
    w.write_all(&data_len.to_be_bytes())?;
    format::write_snapshot(&mut w, image)?;
    let expected = HEADER_LEN as u64 + data_len;
    if w.written != expected {
        return Err(invalid(format!(
            "the data came out {} bytes long, not the {expected} announced",
            w.written
        )));
    }
    let sum = w.sum.finalize();
    w.inner.write_all(&sum)?;
    w.inner.flush()?;
    Ok(expected + SUM_LEN as u64)
}

/// A writer that passes bytes on and sums and counts them.
struct Summing<W> {
    inner: W,
    sum: Sha256,
    written: u64,
}

impl<W: io::Write> io::Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Checks and decodes a backup file: magic, format, length, checksum, then
/// the snapshot data (its own format checked) and the records against the
/// index. Every refusal says what is wrong.
pub fn decode(bytes: &[u8]) -> io::Result<Backup> {
    if bytes.len() < 8 || &bytes[..8] != BACKUP_MAGIC {
        return Err(invalid(
            "not a Locker backup file (no LOCKBKUP magic)".into(),
        ));
    }
    if bytes.len() < HEADER_LEN + SUM_LEN {
        return Err(invalid(format!(
            "backup file cut short: {} bytes, a header and checksum need {}",
            bytes.len(),
            HEADER_LEN + SUM_LEN
        )));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_be_bytes(v);
    if version > BACKUP_FORMAT || version == 0 {
        return Err(invalid(format!(
            "backup file format {version}: this build (locker-node {}) reads format {BACKUP_FORMAT}; use the release that wrote it",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let (index, log_time_ms) = (be_u64(bytes, 12), be_u64(bytes, 20));
    let data_len = usize::try_from(be_u64(bytes, 28)).unwrap_or(usize::MAX);
    let expected = HEADER_LEN.saturating_add(data_len).saturating_add(SUM_LEN);
    if bytes.len() != expected {
        return Err(invalid(format!(
            "backup file is {} bytes, its header says {expected}: cut short or padded",
            bytes.len()
        )));
    }
    let (body, sum) = bytes.split_at(bytes.len() - SUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err(invalid(
            "backup file checksum (SHA-256) does not match: the file is corrupted".into(),
        ));
    }
    let image = format::decode_snapshot(&body[HEADER_LEN..])
        .map_err(|e| invalid(format!("backup data does not decode: {e}")))?;
    check_image(index, log_time_ms, &image)?;
    Ok(Backup {
        index,
        log_time_ms,
        image,
    })
}

/// The records agree with the header: the log time, and every fencing token
/// at most the index (a token is the log index of its grant).
fn check_image(index: u64, log_time_ms: u64, image: &TableImage) -> io::Result<()> {
    if image.now != log_time_ms {
        return Err(invalid(format!(
            "backup header says log time {log_time_ms}, its table {}",
            image.now
        )));
    }
    if let Some(l) = image.locks.iter().find(|l| l.fencing_token > index) {
        return Err(invalid(format!(
            "lock {:?} has fencing token {}, past the backup's index {index}",
            l.key, l.fencing_token
        )));
    }
    Ok(())
}

impl Backup {
    /// Counts for `verify-backup`.
    pub fn summary(&self) -> Summary {
        let table = crate::core::LockTable::from_image(self.image.clone());
        let at = self.log_time_ms;
        let live_locks = self
            .image
            .locks
            .iter()
            .filter(|l| table.live_lock(&l.key, at).is_some())
            .count();
        let live_processes = self
            .image
            .processes
            .iter()
            .filter(|p| table.live_process(&p.process_hash, at).is_some())
            .count();
        Summary {
            index: self.index,
            log_time_ms: self.log_time_ms,
            locks: (self.image.locks.len(), live_locks),
            processes: (self.image.processes.len(), live_processes),
            retired: self.image.retired.len(),
            max_fencing_token: self
                .image
                .locks
                .iter()
                .map(|l| l.fencing_token)
                .max()
                .unwrap_or(0),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "index: {}", self.index)?;
        writeln!(f, "log time (ms): {}", self.log_time_ms)?;
        writeln!(f, "locks: {} ({} live)", self.locks.0, self.locks.1)?;
        writeln!(
            f,
            "processes: {} ({} alive)",
            self.processes.0, self.processes.1
        )?;
        writeln!(f, "retired runs: {}", self.retired)?;
        write!(f, "max fencing token: {}", self.max_fencing_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> TableImage {
        TableImage {
            now: 1_700_000_000_000,
            locks: vec![],
            processes: vec![],
            retired: vec![],
            lock_tokens: vec![],
            process_tokens: vec![],
        }
    }

    #[test]
    fn round_trips_and_refuses_any_changed_byte() {
        let bytes = encode(42, &image()).expect("encode");
        let b = decode(&bytes).expect("decode");
        assert_eq!((b.index, b.log_time_ms), (42, 1_700_000_000_000));
        for at in [0, 9, 13, 25, 30, HEADER_LEN + 3, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "byte {at} changed, still accepted");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut bytes = encode(1, &image()).expect("encode");
        bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
        let e = decode(&bytes).expect_err("newer format");
        assert!(e.to_string().contains("format 2"), "{e}");
    }
}
