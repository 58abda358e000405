//! Checker 1: the history of each key must be linearizable with respect to a
//! sequential, owner-aware, fenced mutex.
//!
//! The model state per key is the holder (owner and fencing token) and the
//! highest token granted so far. Leases make the model nondeterministic: a
//! lock may vanish at any moment (its ttl ran out, its process died) without
//! any client operation, so before every operation the model may also drop
//! the holder. What remains checkable is still a lot: a refusal or read must
//! name the real current holder and token, an extend/release may only succeed
//! for the current holder (so an old owner extending after a new grant is
//! caught), a new grant must carry a token above every earlier grant, and a
//! re-acquire must return the same token.
//!
//! The search is Wing & Gong's with Lowe's memoization (as in Knossos and
//! Porcupine): a doubly linked list of call/return entries, a stack for
//! backtracking and a cache of (linearized set, model state) configurations.
//! The model is made deterministic by stepping sets of states (the powerset
//! construction). Histories are split per key, which is sound because keys are
//! independent in the model. Operations with unknown outcome (`info`) may take
//! effect at any point after their invocation or never; only acquires matter
//! (an unknown extend, release or read is indistinguishable from the
//! nondeterministic expiry), and only those whose owner is observed somewhere,
//! since an unobserved grant can always be expired before anyone notices.

use super::{describe, CheckOptions, Validity, Verdict};
use crate::history::{OpType, Pair};
use locker_proto::LockOpStatus;
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Tok {
    Known(u64),
    /// Granted by an operation whose answer we never saw: some token above
    /// this floor.
    Above(u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct State {
    holder: Option<(u32, Tok)>,
    floor: u64,
}

type StateSet = Vec<State>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Acquire,
    Extend,
    Release,
    Read,
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok { token: Option<u64> },
    Held { holder: u32, token: Option<u64> },
    Free,
    Info,
}

#[derive(Clone, Debug)]
struct MOp {
    kind: Kind,
    owner: u32,
    outcome: Outcome,
    invoke: u64,
    complete: u64,
    pair: usize,
}

const NO_OWNER: u32 = u32::MAX;

#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(s.to_string(), i);
        self.names.push(s.to_string());
        i
    }
    fn name(&self, i: u32) -> &str {
        self.names
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }
}

/// Turns one history pair into a model operation, or `None` when it carries
/// no information (certain failure without a server status, a read without
/// a holder, an unknown extend/release/read).
fn to_mop(p: &Pair, idx: usize, names: &mut Interner) -> Option<MOp> {
    let kind = match p.f.as_str() {
        "acquire" => Kind::Acquire,
        "extend" => Kind::Extend,
        "release" => Kind::Release,
        "read" => Kind::Read,
        _ => return None,
    };
    let owner = match (kind, p.owner()) {
        (Kind::Read, _) => NO_OWNER,
        (_, Some(o)) => names.id(o),
        // Without our own owner hash nothing can be said about the op.
        (_, None) => return None,
    };
    let held = |names: &mut Interner| {
        p.res.holder.as_deref().map(|h| Outcome::Held {
            holder: names.id(h),
            token: p.res.holder_token,
        })
    };
    let outcome = match p.kind {
        OpType::Ok if kind == Kind::Read => match p.res.locked {
            Some(true) => held(names)?,
            Some(false) => Outcome::Free,
            None => return None,
        },
        OpType::Ok => Outcome::Ok { token: p.res.token },
        OpType::Fail => match p.res.lock_status() {
            Some(LockOpStatus::SomeoneElseHoldsLock) => held(names)?,
            Some(LockOpStatus::NoKey) => Outcome::Free,
            // NO_RUNNING_PROCESS, 503s, connection refused: no effect and
            // nothing observed about the holder.
            _ => return None,
        },
        OpType::Info if kind == Kind::Acquire => Outcome::Info,
        _ => return None,
    };
    Some(MOp {
        kind,
        owner,
        outcome,
        invoke: p.invoke_ns,
        complete: if matches!(outcome, Outcome::Info) {
            u64::MAX
        } else {
            p.complete_ns
        },
        pair: idx,
    })
}

/// Matches an observed token against the model's, pinning an unknown one.
fn tok_match(t: Tok, observed: Option<u64>, floor: u64) -> Option<(Tok, u64)> {
    match (t, observed) {
        (_, None) => Some((t, floor)),
        (Tok::Known(x), Some(o)) => (x == o).then_some((t, floor)),
        (Tok::Above(m), Some(o)) => (o > m).then_some((Tok::Known(o), floor.max(o))),
    }
}

fn step_one(s: State, op: &MOp, out: &mut Vec<State>) {
    // The lock may have expired (or its process died) just before the op.
    let mut cands = [Some(s), None];
    if s.holder.is_some() {
        cands[1] = Some(State { holder: None, ..s });
    }
    for c in cands.into_iter().flatten() {
        step_from(c, op, out);
    }
}

/// The same grant goes on, its token matched against `observed`.
fn same_grant(h: u32, t: Tok, observed: Option<u64>, floor: u64, out: &mut Vec<State>) {
    if let Some((t2, fl)) = tok_match(t, observed, floor) {
        out.push(State {
            holder: Some((h, t2)),
            floor: fl,
        });
    }
}

/// The states `op` can lead to from candidate state `c`.
fn step_from(c: State, op: &MOp, out: &mut Vec<State>) {
    match (op.kind, op.outcome) {
        (_, Outcome::Held { holder, token }) => {
            // The server told us someone *else* holds it.
            if let Some((h, t)) = c.holder {
                if h == holder && h != op.owner {
                    same_grant(h, t, token, c.floor, out);
                }
            }
        }
        (_, Outcome::Free) if c.holder.is_none() => out.push(c),
        (_, Outcome::Free) => {}
        (Kind::Acquire, Outcome::Ok { token }) => acquired(c, op.owner, token, out),
        (Kind::Acquire, Outcome::Info) => {
            out.push(c);
            if c.holder.is_none() {
                out.push(State {
                    holder: Some((op.owner, Tok::Above(c.floor))),
                    floor: c.floor,
                });
            }
        }
        (Kind::Extend, Outcome::Ok { token }) => {
            if let Some((h, t)) = c.holder {
                if h == op.owner {
                    same_grant(h, t, token, c.floor, out);
                }
            }
        }
        (Kind::Release, Outcome::Ok { .. }) => {
            if matches!(c.holder, Some((h, _)) if h == op.owner) {
                out.push(State {
                    holder: None,
                    floor: c.floor,
                });
            }
        }
        // A read cannot "succeed" other than Held/Free; other combinations
        // are never built by `to_mop`.
        _ => {}
    }
}

/// A successful acquire by `owner` from state `c`.
fn acquired(c: State, owner: u32, token: Option<u64>, out: &mut Vec<State>) {
    match c.holder {
        // Re-acquire by the same owner: same grant, same token.
        Some((h, t)) if h == owner => same_grant(h, t, token, c.floor, out),
        Some(_) => {}
        None => match token {
            Some(x) if x > c.floor => out.push(State {
                holder: Some((owner, Tok::Known(x))),
                floor: x,
            }),
            Some(_) => {}
            None => out.push(State {
                holder: Some((owner, Tok::Above(c.floor))),
                floor: c.floor,
            }),
        },
    }
}

fn step_set(set: &StateSet, op: &MOp) -> Option<StateSet> {
    let mut out = Vec::with_capacity(set.len() * 2);
    for s in set {
        step_one(*s, op, &mut out);
    }
    if out.is_empty() {
        return None;
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A 128-bit fingerprint of a configuration; storing fingerprints instead of
/// whole bitsets keeps the cache small (collision odds are negligible).
fn fingerprint(bits: &[u64], set: &StateSet) -> u128 {
    let mut a = DefaultHasher::new();
    0x5eed_u64.hash(&mut a);
    bits.hash(&mut a);
    set.hash(&mut a);
    let mut b = DefaultHasher::new();
    0xfeed_beef_u64.hash(&mut b);
    set.hash(&mut b);
    bits.hash(&mut b);
    ((a.finish() as u128) << 64) | b.finish() as u128
}

enum Search {
    Ok,
    Fail {
        stuck: usize,
        depth: usize,
        linearized_tail: Vec<usize>,
        states: StateSet,
    },
    TooLarge {
        explored: usize,
    },
}

const NIL: usize = usize::MAX;

/// The entries of a history, (time, is_return, op), in a doubly linked
/// list from which linearized operations are unlinked (and relinked on
/// backtracking).
struct Entries {
    entries: Vec<(u64, bool, usize)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The entry of each op's return.
    ret_of: Vec<usize>,
    head: usize,
}

impl Entries {
    fn new(ops: &[MOp]) -> Entries {
        let n = ops.len();
        // Calls sort before returns at equal times, treating touching
        // operations as concurrent (more permissive).
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, o) in ops.iter().enumerate() {
            entries.push((o.invoke, false, i));
            entries.push((o.complete, true, i));
        }
        entries.sort();
        let m = entries.len();
        let head = m;
        let mut next = vec![NIL; m + 1];
        let mut prev = vec![NIL; m + 1];
        let mut ret_of = vec![NIL; n];
        for (idx, e) in entries.iter().enumerate() {
            if e.1 {
                ret_of[e.2] = idx;
            }
        }
        let mut last = head;
        // Chain head -> 0 -> 1 -> ... -> m-1.
        for (idx, p) in prev.iter_mut().enumerate().take(m) {
            next[last] = idx;
            *p = last;
            last = idx;
        }
        Entries {
            entries,
            next,
            prev,
            ret_of,
            head,
        }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, x: usize) {
        let (p, q) = (self.prev[x], self.next[x]);
        self.next[p] = q;
        if q != NIL {
            self.prev[q] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, q) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if q != NIL {
            self.prev[q] = x;
        }
    }
}

/// The deepest point a failed search reached: (depth, stuck op, the last
/// ops linearized, the states there).
type Deepest = (usize, usize, Vec<usize>, StateSet);

fn search(ops: &[MOp], budget: usize) -> Search {
    let n = ops.len();
    if n == 0 {
        return Search::Ok;
    }
    let mut l = Entries::new(ops);
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut state: StateSet = vec![State {
        holder: None,
        floor: 0,
    }];
    let mut stack: Vec<(usize, StateSet)> = Vec::new();
    let mut cache: HashSet<u128> = HashSet::new();
    let mut entry = l.first();
    let mut explored = 0usize;
    let mut best: Option<Deepest> = None;
    while l.first() != NIL {
        explored += 1;
        if explored > budget {
            return Search::TooLarge { explored };
        }
        if entry == NIL {
            // Only reachable if the list holds calls without returns, which
            // the construction excludes; treat as stuck rather than loop.
            break;
        }
        let (_, is_ret, op) = l.entries[entry];
        if !is_ret {
            if let Some(ns) = step_set(&state, &ops[op]) {
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert(fingerprint(&bits, &ns)) {
                    let old = std::mem::replace(&mut state, ns);
                    stack.push((entry, old));
                    l.unlink(entry);
                    l.unlink(l.ret_of[op]);
                    entry = l.first();
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
            }
            entry = l.next[entry];
        } else {
            // We reached the return of an op not yet linearized: backtrack.
            if best.as_ref().is_none_or(|b| stack.len() >= b.0) {
                let tail = stack
                    .iter()
                    .rev()
                    .take(6)
                    .map(|(e, _)| l.entries[*e].2)
                    .collect();
                best = Some((stack.len(), op, tail, state.clone()));
            }
            let Some((call, old)) = stack.pop() else {
                break;
            };
            let cop = l.entries[call].2;
            state = old;
            bits[cop / 64] &= !(1 << (cop % 64));
            l.relink(l.ret_of[cop]);
            l.relink(call);
            entry = l.next[call];
        }
    }
    if l.first() == NIL {
        return Search::Ok;
    }
    failed(best, state)
}

fn failed(best: Option<Deepest>, state: StateSet) -> Search {
    match best {
        Some((depth, stuck, linearized_tail, states)) => Search::Fail {
            stuck,
            depth,
            linearized_tail,
            states,
        },
        None => Search::Fail {
            stuck: 0,
            depth: 0,
            linearized_tail: Vec::new(),
            states: state,
        },
    }
}

fn show_states(states: &StateSet, names: &Interner) -> Value {
    Value::Array(
        states
            .iter()
            .map(|s| {
                let holder = s.holder.map(|(h, t)| {
                    let tok = match t {
                        Tok::Known(x) => json!(x),
                        Tok::Above(m) => json!(format!(">{m}")),
                    };
                    json!({"owner": names.name(h), "token": tok})
                });
                json!({"holder": holder, "highest_token": s.floor})
            })
            .collect(),
    )
}

pub fn check(pairs: &[Pair], opts: &CheckOptions) -> Verdict {
    let mut names = Interner::default();
    let mut per_key: BTreeMap<String, Vec<MOp>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        let Some(key) = p.key.as_ref() else { continue };
        if let Some(m) = to_mop(p, i, &mut names) {
            per_key.entry(key.clone()).or_default().push(m);
        }
    }
    let mut valid = Validity::Valid;
    let mut keys = serde_json::Map::new();
    let mut failures = Vec::new();
    let mut total = 0usize;
    for (key, mut ops) in per_key {
        // Owners that appear anywhere other than in their own unknown acquire.
        let mut observed: HashSet<u32> = HashSet::new();
        for o in &ops {
            match o.outcome {
                Outcome::Held { holder, .. } => {
                    observed.insert(holder);
                }
                Outcome::Ok { .. } => {
                    observed.insert(o.owner);
                }
                _ => {}
            }
        }
        ops.retain(|o| !matches!(o.outcome, Outcome::Info) || observed.contains(&o.owner));
        total += ops.len();
        let res = search(&ops, opts.max_search_states);
        let v = match res {
            Search::Ok => json!({"valid": true, "ops": ops.len()}),
            Search::TooLarge { explored } => {
                valid = valid.and(Validity::Unknown);
                json!({"valid": "unknown", "ops": ops.len(), "explored": explored,
                       "reason": "search budget exhausted"})
            }
            Search::Fail {
                stuck,
                depth,
                linearized_tail,
                states,
            } => {
                valid = Validity::Invalid;
                let d = json!({
                    "valid": false,
                    "ops": ops.len(),
                    "op_that_cannot_be_linearized": describe(&pairs[ops[stuck].pair]),
                    "linearized_before_it": depth,
                    "last_linearized": linearized_tail.iter().map(|&i| describe(&pairs[ops[i].pair])).collect::<Vec<_>>(),
                    "possible_states_there": show_states(&states, &names),
                });
                failures.push(json!({"key": key, "detail": d.clone()}));
                d
            }
        };
        keys.insert(key, v);
    }
    let summary = match valid {
        Validity::Valid => format!("{} keys, {} ops linearizable", keys.len(), total),
        Validity::Invalid => format!("{} of {} keys not linearizable", failures.len(), keys.len()),
        Validity::Unknown => "search too large for some keys".to_string(),
    };
    Verdict {
        checker: "linearizable-mutex".into(),
        valid,
        summary,
        details: json!({"keys": keys, "failures": failures}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::H;
    use crate::history::pair;
    use serde_json::json;

    fn run(h: &H) -> Verdict {
        check(&pair(&h.build()), &CheckOptions::default())
    }

    fn acq(h: &mut H, p: u64, owner: &str, tok: u64, t0: u64, t1: u64) {
        h.inv(
            p,
            "acquire",
            "k",
            json!({"owner": owner, "ttl_ms": 1000}),
            t0,
        )
        .ok(p, "acquire", "k", json!({"owner": owner, "token": tok}), t1);
    }

    fn valid_history() -> H {
        let mut h = H::new();
        acq(&mut h, 1, "a", 5, 0, 2);
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 1).fail(
            2,
            "acquire",
            "k",
            json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"a","holder_token":5}),
            3,
        );
        h.inv(1, "extend", "k", json!({"owner":"a"}), 4).ok(
            1,
            "extend",
            "k",
            json!({"token":5}),
            5,
        );
        h.inv(3, "read", "k", json!({}), 4).ok(
            3,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":5}),
            6,
        );
        // Release concurrent with b's acquire: either order must be found.
        h.inv(1, "release", "k", json!({"owner":"a"}), 7)
            .ok(1, "release", "k", json!({}), 10);
        acq(&mut h, 2, "b", 9, 8, 11);
        h.inv(3, "read", "k", json!({}), 12).ok(
            3,
            "read",
            "k",
            json!({"locked":true,"holder":"b","holder_token":9}),
            13,
        );
        // Expiry: b's lock silently vanished, then c gets a higher token.
        h.inv(3, "read", "k", json!({}), 20)
            .ok(3, "read", "k", json!({"locked":false}), 21);
        acq(&mut h, 4, "c", 12, 22, 23);
        h.inv(2, "release", "k", json!({"owner":"b"}), 24).fail(
            2,
            "release",
            "k",
            json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"c","holder_token":12}),
            25,
        );
        h
    }

    #[test]
    fn valid_history_passes() {
        let v = run(&valid_history());
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
    }

    #[test]
    fn old_owner_extending_after_new_grant_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "a", 5, 0, 1);
        acq(&mut h, 2, "b", 7, 2, 3);
        // a's extend succeeds after b was granted: two holders.
        h.inv(1, "extend", "k", json!({"owner":"a"}), 4).ok(
            1,
            "extend",
            "k",
            json!({"token":5}),
            5,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
        let stuck = &v.details["failures"][0]["detail"]["op_that_cannot_be_linearized"];
        assert_eq!(stuck["f"], "extend", "{}", v.details);
    }

    #[test]
    fn read_seeing_old_holder_after_new_grant_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "a", 5, 0, 1);
        acq(&mut h, 2, "b", 7, 2, 3);
        h.inv(3, "read", "k", json!({}), 4).ok(
            3,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":5}),
            5,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn token_going_down_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "a", 10, 0, 1);
        h.inv(1, "release", "k", json!({"owner":"a"}), 2)
            .ok(1, "release", "k", json!({}), 3);
        acq(&mut h, 2, "b", 8, 4, 5);
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn reacquire_must_return_same_token() {
        let mut h = H::new();
        acq(&mut h, 1, "a", 10, 0, 1);
        acq(&mut h, 1, "a", 10, 2, 3);
        assert_eq!(run(&h).valid, Validity::Valid);
        let mut h = H::new();
        acq(&mut h, 1, "a", 10, 0, 1);
        h.inv(2, "read", "k", json!({}), 2).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":11}),
            3,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn refusal_naming_a_released_holder_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "a", 5, 0, 1);
        h.inv(1, "release", "k", json!({"owner":"a"}), 2)
            .ok(1, "release", "k", json!({}), 3);
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 4).fail(
            2,
            "acquire",
            "k",
            json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"a","holder_token":5}),
            5,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn unknown_acquire_may_take_effect_later() {
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a"}), 0)
            .info(1, "acquire", "k", json!({}), 5);
        h.inv(2, "read", "k", json!({}), 10).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":3}),
            11,
        );
        assert_eq!(run(&h).valid, Validity::Valid);
        // Without the unknown acquire, a holder appears from nowhere.
        let mut h = H::new();
        h.inv(2, "read", "k", json!({}), 10).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":3}),
            11,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn no_leader_refusal_is_a_definite_failure() {
        // A 503 NO_LEADER is recorded as `fail` without a lock status: the
        // acquire certainly did not happen, so a holder named `a` later is a
        // holder from nowhere (as `info` it would be allowed).
        let no_leader = || json!({"http":503,"error":"NO_LEADER"});
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a"}), 0)
            .fail(1, "acquire", "k", no_leader(), 5);
        h.inv(2, "read", "k", json!({}), 10).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":3}),
            11,
        );
        assert_eq!(run(&h).valid, Validity::Invalid);
        // It also takes nothing away: a grant to someone else right after
        // is fine, and so is a refused release by the same owner.
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a"}), 0)
            .fail(1, "acquire", "k", no_leader(), 5);
        h.inv(1, "release", "k", json!({"owner":"a"}), 6)
            .fail(1, "release", "k", no_leader(), 7);
        acq(&mut h, 2, "b", 4, 8, 9);
        h.inv(3, "read", "k", json!({}), 10).ok(
            3,
            "read",
            "k",
            json!({"locked":true,"holder":"b","holder_token":4}),
            11,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
    }

    #[test]
    fn keys_are_independent() {
        let mut h = valid_history();
        // Same owner names and lower tokens on another key are fine.
        h.inv(9, "acquire", "other", json!({"owner":"a"}), 30).ok(
            9,
            "acquire",
            "other",
            json!({"owner":"a","token":1}),
            31,
        );
        assert_eq!(run(&h).valid, Validity::Valid);
    }

    #[test]
    fn search_budget_gives_unknown() {
        let h = valid_history();
        let opts = CheckOptions {
            max_search_states: 3,
            ..CheckOptions::default()
        };
        let v = check(&pair(&h.build()), &opts);
        assert_eq!(v.valid, Validity::Unknown);
    }

    #[test]
    fn many_concurrent_refusals_stay_tractable() {
        // 40 overlapping refused acquires around one long-held lock.
        let mut h = H::new();
        acq(&mut h, 0, "a", 5, 0, 1);
        for p in 1..=40u64 {
            h.inv(
                p,
                "acquire",
                "k",
                json!({"owner": format!("o{p}")}),
                2 + p % 3,
            );
            h.fail(
                p,
                "acquire",
                "k",
                json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"a","holder_token":5}),
                50 + p % 5,
            );
        }
        let opts = CheckOptions {
            max_search_states: 100_000,
            ..CheckOptions::default()
        };
        assert_eq!(check(&pair(&h.build()), &opts).valid, Validity::Valid);
    }
}
