//! Checker 2: mutual exclusion under leases, judged in real (harness) time.
//!
//! An owner *provably* holds a key from the completion of a successful
//! acquire/extend R until the earliest of
//!
//! * R's invocation + ttl x (1 - drift): the server stamped the lease no
//!   earlier than we sent R, and log time may run at most `drift` fast;
//! * the end of provable liveness of the lock's process, if it has one: a
//!   chain of successful keep-alives, each sent before the previous one's
//!   provable end, each good for process_ttl x (1 - drift) from its send;
//! * the owner sending a release (or ending its process).
//!
//! A violation is any other client operation that ran entirely inside such a
//! window and saw the key held by someone else (a grant, a read, a refusal
//! naming another holder) or free (the lease ended early, so anybody could
//! have taken it).

use super::{describe, CheckOptions, Validity, Verdict};
use crate::history::{OpType, Pair};
use locker_proto::LockOpStatus;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
struct Observation {
    invoke: u64,
    complete: u64,
    /// `None`: the key was seen free.
    holder: Option<String>,
    pair: usize,
}

fn scaled(ms: u64, drift: f64) -> u64 {
    let factor = (1.0 - drift).clamp(0.0, 1.0);
    ((ms as f64) * factor * 1e6) as u64
}

/// What this operation says about who held its key at some instant of its
/// window, if anything.
fn observation(p: &Pair) -> Option<Option<String>> {
    match (p.f.as_str(), p.kind) {
        ("acquire", OpType::Ok) => p.owner().map(|o| Some(o.to_string())),
        ("read", OpType::Ok) => match p.res.locked {
            Some(true) => p.res.holder.clone().map(Some),
            Some(false) => Some(None),
            None => None,
        },
        ("acquire" | "extend" | "release", OpType::Fail) => match p.res.lock_status() {
            Some(LockOpStatus::SomeoneElseHoldsLock) => p.res.holder.clone().map(Some),
            Some(LockOpStatus::NoKey) => Some(None),
            _ => None,
        },
        _ => None,
    }
}

/// Provable process-liveness end starting from time `from`, given keepalives
/// (invoke, complete, ttl) sorted by invoke.
fn process_end(kas: &[(u64, u64, u64)], from: u64, drift: f64) -> u64 {
    // The latest completed keepalive sent at or before `from` starts the chain.
    let mut end = 0u64;
    for &(inv, comp, ttl) in kas {
        if inv <= from && comp != u64::MAX {
            end = end.max(inv.saturating_add(scaled(ttl, drift)));
        }
    }
    if end <= from {
        return from;
    }
    for &(inv, comp, ttl) in kas {
        if inv > from && inv < end && comp != u64::MAX {
            end = end.max(inv.saturating_add(scaled(ttl, drift)));
        }
    }
    end
}

/// Keep-alives (invoke, complete, ttl) sorted by invoke, and "end process"
/// invocations (invoke, complete), per process hash.
#[derive(Default)]
struct Processes {
    keepalives: HashMap<String, Vec<(u64, u64, u64)>>,
    ends: HashMap<String, Vec<(u64, u64)>>,
}

fn processes_of(pairs: &[Pair], opts: &CheckOptions) -> Processes {
    let mut ps = Processes::default();
    for p in pairs {
        let Some(ph) = p.req.process_hash.clone().or_else(|| p.key.clone()) else {
            continue;
        };
        match (p.f.as_str(), p.kind) {
            ("keepalive", OpType::Ok) => ps.keepalives.entry(ph).or_default().push((
                p.invoke_ns,
                p.complete_ns,
                p.req
                    .process_ttl_ms
                    .or(p.req.ttl_ms)
                    .unwrap_or(opts.default_process_ttl_ms),
            )),
            ("end-process", _) if p.kind != OpType::Fail => ps
                .ends
                .entry(ph)
                .or_default()
                .push((p.invoke_ns, p.complete_ns)),
            _ => {}
        }
    }
    for v in ps.keepalives.values_mut() {
        v.sort();
    }
    ps
}

/// Per key: observations sorted by invoke; per (key, owner): releases
/// (invoke, complete) and the process the lock is bound to.
#[derive(Default)]
struct Keys {
    observations: BTreeMap<String, Vec<Observation>>,
    releases: HashMap<(String, String), Vec<(u64, u64)>>,
    owner_process: HashMap<(String, String), String>,
}

fn keys_of(pairs: &[Pair]) -> Keys {
    let mut ks = Keys::default();
    for (i, p) in pairs.iter().enumerate() {
        let Some(key) = p.key.clone() else { continue };
        if !matches!(p.f.as_str(), "acquire" | "extend" | "release" | "read") {
            continue;
        }
        if let Some(h) = observation(p) {
            ks.observations
                .entry(key.clone())
                .or_default()
                .push(Observation {
                    invoke: p.invoke_ns,
                    complete: p.complete_ns,
                    holder: h,
                    pair: i,
                });
        }
        let Some(o) = p.owner() else { continue };
        if p.f == "release" && p.kind != OpType::Fail {
            ks.releases
                .entry((key.clone(), o.to_string()))
                .or_default()
                .push((p.invoke_ns, p.complete_ns));
        }
        if p.f == "acquire" {
            if let Some(ph) = &p.req.process_hash {
                ks.owner_process
                    .insert((key.clone(), o.to_string()), ph.clone());
            }
        }
    }
    for v in ks.observations.values_mut() {
        v.sort_by_key(|o| o.invoke);
    }
    ks
}

/// The end of the window in which `r`'s owner provably holds the key: the
/// lease's scaled ttl, cut by a release or the end of its process.
fn provable_end(
    r: &Pair,
    ko: &(String, String),
    ps: &Processes,
    ks: &Keys,
    opts: &CheckOptions,
) -> u64 {
    let d = opts.drift;
    let ttl = r.ttl_ms().unwrap_or(opts.default_ttl_ms);
    let mut end = r.invoke_ns.saturating_add(scaled(ttl, d));
    // A release or end still pending when R started may take effect after R.
    let cut = |end: u64, list: Option<&Vec<(u64, u64)>>| {
        list.map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|&&(_, comp)| comp > r.invoke_ns)
            .fold(end, |end, &(inv, _)| end.min(inv.max(r.invoke_ns)))
    };
    end = cut(end, ks.releases.get(ko));
    if let Some(ph) = ks.owner_process.get(ko) {
        let k = ps.keepalives.get(ph).map(Vec::as_slice).unwrap_or(&[]);
        end = end.min(process_end(k, r.invoke_ns, d));
        end = cut(end, ps.ends.get(ph));
    }
    end
}

pub fn check(pairs: &[Pair], opts: &CheckOptions) -> Verdict {
    let ps = processes_of(pairs, opts);
    let ks = keys_of(pairs);
    let mut violations = Vec::new();
    let mut windows = 0usize;
    for (i, r) in pairs.iter().enumerate() {
        if !(matches!(r.f.as_str(), "acquire" | "extend") && r.is_ok()) {
            continue;
        }
        let (Some(key), Some(owner)) = (r.key.clone(), r.owner().map(str::to_string)) else {
            continue;
        };
        let ko = (key, owner);
        let end = provable_end(r, &ko, &ps, &ks, opts);
        if end <= r.complete_ns {
            continue;
        }
        windows += 1;
        let Some(list) = ks.observations.get(&ko.0) else {
            continue;
        };
        for o in conflicts(list, r.complete_ns, end, &ko.1) {
            if violations.len() < 50 {
                violations.push(json!({
                    "kind": if o.holder.is_some() { "second-holder" } else { "lease-ended-early" },
                    "key": ko.0,
                    "holder": ko.1,
                    "provable_until_ms": end as f64 / 1e6,
                    "lease_from": describe(&pairs[i]),
                    "conflicting": describe(&pairs[o.pair]),
                }));
            }
        }
    }
    verdict(violations, windows, opts.drift)
}

/// Observations run entirely inside the window [from, end) that saw the
/// key free or held by someone other than `owner`.
fn conflicts<'a>(
    list: &'a [Observation],
    from: u64,
    end: u64,
    owner: &'a str,
) -> impl Iterator<Item = &'a Observation> {
    let start = list.partition_point(|o| o.invoke < from);
    list[start..]
        .iter()
        .take_while(move |o| o.invoke < end)
        .filter(move |o| o.complete < end && o.holder.as_deref() != Some(owner))
}

fn verdict(violations: Vec<serde_json::Value>, windows: usize, d: f64) -> Verdict {
    let valid = if violations.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = if violations.is_empty() {
        format!("{windows} provable lease windows, no conflicting grant or read")
    } else {
        format!(
            "{} operations saw another holder or a free key during a provable lease",
            violations.len()
        )
    };
    Verdict {
        checker: "lease-mutual-exclusion".into(),
        valid,
        summary,
        details: json!({"drift": d, "lease_windows": windows, "violations": violations}),
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

    #[test]
    fn takeover_after_expiry_and_after_release_is_fine() {
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":1000}), 0)
            .ok(1, "acquire", "k", json!({"token":1}), 5);
        // 0 + 1000 * 0.9 = 900: b's grant at 950..960 is after the lease.
        h.inv(2, "acquire", "k", json!({"owner":"b","ttl_ms":1000}), 950)
            .ok(2, "acquire", "k", json!({"token":2}), 960);
        h.inv(2, "release", "k", json!({"owner":"b"}), 970)
            .ok(2, "release", "k", json!({}), 975);
        h.inv(3, "acquire", "k", json!({"owner":"c","ttl_ms":1000}), 971)
            .ok(3, "acquire", "k", json!({"token":3}), 980);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
    }

    #[test]
    fn second_holder_during_lease_is_caught() {
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":1000}), 0)
            .ok(1, "acquire", "k", json!({"token":1}), 5);
        h.inv(1, "extend", "k", json!({"owner":"a","ttl_ms":1000}), 800)
            .ok(1, "extend", "k", json!({"token":1}), 805);
        // Inside the extended lease (800 + 900 = 1700).
        h.inv(2, "acquire", "k", json!({"owner":"b","ttl_ms":1000}), 1500)
            .ok(2, "acquire", "k", json!({"token":2}), 1510);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
        assert_eq!(v.details["violations"][0]["kind"], "second-holder");
    }

    #[test]
    fn early_free_read_is_caught_but_overlapping_read_is_not() {
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":1000}), 0)
            .ok(1, "acquire", "k", json!({"token":1}), 10);
        // Overlaps the acquire: may have been linearized before it.
        h.inv(2, "read", "k", json!({}), 5)
            .ok(2, "read", "k", json!({"locked":false}), 12);
        assert_eq!(run(&h).valid, Validity::Valid);
        h.inv(2, "read", "k", json!({}), 100)
            .ok(2, "read", "k", json!({"locked":false}), 110);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["violations"][0]["kind"], "lease-ended-early");
    }

    #[test]
    fn process_death_bounds_the_lease() {
        let mut h = H::new();
        let ka = |h: &mut H, t: u64| {
            h.inv(
                1,
                "keepalive",
                "p/1.1",
                json!({"process_hash":"p/1.1","process_ttl_ms":1000}),
                t,
            )
            .ok(1, "keepalive", "p/1.1", json!({}), t + 1);
        };
        ka(&mut h, 0);
        h.inv(
            1,
            "acquire",
            "k",
            json!({"owner":"a","ttl_ms":60000,"process_hash":"p/1.1"}),
            10,
        )
        .ok(1, "acquire", "k", json!({"token":1}), 20);
        ka(&mut h, 500);
        // Keepalives stop; provable liveness ends at 500 + 900 = 1400.
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 1450).ok(
            2,
            "acquire",
            "k",
            json!({"token":2}),
            1460,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
        // A takeover while keepalives were still flowing is a violation.
        let mut h2 = H::new();
        ka(&mut h2, 0);
        h2.inv(
            1,
            "acquire",
            "k",
            json!({"owner":"a","ttl_ms":60000,"process_hash":"p/1.1"}),
            10,
        )
        .ok(1, "acquire", "k", json!({"token":1}), 20);
        ka(&mut h2, 500);
        ka(&mut h2, 1000);
        h2.inv(2, "acquire", "k", json!({"owner":"b"}), 1450).ok(
            2,
            "acquire",
            "k",
            json!({"token":2}),
            1460,
        );
        assert_eq!(run(&h2).valid, Validity::Invalid);
    }

    #[test]
    fn release_refused_with_no_leader_does_not_end_the_window() {
        // A 503 NO_LEADER release is a definite failure: a's lease still runs
        // (to 0 + 900), so b's grant at 100 is a second holder.
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":1000}), 0)
            .ok(1, "acquire", "k", json!({"token":1}), 5);
        h.inv(1, "release", "k", json!({"owner":"a"}), 50).fail(
            1,
            "release",
            "k",
            json!({"http":503,"error":"NO_LEADER"}),
            80,
        );
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 100).ok(
            2,
            "acquire",
            "k",
            json!({"token":2}),
            110,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
    }

    /// The takeover-client finding (seed 12): the holder's release sent
    /// at 100 came back 2.7 s later as a definite NO_KEY, which the checker
    /// must read as the lease ending early (the negative control: that is
    /// what the client library used to report after a lost try); recorded
    /// `info`, as the library now reports such a release, it only ends the
    /// provable window at its invocation, so another owner's grant after
    /// it is no second holder.
    #[test]
    fn a_holders_definite_no_key_is_caught_and_an_unknown_release_is_not() {
        let history = |h: &mut H, released: OpType| {
            let answer = match released {
                OpType::Fail => json!({"status":"NO_KEY"}),
                _ => json!({"error":"release of \"k\": outcome unknown"}),
            };
            h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":5000}), 0)
                .ok(1, "acquire", "k", json!({"token":8869}), 5);
            h.inv(1, "release", "k", json!({"owner":"a"}), 100)
                .done(1, released, "release", "k", answer, 2800);
            h.inv(2, "acquire", "k", json!({"owner":"b","ttl_ms":5000}), 2900)
                .ok(2, "acquire", "k", json!({"token":8870}), 2910);
        };
        let mut definite = H::new();
        history(&mut definite, OpType::Fail);
        let v = run(&definite);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
        assert_eq!(v.details["violations"][0]["kind"], "lease-ended-early");
        let mut unknown = H::new();
        history(&mut unknown, OpType::Info);
        let v = run(&unknown);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
    }

    #[test]
    fn pending_release_ends_the_window() {
        let mut h = H::new();
        h.inv(1, "acquire", "k", json!({"owner":"a","ttl_ms":1000}), 0)
            .ok(1, "acquire", "k", json!({"token":1}), 5);
        h.inv(1, "release", "k", json!({"owner":"a"}), 50)
            .info(1, "release", "k", json!({}), 80);
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 100).ok(
            2,
            "acquire",
            "k",
            json!({"token":2}),
            110,
        );
        assert_eq!(run(&h).valid, Validity::Valid);
    }
}
