//! A late copy of an acquire must never grant a run that has ended.
//!
//! Found by the fault suite (member, loss and clock faults on 3 nodes): a
//! client's acquire timed out on one node, the retry on another node was
//! granted, the owner released the lock, and then the first copy, still on
//! its way, reached the leader and granted the key again to that finished
//! owner: a holder for nobody until the ttl ran out, and to the checker an
//! acknowledged acquire applied twice.
//!
//! Here the copy is held back deterministically: its bytes are written to a
//! follower frozen with SIGSTOP (they wait in the kernel's socket buffer,
//! as they would behind a slow network or in a stalled node), the same
//! owner acquires and releases through another node, and only then is the
//! follower resumed. The late copy must be refused with
//! `409 OWNER_HASH_RETIRED` and the key must stay free.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use locker_tests::{api, enc, eventually, Cluster};
use serde_json::{json, Value};

/// Sends an acquire over a raw connection without reading the answer yet.
fn send_acquire(base: &str, key: &str, body: &Value) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to the frozen node");
    let body = body.to_string();
    let req = format!(
        "POST /v1/locks/{}/acquire HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        enc(key),
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write the request");
    s
}

/// Reads a whole `Connection: close` answer: (status, JSON body).
fn read_answer(mut s: TcpStream) -> (u16, Value) {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Freezes a follower with a copy of an acquire for `owner` in its socket,
/// runs `meanwhile` (which ends that run through the leader), resumes the
/// follower and returns the late copy's answer.
fn with_late_copy(
    c: &mut Cluster,
    key: &str,
    body: &Value,
    meanwhile: impl FnOnce(&str),
) -> (u16, Value) {
    let leader = c.wait_ready(Duration::from_secs(30));
    let follower = c.followers()[0];
    let (lurl, furl) = (c.url(leader), c.url(follower));
    c.node_mut(follower).pause();
    let late = send_acquire(&furl, key, body);
    meanwhile(&lurl);
    c.node_mut(follower).resume();
    read_answer(late)
}

#[test]
fn a_late_copy_of_an_acquire_never_regrants_a_released_key() {
    let mut c = Cluster::start(3);
    let key = "late/released";
    let owner = format!("{key}@client/7.1.1");
    let body = json!({"owner_hash": owner, "ttl_ms": 60_000});
    let (code, answer) = with_late_copy(&mut c, key, &body, |lurl| {
        // The retry, elsewhere, is granted; the owner finishes its run.
        let a = api::acquire(lurl, key, body.clone());
        assert_eq!(a.code, 200, "retry granted: {:?}", a.body);
        let r = api::release(lurl, key, &owner);
        assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    });
    assert_eq!(code, 409, "late copy answered {answer}");
    assert_eq!(answer["error"]["code"], "OWNER_HASH_RETIRED");
    let leader = c.wait_ready(Duration::from_secs(30));
    let read = api::read(&c.url(leader), key);
    assert_eq!(
        read.body["locked"], false,
        "the released key was granted again to its finished owner: {:?}",
        read.body
    );
    // A new run of the same process takes the key as usual.
    let next = format!("{key}@client/7.1.2");
    let a = api::acquire(&c.url(leader), key, json!({"owner_hash": next}));
    assert_eq!(a.code, 200, "{:?}", a.body);
    c.assert_replicas_agree(Duration::from_secs(30));
}

#[test]
fn a_late_copy_of_an_acquire_never_revives_an_expired_run() {
    let mut c = Cluster::start(3);
    let key = "late/expired";
    let owner = format!("{key}@client/8.1.5");
    let body = json!({"owner_hash": owner, "ttl_ms": 1_000});
    let (code, answer) = with_late_copy(&mut c, key, &body, |lurl| {
        let a = api::acquire(lurl, key, body.clone());
        assert_eq!(a.code, 200, "{:?}", a.body);
        // The run ends by its ttl: the owner stopped extending.
        eventually(Duration::from_secs(10), "the lock to expire", || {
            (api::read(lurl, key).body["locked"] == false).then_some(())
        });
    });
    assert_eq!(code, 409, "late copy answered {answer}");
    assert_eq!(answer["error"]["code"], "OWNER_HASH_RETIRED");
    let leader = c.wait_ready(Duration::from_secs(30));
    assert_eq!(api::read(&c.url(leader), key).body["locked"], false);
    c.assert_replicas_agree(Duration::from_secs(30));
}

#[test]
fn a_release_fences_an_acquire_still_on_its_way() {
    // The owner gave up on an acquire whose outcome it never learned and
    // released to be safe: the acquire, arriving afterwards, must not grant.
    let mut c = Cluster::start(3);
    let key = "late/never-granted";
    let owner = format!("{key}@client/9.1.3");
    let body = json!({"owner_hash": owner, "ttl_ms": 60_000});
    let (code, answer) = with_late_copy(&mut c, key, &body, |lurl| {
        let r = api::release(lurl, key, &owner);
        assert_eq!(r.status(), "NO_KEY", "{:?}", r.body);
    });
    assert_eq!(code, 409, "late copy answered {answer}");
    assert_eq!(answer["error"]["code"], "OWNER_HASH_RETIRED");
    let leader = c.wait_ready(Duration::from_secs(30));
    assert_eq!(api::read(&c.url(leader), key).body["locked"], false);
}
