//! Every Prometheus metric of the node, through `prometheus-client`.
//!
//! Counters count (and end in `_total`), gauges are levels, latencies are
//! histograms. Handlers and the Raft watcher bump the counters as things
//! happen; the gauges that mirror state owned elsewhere (Raft's view, the lock
//! table, the waiters) are refreshed right before each scrape by
//! [`Metrics::render`]'s caller, `api/ops.rs::metrics`.
//!
//! Every label has a bounded set of values: the route is axum's matched route
//! pattern (`other` when no route matched), the status a `u16`, and the
//! method one of the standard ones or `other` (a label per raw method or
//! path would let any client grow the page without limit).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::FlushStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The `Content-Type` of [`Metrics::render`]'s text (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of `locker_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// Labels of `locker_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: &'static str,
    route: String,
}

/// Labels of `locker_raft_follower_lag`: a member's node id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: u64,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The method as a label value: one of the standard methods, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Raft's view of this node, as the gauges show it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftView {
    /// Current Raft term.
    pub term: u64,
    /// Whether this node leads.
    pub is_leader: bool,
    /// 0 when no leader is known.
    pub leader_id: u64,
    /// Last log index held here.
    pub last_log_index: u64,
    /// Last index known committed.
    pub commit_index: u64,
    /// Last index applied to the lock table.
    pub applied_index: u64,
    /// Last index the snapshot covers.
    pub snapshot_index: u64,
}

/// The lock table and waiters, as the gauges show them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableView {
    /// Locks live at the current time.
    pub live_locks: u64,
    /// Processes alive at the current time.
    pub live_processes: u64,
    /// Lock records, with expired ones not yet swept (memory and disk use).
    pub lock_records: u64,
    /// Process records, with dead ones not yet swept.
    pub process_records: u64,
    /// Blocking acquires waiting on this node.
    pub waiters: u64,
}

/// Gauges mirroring state owned elsewhere, set before each scrape.
#[derive(Debug, Default)]
struct Gauges {
    term: Gauge,
    is_leader: Gauge,
    leader_id: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    live_locks: Gauge,
    live_processes: Gauge,
    lock_records: Gauge,
    process_records: Gauge,
    waiters: Gauge,
    follower_lag: Family<PeerLabels, Gauge>,
    data_dir_bytes: Gauge,
    max_locks: Gauge,
    max_processes: Gauge,
    max_waiters: Gauge,
}

/// The configured limits, as the gauges show them (0: no limit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitsView {
    /// `--max-locks`.
    pub max_locks: u64,
    /// `--max-processes`.
    pub max_processes: u64,
    /// `--max-waiters`.
    pub max_waiters: u64,
}

/// The node's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    commit: Histogram,
    /// Times this node gained or lost leadership.
    pub leader_changes: Counter,
    /// Requests this node forwarded to the leader.
    pub forwarded: Counter,
    /// Times a blocking acquire woke up to look at its key again.
    pub waiter_wakeups: Counter,
    /// Client ops the leader's proposer proposed (`crate::proposer`).
    pub proposed_ops: Counter,
    /// Log entries those ops went into: ops / entries is the mean batch.
    pub proposed_entries: Counter,
    gauges: Gauges,
}

impl Default for Metrics {
    /// Metrics without the storage counters (for tests of other parts).
    fn default() -> Self {
        Metrics::new(&FlushStats::default())
    }
}

/// A gauge from `u64` (Prometheus gauges here are `i64`; our values are far
/// below `i64::MAX`, and saturate rather than wrap if they ever were not).
fn level(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Registers every metric; the storage counters are `flush`'s own.
    pub fn new(flush: &FlushStats) -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            commit: latency_histogram(),
            leader_changes: Counter::default(),
            forwarded: Counter::default(),
            waiter_wakeups: Counter::default(),
            proposed_ops: Counter::default(),
            proposed_entries: Counter::default(),
            gauges: Gauges::default(),
        };
        m.register_http_and_raft();
        m.register_gauges();
        m.register_ops_gauges();
        register_storage(&mut m.registry, flush);
        m
    }

    fn register_http_and_raft(&mut self) {
        let r = &mut self.registry;
        // Counter names are given without `_total`: the encoder appends it.
        r.register(
            "locker_http_requests",
            "HTTP requests by method, route and status",
            self.requests.clone(),
        );
        r.register(
            "locker_http_request_duration_seconds",
            "HTTP request latency",
            self.latency.clone(),
        );
        r.register(
            "locker_raft_commit_duration_seconds",
            "Time from proposing a command to its outcome",
            self.commit.clone(),
        );
        r.register(
            "locker_leader_changes",
            "Times this node gained or lost leadership",
            self.leader_changes.clone(),
        );
        r.register(
            "locker_forwarded_requests",
            "Requests this node forwarded to the leader",
            self.forwarded.clone(),
        );
        r.register(
            "locker_waiter_wakeups",
            "Times a blocking acquire woke up to look at its key again",
            self.waiter_wakeups.clone(),
        );
        r.register(
            "locker_proposed_client_ops",
            "Client writes the leader proposed (several may share a log entry)",
            self.proposed_ops.clone(),
        );
        r.register(
            "locker_proposed_client_entries",
            "Log entries the leader's client writes went into",
            self.proposed_entries.clone(),
        );
    }

    fn register_gauges(&mut self) {
        let g = &self.gauges;
        let gauges: [(&str, &str, &Gauge); 12] = [
            ("locker_raft_term", "Current Raft term", &g.term),
            (
                "locker_raft_is_leader",
                "1 if this node is the leader",
                &g.is_leader,
            ),
            (
                "locker_raft_leader_id",
                "Id of the known leader (0 if none)",
                &g.leader_id,
            ),
            (
                "locker_raft_last_log_index",
                "Last log index on this node",
                &g.last_log_index,
            ),
            (
                "locker_raft_commit_index",
                "Committed log index known to this node",
                &g.commit_index,
            ),
            (
                "locker_raft_applied_index",
                "Last applied log index",
                &g.applied_index,
            ),
            (
                "locker_raft_snapshot_index",
                "Index of the last snapshot",
                &g.snapshot_index,
            ),
            (
                "locker_live_locks",
                "Live locks at the current time",
                &g.live_locks,
            ),
            (
                "locker_live_processes",
                "Live processes at the current time",
                &g.live_processes,
            ),
            (
                "locker_lock_records",
                "Lock records, including expired ones not yet swept",
                &g.lock_records,
            ),
            (
                "locker_process_records",
                "Process records, including dead ones not yet swept",
                &g.process_records,
            ),
            (
                "locker_waiters",
                "Blocking acquires waiting on this node",
                &g.waiters,
            ),
        ];
        for (name, help, gauge) in gauges {
            self.registry.register(name, help, gauge.clone());
        }
    }

    fn register_ops_gauges(&mut self) {
        let g = &self.gauges;
        let r = &mut self.registry;
        r.register(
            "locker_raft_follower_lag",
            "On the leader: log entries each other member is behind its last log index",
            g.follower_lag.clone(),
        );
        r.register(
            "locker_data_dir_bytes",
            "Bytes of the files in the data directory",
            g.data_dir_bytes.clone(),
        );
        let limits: [(&str, &str, &Gauge); 3] = [
            (
                "locker_max_locks",
                "--max-locks (0: no limit)",
                &g.max_locks,
            ),
            (
                "locker_max_processes",
                "--max-processes (0: no limit)",
                &g.max_processes,
            ),
            (
                "locker_max_waiters",
                "--max-waiters (0: no limit)",
                &g.max_waiters,
            ),
        ];
        for (name, help, gauge) in limits {
            r.register(name, help, gauge.clone());
        }
    }

    /// Sets the follower lag gauges: `(peer, entries behind)` for each other
    /// member while this node leads, none otherwise.
    pub fn set_follower_lag(&self, lags: &[(u64, u64)]) {
        let family = &self.gauges.follower_lag;
        family.clear();
        for &(peer, lag) in lags {
            family.get_or_create(&PeerLabels { peer }).set(level(lag));
        }
    }

    /// Sets the data directory size and the configured limits.
    pub fn set_node(&self, data_dir_bytes: u64, limits: LimitsView) {
        let g = &self.gauges;
        g.data_dir_bytes.set(level(data_dir_bytes));
        g.max_locks.set(level(limits.max_locks));
        g.max_processes.set(level(limits.max_processes));
        g.max_waiters.set(level(limits.max_waiters));
    }

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, method: &Method, route: &str, status: u16, took: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                method,
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records how long one proposal took to reach its outcome.
    pub fn observe_commit(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// Sets the Raft gauges.
    pub fn set_raft(&self, v: RaftView) {
        let g = &self.gauges;
        g.term.set(level(v.term));
        g.is_leader.set(i64::from(v.is_leader));
        g.leader_id.set(level(v.leader_id));
        g.last_log_index.set(level(v.last_log_index));
        g.commit_index.set(level(v.commit_index));
        g.applied_index.set(level(v.applied_index));
        g.snapshot_index.set(level(v.snapshot_index));
    }

    /// Sets the lock-table and waiter gauges.
    pub fn set_table(&self, v: TableView) {
        let g = &self.gauges;
        g.live_locks.set(level(v.live_locks));
        g.live_processes.set(level(v.live_processes));
        g.lock_records.set(level(v.lock_records));
        g.process_records.set(level(v.process_records));
        g.waiters.set(level(v.waiters));
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an error would come from a broken
        // encoder, and a partial page is still better than none.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Registers the flusher's counters (shared with it: the flusher thread
/// increments them, the registry reads them).
fn register_storage(r: &mut Registry, flush: &FlushStats) {
    r.register(
        "locker_storage_fsyncs",
        "fsyncs of the data directory",
        flush.fsyncs.clone(),
    );
    r.register(
        "locker_storage_entries_flushed",
        "Log entries made durable",
        flush.entries.clone(),
    );
    r.register(
        "locker_storage_fsync_seconds",
        "Time spent in fsync",
        flush.fsync_seconds.clone(),
    );
}

/// A counter of seconds (fractional), as the flusher keeps time in fsync.
pub type SecondsCounter = Counter<f64, AtomicU64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        let route = "/v1/locks/{key}/acquire";
        m.observe_request(&Method::POST, route, 200, Duration::from_millis(3));
        m.observe_request(&Method::POST, route, 200, Duration::from_millis(30));
        m.set_table(TableView {
            live_locks: 7,
            ..TableView::default()
        });
        m.leader_changes.inc();
        let text = m.render();
        assert!(text.contains("locker_http_requests_total{method=\"POST\",route=\"/v1/locks/{key}/acquire\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("locker_live_locks 7"), "{text}");
        assert!(
            text.contains(
                "# TYPE locker_leader_changes_total counter\nlocker_leader_changes_total 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE locker_storage_fsyncs_total counter"),
            "{text}"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            let name = format!("X{}", "Y".repeat(1000 + i));
            let method = Method::from_bytes(name.as_bytes()).expect("a valid token");
            m.observe_request(&method, "other", 405, Duration::from_millis(1));
        }
        let text = m.render();
        assert!(!text.contains("YYYY"), "a raw method leaked into a label");
        assert!(
            text.contains(
                "locker_http_requests_total{method=\"other\",route=\"other\",status=\"405\"} 100"
            ),
            "{text}"
        );
    }
}
