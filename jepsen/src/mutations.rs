//! `locker-jepsen mutations`: every checker proven able to fail. For each
//! test-only node mutation (`LOCKER_TEST_MUTATION`, a node built with
//! `--features locker-node/mutations`) a short run with the faults that
//! expose it must be judged invalid by the checker meant to catch it; the
//! unfenced twin (no mutation) must fail the negative control. With
//! `--baseline` the same runs on the unmutated node must be valid, which
//! shows the failure comes from the mutation and not from the faults.
//!
//! Each run is a child `locker-jepsen test` process (its own namespaces,
//! its own output folder); the verdicts are read from its `results.json`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One mutation run.
pub struct Case {
    /// The mutation's name, or `unfenced-twin`.
    pub name: &'static str,
    pub mutation: Option<&'static str>,
    pub nemesis: &'static str,
    pub workload: &'static str,
    /// Time limit of the short (CI) and the normal form, seconds.
    pub time_limit_s: (u64, u64),
    pub args: &'static [&'static str],
    /// The run counts as caught if any of these checkers judged it invalid.
    pub expect: &'static [&'static str],
    pub why: &'static str,
}

const NEGATIVE_CONTROL: &str = "no-lost-writes-unfenced (negative control)";

pub const CASES: [Case; 5] = [
    Case {
        name: "no-takeover-shift",
        mutation: Some("no-takeover-shift"),
        nemesis: "clock-leader-ahead",
        workload: "mutex,set",
        time_limit_s: (35, 90),
        args: &["--interval", "1,2", "--fault-duration", "4,5"],
        // The linearizability model lets a lease expire at any time, so only
        // the lease checker, which knows real time, can see an early end.
        expect: &["lease-mutual-exclusion"],
        why: "a node with its clock well ahead is made leader while leases are held",
    },
    Case {
        name: "early-lease",
        mutation: Some("early-lease"),
        nemesis: "pause-leader,kill-leader",
        workload: "mutex",
        time_limit_s: (30, 90),
        args: &["--interval", "2,4", "--fault-duration", "2,4"],
        expect: &["lease-mutual-exclusion", "linearizable-mutex"],
        why: "contended locks, some abandoned to expire, under leader pauses and kills",
    },
    Case {
        name: "token-not-index",
        mutation: Some("token-not-index"),
        nemesis: "kill-leader",
        workload: "mutex,set",
        time_limit_s: (35, 90),
        args: &["--interval", "2,4", "--fault-duration", "2,4"],
        expect: &["fencing-tokens"],
        why: "leader kills: a new leader's tokens repeat the old one's",
    },
    Case {
        name: "ack-before-fsync",
        mutation: Some("ack-before-fsync"),
        // Under the power-loss shim a SIGKILL drops what was not fsynced; a
        // plain kill-all kept it in the page cache and caught this 2 times
        // in 5. Before each cut the nemesis takes the durability probe lock,
        // which the mutated cluster then forgets.
        nemesis: "power-loss",
        workload: "mutex,set",
        time_limit_s: (35, 90),
        args: &["--interval", "1,2", "--fault-duration", "1,1"],
        // A lost grant looks to clients like an early expiry or a reused
        // token (the probe's read finds its key free inside its lease); the
        // replicas that lost it and the ones that did not (a majority cut)
        // disagree at the same applied index.
        expect: &[
            "linearizable-mutex",
            "fencing-tokens",
            "lease-mutual-exclusion",
            "replicas-agree",
        ],
        why: "a power cut of every node loses writes that were acknowledged before their fsync",
    },
    Case {
        name: "unfenced-twin",
        mutation: None,
        nemesis: "client-pause,pause-leader",
        workload: "set-unfenced,set",
        time_limit_s: (40, 60),
        args: &["--interval", "1,2", "--fault-duration", "5,6"],
        expect: &[NEGATIVE_CONTROL],
        why: "client pauses longer than the lease: the unfenced resource loses writes",
    },
];

pub struct MutationOpts {
    pub exe: PathBuf,
    pub node_bin: PathBuf,
    pub hosts: String,
    pub out: PathBuf,
    pub short: bool,
    pub only: Vec<String>,
    pub baseline: bool,
    pub seed: u64,
}

/// Names of the cases `--only` selects (all when empty); unknown names are
/// an error.
pub fn select(only: &[String]) -> anyhow::Result<Vec<&'static Case>> {
    if only.is_empty() {
        return Ok(CASES.iter().collect());
    }
    only.iter()
        .map(|n| {
            CASES.iter().find(|c| c.name == n).ok_or_else(|| {
                let names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
                anyhow::anyhow!("unknown mutation case {n:?} (known: {})", names.join(", "))
            })
        })
        .collect()
}

/// Runs the selected cases one after the other; returns the summary that
/// was also written to `out/mutations.json`, and whether every case passed.
pub fn run_all(o: &MutationOpts) -> anyhow::Result<(Value, bool)> {
    std::fs::create_dir_all(&o.out)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", o.out.display()))?;
    let mut rows = Vec::new();
    let mut all_ok = true;
    for case in select(&o.only)? {
        let row = run_case(o, case, true);
        all_ok &= row["passed"] == json!(true);
        eprintln!("[mutations] {}", line(&row));
        rows.push(row);
        if o.baseline && case.mutation.is_some() {
            let row = run_case(o, case, false);
            all_ok &= row["passed"] == json!(true);
            eprintln!("[mutations] {}", line(&row));
            rows.push(row);
        }
    }
    let summary = json!({"short": o.short, "seed": o.seed, "node_bin": o.node_bin.display().to_string(),
                         "all_passed": all_ok, "runs": rows});
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(o.out.join("mutations.json"), text)
        .map_err(|e| anyhow::anyhow!("write mutations.json: {e}"))?;
    Ok((summary, all_ok))
}

/// One line per run for people.
pub fn line(r: &Value) -> String {
    format!(
        "{:<22} {:<9} {:<16} {:>4}s  {}",
        r["run"].as_str().unwrap_or("?"),
        if r["passed"] == json!(true) {
            "PASS"
        } else {
            "FAIL"
        },
        r["outcome"].as_str().unwrap_or("?"),
        r["seconds"].as_u64().unwrap_or(0),
        r["note"].as_str().unwrap_or("")
    )
}

/// Runs one case, with its mutation (`mutated`) or as the baseline.
fn run_case(o: &MutationOpts, case: &Case, mutated: bool) -> Value {
    let run = if mutated {
        case.name.to_string()
    } else {
        format!("{}-baseline", case.name)
    };
    let dir = o.out.join(&run);
    let _ = std::fs::remove_dir_all(&dir);
    let limit = if o.short {
        case.time_limit_s.0
    } else {
        case.time_limit_s.1
    };
    let t0 = Instant::now();
    let rc = spawn_test(o, case, mutated, &dir, limit);
    let mut row = json!({"run": run, "mutation": if mutated { case.mutation } else { None },
        "nemesis": case.nemesis, "workload": case.workload, "time_limit_s": limit,
        "why": case.why, "expected_checkers": case.expect, "out": dir.display().to_string()});
    let outcome = rc.and_then(|code| judge(case, mutated, &dir, code));
    row["seconds"] = json!(t0.elapsed().as_secs());
    match outcome {
        Ok((outcome, passed, note, invalid)) => {
            row["outcome"] = json!(outcome);
            row["passed"] = json!(passed);
            row["note"] = json!(note);
            row["invalid_checkers"] = json!(invalid);
        }
        Err(e) => {
            row["outcome"] = json!("error");
            row["passed"] = json!(false);
            row["note"] = json!(format!("{e:#}"));
        }
    }
    row
}

fn spawn_test(
    o: &MutationOpts,
    case: &Case,
    mutated: bool,
    dir: &Path,
    limit: u64,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    let log =
        std::fs::File::create(dir.join("run.log")).map_err(|e| anyhow::anyhow!("run.log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| anyhow::anyhow!("run.log: {e}"))?;
    let mut cmd = Command::new(&o.exe);
    cmd.arg("test")
        .arg("--node-bin")
        .arg(&o.node_bin)
        .arg("--hosts")
        .arg(&o.hosts)
        .arg("--out")
        .arg(dir)
        .args([
            "--nodes",
            "3",
            "--nemesis",
            case.nemesis,
            "--workload",
            case.workload,
        ])
        .args(["--time-limit", &limit.to_string(), "--recovery", "5"])
        .args(["--seed", &o.seed.to_string()])
        .args(case.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    match (mutated, case.mutation) {
        (true, Some(m)) => cmd.env("LOCKER_TEST_MUTATION", m),
        _ => cmd.env_remove("LOCKER_TEST_MUTATION"),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawn {}: {e}", o.exe.display()))?;
    // Bounded: the run's own time plus set-up, heal and checking.
    let end = Instant::now() + Duration::from_secs(limit + 150);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st.code().unwrap_or(3)),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(250)),
            Ok(None) => {
                // SIGINT lets the run tear its namespaces down, then SIGKILL.
                crate::cluster::signal(child.id(), libc::SIGINT);
                std::thread::sleep(Duration::from_secs(30));
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow::anyhow!("run did not finish in {} s", limit + 150));
            }
            Err(e) => return Err(anyhow::anyhow!("wait: {e}")),
        }
    }
}

/// Whether the node logs show the mutation active (the node says so at
/// start): a node built without the feature ignores the variable, and its
/// VALID would be meaningless.
fn mutation_active(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir.join("nodes")) else {
        return false;
    };
    let mut any = false;
    for e in rd.flatten() {
        let text = std::fs::read_to_string(e.path().join("node.log")).unwrap_or_default();
        if !text.contains("TEST MUTATION ACTIVE") {
            return false;
        }
        any = true;
    }
    any
}

type Judged = (&'static str, bool, String, Vec<String>);

fn judge(case: &Case, mutated: bool, dir: &Path, code: i32) -> anyhow::Result<Judged> {
    let text = std::fs::read_to_string(dir.join("results.json")).map_err(|e| {
        anyhow::anyhow!(
            "exit {code}, no results.json ({e}); see {}/run.log",
            dir.display()
        )
    })?;
    let r: Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("results.json: {e}"))?;
    let invalid: Vec<String> = r["checkers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["valid"] == json!(false))
        .filter_map(|c| c["checker"].as_str().map(str::to_string))
        .collect();
    let verdict = r["verdict"].as_str().unwrap_or("").to_string();
    if mutated && case.mutation.is_some() && !mutation_active(dir) {
        return Err(anyhow::anyhow!(
            "mutation not active: build the node with --features locker-node/mutations"
        ));
    }
    let expected: Vec<String> = invalid
        .iter()
        .filter(|c| case.expect.contains(&c.as_str()))
        .cloned()
        .collect();
    if !mutated {
        return Ok(if r["valid"] == json!(true) {
            (
                "valid",
                true,
                "the unmutated node passes the same run".into(),
                invalid,
            )
        } else {
            ("not-valid", false, verdict, invalid)
        });
    }
    Ok(if !expected.is_empty() {
        let note = format!("caught by {}", expected.join(", "));
        ("caught", true, note, invalid)
    } else if !invalid.is_empty() {
        let note = format!(
            "invalid, but only by {} (expected {})",
            invalid.join(", "),
            case.expect.join(" or ")
        );
        ("caught-by-other", false, note, invalid)
    } else {
        let note = format!("NOT CAUGHT: {verdict}");
        ("not-caught", false, note, invalid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_selection() {
        assert_eq!(select(&[]).map(|v| v.len()).ok(), Some(CASES.len()));
        let v = select(&["early-lease".to_string()]).expect("known");
        assert_eq!(v[0].name, "early-lease");
        assert!(select(&["bogus".to_string()]).is_err());
        // Every mutation of the node has a case (node/src/mutation.rs).
        for m in [
            "no-takeover-shift",
            "early-lease",
            "token-not-index",
            "ack-before-fsync",
        ] {
            assert!(CASES.iter().any(|c| c.mutation == Some(m)), "{m}");
        }
    }

    #[test]
    fn a_run_judged_valid_is_not_caught() {
        let dir = std::env::temp_dir().join(format!("lkj-mut-test-{}", std::process::id()));
        let n1 = dir.join("nodes/n1");
        std::fs::create_dir_all(&n1).expect("mkdir");
        std::fs::write(
            n1.join("node.log"),
            "WARN TEST MUTATION ACTIVE mutation=early-lease\n",
        )
        .expect("log");
        let case = &CASES[1];
        let results = |valid: Value, bad: &str| {
            let r = json!({"valid": valid, "verdict": "x", "checkers": [
                {"checker": "linearizable-mutex", "valid": bad != "linearizable-mutex"},
                {"checker": "liveness", "valid": bad != "liveness"}]});
            std::fs::write(dir.join("results.json"), r.to_string()).expect("write");
        };
        results(json!(true), "");
        assert_eq!(
            judge(case, true, &dir, 0).map(|j| j.0).ok(),
            Some("not-caught")
        );
        results(json!(false), "liveness");
        assert_eq!(
            judge(case, true, &dir, 1).map(|j| j.0).ok(),
            Some("caught-by-other")
        );
        results(json!(false), "linearizable-mutex");
        assert_eq!(judge(case, true, &dir, 1).map(|j| j.0).ok(), Some("caught"));
        // The baseline of the same case must be valid.
        assert_eq!(
            judge(case, false, &dir, 1).map(|j| j.0).ok(),
            Some("not-valid")
        );
        // A node log without the banner: the mutation was not compiled in.
        std::fs::write(n1.join("node.log"), "plain node\n").expect("log");
        assert!(judge(case, true, &dir, 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
