//! SIGTERM is bounded: blocked acquires are answered 503 at once and the
//! node exits cleanly soon after, instead of waiting out their `wait_ms`.

use std::time::{Duration, Instant};

use locker_tests::{api, eventually, Cluster};
use serde_json::json;

#[test]
fn sigterm_answers_blocked_acquires_at_once_and_exits_promptly() {
    let mut c = Cluster::start(1);
    let url = c.url(1);
    assert_eq!(
        api::acquire(
            &url,
            "held",
            json!({"owner_hash": "held@h/1.1.0", "ttl_ms": 600_000})
        )
        .status(),
        "SUCCESS"
    );
    let waiters: Vec<_> = (1..=3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = api::acquire(
                    &url,
                    "held",
                    json!({"owner_hash": format!("held@h/1.1.{i}"), "wait_ms": 600_000}),
                );
                (r, Instant::now())
            })
        })
        .collect();
    let metrics = format!("{url}/metrics");
    eventually(Duration::from_secs(10), "3 queued waiters", || {
        let text = locker_tests::http()
            .get(&metrics)
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .any(|l| l.trim() == "locker_waiters 3")
            .then_some(())
    });
    let signalled = Instant::now();
    // `stop` sends SIGTERM and waits up to 15 s for the exit status.
    let clean = c.node_mut(1).stop();
    let exited = signalled.elapsed();
    assert!(clean, "no clean exit after SIGTERM (took {exited:?})");
    assert!(exited < Duration::from_secs(8), "shutdown took {exited:?}");
    for w in waiters {
        let (r, answered) = w.join().expect("waiter");
        assert_eq!(
            (r.code, r.error_code()),
            (503, "NO_LEADER"),
            "a blocked acquire at shutdown: {:?}",
            r.body
        );
        assert!(answered.duration_since(signalled) < Duration::from_secs(3));
    }
}
