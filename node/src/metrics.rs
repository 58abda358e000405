//! Prometheus metrics, rendered by hand: a few counters and histograms are
//! simpler than a metrics framework, and the gauges are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    commit: Mutex<Histogram>,
    pub leader_changes: AtomicU64,
    pub forwarded: AtomicU64,
    /// Times a blocking acquire woke up to look at its key again.
    pub waiter_wakeups: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        *lock(&self.requests)
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(format!("method=\"{method}\",route=\"{route}\""))
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub fn observe_commit(&self, took: Duration) {
        lock(&self.commit).observe(took.as_secs_f64());
    }

    /// Renders everything, with `gauges` (name, help, value) read by the caller.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP locker_http_requests_total HTTP requests by method, route and status.\n# TYPE locker_http_requests_total counter\n");
        for ((m, r, s), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "locker_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{s}\"}} {n}"
            );
        }
        out.push_str("# HELP locker_http_request_duration_seconds HTTP request latency.\n# TYPE locker_http_request_duration_seconds histogram\n");
        for (labels, h) in lock(&self.latency).iter() {
            h.render(&mut out, "locker_http_request_duration_seconds", labels);
        }
        out.push_str("# HELP locker_raft_commit_duration_seconds Time from proposing a command to its outcome.\n# TYPE locker_raft_commit_duration_seconds histogram\n");
        lock(&self.commit).render(&mut out, "locker_raft_commit_duration_seconds", "");
        let counters = [
            (
                "locker_leader_changes_total",
                "Times this node gained or lost leadership.",
                &self.leader_changes,
            ),
            (
                "locker_forwarded_requests_total",
                "Requests this node forwarded to the leader.",
                &self.forwarded,
            ),
            (
                "locker_waiter_wakeups_total",
                "Times a blocking acquire woke up to look at its key again.",
                &self.waiter_wakeups,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_request(
            "POST",
            "/v1/locks/{key}/acquire",
            200,
            Duration::from_millis(3),
        );
        m.observe_request(
            "POST",
            "/v1/locks/{key}/acquire",
            200,
            Duration::from_millis(30),
        );
        let text = m.render(&[("locker_live_locks", "Live locks.", 7.0)]);
        assert!(text.contains("locker_http_requests_total{method=\"POST\",route=\"/v1/locks/{key}/acquire\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.05\"} 2"));
        assert!(text.contains("locker_live_locks 7"));
    }
}
