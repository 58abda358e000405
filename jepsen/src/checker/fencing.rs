//! Checker 3: fencing tokens.
//!
//! * unique per grant: one token never names two (key, owner) grants;
//! * real-time ordered: a grant that completed before another was invoked has
//!   the smaller token (tokens are Raft log indices, so this holds across
//!   keys too);
//! * per key, observations never go down: an operation that completed before
//!   another began did not see a higher token than the later one;
//! * across every whole-cluster restart (nemesis fault `kill-all` or
//!   `power-loss`), grants after the restart carry tokens above every token
//!   seen before it.

use super::{describe, CheckOptions, Validity, Verdict};
use crate::history::{Fields, Op, OpType, Pair, Process};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

struct Grant {
    token: u64,
    key: String,
    owner: String,
    /// Earliest invocation of any acquire by this owner on this key: the
    /// grant happened no earlier.
    invoke: u64,
    /// Earliest completion revealing the token: the grant happened no later.
    complete: u64,
    pair: usize,
}

struct Seen {
    token: u64,
    invoke: u64,
    complete: u64,
    pair: usize,
}

fn token_seen(p: &Pair) -> Option<u64> {
    match (p.f.as_str(), p.kind) {
        ("acquire" | "extend", OpType::Ok) => p.res.token,
        ("read", OpType::Ok) => p.res.holder_token,
        ("acquire" | "extend" | "release", OpType::Fail) => p.res.holder_token,
        _ => None,
    }
}

/// Problems found, the first 50 kept for the report.
#[derive(Default)]
struct Problems(Vec<Value>);

impl Problems {
    fn push(&mut self, v: Value) {
        if self.0.len() < 50 {
            self.0.push(v);
        }
    }
}

pub fn check(pairs: &[Pair], ops: &[Op], _opts: &CheckOptions) -> Verdict {
    let mut problems = Problems::default();
    let mut grants = grants_of(pairs);
    let duplicates = duplicate_tokens(&grants, pairs, &mut problems);
    grants.sort_by_key(|g| g.token);
    let disorder = grants_out_of_order(&grants, pairs, &mut problems);
    let went_down = tokens_gone_down(pairs, &mut problems);
    let restarts = whole_cluster_restarts(ops);
    let restart_details = tokens_across_restarts(&restarts, &grants, pairs, &mut problems);
    let problems = problems.0;
    let valid = if problems.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = if problems.is_empty() {
        format!(
            "{} grants: unique, real-time ordered, never going down ({} whole-cluster restarts)",
            grants.len(),
            restarts.len()
        )
    } else {
        format!("{duplicates} duplicate tokens, {disorder} out-of-order grants, {went_down} keys whose token went down")
    };
    Verdict {
        checker: "fencing-tokens".into(),
        valid,
        summary,
        details: json!({"grants": grants.len(), "restarts": restart_details, "problems": problems}),
    }
}

/// Grants, merged by (key, owner, token).
fn grants_of(pairs: &[Pair]) -> Vec<Grant> {
    let mut first_invoke: HashMap<(String, String), u64> = HashMap::new();
    for p in pairs {
        if p.f == "acquire" {
            if let (Some(k), Some(o)) = (&p.key, p.owner()) {
                let e = first_invoke
                    .entry((k.clone(), o.to_string()))
                    .or_insert(p.invoke_ns);
                *e = (*e).min(p.invoke_ns);
            }
        }
    }
    let mut grants: BTreeMap<(String, String, u64), Grant> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if !(p.f == "acquire" && p.is_ok()) {
            continue;
        }
        let (Some(k), Some(o), Some(t)) = (&p.key, p.owner(), p.res.token) else {
            continue;
        };
        let inv = first_invoke
            .get(&(k.clone(), o.to_string()))
            .copied()
            .unwrap_or(p.invoke_ns);
        let g = grants
            .entry((k.clone(), o.to_string(), t))
            .or_insert(Grant {
                token: t,
                key: k.clone(),
                owner: o.to_string(),
                invoke: inv,
                complete: p.complete_ns,
                pair: i,
            });
        if p.complete_ns < g.complete {
            g.complete = p.complete_ns;
            g.pair = i;
        }
    }
    grants.into_values().collect()
}

/// Uniqueness: tokens naming more than one grant.
fn duplicate_tokens(grants: &[Grant], pairs: &[Pair], problems: &mut Problems) -> usize {
    let mut by_token: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (gi, g) in grants.iter().enumerate() {
        by_token.entry(g.token).or_default().push(gi);
    }
    let mut duplicates = 0;
    for (t, gs) in &by_token {
        if gs.len() > 1 {
            duplicates += 1;
            problems.push(json!({
                "kind": "duplicate-token",
                "token": t,
                "grants": gs.iter().map(|&g| json!({"key": grants[g].key, "owner": grants[g].owner,
                    "op": describe(&pairs[grants[g].pair])})).collect::<Vec<_>>(),
            }));
        }
    }
    duplicates
}

/// Real-time order of grants (sorted by token): no grant may have completed
/// before a grant with a smaller token was even invoked.
fn grants_out_of_order(grants: &[Grant], pairs: &[Pair], problems: &mut Problems) -> usize {
    let mut max_inv: Option<usize> = None;
    let mut disorder = 0;
    for (gi, g) in grants.iter().enumerate() {
        if let Some(m) = max_inv {
            let big = &grants[m];
            if g.complete < big.invoke && big.token < g.token {
                disorder += 1;
                problems.push(json!({
                    "kind": "grant-order",
                    "explain": "the later grant carries the smaller token",
                    "earlier_grant": describe(&pairs[g.pair]),
                    "earlier_token": g.token,
                    "later_grant": describe(&pairs[big.pair]),
                    "later_token": big.token,
                }));
            }
        }
        if max_inv.is_none_or(|m| grants[m].invoke < g.invoke) {
            max_inv = Some(gi);
        }
    }
    disorder
}

/// Per-key monotonic observations: how often a key's token went down.
fn tokens_gone_down(pairs: &[Pair], problems: &mut Problems) -> usize {
    let mut seen: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if let (Some(k), Some(t)) = (&p.key, token_seen(p)) {
            seen.entry(k.clone()).or_default().push(Seen {
                token: t,
                invoke: p.invoke_ns,
                complete: p.complete_ns,
                pair: i,
            });
        }
    }
    seen.iter_mut()
        .map(|(key, list)| key_went_down(key, list, pairs, problems))
        .sum()
}

/// One key's observations: in descending tokens, tracks the earliest
/// completion among strictly larger tokens. If it precedes an op's
/// invocation, the key's token went down in real time.
fn key_went_down(key: &str, list: &mut [Seen], pairs: &[Pair], problems: &mut Problems) -> usize {
    list.sort_by_key(|s| std::cmp::Reverse(s.token));
    let mut went_down = 0;
    let mut best: Option<usize> = None;
    let mut i = 0;
    while i < list.len() {
        let mut j = i;
        while j < list.len() && list[j].token == list[i].token {
            j += 1;
        }
        for s in &list[i..j] {
            if let Some(b) = best {
                if list[b].complete < s.invoke {
                    went_down += 1;
                    problems.push(json!({
                        "kind": "token-went-down",
                        "key": key,
                        "first_saw": list[b].token,
                        "first": describe(&pairs[list[b].pair]),
                        "then_saw": s.token,
                        "then": describe(&pairs[s.pair]),
                    }));
                    break;
                }
            }
        }
        for (off, s) in list[i..j].iter().enumerate() {
            if best.is_none_or(|b| s.complete < list[b].complete) {
                best = Some(i + off);
            }
        }
        i = j;
    }
    went_down
}

/// Whole-cluster restarts: (kill time, restart time) of each `kill-all` or
/// `power-loss` (a power cut of every node).
fn whole_cluster_restarts(ops: &[Op]) -> Vec<(u64, u64)> {
    let mut restarts = Vec::new();
    let mut kill_start: Option<u64> = None;
    for op in ops.iter().filter(|o| o.process == Process::Nemesis) {
        let fault = Fields::parse(&op.value).fault.unwrap_or_default();
        if fault != "kill-all" && fault != "power-loss" {
            continue;
        }
        match (op.f.as_str(), op.kind) {
            ("start", OpType::Invoke) => kill_start = Some(op.time_ns),
            ("stop", OpType::Ok | OpType::Info) => {
                if let Some(s) = kill_start.take() {
                    restarts.push((s, op.time_ns));
                }
            }
            _ => {}
        }
    }
    restarts
}

/// Grants after each restart must carry tokens above every token seen
/// before it; one detail per restart.
fn tokens_across_restarts(
    restarts: &[(u64, u64)],
    grants: &[Grant],
    pairs: &[Pair],
    problems: &mut Problems,
) -> Vec<Value> {
    let mut restart_details = Vec::new();
    for (s, e) in restarts {
        let before = pairs
            .iter()
            .filter(|p| p.complete_ns <= *s)
            .filter_map(token_seen)
            .max();
        let after = grants
            .iter()
            .filter(|g| g.invoke >= *e)
            .map(|g| g.token)
            .min();
        let ok = match (before, after) {
            (Some(b), Some(a)) => a > b,
            _ => true,
        };
        restart_details.push(
            json!({"kill_ms": *s as f64 / 1e6, "restart_ms": *e as f64 / 1e6,
            "max_token_before": before, "min_grant_after": after, "rising": ok}),
        );
        if !ok {
            problems.push(
                json!({"kind": "token-reset-by-restart", "max_token_before": before,
                "min_grant_after": after}),
            );
        }
    }
    restart_details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::H;
    use crate::history::pair;
    use serde_json::json;

    fn run(h: &H) -> Verdict {
        let ops = h.build();
        check(&pair(&ops), &ops, &CheckOptions::default())
    }

    fn acq(h: &mut H, p: u64, key: &str, owner: &str, tok: u64, t0: u64, t1: u64) {
        h.inv(p, "acquire", key, json!({"owner": owner}), t0).ok(
            p,
            "acquire",
            key,
            json!({"token": tok}),
            t1,
        );
    }

    #[test]
    fn increasing_tokens_pass_and_concurrent_grants_may_reorder() {
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 3, 0, 10);
        acq(&mut h, 2, "j", "b", 2, 5, 12); // concurrent with a: any order
        acq(&mut h, 1, "k", "a", 3, 13, 14); // re-acquire, same token
        acq(&mut h, 3, "k", "c", 7, 20, 21);
        h.inv(4, "read", "k", json!({}), 22).ok(
            4,
            "read",
            "k",
            json!({"locked":true,"holder":"c","holder_token":7}),
            23,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
    }

    #[test]
    fn duplicate_token_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 3, 0, 1);
        acq(&mut h, 2, "j", "b", 3, 2, 3);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["problems"][0]["kind"], "duplicate-token");
    }

    #[test]
    fn grant_order_across_keys_is_checked() {
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 9, 0, 1);
        acq(&mut h, 2, "j", "b", 4, 2, 3);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert!(v.details["problems"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["kind"] == "grant-order")));
    }

    #[test]
    fn read_token_going_down_is_caught() {
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 4, 0, 1);
        h.inv(2, "read", "k", json!({}), 2).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"x","holder_token":8}),
            3,
        );
        h.inv(2, "read", "k", json!({}), 4).ok(
            2,
            "read",
            "k",
            json!({"locked":true,"holder":"a","holder_token":4}),
            5,
        );
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert!(v.details["problems"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["kind"] == "token-went-down")));
    }

    #[test]
    fn tokens_must_rise_across_whole_cluster_restart() {
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 40, 0, 1);
        h.nemesis(OpType::Invoke, "start", "kill-all", 5)
            .nemesis(OpType::Ok, "start", "kill-all", 6)
            .nemesis(OpType::Invoke, "stop", "kill-all", 10)
            .nemesis(OpType::Ok, "stop", "kill-all", 12);
        acq(&mut h, 2, "k", "b", 41, 20, 21);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
        assert_eq!(v.details["restarts"][0]["rising"], true);
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 40, 0, 1);
        h.nemesis(OpType::Invoke, "start", "kill-all", 5).nemesis(
            OpType::Ok,
            "stop",
            "kill-all",
            12,
        );
        acq(&mut h, 2, "j", "b", 2, 20, 21);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["restarts"][0]["rising"], false);
        // A power cut of every node is a whole-cluster restart too.
        let mut h = H::new();
        acq(&mut h, 1, "k", "a", 40, 0, 1);
        h.nemesis(OpType::Invoke, "start", "power-loss", 5).nemesis(
            OpType::Ok,
            "stop",
            "power-loss",
            12,
        );
        acq(&mut h, 2, "j", "b", 2, 20, 21);
        assert_eq!(run(&h).details["restarts"][0]["rising"], false);
    }
}
