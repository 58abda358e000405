//! `GET /v1/watch` against real nodes: every kind of event once and in log
//! order, resuming without loss or repetition, 410 after the history moved
//! on, a stalled watcher cut off without slowing writes, heartbeats.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use locker_proto::{CompactedAnswer, WatchClosed, WatchEvent, WatchStart};
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
    // A process whose keep-alives lapse, recorded by a read's sweep. It
    // holds its lock first with a long ttl, then a keep-alive cuts it to
    // 100 ms: the acquire cannot race the lapse (with a 100 ms first
    // keep-alive it sometimes did on a loaded machine: 409), and the read
    // comes soon after the lapse (a later one may find the log time already
    // past it and record nothing: the lapse then shows at the next sweep).
    ok(&api::keepalive(base, "wh/2.2", 60_000), "keepalive 2");
    acquire(base, "d", "d@wh/2.2.1", Some("wh/2.2"), 60_000);
    ok(&api::keepalive(base, "wh/2.2", 100), "short keepalive");
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
        "process_kept_alive",
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
    let freed = &events[15];
    assert_eq!(
        (freed.key.as_deref(), freed.lock.as_ref()),
        (Some("d"), None)
    );
    assert_eq!(freed.index, events[14].index, "one entry, sub-events");
    assert!(events[20].gap_ms.is_some_and(|g| g > 0));
    // The process events carry the record.
    assert_eq!(events[0].process.as_ref().map(|p| p.ttl_ms), Some(60_000));
}

/// The keys of the live locks under `prefix`, from a linearizable list.
fn live_keys(base: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let a = locker_tests::get(&format!("{base}/v1/locks?prefix={prefix}"));
    let list: locker_proto::ListAnswer = a.json();
    list.locks.into_iter().map(|l| l.key).collect()
}

/// The keys a stream of events leaves held.
fn replay(events: &[WatchEvent]) -> std::collections::BTreeSet<String> {
    let mut held = std::collections::BTreeSet::new();
    for e in events {
        if let Some(k) = &e.key {
            if e.lock.is_some() {
                held.insert(k.clone());
            } else {
                held.remove(k);
            }
        }
    }
    held
}

#[test]
fn resuming_with_last_event_id_misses_and_repeats_nothing() {
    let c = Cluster::start(1);
    let base = c.url(1);
    let (mut r, _) = open(&base, "prefix=r/", None);
    ok(&api::keepalive(&base, "rh/1.1", 60_000), "keepalive");
    for k in ["r/1", "r/2", "r/3"] {
        acquire(&base, k, &format!("{k}@rh/1.1.1"), Some("rh/1.1"), 60_000);
    }
    acquire(&base, "r/4", "r/4@rh/2.2.1", None, 60_000);
    // One entry, four events: r/1..r/3 freed with their process's end.
    ok(&api::end_process(&base, "rh/1.1"), "end");
    let mut seen = take(&mut r, 6);
    assert_eq!(seen[5].id.to_string(), format!("{}.2", seen[5].index));
    drop(r);
    // While disconnected.
    ok(&api::release(&base, "r/4", "r/4@rh/2.2.1"), "release");
    acquire(&base, "r/5", "r/5@rh/2.2.2", None, 60_000);
    let last = seen[5].id.to_string();
    let (mut r, start) = open(&base, "prefix=r/", Some(&last));
    assert_eq!(start.id.to_string(), last);
    seen.extend(take(&mut r, 4));
    assert_strictly_increasing(&seen);
    let kinds = kinds(&seen);
    assert_eq!(&kinds[6..], ["freed", "freed", "released", "acquired"]);
    assert_eq!(replay(&seen), live_keys(&base, "r/"));
    // `since` in the query resumes the same way.
    let (mut r, _) = open(&base, &format!("prefix=r/&since={}", seen[7].id), None);
    assert_eq!(
        take(&mut r, 2).iter().map(|e| e.id).collect::<Vec<_>>(),
        [seen[8].id, seen[9].id]
    );
}

#[test]
fn a_start_older_than_the_history_answers_410_with_the_oldest_index() {
    let c = Cluster::start_with(1, &["--watch-history", "5"]);
    let base = c.url(1);
    for i in 0..20 {
        acquire(
            &base,
            &format!("h/{i}"),
            &format!("h/{i}@hh/1.1.{i}"),
            None,
            60_000,
        );
    }
    let resp = client()
        .get(format!("{base}/v1/watch?since=1"))
        .send()
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 410);
    let gone: CompactedAnswer = resp.json().expect("410 body");
    assert_eq!(gone.error.code.as_str(), "COMPACTED");
    assert!(gone.oldest_index > 1, "{gone:?}");
    // From the oldest index on, the five kept events come.
    let (mut r, start) = open(&base, &format!("since={}", gone.oldest_index), None);
    assert_eq!(start.oldest_index, gone.oldest_index);
    let events = take(&mut r, 5);
    assert_eq!(events[4].key.as_deref(), Some("h/19"));
    // A bad id is refused, not read as "from now".
    let bad = client()
        .get(format!("{base}/v1/watch?since=x"))
        .send()
        .expect("bad");
    assert_eq!(bad.status().as_u16(), 400);
}

#[test]
fn heartbeats_keep_an_idle_stream_alive_and_watchers_are_capped() {
    let c = Cluster::start_with(1, &["--watch-heartbeat-ms", "200", "--max-watchers", "1"]);
    let base = c.url(1);
    let (mut r, _) = open(&base, "", None);
    let item = r.next_item().expect("an item");
    assert_eq!(item.comment.as_deref(), Some("keep-alive"), "{item:?}");
    let second = client()
        .get(format!("{base}/v1/watch"))
        .send()
        .expect("2nd");
    assert_eq!(second.status().as_u16(), 429);
    let e: locker_proto::ErrorAnswer = second.json().expect("429 body");
    assert_eq!(e.error.code.as_str(), "LIMIT_EXCEEDED");
}

/// Opens a watch on a raw socket that the test then does not read.
fn stalled_watch(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET /v1/watch HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    s
}

#[test]
fn a_stalled_watcher_is_cut_off_without_slowing_writes() {
    const WRITES: u64 = 1_000;
    let c = Cluster::start_with(1, &["--watch-history", "20"]);
    let base = c.url(1);
    let mut stalled = stalled_watch(&base);
    // About 15 KiB per event, 1,000 events: 15 MB, more than loopback's
    // autotuned socket buffers hold (300 events fit in them on some
    // machines: the node was never held up, so never cut the watcher off,
    // and the read below waited forever on keep-alives).
    let info = "i".repeat(15_000);
    let started = Instant::now();
    for i in 0..WRITES {
        let a = locker_tests::put(
            &format!("{base}/v1/processes/sh%2F1.1"),
            json!({"ttl_ms": 60_000, "info": {"n": i, "pad": info}}),
        );
        ok(&a, "keepalive");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(180),
        "{WRITES} writes took {took:?}"
    );
    // Reading again, the watcher finds its stream closed for being too slow.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(90);
    let closed = loop {
        assert!(
            Instant::now() < deadline,
            "no closed event within 90 s of reading ({} bytes read)",
            got.len()
        );
        let n = stalled.read(&mut buf).expect("read the stalled stream");
        assert!(n > 0, "the stream ended without a closed event");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(at) = text.find("event: closed\ndata: ") {
            let rest = &text[at + "event: closed\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                break rest[..end].to_string();
            }
        }
    };
    let closed: WatchClosed = serde_json::from_str(&closed).expect("closed data");
    assert_eq!(closed.reason.as_str(), "too_slow");
    assert!(closed.last_index < WRITES, "{closed:?}");
    // The node still serves a fresh watcher.
    let (_r, start) = open(&base, "", None);
    assert!(start.applied_index > WRITES);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Reads library items until every key in `keys` was acquired once;
/// returns the events (and resyncs replace the state replayed so far).
fn collect_acquired(
    rt: &tokio::runtime::Runtime,
    w: &mut locker_client::Watch,
    keys: usize,
) -> Vec<WatchEvent> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut events: Vec<WatchEvent> = Vec::new();
    while events
        .iter()
        .filter(|e| e.kind.as_str() == "acquired")
        .count()
        < keys
    {
        assert!(Instant::now() < deadline, "only {} events", events.len());
        let item = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), w.next()).await })
            .expect("an item in time")
            .expect("the stream goes on")
            .expect("no fatal error");
        match item {
            locker_client::WatchItem::Event(e) => events.push(*e),
            other => panic!("no resync expected (every node keeps the history): {other:?}"),
        }
    }
    events
}

#[test]
fn the_library_stream_resumes_on_another_node_when_its_node_is_killed() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let followers = c.followers();
    let (serving, other) = (followers[0], followers[1]);
    let rt = runtime();
    let client = locker_client::Client::new(locker_client::ClientOptions {
        endpoints: vec![c.url(serving), c.url(other), c.url(leader)],
        ..Default::default()
    })
    .expect("client");
    let mut w = rt.block_on(async { client.watch("f/") });
    // The stream's start is asynchronous: wait until it sees a first write.
    acquire(&c.url(leader), "f/first", "f/first@fh/1.1.1", None, 60_000);
    let first = collect_acquired(&rt, &mut w, 1);
    let base = c.url(leader);
    for i in 0..20 {
        acquire(
            &base,
            &format!("f/{i}"),
            &format!("f/{i}@fh/1.1.{}", i + 2),
            None,
            60_000,
        );
    }
    c.kill(serving);
    for i in 20..40 {
        acquire(
            &base,
            &format!("f/{i}"),
            &format!("f/{i}@fh/1.1.{}", i + 2),
            None,
            60_000,
        );
        if i % 3 == 0 {
            ok(
                &api::release(&base, &format!("f/{i}"), &format!("f/{i}@fh/1.1.{}", i + 2)),
                "release",
            );
        }
    }
    let mut events = first;
    events.extend(collect_acquired(&rt, &mut w, 40));
    assert_strictly_increasing(&events);
    let acquired: Vec<&str> = events
        .iter()
        .filter(|e| e.kind.as_str() == "acquired")
        .filter_map(|e| e.key.as_deref())
        .collect();
    let unique: std::collections::BTreeSet<&str> = acquired.iter().copied().collect();
    assert_eq!(acquired.len(), 41, "every grant once: {acquired:?}");
    assert_eq!(unique.len(), 41);
    // Wait for the releases after the last grant, then compare with the table.
    let last_release = events
        .iter()
        .filter(|e| e.kind.as_str() == "released")
        .count();
    for _ in last_release..7 {
        let item = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), w.next()).await })
            .expect("a release in time")
            .expect("stream")
            .expect("item");
        if let locker_client::WatchItem::Event(e) = item {
            events.push(*e);
        }
    }
    assert_strictly_increasing(&events);
    assert_eq!(replay(&events), live_keys(&base, "f/"));
}

fn locker_cli(base: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(locker_tests::bin("locker"));
    cmd.arg("--endpoints").arg(base).args(args);
    cmd
}

#[test]
fn cli_watch_prints_events_and_wait_returns_when_the_key_is_free() {
    let c = Cluster::start(1);
    let base = c.url(1);
    let mut watcher = locker_cli(&base, &["--json", "watch", "cli/"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("locker watch");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    // Writes go on until one arrives (the stream starts after the spawn).
    let writer = {
        let base = base.clone();
        std::thread::spawn(move || {
            for n in 1..=20 {
                acquire(
                    &base,
                    &format!("cli/{n}"),
                    &format!("cli/{n}@ch/1.1.{n}"),
                    None,
                    60_000,
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let line = lines.next().expect("a line").expect("text");
    let seen: WatchEvent = serde_json::from_str(&line).expect("a JSON event per line");
    writer.join().expect("writer");
    assert_eq!(seen.kind.as_str(), "acquired");
    assert!(seen.key.as_deref().is_some_and(|k| k.starts_with("cli/")));
    let _ = watcher.kill();
    let _ = watcher.wait();

    // wait: a free key at once; a held one times out with 3, or returns
    // 0 once it is released.
    let free = locker_cli(&base, &["wait", "cli/free"])
        .status()
        .expect("wait");
    assert_eq!(free.code(), Some(0));
    acquire(&base, "cli/held", "cli/held@ch/2.2.1", None, 60_000);
    let timed_out = locker_cli(&base, &["wait", "cli/held", "--wait-ms", "300"])
        .status()
        .expect("wait");
    assert_eq!(timed_out.code(), Some(3));
    let mut waiting = locker_cli(&base, &["wait", "cli/held"])
        .spawn()
        .expect("wait");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().expect("try_wait").is_none(),
        "returned while held"
    );
    ok(
        &api::release(&base, "cli/held", "cli/held@ch/2.2.1"),
        "release",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = waiting.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "wait did not return after the release"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
