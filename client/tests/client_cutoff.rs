//! Library side of a cut-off client: cut off from the cluster (every packet
//! swallowed by a black-holed proxy), `heartbeat()` and `lost()` must report
//! the loss by the local deadline (last keep-alive *sent* + process ttl -
//! margin) minus `stop_grace_ms`, even while a network call hangs, and
//! before the cluster could free the lock.

mod common;

use common::{cluster_slot, key, runtime, start_cluster};
use locker_client::{AcquireResult, Error, Heartbeater, Locker, LockerOptions};
use locker_tests::api;
use locker_tests::proxy::Proxy;
use std::time::{Duration, Instant};

const PROCESS_TTL_MS: u64 = 4_000;
const WRITE_MS: u64 = 500;
/// The default margin: a tenth of the ttl.
const MARGIN_MS: u64 = PROCESS_TTL_MS / 10;

fn loss_is_reported_in_time(stop_grace_ms: u64) {
    let _slot = cluster_slot();
    let c = start_cluster(1);
    let url = c.url(1);
    let proxy = Proxy::start(&c.node(1).client_addr);
    let rt = runtime();
    rt.block_on(async move {
        let locker = Locker::new(
            LockerOptions {
                endpoints: vec![proxy.url()],
                report_write_ms: WRITE_MS,
                report_ttl_ms: PROCESS_TTL_MS,
                lock_ttl_ms: 60_000,
                lock_extend_ms: 20_000,
                lock_recheck_ms: 300,
                ..Default::default()
            }
            .with_stop_grace(stop_grace_ms),
        )
        .expect("locker");
        let k = key("cutoff-lib/");
        let acq = match locker.acquire(&k, None).await.expect("acquire") {
            AcquireResult::Success(a) => a,
            AcquireResult::SomeoneElseHoldsLock(h) => panic!("held by {h}"),
        };
        let hb = acq.heartbeater();
        hb.delay(1_500).await.expect("heartbeats before the cut");

        proxy.black_hole();
        let w = Window::after_cut(stop_grace_ms);
        let hb2 = hb.clone();
        let cut = w.cut;
        let lost = tokio::spawn(async move {
            let e = hb2.lost().await;
            (cut.elapsed(), e)
        });
        let hb_at = heartbeat_until_lost(&hb, &w).await;
        let (lost_at, lost_err) = lost.await.expect("lost task");
        eprintln!(
            "FIGURES grace {stop_grace_ms}: heartbeat failed {hb_at:?}, lost() {lost_at:?} \
             after the cut, {:?} left to the deadline: {lost_err}",
            hb.time_left_ms()
        );
        w.assert_within("heartbeat()", hb_at);
        w.assert_within("lost()", lost_at);
        // Told before the cluster could free the lock: it still names us.
        let r = tokio::task::spawn_blocking(move || api::read(&url, &k))
            .await
            .expect("read");
        assert_eq!(
            r.lock().map(|l| l.owner_hash).as_deref(),
            Some(acq.owner_hash()),
            "{:?}",
            r.body
        );
    });
}

/// When the loss must be reported, counted from the cut.
struct Window {
    cut: Instant,
    earliest: Duration,
    latest: Duration,
}

impl Window {
    /// The last keep-alive that got through was sent at most one write
    /// interval (plus a little) before the cut.
    fn after_cut(stop_grace_ms: u64) -> Window {
        Window {
            cut: Instant::now(),
            latest: Duration::from_millis(PROCESS_TTL_MS - MARGIN_MS - stop_grace_ms + 400),
            earliest: Duration::from_millis(
                PROCESS_TTL_MS - MARGIN_MS - stop_grace_ms - WRITE_MS - 300,
            ),
        }
    }

    fn assert_within(&self, what: &str, at: Duration) {
        let (earliest, latest) = (self.earliest, self.latest);
        assert!(
            at <= latest,
            "{what} reported the loss {at:?} after the cut (> {latest:?})"
        );
        assert!(
            at >= earliest,
            "{what} reported the loss early: {at:?} < {earliest:?}"
        );
    }
}

/// Heartbeats until one fails, which must be with `Error::Lost`; no
/// heartbeat may wait past the point the loss was due. Gives when the
/// failure came, after the cut.
async fn heartbeat_until_lost(hb: &Heartbeater, w: &Window) -> Duration {
    let err = loop {
        let one = Instant::now();
        let r = hb.heartbeat().await;
        assert!(
            w.cut.elapsed() <= w.latest || one.elapsed() < Duration::from_millis(200),
            "a heartbeat waited {:?} past the point the loss was due",
            one.elapsed()
        );
        match r {
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => break e,
        }
    };
    let hb_at = w.cut.elapsed();
    assert!(matches!(err, Error::Lost(_)), "{err}");
    hb_at
}

trait WithStopGrace {
    fn with_stop_grace(self, ms: u64) -> Self;
}

impl WithStopGrace for LockerOptions {
    fn with_stop_grace(mut self, ms: u64) -> Self {
        self.stop_grace_ms = ms;
        self
    }
}

#[test]
fn heartbeat_and_lost_report_a_cut_off_at_the_process_deadline() {
    loss_is_reported_in_time(0);
}

#[test]
fn heartbeat_and_lost_report_a_cut_off_a_stop_grace_before_the_deadline() {
    loss_is_reported_in_time(1_500);
}
