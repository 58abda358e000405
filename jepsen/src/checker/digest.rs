//! Checker 6: replicas agree. At the end of a run, after the final heal and
//! once the workers are quiet, the harness polls `GET /v1/digest` on every
//! member in rounds (see [`crate::replicas`]) and records each answer as a
//! nemesis operation `f = "digest"`. Apply is deterministic, so two replicas
//! at the same applied index must report the same digest of their table.
//!
//! * two answers at the same applied index with different digests (two
//!   nodes, or one node twice): `invalid`;
//! * some round in which every member answered at one applied index, with
//!   one digest: `valid`;
//! * otherwise (a replica never caught up, or never answered): `unknown`;
//! * no digest in the history, or the node build has no digest route: the
//!   check did not run; it says so and does not count against the run.

use super::{Validity, Verdict};
use crate::history::{Op, OpType, Process};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One recorded answer.
#[derive(Debug)]
struct Answer {
    round: u64,
    node: u64,
    members: usize,
    /// `(applied_index, digest)`, or `None` if the node did not answer.
    at: Option<(u64, String)>,
    missing: bool,
}

fn answers(ops: &[Op]) -> Vec<Answer> {
    ops.iter()
        .filter(|o| o.process == Process::Nemesis && o.f == "digest")
        .filter_map(|o| {
            let v = &o.value;
            let at = match (o.kind, v["applied_index"].as_u64(), v["digest"].as_str()) {
                (OpType::Ok, Some(i), Some(d)) => Some((i, d.to_string())),
                _ => None,
            };
            Some(Answer {
                round: v["round"].as_u64()?,
                node: v["node"].as_u64()?,
                members: v["members"].as_u64().unwrap_or(0) as usize,
                at,
                missing: v["missing"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

fn verdict(valid: Validity, summary: String, details: Value) -> Verdict {
    Verdict {
        checker: "replicas-agree".into(),
        valid,
        summary,
        details,
    }
}

pub fn check(ops: &[Op]) -> Verdict {
    let all = answers(ops);
    if all.is_empty() {
        return verdict(
            Validity::Valid,
            "not run: no replica digests in this history".into(),
            json!({"skipped": true}),
        );
    }
    if all.iter().all(|a| a.missing) {
        return verdict(
            Validity::Valid,
            "not run: the node build has no GET /v1/digest".into(),
            json!({"skipped": true}),
        );
    }
    let by_round = rounds(&all);
    if let Some(v) = mismatch_verdict(&all, by_round.len()) {
        return v;
    }
    agreement_verdict(&by_round)
}

/// The answers of each round.
fn rounds(all: &[Answer]) -> BTreeMap<u64, Vec<&Answer>> {
    let mut by_round: BTreeMap<u64, Vec<&Answer>> = BTreeMap::new();
    for a in all {
        by_round.entry(a.round).or_default().push(a);
    }
    by_round
}

/// Invalid if two replicas reported different digests at one applied index
/// (every index -> node -> digests seen, across all rounds).
fn mismatch_verdict(all: &[Answer], rounds: usize) -> Option<Verdict> {
    let mut by_index: BTreeMap<u64, BTreeMap<u64, BTreeSet<String>>> = BTreeMap::new();
    for a in all {
        if let Some((i, d)) = &a.at {
            by_index
                .entry(*i)
                .or_default()
                .entry(a.node)
                .or_default()
                .insert(d.clone());
        }
    }
    let mismatches: Vec<Value> = by_index
        .iter()
        .filter(|(_, nodes)| {
            let distinct: BTreeSet<&String> = nodes.values().flatten().collect();
            distinct.len() > 1
        })
        .take(20)
        .map(|(i, nodes)| json!({"applied_index": i, "digests": nodes}))
        .collect();
    if mismatches.is_empty() {
        return None;
    }
    Some(verdict(
        Validity::Invalid,
        format!(
            "replicas disagree: different digests at {} applied index(es), first at {}",
            mismatches.len(),
            mismatches[0]["applied_index"]
        ),
        json!({"mismatches": mismatches, "rounds": rounds}),
    ))
}

/// Valid if in some round every member answered at one index (the digests
/// then agree: no mismatch was found), else unknown.
fn agreement_verdict(by_round: &BTreeMap<u64, Vec<&Answer>>) -> Verdict {
    let agreed = by_round.iter().rev().find_map(|(r, list)| {
        let idx: BTreeSet<u64> = list
            .iter()
            .filter_map(|a| a.at.as_ref().map(|x| x.0))
            .collect();
        let members = list.iter().map(|a| a.members).max().unwrap_or(0);
        let answered = list.iter().filter(|a| a.at.is_some()).count();
        (idx.len() == 1 && answered == members.max(list.len()))
            .then(|| (*r, idx.into_iter().next().unwrap_or(0), answered, list))
    });
    match agreed {
        Some((round, index, n, list)) => {
            let digest = list
                .iter()
                .find_map(|a| a.at.as_ref().map(|x| x.1.clone()))
                .unwrap_or_default();
            verdict(
                Validity::Valid,
                format!("{n} replicas agree at applied index {index}"),
                json!({"round": round, "applied_index": index, "digest": digest,
                       "nodes": n, "rounds": by_round.len()}),
            )
        }
        None => {
            let last: Vec<Value> = by_round
                .values()
                .next_back()
                .map(|l| {
                    l.iter()
                        .map(|a| json!({"node": a.node, "applied_index": a.at.as_ref().map(|x| x.0)}))
                        .collect()
                })
                .unwrap_or_default();
            verdict(
                Validity::Unknown,
                format!(
                    "replicas never all reported one applied index ({} rounds)",
                    by_round.len()
                ),
                json!({"last_round": last, "rounds": by_round.len()}),
            )
        }
    }
}

/// The history line recording one node's digest answer in round `round`.
pub fn record_value(round: u64, node: u64, members: usize, answer: &Value) -> Value {
    let mut v = answer.clone();
    if !v.is_object() {
        v = json!({});
    }
    v["round"] = json!(round);
    v["node"] = json!(node);
    v["members"] = json!(members);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(round: u64, node: u64, index: u64, digest: &str) -> Op {
        let v = record_value(
            round,
            node,
            3,
            &json!({"node_id": node, "applied_index": index, "digest": digest}),
        );
        Op::new(Process::Nemesis, OpType::Ok, "digest", None, v).at(round * 1_000_000)
    }

    fn failed(round: u64, node: u64, missing: bool) -> Op {
        let v = record_value(round, node, 3, &json!({"error": "x", "missing": missing}));
        Op::new(Process::Nemesis, OpType::Fail, "digest", None, v).at(round * 1_000_000)
    }

    #[test]
    fn equal_digests_at_one_index_are_valid() {
        let ops = vec![
            d(1, 1, 40, "aa"),
            d(1, 2, 39, "bb"),
            d(1, 3, 40, "aa"),
            d(2, 1, 40, "aa"),
            d(2, 2, 40, "aa"),
            d(2, 3, 40, "aa"),
        ];
        let v = check(&ops);
        assert_eq!(v.valid, Validity::Valid, "{}", v.summary);
        assert_eq!(v.details["applied_index"], 40);
    }

    #[test]
    fn mismatched_digests_are_invalid() {
        // Same index, one replica with another table: what a lost or
        // doubly-applied entry looks like.
        let ops = vec![d(1, 1, 40, "aa"), d(1, 2, 40, "aa"), d(1, 3, 40, "cc")];
        let v = check(&ops);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.summary);
        assert_eq!(v.details["mismatches"][0]["applied_index"], 40);
        // Also across rounds: node 3 at 39 in round 1 differs from node 2 at
        // 39 in round 2, though no round had all three at one index.
        let ops = vec![
            d(1, 1, 40, "aa"),
            d(1, 2, 40, "aa"),
            d(1, 3, 39, "xx"),
            d(2, 1, 41, "dd"),
            d(2, 2, 39, "yy"),
            d(2, 3, 41, "dd"),
        ];
        assert_eq!(check(&ops).valid, Validity::Invalid);
    }

    #[test]
    fn a_replica_that_never_catches_up_is_unknown() {
        let ops = vec![
            d(1, 1, 40, "aa"),
            d(1, 2, 40, "aa"),
            failed(1, 3, false),
            d(2, 1, 41, "bb"),
            d(2, 2, 41, "bb"),
            d(2, 3, 12, "zz"),
        ];
        let v = check(&ops);
        assert_eq!(v.valid, Validity::Unknown, "{}", v.summary);
    }

    #[test]
    fn no_digests_or_no_route_is_reported_as_not_run() {
        let v = check(&[]);
        assert_eq!(v.valid, Validity::Valid);
        assert!(v.summary.starts_with("not run"));
        let v = check(&[failed(1, 1, true), failed(1, 2, true)]);
        assert!(v.summary.contains("/v1/digest"), "{}", v.summary);
    }
}
