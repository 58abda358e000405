//! A leader change while batched rounds are in flight (`Op::Batch`, the
//! leader's proposer): every caller gets the truth or "unknown".
//!
//! Many clients write to a 3-node cluster, so the leader batches their ops.
//! Then both followers refuse every append (fault point
//! `network::append::refuse`) and the leader keeps proposing: those rounds
//! are appended to its log only and can never commit. The leader is frozen
//! (SIGSTOP) once its log is longer than both followers' own (read from
//! them, after the freeze), the followers stop refusing and elect a new
//! leader without those entries, and the old leader resumes and finds its
//! log overwritten. Whether a client op was in those entries depends on
//! how the machine schedules the rounds, so the cut is repeated (a bounded
//! number of times, the new leader cut in turn) until some caller was
//! answered "unknown".
//!
//! Each answer is then checked against the table the new leader reads back:
//! a success is in it (the owner holds the key with the answered token, or
//! the test released it), a definite refusal changed nothing, `NO_LEADER`
//! did nothing, and only `TIMEOUT` (or no answer) may go either way. Tokens
//! are log indexes of this run, never shared, and rise along each client's
//! ops in the order it made them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use locker_proto::{ClusterAnswer, ListAnswer, Lock};
use locker_tests::{api, crash, eventually, Answer, Cluster};
use serde_json::json;

const CLIENTS: usize = 48;
const PREFIX: &str = "bf/";
const REFUSE: &str = "network::append::refuse";
const OPS: &str = "locker_proposed_client_ops_total";
const ENTRIES: &str = "locker_proposed_client_entries_total";
/// At most this many leader changes until a client op is caught in flight.
const ROUNDS: usize = 4;
/// How long a caught op's caller may wait for its answer once the old
/// leader woke: past the write timeout the cluster is started with.
const ANSWERED_WITHIN: Duration = Duration::from_secs(30);

/// How the cluster answered one write.
#[derive(Debug, Clone, PartialEq)]
enum Said {
    /// 200 `SUCCESS`, with an acquire's fencing token.
    Done(Option<u64>),
    /// 503 `NO_LEADER`: nothing was done (its message).
    NotDone(String),
    /// 503 `TIMEOUT`, or no answer: it may or may not have been applied.
    Unknown,
    /// Any other answer: a definite refusal.
    Refused(String),
}

fn said(a: &Answer) -> Said {
    match (a.code, a.status(), a.error_code()) {
        (200, "SUCCESS", _) => Said::Done(a.lock().map(|l| l.fencing_token)),
        (503, _, "NO_LEADER") => Said::NotDone(a.body["error"]["message"].to_string()),
        (503, _, "TIMEOUT") | (0, _, _) => Said::Unknown,
        _ => Said::Refused(format!("{} {}", a.code, a.body)),
    }
}

/// One key's ops, made by one client in this order: `owner` acquires it;
/// once granted, a rival may try it too (it must be refused) and `owner`
/// may release it.
#[derive(Debug)]
struct Run {
    key: String,
    owner: String,
    acquire: Said,
    rival: Option<Said>,
    release: Option<Said>,
}

/// Client `i`: fresh keys until `stop`, through node `url`; every op sent
/// once (a retry would blur what the first answer meant). Each answer
/// "unknown" is counted in `unknown` as it comes.
fn client(i: usize, url: String, stop: Arc<AtomicBool>, unknown: Arc<AtomicUsize>) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut n = 0usize;
    let said = |a: &Answer| {
        let s = said(a);
        if s == Said::Unknown {
            unknown.fetch_add(1, Ordering::Relaxed);
        }
        s
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{PREFIX}{i}/{n}");
        let owner = format!("{key}@h/{i}.1.1");
        let body = |o: &str| json!({"owner_hash": o, "ttl_ms": 600_000});
        let acquire = said(&api::acquire(&url, &key, body(&owner)));
        let granted = matches!(acquire, Said::Done(_));
        let rival = (granted && n.is_multiple_of(3)).then(|| {
            let rival = format!("{key}@h/{i}.2.1");
            said(&api::acquire(&url, &key, body(&rival)))
        });
        let release =
            (granted && !n.is_multiple_of(2)).then(|| said(&api::release(&url, &key, &owner)));
        runs.push(Run {
            key,
            owner,
            acquire,
            rival,
            release,
        });
    }
    runs
}

/// What the table must show for `run`'s key, given its answers; `Err` names
/// an answer that no table could explain.
fn check(run: &Run, held: Option<&Lock>) -> Result<(), String> {
    let holder = held.map(|l| (l.owner_hash.as_str(), l.fencing_token));
    let mine = holder.is_some_and(|(o, _)| o == run.owner);
    if holder.is_some() && !mine {
        return Err(format!("held by an owner never granted it: {holder:?}"));
    }
    match &run.acquire {
        Said::Done(Some(t)) => check_granted(run, *t, holder),
        Said::Unknown => Ok(()),
        Said::NotDone(_) if holder.is_none() => Ok(()),
        other => Err(format!("acquire answered {other:?}, table {holder:?}")),
    }
}

/// [`check`] for a key granted to its owner with token `t`.
fn check_granted(run: &Run, t: u64, holder: Option<(&str, u64)>) -> Result<(), String> {
    match &run.rival {
        None | Some(Said::NotDone(_) | Said::Unknown) => {}
        Some(Said::Refused(why)) if why.contains("SOMEONE_ELSE_HOLDS_LOCK") => {}
        Some(other) => return Err(format!("a rival of a held key was answered {other:?}")),
    }
    let still = holder == Some((run.owner.as_str(), t));
    let ok = match &run.release {
        None | Some(Said::NotDone(_)) => still,
        Some(Said::Done(_)) => holder.is_none(),
        Some(Said::Unknown) => still || holder.is_none(),
        Some(Said::Refused(_)) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "granted token {t}, release {:?}, table {holder:?}",
            run.release
        ))
    }
}

/// The token of `run`'s grant if it was applied: answered, or found in the
/// table for an acquire whose answer was unknown.
fn applied_token(run: &Run, held: Option<&Lock>) -> Option<u64> {
    match run.acquire {
        Said::Done(t) => t,
        Said::Unknown => held.map(|l| l.fencing_token),
        _ => None,
    }
}

/// Every run against the table; tokens above `first_index` (log indexes of
/// this run), never shared, rising along each client's runs.
fn check_all(clients: &[Vec<Run>], table: &BTreeMap<String, Lock>, first_index: u64) {
    let mut wrong = Vec::new();
    let mut tokens = HashSet::new();
    let mut keys = HashSet::new();
    for (i, runs) in clients.iter().enumerate() {
        let mut last = first_index;
        for run in runs {
            keys.insert(run.key.as_str());
            let held = table.get(&run.key);
            if let Err(e) = check(run, held) {
                wrong.push(format!("{}: {e}", run.key));
            }
            let Some(t) = applied_token(run, held) else {
                continue;
            };
            if t <= last || !tokens.insert(t) {
                wrong.push(format!("{}: token {t} after {last} (client {i})", run.key));
            }
            last = t;
        }
    }
    let strays: Vec<&String> = table
        .keys()
        .filter(|k| !keys.contains(k.as_str()))
        .collect();
    assert!(strays.is_empty(), "locks nobody asked for: {strays:?}");
    assert!(
        wrong.is_empty(),
        "answers the table contradicts: {wrong:#?}"
    );
}

fn cluster_view(url: &str) -> Option<ClusterAnswer> {
    api::cluster(url).try_json()
}

/// Node `via`'s leader once it is not `old` and serves reads.
fn new_leader(c: &Cluster, via: u64, old: u64) -> u64 {
    eventually(Duration::from_secs(30), "a new leader", || {
        let id = cluster_view(&c.url(via))?
            .leader_id
            .filter(|id| *id != old)?;
        (api::read(&c.url(id), "__probe").code == 200).then_some(id)
    })
}

/// A node's own last log index.
fn last_log_index(c: &Cluster, id: u64) -> Option<u64> {
    cluster_view(&c.url(id))?.last_log_index
}

/// The followers' own last log index, the highest of them, once two reads
/// agree: with `REFUSE` armed and the leader frozen, nothing but an append
/// already past the fault point can still lengthen their logs.
fn followers_last(c: &Cluster, followers: &[u64]) -> u64 {
    let read = || -> Option<u64> {
        let all: Option<Vec<u64>> = followers.iter().map(|f| last_log_index(c, *f)).collect();
        all?.into_iter().max()
    };
    let mut before = None;
    eventually(
        Duration::from_secs(10),
        "the followers' logs to stop",
        || {
            let now = read()?;
            if before == Some(now) {
                return Some(now);
            }
            before = Some(now);
            thread::sleep(Duration::from_millis(100));
            None
        },
    )
}

/// Makes both `followers` refuse appends until leader `old`'s log holds
/// entries neither follower holds (its last index, read before freezing
/// it, past theirs, read from them after), frozen; then lets the followers
/// elect a leader of their own, which is returned with the number of
/// those entries (at least: `old` may have appended more before the
/// freeze). They can never commit: the new leader overwrites them.
fn change_leader_with_entries_stuck(c: &mut Cluster, old: u64, followers: &[u64]) -> (u64, u64) {
    for f in followers {
        let a = crash::arm(c.node(*f), REFUSE, "return");
        assert_eq!(a.code, 200, "arm {REFUSE}: {:?}", a.body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let stuck = loop {
        let leader_last = last_log_index(c, old);
        c.node_mut(old).pause();
        let theirs = followers_last(c, followers);
        if let Some(stuck) = leader_last
            .map(|l| l.saturating_sub(theirs))
            .filter(|s| *s > 0)
        {
            break stuck;
        }
        // Everything it had reached them: let it propose more.
        c.node_mut(old).resume();
        assert!(
            Instant::now() < deadline,
            "leader {old} never held an entry its followers lacked"
        );
        thread::sleep(Duration::from_millis(100));
    };
    for f in followers {
        let a = crash::arm(c.node(*f), REFUSE, "off");
        assert_eq!(a.code, 200, "disarm {REFUSE}: {:?}", a.body);
    }
    (new_leader(c, followers[0], old), stuck)
}

/// Waits up to `within` for `unknown` to rise above `before`.
fn rose(unknown: &AtomicUsize, before: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if unknown.load(Ordering::Relaxed) > before {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The live locks under [`PREFIX`] by key, read through `leader`.
fn read_table(c: &Cluster, leader: u64) -> BTreeMap<String, Lock> {
    let list = api::locks(&c.url(leader), PREFIX, 10_000);
    assert_eq!(list.code, 200, "{:?}", list.body);
    let locks = list.json::<ListAnswer>().locks;
    locks.into_iter().map(|l| (l.key.clone(), l)).collect()
}

fn unknown_answers(clients: &[Vec<Run>]) -> usize {
    let runs = clients.iter().flatten();
    let answers = runs.flat_map(|r| [Some(&r.acquire), r.rival.as_ref(), r.release.as_ref()]);
    answers.flatten().filter(|s| **s == Said::Unknown).count()
}

#[test]
fn a_leader_change_with_rounds_in_flight_answers_each_op_truly_or_unknown() {
    // Followers refusing appends hear no heartbeat either: a long election
    // timeout keeps them from electing a leader before the test freezes
    // the one that holds the stuck entries. A write timeout longer than
    // the freeze makes their callers wait for what the old leader learns
    // when it wakes (its log overwritten), not for a timer.
    let flags = [
        "--election-timeout-ms",
        "3000",
        "--write-timeout-ms",
        "20000",
    ];
    let mut c = Cluster::start_with(3, &flags);
    let old = c.wait_ready(Duration::from_secs(30));
    let followers: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let first_index = cluster_view(&c.url(old))
        .and_then(|v| v.last_applied_index)
        .expect("an applied index");

    let stop = Arc::new(AtomicBool::new(false));
    let unknown_seen = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, stop) = (c.url(1 + (i % 3) as u64), stop.clone());
            let unknown = unknown_seen.clone();
            thread::spawn(move || client(i, url, stop, unknown))
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let mut cuts = Vec::new();
    let mut old = old;
    let mut followers = followers;
    for _ in 0..ROUNDS {
        let before = unknown_seen.load(Ordering::Relaxed);
        let (new, stuck) = change_leader_with_entries_stuck(&mut c, old, &followers);
        cuts.push((old, stuck, new));
        // Clients of the new leader work on; then the old one wakes to
        // find its stuck entries overwritten, and answers their callers
        // (within the write timeout, whatever the machine's load).
        thread::sleep(Duration::from_millis(1000));
        c.node_mut(old).resume();
        let caught = rose(&unknown_seen, before, ANSWERED_WITHIN);
        if caught {
            break;
        }
        // The next cut is of whoever leads now, as the old leader sees it.
        let now = new_leader(&c, old, old);
        followers = (1..=3).filter(|id| *id != now).collect();
        old = now;
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let clients: Vec<Vec<Run>> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();

    let leader = c.wait_ready(Duration::from_secs(30));
    check_all(&clients, &read_table(&c, leader), first_index);
    let unknown = unknown_answers(&clients);
    eprintln!("{unknown} answers unknown; cuts (old leader, entries stuck, new leader): {cuts:?}");
    assert!(
        unknown > 0,
        "no op was caught in flight in {} cuts",
        cuts.len()
    );
    let (ops, entries) = (c.metric_sum(OPS), c.metric_sum(ENTRIES));
    assert!(
        ops > entries,
        "{ops} ops in {entries} entries: nothing batched"
    );
    c.assert_replicas_agree(Duration::from_secs(20));
}
