//! `GET /v1/watch` against real nodes: every kind of event once and in log
//! order, resuming without loss or repetition, 410 after the history moved
//! on, a stalled watcher cut off without slowing writes, heartbeats.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use locker_proto::{WatchEvent, WatchStart};
use locker_tests::{api, http, Cluster, SECRET};
use serde_json::json;

/// One SSE item: an event, or a comment line.
#[derive(Debug, Clone, Default)]
struct Sse {
    id: Option<String>,
    event: String,
    data: String,
    comment: Option<String>,
}

/// Reads SSE items from a watch response body.
struct SseReader<R: Read> {
    lines: BufReader<R>,
}

impl<R: Read> SseReader<R> {
    /// The next event or comment; `None` at the end of the stream.
    fn next_item(&mut self) -> Option<Sse> {
        let mut item = Sse::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) | Err(_) => return any.then_some(item),
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(item);
                }
                continue;
            }
            any = true;
            if let Some(c) = line.strip_prefix(':') {
                item.comment = Some(c.trim().to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                item.id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                item.event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                item.data = v.to_string();
            }
        }
    }

    /// The next event, skipping comments.
    fn next_event(&mut self) -> Option<Sse> {
        loop {
            let item = self.next_item()?;
            if item.comment.is_none() {
                return Some(item);
            }
        }
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Opens a watch; asserts 200 and the `start` event, and returns the reader
/// and the start.
fn open(
    base: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> (SseReader<reqwest::blocking::Response>, WatchStart) {
    let mut req = client().get(format!("{base}/v1/watch?{query}"));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().expect("watch request");
    assert_eq!(resp.status().as_u16(), 200, "watch {query}");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut r = SseReader {
        lines: BufReader::new(resp),
    };
    let start = r.next_event().expect("start event");
    assert_eq!(start.event, "start");
    let s: WatchStart = serde_json::from_str(&start.data).expect("start data");
    assert_eq!(start.id.as_deref(), Some(s.id.to_string().as_str()));
    (r, s)
}

fn event_of(item: &Sse) -> WatchEvent {
    let e: WatchEvent = serde_json::from_str(&item.data)
        .unwrap_or_else(|err| panic!("event data {:?}: {err}", item.data));
    assert_eq!(item.id.as_deref(), Some(e.id.to_string().as_str()));
    assert_eq!(item.event, e.kind.as_str());
    e
}

/// Reads events until `n` have come.
fn take(r: &mut SseReader<reqwest::blocking::Response>, n: usize) -> Vec<WatchEvent> {
    (0..n)
        .map(|i| event_of(&r.next_event().unwrap_or_else(|| panic!("event {i} of {n}"))))
        .collect()
}

fn kinds(events: &[WatchEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn assert_strictly_increasing(events: &[WatchEvent]) {
    for w in events.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "ids out of order: {} then {}",
            w[0].id,
            w[1].id
        );
        assert!(w[0].index <= w[1].index);
    }
}

fn ok(a: &locker_tests::Answer, what: &str) {
    assert_eq!(a.code, 200, "{what}: {:?}", a.body);
}

fn acquire(base: &str, key: &str, owner: &str, process: Option<&str>, ttl_ms: u64) {
    let a = api::acquire(
        base,
        key,
        json!({"owner_hash": owner, "process_hash": process, "ttl_ms": ttl_ms}),
    );
    ok(&a, &format!("acquire {key}"));
}

/// Lock and process changes that die by time, then a linearizable read
/// that makes the leader record them (a sweep entry).
fn lock_and_process_events(base: &str) {
    ok(&api::keepalive(base, "wh/1.1", 60_000), "keepalive");
    acquire(base, "a", "a@wh/1.1.1", Some("wh/1.1"), 60_000);
    acquire(base, "a", "a@wh/1.1.1", Some("wh/1.1"), 60_000);
    ok(
        &api::extend(base, "a", "a@wh/1.1.1", Some(90_000)),
        "extend",
    );
    ok(&api::keepalive(base, "wh/1.1", 60_000), "keepalive again");
    acquire(base, "c", "c@wh/9.9.1", None, 60_000);
    ok(&api::release(base, "c", "c@wh/9.9.1"), "release");
    // Expiry by TTL, recorded by the sweep a read triggers.
    acquire(base, "b", "b@wh/9.9.1", None, 100);
    std::thread::sleep(Duration::from_millis(300));
    ok(&api::read(base, "b"), "read b");
    // Taken over: a dead lock not yet swept, granted to another owner.
    acquire(base, "e", "e@wh/9.9.1", None, 100);
    std::thread::sleep(Duration::from_millis(300));
    acquire(base, "e", "e@wh/9.9.2", None, 60_000);
    // A process whose keep-alives lapse, recorded by a read's sweep.
    ok(&api::keepalive(base, "wh/2.2", 100), "short keepalive");
    acquire(base, "d", "d@wh/2.2.1", Some("wh/2.2"), 60_000);
    std::thread::sleep(Duration::from_millis(300));
    ok(&api::read(base, "d"), "read d");
    // A process ended by its owner.
    ok(&api::keepalive(base, "wh/3.3", 60_000), "keepalive 3");
    acquire(base, "f", "f@wh/3.3.1", Some("wh/3.3"), 60_000);
    ok(&api::end_process(base, "wh/3.3"), "end process");
}

fn transfer_leader(base: &str, to: u64) {
    let resp = http()
        .post(format!("{base}/v1/cluster/leader"))
        .header("content-type", "application/json")
        .header("x-locker-cluster-secret", SECRET)
        .body(json!({ "id": to }).to_string())
        .send()
        .expect("transfer");
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn every_kind_of_event_appears_once_in_log_order() {
    // Sweeps only when a read asks for one, so each expiry lands where the
    // test puts it.
    let c = Cluster::start_with(3, &["--sweep-ms", "600000"]);
    let leader = c.leader().expect("leader");
    let watcher = c.followers()[0];
    let (mut r, start) = open(&c.url(watcher), "prefix=", None);
    assert_eq!(start.node_id, watcher);
    lock_and_process_events(&c.url(leader));
    let other = c
        .followers()
        .into_iter()
        .find(|f| *f != watcher)
        .expect("2nd");
    transfer_leader(&c.url(leader), other);
    let expected = [
        "process_registered",
        "acquired",
        "reacquired",
        "extended",
        "process_kept_alive",
        "acquired",
        "released",
        "acquired",
        "expired",
        "acquired",
        "taken_over",
        "process_registered",
        "acquired",
        "process_expired",
        "freed",
        "process_registered",
        "acquired",
        "process_ended",
        "freed",
        "deadlines_shifted",
    ];
    let events = take(&mut r, expected.len());
    assert_eq!(kinds(&events), expected);
    assert_strictly_increasing(&events);
    assert!(events[0].id > start.id);
    let taken = &events[10];
    assert_eq!(taken.key.as_deref(), Some("e"));
    assert_eq!(
        taken.previous.as_ref().map(|l| l.owner_hash.as_str()),
        Some("e@wh/9.9.1")
    );
    assert_eq!(
        taken.lock.as_ref().map(|l| l.owner_hash.as_str()),
        Some("e@wh/9.9.2")
    );
    let freed = &events[14];
    assert_eq!(
        (freed.key.as_deref(), freed.lock.as_ref()),
        (Some("d"), None)
    );
    assert_eq!(freed.index, events[13].index, "one entry, sub-events");
    assert!(events[19].gap_ms.is_some_and(|g| g > 0));
    // The process events carry the record.
    assert_eq!(events[0].process.as_ref().map(|p| p.ttl_ms), Some(60_000));
}
