//! The monitoring files under `deploy/monitoring/`: Prometheus accepts the
//! alert rules and their unit tests pass (`promtool`), and every metric the
//! alerts and the Grafana dashboard name is on a real node's `/metrics`
//! (the leader of a 3-node cluster, after some traffic, so that families
//! with labels have samples).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use locker_tests::{api, eventually, http, Cluster};
use serde_json::{json, Value};

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// Names produced by Prometheus itself, not by the node.
const SYNTHETIC: [&str; 1] = ["up"];

/// Every metric name an expression text uses: identifiers that start with
/// `locker_` (all of the node's do), plus Prometheus's own `up`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &text[start..i];
            if word.starts_with("locker_") || SYNTHETIC.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The `expr` of every panel target of the dashboard.
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// The `expr:` values of the alert rules (one line, or a `|` block).
fn alert_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" {
            out.push(rest.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let ind = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && ind <= indent {
                break;
            }
            block.push_str(next.trim());
            block.push(' ');
            lines.next();
        }
        out.push(block);
    }
    out
}

/// The sample names on a `/metrics` page.
fn sample_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
    {
        Ok(o) => Some(o),
        Err(e) if std::env::var_os("CI").is_none() => {
            // scripts/test.sh installs it (Debian package `prometheus`).
            eprintln!("SKIPPED promtool {args:?}: {e} (Debian package `prometheus`)");
            None
        }
        Err(e) => panic!("promtool is needed in CI: {e}"),
    }
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests_pass() {
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"][..],
    ] {
        let Some(out) = promtool(args) else { return };
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_on_a_real_node() {
    let dir = monitoring_dir();
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts.yml");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana-locker.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let alert_exprs = alert_exprs(&alerts);
    let dash_exprs = dashboard_exprs(&dash);
    assert!(
        alert_exprs.len() >= 12,
        "alert rules found: {alert_exprs:?}"
    );
    assert!(
        dash_exprs.len() >= 15,
        "dashboard targets found: {dash_exprs:?}"
    );
    let mut wanted = BTreeSet::new();
    for e in alert_exprs.iter().chain(&dash_exprs) {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric found in {e:?}");
        wanted.extend(names);
    }

    let c = Cluster::start_with(3, &["--max-locks", "5000"]);
    let leader = c.leader().expect("leader");
    let url = c.url(leader);
    // Traffic for the labelled families: requests and their latencies.
    let r = api::acquire(&url, "monitoring/held", json!({"ttl_ms": 60_000}));
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    let follower = c.followers()[0];
    let f = api::acquire(&c.url(follower), "monitoring/other", json!({}));
    assert_eq!(f.status(), "SUCCESS", "{:?}", f.body);
    let page = eventually(Duration::from_secs(10), "a full page", || {
        let page = http()
            .get(format!("{url}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        page.contains("locker_raft_follower_lag{").then_some(page)
    });
    let mut present = sample_names(&page);
    let fpage = http()
        .get(format!("{}/metrics", c.url(follower)))
        .send()
        .and_then(|r| r.text())
        .expect("follower metrics");
    present.extend(sample_names(&fpage));
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !present.contains(*n) && !SYNTHETIC.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named by alerts or dashboard but not on /metrics: {missing:?}\n--- page:\n{page}"
    );
    for gauge in [
        "locker_max_locks 5000",
        "locker_max_waiters",
        "locker_data_dir_bytes",
    ] {
        assert!(page.contains(gauge), "{gauge} missing:\n{page}");
    }
    let size = page
        .lines()
        .find_map(|l| l.strip_prefix("locker_data_dir_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("data dir size");
    assert!(size > 0, "an empty data directory reported");
}
