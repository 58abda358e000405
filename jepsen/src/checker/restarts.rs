//! Checker 8: clean restarts, run only when the history has a
//! `rolling-restart` (see [`crate::rolling`]). Every node the nemesis
//! stopped with SIGTERM must have exited 0 (the node's promise: requests
//! answered, leadership handed over, store flushed), and each must have
//! answered `/readyz` again within the nemesis's bound, so that every round
//! went through all members. The facts are the nemesis's own (exit statuses,
//! readiness), recorded per node in each rolling restart's `start` detail;
//! what clients saw meanwhile is judged by the other checkers.

use super::{Validity, Verdict};
use crate::history::{Op, OpType, Process};
use serde_json::{json, Value};

pub const FAULT: &str = "rolling-restart";

/// Totals over every round, for the summary.
#[derive(Default)]
struct Tally {
    rounds: usize,
    nodes: usize,
    leaders: usize,
    worst_stop_ms: u64,
    worst_ready_ms: u64,
}

/// What went wrong in one round (a step not clean or not ready, a round cut
/// short), one entry each.
fn round_problems(n: usize, detail: &Value, t: &mut Tally) -> Vec<Value> {
    let mut problems = Vec::new();
    let steps = detail["steps"].as_array().cloned().unwrap_or_default();
    for s in &steps {
        t.nodes += 1;
        t.leaders += (s["was_leader"] == true) as usize;
        t.worst_stop_ms = t.worst_stop_ms.max(s["stop_ms"].as_u64().unwrap_or(0));
        t.worst_ready_ms = t.worst_ready_ms.max(s["ready_ms"].as_u64().unwrap_or(0));
        if s["clean"] != true {
            problems.push(json!({"round": n, "problem": "stop was not exit 0", "step": s}));
        }
        if s["ready"] != true {
            problems.push(json!({"round": n, "problem": "not ready again", "step": s}));
        }
    }
    if detail["complete"] != true || steps.is_empty() {
        problems.push(json!({
            "round": n,
            "problem": "the round did not restart every member",
            "not_restarted": detail["not_restarted"],
        }));
    }
    problems
}

pub fn check(ops: &[Op]) -> Option<Verdict> {
    let nemesis = |o: &&Op| o.process == Process::Nemesis && o.f == "start";
    let ours = |o: &&Op| o.value["fault"] == FAULT;
    let done: Vec<&Op> = ops.iter().filter(nemesis).filter(ours).collect();
    if done.iter().all(|o| o.kind == OpType::Invoke) {
        return None;
    }
    let mut t = Tally::default();
    let mut problems = Vec::new();
    for o in done.iter().filter(|o| o.kind != OpType::Invoke) {
        t.rounds += 1;
        if o.kind == OpType::Ok {
            problems.extend(round_problems(t.rounds, &o.value["detail"], &mut t));
        } else {
            problems.push(json!({"round": t.rounds, "problem": "could not start", "op": o.value}));
        }
    }
    let (valid, summary) = if problems.is_empty() {
        (
            Validity::Valid,
            format!(
                "{} rolling restarts, {} node restarts ({} of the leader): every SIGTERM ended in exit 0 (slowest {} ms), every node ready again (slowest {} ms)",
                t.rounds, t.nodes, t.leaders, t.worst_stop_ms, t.worst_ready_ms
            ),
        )
    } else {
        (
            Validity::Invalid,
            format!(
                "{} problems in {} rolling restarts ({} node restarts): {}",
                problems.len(),
                t.rounds,
                t.nodes,
                problems[0]["problem"].as_str().unwrap_or("?")
            ),
        )
    };
    Some(Verdict {
        checker: "clean-restarts".into(),
        valid,
        summary,
        details: json!({
            "rounds": t.rounds,
            "node_restarts": t.nodes,
            "leader_restarts": t.leaders,
            "worst_stop_ms": t.worst_stop_ms,
            "worst_ready_ms": t.worst_ready_ms,
            "problems": problems,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(node: u64, clean: bool, ready: bool) -> Value {
        json!({"node": node, "was_leader": node == 3, "clean": clean,
               "stop": if clean { "exit 0" } else { "exit 70" }, "stop_ms": 900 + node,
               "ready": ready, "ready_ms": 1500 + node})
    }

    fn history(steps: Vec<Value>, complete: bool) -> Vec<Op> {
        let start = |kind, v| Op::new(Process::Nemesis, kind, "start", None, v);
        vec![
            start(OpType::Invoke, json!({"fault": FAULT})).at(1),
            start(
                OpType::Ok,
                json!({"fault": FAULT, "detail": {"steps": steps, "complete": complete}}),
            )
            .at(2),
        ]
    }

    #[test]
    fn not_run_without_a_rolling_restart() {
        let other = Op::new(
            Process::Nemesis,
            OpType::Ok,
            "start",
            None,
            json!({"fault": "kill-one"}),
        );
        assert!(check(&[other]).is_none());
        let only_invoked = history(vec![], true).remove(0);
        assert!(check(&[only_invoked]).is_none());
    }

    #[test]
    fn clean_complete_rounds_are_valid() {
        let h = history(
            vec![
                step(1, true, true),
                step(2, true, true),
                step(3, true, true),
            ],
            true,
        );
        let v = check(&h).expect("ran");
        assert_eq!(v.valid, Validity::Valid, "{}", v.summary);
        assert_eq!(v.details["node_restarts"], 3);
        assert_eq!(v.details["leader_restarts"], 1);
        assert_eq!(v.details["worst_ready_ms"], 1503);
    }

    #[test]
    fn an_unclean_exit_is_invalid() {
        let h = history(
            vec![
                step(1, true, true),
                step(2, false, true),
                step(3, true, true),
            ],
            true,
        );
        let v = check(&h).expect("ran");
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["problems"][0]["step"]["node"], 2);
        assert!(v.summary.contains("not exit 0"), "{}", v.summary);
    }

    #[test]
    fn a_node_never_ready_or_a_cut_round_is_invalid() {
        let v = check(&history(vec![step(1, true, false)], false)).expect("ran");
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["problems"].as_array().map(Vec::len), Some(2));
        let mut h = history(vec![], true);
        h[1] = Op::new(
            Process::Nemesis,
            OpType::Fail,
            "start",
            None,
            json!({"fault": FAULT, "error": "boom"}),
        );
        assert_eq!(check(&h).map(|v| v.valid), Some(Validity::Invalid));
    }
}
