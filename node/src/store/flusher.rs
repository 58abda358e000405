//! Group commit: one fsync serves every append that arrived while the last
//! one was running.
//!
//! `sled::Db::flush` is blocking and concurrent `flush_async` calls can
//! deadlock in sled 0.34.7, so a single OS thread owns flushing. Writers put
//! their records into sled first (cheap, in memory) and then queue a
//! completion; the thread drains the queue, flushes once, and completes them all.
//!
//! `Db::flush` alone is not durable: on Linux sled 0.34 ends each write of
//! its log with `sync_file_range`, which commits neither the file's new size
//! nor its block allocation nor the disk's write cache, so a power cut can
//! lose appended data it "flushed" (sled's own `fsync` runs only on its
//! periodic thread). Each flush is therefore followed by an `fdatasync` of
//! sled's data file. The power-loss test (tests/tests/power_loss.rs) lost
//! every acknowledged write of a round without it.
//!
//! Nor does the data file hold everything: sled writes a value too large
//! for its log (over ~128 KiB with its 512 KiB segments: the snapshot record
//! of a big table) to a file of its own under `blobs/`, and syncs neither
//! that file nor the directory. After a power cut its log pointed at an
//! empty blob and recovery dropped everything logged after it, acknowledged
//! writes included. So each flush first syncs the blobs it has not synced
//! (see [`Blobs`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::metrics::SecondsCounter;

type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Job {
    entries: u64,
    done: Completion,
}

/// Counters for the metrics page and the benchmark's "writes per fsync"
/// (registered by [`crate::metrics::Metrics::new`]; clones share the count).
#[derive(Debug, Default)]
pub struct FlushStats {
    /// fsyncs of the data directory.
    pub fsyncs: Counter,
    /// Log entries made durable.
    pub entries: Counter,
    /// Time spent in fsync.
    pub fsync_seconds: SecondsCounter,
}

/// Group commit: one thread fsyncs the database for every write waiting at
/// once, so concurrent writes share an fsync instead of queueing for one
/// each. Clones send to the same thread.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Job>,
    /// Its counters.
    pub stats: Arc<FlushStats>,
}

impl Flusher {
    /// Starts the flusher thread; `data_file` is sled's data file (`db`),
    /// opened by the caller, synced after every flush, after the new files
    /// of sled's blob directory `blobs`.
    pub fn start(db: sled::Db, data_file: std::fs::File, blobs: PathBuf) -> Flusher {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(FlushStats::default());
        let thread_stats = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || run(db, data_file, Blobs::new(blobs), rx, thread_stats));
        if let Err(e) = spawned {
            // Without the thread nothing would ever be acknowledged: fail loudly.
            panic!("cannot start the flusher thread: {e}");
        }
        Flusher { tx, stats }
    }

    /// Calls `done` once everything written to the Db before this call is on disk.
    pub fn after_flush(&self, entries: u64, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        let job = Job {
            entries,
            done: Box::new(done),
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            (job.done)(Err(io::Error::other("the flusher has stopped")));
        }
    }

    /// Waits until everything written before this call is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(0, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| io::Error::other("the flusher has stopped"))?
    }
}

/// sled's blob files and the size each had when last synced. A blob never
/// changes once written, but one may be mid-write while a flush for earlier
/// writes runs: its size when synced tells a later flush to sync it again.
struct Blobs {
    dir: PathBuf,
    synced: HashMap<OsString, u64>,
}

impl Blobs {
    fn new(dir: PathBuf) -> Blobs {
        Blobs {
            dir,
            synced: HashMap::new(),
        }
    }

    /// Syncs every blob file new or grown since the last call, then the
    /// directory (their names) if any was. Blobs sled removed meanwhile are
    /// forgotten.
    fn sync_new(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashMap::new();
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let file = match std::fs::File::open(entry.path()) {
                Ok(f) => f,
                // Removed by sled's blob collection since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if self.synced.get(&name) != Some(&len) {
                file.sync_data()?;
                synced_any = true;
            }
            present.insert(name, len);
        }
        if synced_any {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        self.synced = present;
        Ok(())
    }
}

fn run(
    db: sled::Db,
    data_file: std::fs::File,
    mut blobs: Blobs,
    rx: mpsc::Receiver<Job>,
    stats: Arc<FlushStats>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let started = std::time::Instant::now();
        super::crash::hit("store::flush::before");
        let result = db.flush().map_err(super::to_io).and_then(|_| {
            super::crash::io_error("store::flush::sync")?;
            blobs.sync_new()?;
            data_file.sync_data()
        });
        super::crash::hit("store::flush::after");
        stats.fsync_seconds.inc_by(started.elapsed().as_secs_f64());
        stats.fsyncs.inc();
        let entries: u64 = jobs.iter().map(|j| j.entries).sum();
        stats.entries.inc_by(entries);
        match result {
            Ok(_) => jobs.into_iter().for_each(|j| (j.done)(Ok(()))),
            // Nothing waiting here may be acknowledged, and Raft cannot go
            // on without durable writes: stop the process (exit code 74).
            Err(e) => super::disk_failed("flush to disk (fsync)", &e),
        }
    }
}
