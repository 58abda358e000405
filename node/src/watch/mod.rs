//! The watch stream's source: events derived from every applied entry
//! ([`derive`]) kept in a bounded in-memory history that watchers read with
//! a cursor ([`History`]). Fed at apply on every node, so any node serves a
//! watch from its own applied log. The history starts empty at each start
//! (its oldest position is the applied index then) and after a snapshot is
//! installed (the skipped entries have no events).

pub mod derive;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use locker_proto::{EventId, WatchEvent, WatchKind};

use crate::core::{Change, Command, LockTable, Outcome};

/// One recorded event, its JSON made once for every watcher.
#[derive(Debug)]
pub struct Recorded {
    /// The event.
    pub event: WatchEvent,
    json: OnceLock<String>,
    bytes: usize,
}

impl Recorded {
    fn new(event: WatchEvent) -> Recorded {
        let bytes = estimate_bytes(&event);
        Recorded {
            event,
            json: OnceLock::new(),
            bytes,
        }
    }

    /// The event as one SSE frame: `id`, `event`, `data`, blank line.
    pub fn sse(&self) -> &str {
        self.json.get_or_init(|| {
            let data = serde_json::to_string(&self.event).unwrap_or_else(|_| "null".into());
            format!(
                "id: {}\nevent: {}\ndata: {data}\n\n",
                self.event.id, self.event.kind
            )
        })
    }

    /// Whether a watch of any of `prefixes` gets this event.
    pub fn matches_any(&self, prefixes: &[String]) -> bool {
        prefixes.iter().any(|p| self.matches(p))
    }

    /// Whether a watch of `prefix` gets this event: a lock event under the
    /// prefix; a process event whose hash starts with it or whose locks
    /// include one under it; every `deadlines_shifted`.
    pub fn matches(&self, prefix: &str) -> bool {
        let e = &self.event;
        if prefix.is_empty() || e.kind == WatchKind::DeadlinesShifted {
            return true;
        }
        if let Some(k) = &e.key {
            return k.starts_with(prefix);
        }
        e.process_hash
            .as_deref()
            .is_some_and(|p| p.starts_with(prefix))
            || e.keys
                .as_ref()
                .is_some_and(|ks| ks.iter().any(|k| k.starts_with(prefix)))
    }
}

/// Roughly what an event holds in memory (its strings, its JSON once made).
fn estimate_bytes(e: &WatchEvent) -> usize {
    let lock = |l: &Option<locker_proto::Lock>| {
        l.as_ref().map_or(0, |l| {
            l.key.len()
                + l.owner_hash.len()
                + l.process_hash.as_ref().map_or(0, String::len)
                + l.trace.as_ref().map_or(0, String::len)
                + 200
        })
    };
    let info = e
        .process
        .as_ref()
        .and_then(|p| p.info.as_ref())
        .map_or(0, |i| i.to_string().len());
    let keys = e
        .keys
        .as_ref()
        .map_or(0, |ks| ks.iter().map(|k| k.len() + 24).sum());
    // Counted twice: the record and its JSON.
    2 * (300 + lock(&e.lock) + lock(&e.previous) + info + keys)
}

/// Why a cursor can no longer be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Events after it were dropped to bound memory.
    Dropped,
    /// A snapshot was installed after it: the skipped entries have no events.
    Snapshot,
}

struct Ring {
    events: VecDeque<Arc<Recorded>>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event after this position is kept: the last dropped one, or
    /// the applied index at start or at the last installed snapshot.
    floor: EventId,
    /// The floor set by the last snapshot install (or start).
    reset_at: EventId,
}

impl Ring {
    fn trim(&mut self) {
        while self.events.len() > self.max_events || self.bytes > self.max_bytes {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(e.bytes);
            self.floor = e.event.id;
        }
    }
}

/// A batch of events after a cursor.
#[derive(Debug, Default)]
pub struct Batch {
    /// Matching events, in log order.
    pub events: Vec<Arc<Recorded>>,
    /// The position up to which the history was looked at: the next read
    /// starts after it (it may be past the last matching event).
    pub scanned_to: Option<EventId>,
}

/// The bounded history of watch events.
pub struct History {
    ring: Mutex<Ring>,
}

/// Defaults before the node's flags are applied (the conformance suite
/// and tools open a state machine without them).
const DEFAULT_EVENTS: usize = 100_000;
const DEFAULT_BYTES: usize = 64 << 20;
/// At most this many history entries are looked at per lock of the ring.
const SCAN_LIMIT: usize = 4096;

impl History {
    /// An empty history whose oldest position is `applied`.
    pub fn new(applied: u64) -> History {
        History {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                bytes: 0,
                max_events: DEFAULT_EVENTS,
                max_bytes: DEFAULT_BYTES,
                floor: EventId::entry(applied),
                reset_at: EventId::entry(applied),
            }),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bounds the history to `events` events and `bytes` bytes.
    pub fn set_limits(&self, events: usize, bytes: usize) {
        let mut r = self.ring();
        r.max_events = events.max(1);
        r.max_bytes = bytes.max(1);
        r.trim();
    }

    /// Applies `cmd` at `index` to `table` and records its events: what the
    /// state machine calls instead of [`LockTable::apply`].
    pub fn apply(
        &self,
        table: &mut LockTable,
        index: u64,
        cmd: &Command,
    ) -> (Outcome, Vec<Change>) {
        // Each op's events are derived around its own apply (a batch's ops
        // as if each were its own entry), then numbered together.
        let mut events = Vec::new();
        let (outcome, changes) = table.apply_each(cmd, |table, op| {
            let before = derive::Before::capture(table, cmd.time_ms, op);
            let (outcome, changes) = table.apply_op(index, cmd.time_ms, op);
            events.extend(derive::events(&before, table, index, op, &changes));
            (outcome, changes)
        });
        derive::number(&mut events, index);
        self.record(events);
        (outcome, changes)
    }

    fn record(&self, events: Vec<WatchEvent>) {
        if !events.is_empty() {
            let mut r = self.ring();
            for e in events {
                let rec = Recorded::new(e);
                r.bytes += rec.bytes;
                r.events.push_back(Arc::new(rec));
            }
            r.trim();
        }
    }

    /// A snapshot brought the table to `applied`: forget every event, and
    /// serve only from there.
    pub fn reset(&self, applied: u64) {
        let mut r = self.ring();
        r.events.clear();
        r.bytes = 0;
        r.floor = EventId::entry(applied);
        r.reset_at = r.floor;
    }

    /// The oldest `since` this history can serve.
    pub fn oldest_index(&self) -> u64 {
        self.ring().floor.index
    }

    /// Whether a stream can start after `cursor`, else why not.
    pub fn check(&self, cursor: EventId) -> Result<(), Gone> {
        let r = self.ring();
        if cursor < r.reset_at {
            Err(Gone::Snapshot)
        } else if cursor < r.floor {
            Err(Gone::Dropped)
        } else {
            Ok(())
        }
    }

    /// Up to `max` events after `cursor` that match one of `prefixes`.
    pub fn after(&self, cursor: EventId, prefixes: &[String], max: usize) -> Result<Batch, Gone> {
        let r = self.ring();
        if cursor < r.reset_at {
            return Err(Gone::Snapshot);
        }
        if cursor < r.floor {
            return Err(Gone::Dropped);
        }
        let start = r.events.partition_point(|e| e.event.id <= cursor);
        let mut batch = Batch::default();
        for e in r.events.range(start..).take(SCAN_LIMIT) {
            batch.scanned_to = Some(e.event.id);
            if e.matches_any(prefixes) {
                batch.events.push(e.clone());
                if batch.events.len() >= max {
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Events kept now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.ring().events.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
