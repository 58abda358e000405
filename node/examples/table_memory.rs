//! Heap bytes per live lock of the in-memory lock table, as the memory
//! benchmark fills it (16-character keys, one owner each, no process):
//! `cargo run --release -p locker-node --example table_memory -- 200000`.
//!
//! Reports glibc's count of heap bytes in use (`mallinfo2`) and the
//! resident set after filling the table, after a takeover marker that
//! shifts every lock, and after a rebuild from the records (a restart).
//! This example runs on glibc's allocator; the node binary uses mimalloc
//! (main.rs), whose size classes differ by a few bytes per allocation.

use locker_node::core::{Command, LockTable, Op};

fn heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    // Small chunks in the arenas, plus the big ones glibc maps apart.
    m.uordblks + m.hblkhd
}

fn rss_bytes() -> usize {
    status_bytes("VmRSS:")
}

fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn report(what: &str, n: usize, heap0: usize, rss0: usize) {
    let per = |b: usize, b0: usize| b.saturating_sub(b0) as f64 / n.max(1) as f64;
    println!(
        "{what:>24}: heap {:7.1} B/lock, resident {:7.1} B/lock, peak resident {:7.1} B/lock",
        per(heap_bytes(), heap0),
        per(rss_bytes(), rss0),
        per(status_bytes("VmHWM:"), rss0)
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let (heap0, rss0) = (heap_bytes(), rss_bytes());
    let mut table = LockTable::new();
    let mut time = 1_000_000u64;
    for i in 0..n {
        let key = format!("m/{i:014}");
        let op = Op::Acquire {
            owner_hash: format!("{key}@bench/123.1.1"),
            key,
            process_hash: None,
            trace: None,
            ttl_ms: 86_400_000,
        };
        time += 1;
        let _ = table.apply(i as u64 + 1, &Command { time_ms: time, op });
    }
    report("filled", n, heap0, rss0);
    let start = std::time::Instant::now();
    let (_, changes) = table.apply(
        n as u64 + 1,
        &Command {
            time_ms: time + 5_000,
            op: Op::LeaderTakeover,
        },
    );
    let took = start.elapsed();
    report("takeover (changes held)", n, heap0, rss0);
    println!("{:>24}: {} records, {took:?}", "takeover", changes.len());
    drop(changes);
    report("takeover (changes gone)", n, heap0, rss0);
    let image = table.to_image();
    drop(table);
    let start = std::time::Instant::now();
    let table = LockTable::from_image(image);
    println!("{:>24}: {:?}", "rebuild", start.elapsed());
    report("rebuilt", n, heap0, rss0);
    assert_eq!(table.lock_records(), n);
}
