//! Helpers shared by the node's integration tests (each test binary uses
//! its own part of them).
#![allow(dead_code)]

use std::path::Path;

use locker_node::core::Op;
use locker_node::store;
use proptest::prelude::*;

/// The keys and processes of generated ops.
pub const KEYS: [&str; 3] = ["a", "b", "jobs/c"];
pub const PROCESSES: [&str; 2] = ["h1/1.100", "h2/2.200"];

/// Owner hash number `n` of `key`, on one of [`PROCESSES`].
pub fn owner(key: &str, n: u8) -> String {
    format!("{key}@{}.{n}", PROCESSES[(n % 2) as usize])
}

/// The five client ops (keep-alive, end process, acquire, extend,
/// release) over [`KEYS`] and [`PROCESSES`], bare.
pub fn arb_client_op() -> impl Strategy<Value = Op> {
    let key = prop::sample::select(KEYS.to_vec()).prop_map(str::to_string);
    let proc_ = prop::sample::select(PROCESSES.to_vec()).prop_map(str::to_string);
    let ttl = prop_oneof![Just(100u64), Just(1_000), Just(5_000)];
    prop_oneof![
        (proc_.clone(), ttl.clone()).prop_map(|(p, t)| Op::Keepalive {
            process_hash: p,
            ttl_ms: t,
            info: None
        }),
        proc_.prop_map(|p| Op::EndProcess { process_hash: p }),
        (key.clone(), 0u8..4, any::<bool>(), ttl.clone()).prop_map(|(k, o, bound, t)| {
            let owner_hash = owner(&k, o);
            Op::Acquire {
                key: k,
                owner_hash,
                process_hash: bound.then(|| PROCESSES[(o % 2) as usize].to_string()),
                trace: None,
                ttl_ms: t,
            }
        }),
        (key.clone(), 0u8..4, ttl).prop_map(|(k, o, t)| Op::Extend {
            owner_hash: owner(&k, o),
            key: k,
            ttl_ms: t
        }),
        (key, 0u8..4).prop_map(|(k, o)| Op::Release {
            owner_hash: owner(&k, o),
            key: k
        }),
    ]
}

/// What `store::open` returns.
pub type Opened = (
    store::LogStore,
    store::StateMachine,
    store::SharedReplica,
    store::Flusher,
);

/// `store::open`, once the test's own `Db` has let go of the directory:
/// sled releases its file lock from a background thread a moment after the
/// last handle is dropped, so an open right after failed now and then
/// (about 1 run in 30) with "could not acquire lock". Any other error is
/// returned at once.
pub fn open_store(dir: &Path) -> std::io::Result<Opened> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match store::open(dir, 8 << 20) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
