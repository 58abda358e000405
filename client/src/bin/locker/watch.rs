//! `locker watch [PREFIX]` and `locker wait KEY`, on the library's
//! resuming watch stream.

use std::time::Duration;

use locker_client::{Client, Error, WatchItem};
use serde_json::json;

/// Prints one line per change under `prefix` until interrupted (or a
/// refusal): `ID KIND KEY-OR-PROCESS DETAIL`, or with `json` the event's
/// JSON (a resync is `{"resync":{"index":N,"locks":[...]}}`).
pub async fn watch(client: &Client, prefix: &str, json: bool) -> Result<u8, Error> {
    let mut w = client.watch(prefix);
    while let Some(item) = w.next().await {
        match item? {
            WatchItem::Event(e) if json => println!("{}", json!(e)),
            WatchItem::Event(e) => {
                let what = e
                    .key
                    .as_deref()
                    .or(e.process_hash.as_deref())
                    .unwrap_or("-");
                let detail = match (&e.lock, &e.previous, e.gap_ms) {
                    (Some(l), _, _) => format!("{} token={}", l.owner_hash, l.fencing_token),
                    (None, Some(p), _) => format!("was {}", p.owner_hash),
                    (None, None, Some(gap)) => format!("gap_ms={gap}"),
                    _ => String::new(),
                };
                let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                println!("{}\t{}\t{what}\t{detail}{reason}", e.id, e.kind);
            }
            WatchItem::Resync { locks, index } if json => {
                println!("{}", json!({"resync": {"index": index, "locks": locks}}));
            }
            WatchItem::Resync { locks, index } => {
                println!("resync at index {index}: {} live locks", locks.len());
                for l in locks {
                    println!(
                        "{index}\tlive\t{}\t{} token={}",
                        l.key, l.owner_hash, l.fencing_token
                    );
                }
            }
        }
    }
    Ok(0)
}

/// Returns 0 once `key` is free (at once if it is), `held` if
/// `timeout_ms` passes first.
pub async fn wait(
    client: &Client,
    key: &str,
    timeout_ms: Option<u64>,
    held: u8,
) -> Result<u8, Error> {
    let deadline = timeout_ms.map(|t| tokio::time::Instant::now() + Duration::from_millis(t));
    let mut w = client.watch(key);
    loop {
        // Read again at every change of the key (and every second, as the
        // stream's start may come after a release).
        if client.read_lock(key).await?.is_none() {
            return Ok(0);
        }
        let changed = async {
            loop {
                match w.next().await {
                    Some(Ok(WatchItem::Event(e))) if e.key.as_deref() != Some(key) => {}
                    Some(Err(e)) => return Err(e),
                    _ => return Ok(()),
                }
            }
        };
        let pause = tokio::time::timeout(Duration::from_secs(1), changed);
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, pause).await.is_err() {
                    return Ok(held);
                }
            }
            None => {
                let _ = pause.await;
            }
        }
    }
}
