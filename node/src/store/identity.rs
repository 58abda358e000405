//! The data directory's identity file, `locker.identity`: whose directory it
//! is (node id, cluster id, storage format) and how far its log and vote had
//! got (the high-water mark), kept outside sled so that a start notices a
//! database that lost what it once held.
//!
//! sled recovers whatever prefix of its file it can read: truncated to half,
//! or with bytes flipped (its own checksums end the recovery there), or
//! deleted, it comes up with fewer entries or none, and no error. A node
//! serving that would hand out fencing tokens again and could vote twice.
//! The identity file records the last log id known flushed and the vote,
//! and a start refuses a database behind either.
//!
//! The file is two lines: `locker identity 1 crc32 XXXXXXXX`, then the JSON
//! record whose CRC-32 the header carries. It is replaced whole: written to
//! `locker.identity.tmp`, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash or power cut at any point leaves the old
//! file or the new one.
//!
//! When it is written (see [`Marker`]): at every start; after a vote is
//! flushed, before the vote is answered; before a truncation of the log, with
//! the mark lowered; and every [`MARK_EVERY`] after flushes of appended
//! entries (the mark lags the newest acknowledged entries by about that).
//! The mark only ever names flushed entries, and truncations lower it first,
//! so a whole database is never behind it.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::log_store::{DiskLog, LogStore};
use crate::config::InitialCluster;
use crate::types::{LogId, NodeId, Vote};

/// The identity file's name in the data directory.
pub const FILE: &str = "locker.identity";
const TMP: &str = "locker.identity.tmp";
const HEADER: &str = "locker identity 1 crc32";
/// How often the high-water mark follows the flushed log.
pub const MARK_EVERY: Duration = Duration::from_millis(200);

/// What the identity file records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The node this directory belongs to (`--id`).
    pub node_id: NodeId,
    /// The cluster it belongs to (see [`cluster_id`]); `None` while unknown.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The data directory format (`format::DB_FORMAT`) of the writer.
    pub format: u32,
    /// The last log id known flushed (high-water mark of the log).
    #[serde(default)]
    pub log_mark: Option<LogId>,
    /// The last vote flushed, recorded before it was answered.
    #[serde(default)]
    pub vote: Option<Vote>,
}

/// What a starting node expects of its data directory.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `--id`.
    pub node_id: NodeId,
    /// `--initial-cluster` (empty without the flag).
    pub initial_cluster: &'a InitialCluster,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A cluster's id: the first 16 hex digits of the SHA-256 of its first
/// membership (every voter's id and peer address), the entry that every
/// member that initializes writes alike, built from `--initial-cluster`.
pub fn cluster_id<'a>(members: impl IntoIterator<Item = (&'a NodeId, &'a str)>) -> String {
    let mut h = Sha256::new();
    h.update(b"locker-cluster\n");
    let mut sorted: Vec<_> = members.into_iter().collect();
    sorted.sort();
    for (id, addr) in sorted {
        h.update(format!("{id}={addr}\n").as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cluster id of the first entry of `log`, if it still holds it.
fn cluster_id_of_log(log: &LogStore) -> io::Result<Option<String>> {
    Ok(log.entry(0)?.and_then(|e| match e.payload {
        EntryPayload::Membership(m) => Some(cluster_id(
            m.nodes().map(|(id, n)| (id, n.peer_addr.as_str())),
        )),
        _ => None,
    }))
}

/// Creates the data directory with mode 0700, or warns if an existing one
/// is open to group or others: it holds every lock of the cluster.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "the data directory is accessible to group or others; run chmod 700 on it"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Reads the identity file; `None` if there is none.
pub fn read(dir: &Path) -> io::Result<Option<Identity>> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&bytes).map(Some).map_err(|why| {
        invalid(format!(
            "identity file {}: {why}; refusing to start: restore the data directory from a copy, or wipe it and replace this node under a new id",
            path.display()
        ))
    })
}

fn parse(bytes: &[u8]) -> Result<Identity, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not text: corrupt".to_string())?;
    let (head, body) = text
        .split_once('\n')
        .ok_or("no header line: cut short or corrupt")?;
    let crc = head
        .strip_prefix(HEADER)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("unknown header {head:?} (written by a newer release?)"))?;
    let want = u32::from_str_radix(crc, 16).map_err(|_| format!("bad checksum field {crc:?}"))?;
    let body = body.strip_suffix('\n').unwrap_or(body);
    let got = crc32fast::hash(body.as_bytes());
    if got != want {
        return Err(format!(
            "checksum mismatch (recorded {want:08x}, computed {got:08x}): the file is corrupt"
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("unreadable record: {e}"))
}

fn render(id: &Identity) -> io::Result<Vec<u8>> {
    let body = serde_json::to_string(id)?;
    let crc = crc32fast::hash(body.as_bytes());
    Ok(format!("{HEADER} {crc:08x}\n{body}\n").into_bytes())
}

/// Replaces the identity file: temp file, fsync, rename, fsync of the directory.
pub fn write(dir: &Path, id: &Identity) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&render(id)?)?;
    f.sync_all()?;
    drop(f);
    super::crash::hit("store::identity::after_tmp");
    std::fs::rename(&tmp, dir.join(FILE))?;
    super::crash::hit("store::identity::after_rename");
    std::fs::File::open(dir)?.sync_all()
}

const RESTORE: &str = "restore this data directory from a copy, or wipe it and replace this node under a new id (docs/operations.md, Refused starts)";

/// Before sled is opened: the directory must be this node's, of this
/// cluster, in a format this build reads. Nothing is changed on refusal.
pub(crate) fn check_owner(dir: &Path, r: &Identity, owner: Owner<'_>) -> io::Result<()> {
    let file = dir.join(FILE);
    if r.node_id != owner.node_id {
        return Err(invalid(format!(
            "this data directory belongs to node {} (its identity file {} says so), not to node {} (--id {}); refusing to start: start it with --id {}, or give node {} a data directory of its own",
            r.node_id, file.display(), owner.node_id, owner.node_id, r.node_id, owner.node_id
        )));
    }
    if r.format > super::format::DB_FORMAT {
        return Err(invalid(format!(
            "the identity file {} is of storage format {}, newer than format {}, the newest this build (locker-node {}) reads; refusing to start: run a release that reads format {}",
            file.display(), r.format, super::format::DB_FORMAT, env!("CARGO_PKG_VERSION"), r.format
        )));
    }
    if let (Some(recorded), false) = (&r.cluster_id, owner.initial_cluster.is_empty()) {
        let flagged = cluster_id(owner.initial_cluster.iter().map(|(i, a)| (i, a.as_str())));
        if *recorded != flagged {
            return Err(invalid(format!(
                "this data directory belongs to cluster {recorded}, but --initial-cluster describes cluster {flagged}: it is another cluster's data directory, or --initial-cluster changed since the cluster formed; refusing to start: start it with the --initial-cluster its cluster formed with, or give this node its own data directory"
            )));
        }
    }
    Ok(())
}

/// After sled is opened: the database holds at least what the identity
/// file recorded (the high-water mark of the log, the vote, the cluster).
fn check_whole(r: &Identity, disk: &DiskLog, log: &LogStore) -> io::Result<()> {
    let empty = disk.vote.is_none() && disk.last.is_none();
    let lost = |what: String| {
        let how = if empty {
            "the database is empty: sled's files were deleted, truncated or replaced"
        } else {
            "the database lost data: sled's files were truncated, corrupted or replaced by an older copy"
        };
        invalid(format!(
            "{what}; {how}. Refusing to start: serving it could grant fencing tokens again or vote twice; {RESTORE}"
        ))
    };
    if let Some(rv) = &r.vote {
        let kept = disk.vote.as_ref().is_some_and(|v| {
            matches!(
                v.partial_cmp(rv),
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            )
        });
        if !kept {
            return Err(lost(format!(
                "the identity file records vote {rv}, answered by this node, but the database holds {}",
                disk.vote.as_ref().map_or("no vote".into(), |v| format!("vote {v}"))
            )));
        }
    }
    if let Some(mark) = &r.log_mark {
        let last = disk.last.as_ref().map_or(0, |l| l.index + 1);
        if last <= mark.index {
            return Err(lost(format!(
                "the identity file records log entry {mark} as flushed, but the database's log ends {}",
                disk.last.as_ref().map_or("before any entry".into(), |l| format!("at {l}"))
            )));
        }
        let purged = disk.purged.as_ref().is_some_and(|p| p.index >= mark.index);
        if !purged {
            let at = log.entry(mark.index)?.map(|e| e.log_id);
            if at.as_ref() != Some(mark) {
                return Err(lost(format!(
                    "the identity file records log entry {mark} as flushed, but the database holds {} at index {}",
                    at.map_or("nothing".into(), |l| format!("entry {l}")),
                    mark.index
                )));
            }
        }
    }
    if let (Some(recorded), Some(first)) = (&r.cluster_id, cluster_id_of_log(log)?) {
        if *recorded != first {
            return Err(invalid(format!(
                "the identity file records cluster {recorded}, but the database's first log entry is of cluster {first}: the database is another cluster's; refusing to start: {RESTORE}"
            )));
        }
    }
    Ok(())
}

/// Where the database notes the node whose identity file it has had (sled's
/// default tree, the node id as a big-endian `u64`): a database with the
/// note and no identity file lost the file; one without the note was never
/// opened by a node of this release (a tool such as an offline backup may
/// have opened it), and gets its file.
pub const IDENTITY_KEY: &[u8] = b"locker:identity";

/// The node id the database notes under [`IDENTITY_KEY`], if any.
fn noted(db: &sled::Db) -> io::Result<Option<NodeId>> {
    let Some(raw) = db.get(IDENTITY_KEY).map_err(super::to_io)? else {
        return Ok(None);
    };
    <[u8; 8]>::try_from(raw.as_ref())
        .map(|b| Some(u64::from_be_bytes(b)))
        .map_err(|_| {
            invalid(format!(
                "the database's {IDENTITY_KEY:?} record is unreadable"
            ))
        })
}

/// Checks the database against the identity file (or, with none, records
/// one), writes the identity file of this build, notes it in the database,
/// and starts the marker.
pub(crate) fn after_open(
    dir: &Path,
    owner: Owner<'_>,
    recorded: Option<Identity>,
    db: &sled::Db,
    log: &LogStore,
) -> io::Result<Arc<Marker>> {
    let disk = log.disk_log()?;
    let in_dir =
        |e: io::Error| io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display()));
    let noted = noted(db).map_err(in_dir)?;
    match (&recorded, noted) {
        (Some(r), Some(n)) if n != r.node_id => {
            return Err(in_dir(invalid(format!(
                "the identity file says node {}, but the database is node {n}'s: the two come from different data directories; refusing to start: {RESTORE}",
                r.node_id
            ))));
        }
        (Some(r), _) => check_whole(r, &disk, log).map_err(in_dir)?,
        (None, Some(n)) => {
            return Err(in_dir(invalid(format!(
                "the identity file {} is missing, but the database (node {n}'s) has had one: refusing to start: the file holds what proves that the database is whole and this node's; {RESTORE}",
                dir.join(FILE).display()
            ))));
        }
        (None, None) if disk.vote.is_some() || disk.last.is_some() => {
            tracing::info!(
                node_id = owner.node_id,
                "recording the data directory's identity (written by a release before identities)"
            );
        }
        (None, None) => {}
    }
    let id = Identity {
        node_id: owner.node_id,
        cluster_id: match cluster_id_of_log(log)? {
            Some(c) => Some(c),
            None => recorded.as_ref().and_then(|r| r.cluster_id.clone()),
        },
        format: super::format::DB_FORMAT,
        log_mark: disk.last,
        vote: disk.vote,
    };
    if recorded.as_ref() != Some(&id) {
        write(dir, &id)?;
    }
    // After the file: a crash between leaves a file and no note, which the
    // next start accepts and notes.
    if noted != Some(owner.node_id) {
        db.insert(IDENTITY_KEY, &owner.node_id.to_be_bytes())
            .map_err(super::to_io)?;
        db.flush().map_err(super::to_io)?;
    }
    Ok(Marker::start(dir.to_path_buf(), log.clone(), id))
}

/// Keeps the identity file's high-water mark and vote in step with the
/// store (see the module doc). Shared by the log store's clones.
pub struct Marker {
    dir: PathBuf,
    log: LogStore,
    /// Held for each write of the file, so writes land in the order their
    /// contents were taken.
    writing: Mutex<()>,
    state: Mutex<MarkState>,
    /// The cluster id once recorded: it never changes after, and every peer
    /// request reads it, so without the state's lock or a copy.
    cluster: std::sync::OnceLock<String>,
}

struct MarkState {
    /// What the file holds.
    written: Identity,
    /// The last log id known flushed (and not truncated since).
    durable: Option<LogId>,
    /// Bumped by each truncation: a flush of entries appended before it
    /// must not raise the mark.
    epoch: u64,
}

fn index(l: &Option<LogId>) -> Option<u64> {
    l.as_ref().map(|l| l.index)
}

impl Marker {
    fn start(dir: PathBuf, log: LogStore, written: Identity) -> Arc<Marker> {
        let cluster = std::sync::OnceLock::new();
        if let Some(id) = &written.cluster_id {
            let _ = cluster.set(id.clone());
        }
        let marker = Arc::new(Marker {
            dir,
            log,
            writing: Mutex::new(()),
            state: Mutex::new(MarkState {
                durable: written.log_mark,
                written,
                epoch: 0,
            }),
            cluster,
        });
        let weak = Arc::downgrade(&marker);
        let spawned = std::thread::Builder::new()
            .name("identity-marker".into())
            .spawn(move || follow(weak));
        if let Err(e) = spawned {
            panic!("cannot start the identity marker thread: {e}");
        }
        marker
    }

    fn state(&self) -> MutexGuard<'_, MarkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current truncation epoch, taken when entries are appended.
    pub(crate) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Entries up to `last`, appended in `epoch`, are flushed.
    pub(crate) fn flushed(&self, epoch: u64, last: LogId) {
        let mut s = self.state();
        if s.epoch == epoch && index(&s.durable) < Some(last.index) {
            s.durable = Some(last);
        }
    }

    /// Writes the file with `change` applied to the current record and the
    /// mark at the flushed log, if that differs from what it holds.
    fn record(&self, change: impl FnOnce(&mut MarkState, &mut Identity)) -> io::Result<()> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = {
            let mut s = self.state();
            let mut next = s.written.clone();
            change(&mut s, &mut next);
            next.log_mark = s.durable;
            next
        };
        if next.cluster_id.is_none() {
            next.cluster_id = cluster_id_of_log(&self.log)?;
        }
        if next == self.state().written {
            return Ok(());
        }
        write(&self.dir, &next)?;
        if let Some(id) = &next.cluster_id {
            let _ = self.cluster.set(id.clone());
        }
        self.state().written = next;
        Ok(())
    }

    /// A vote is flushed to the database: record it before it is answered.
    pub(crate) fn vote_saved(&self, vote: Vote) {
        let r = self.record(|_, id| id.vote = Some(vote));
        if let Err(e) = r {
            super::disk_failed("write the identity file", &e);
        }
    }

    /// The log is about to lose its entries after `last`: lower the mark
    /// first, so a crash anywhere in the truncation leaves a mark the
    /// database reaches.
    pub(crate) fn before_truncate(&self, last: Option<LogId>) {
        let r = self.record(|s, _| {
            s.epoch += 1;
            if index(&s.durable) > index(&last) {
                s.durable = last;
            }
        });
        if let Err(e) = r {
            super::disk_failed("write the identity file", &e);
        }
    }

    /// The cluster this directory belongs to, once known (see [`cluster_id`]):
    /// peers compare it on every request.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster.get().map(String::as_str)
    }

    /// Records the flushed log now (at a clean stop, after the last flush).
    pub fn sync(&self) -> io::Result<()> {
        self.record(|_, _| {})
    }
}

/// The marker thread: follows the flushed log every [`MARK_EVERY`] while
/// the marker lives.
fn follow(marker: Weak<Marker>) {
    loop {
        std::thread::sleep(MARK_EVERY);
        let Some(m) = marker.upgrade() else { return };
        if let Err(e) = m.sync() {
            super::disk_failed("write the identity file", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Identity {
        Identity {
            node_id: 3,
            cluster_id: Some("0123456789abcdef".into()),
            format: 2,
            log_mark: None,
            vote: None,
        }
    }

    #[test]
    fn the_file_round_trips_and_a_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        write(dir.path(), &sample()).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(sample()));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() - 5;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let err = read(dir.path()).expect_err("a flipped byte was read");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn the_cluster_id_depends_on_members_not_their_order() {
        let a = cluster_id([(&1, "h:1"), (&2, "h:2")]);
        assert_eq!(a, cluster_id([(&2, "h:2"), (&1, "h:1")]));
        assert_ne!(a, cluster_id([(&1, "h:1"), (&2, "h:3")]));
        assert_eq!(a.len(), 16);
    }
}
