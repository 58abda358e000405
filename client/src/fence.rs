//! Clocks and the self-fencing rules (docs/protocol.md, "Self-fencing"), kept as pure functions of
//! "now" so they can be tested with a [`ManualClock`].

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A monotonic millisecond clock. Deadlines are computed on it, never on the
/// wall clock, so a wall-clock step cannot make a lease look longer.
///
/// The default is [`MonotonicClock`]; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since an arbitrary, fixed origin; never decreases.
    fn now_ms(&self) -> u64;
}

/// [`Clock`] backed by [`std::time::Instant`].
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A [`Clock`] that only moves when told to; for tests.
///
/// ```
/// use locker_client::{Clock, ManualClock};
/// let c = ManualClock::new(1_000);
/// c.advance(500);
/// assert_eq!(c.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock (it should not go backwards; tests keep it monotonic).
    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

pub(crate) fn default_clock() -> Arc<dyn Clock> {
    Arc::new(MonotonicClock::new())
}

/// The safety margin subtracted from a ttl for local deadlines: a tenth of
/// the ttl, at most 5 s, unless configured. It absorbs clock-rate differences
/// between this machine and the leader; the send time (not the answer time)
/// already makes the deadline earlier than the cluster's.
///
/// ```
/// assert_eq!(locker_client::safety_margin_ms(10_000, None), 1_000);
/// assert_eq!(locker_client::safety_margin_ms(300_000, None), 5_000);
/// assert_eq!(locker_client::safety_margin_ms(10_000, Some(250)), 250);
/// ```
pub fn safety_margin_ms(ttl_ms: u64, configured: Option<u64>) -> u64 {
    configured.unwrap_or((ttl_ms / 10).min(5_000))
}

/// Local deadline of a lease whose request was sent at `sent_at_ms`.
///
/// The cluster starts the lease when it applies the request, which is after
/// we sent it, so `sent + ttl` never lies beyond the cluster's expiry (modulo
/// clock rate, which the margin covers).
pub(crate) fn lease_deadline(sent_at_ms: u64, ttl_ms: u64, margin_ms: u64) -> u64 {
    sent_at_ms.saturating_add(ttl_ms.saturating_sub(margin_ms))
}

/// What the reporter thread last established about this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessView {
    /// The current process hash.
    pub process_hash: Arc<str>,
    /// Bumped each time the process hash is replaced (after a lapse or
    /// termination): locks taken under an older incarnation are lost.
    pub incarnation: u64,
    /// Local deadline of the process record (`None` until the first
    /// successful keep-alive of this incarnation).
    pub alive_deadline: Option<u64>,
    /// The locker was terminated: nothing is live any more.
    pub terminated: bool,
}

impl ProcessView {
    /// Whether, by local reckoning, the cluster still counts this
    /// incarnation's process as live at `now_ms`.
    pub fn is_alive_at(&self, now_ms: u64) -> bool {
        !self.terminated && self.alive_deadline.is_some_and(|d| now_ms < d)
    }
}

/// The self-fencing verdict for one lock: `Some(reason)` once the lock must
/// be treated as lost without asking the cluster.
pub(crate) fn self_fence_check(
    now_ms: u64,
    lease_deadline_ms: u64,
    lock_incarnation: u64,
    process: &ProcessView,
) -> Option<crate::LostReason> {
    if process.incarnation != lock_incarnation || !process.is_alive_at(now_ms) {
        return Some(crate::LostReason::ProcessLapsed);
    }
    if now_ms >= lease_deadline_ms {
        return Some(crate::LostReason::LocalDeadline);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LostReason;

    fn view(incarnation: u64, alive_deadline: Option<u64>) -> ProcessView {
        ProcessView {
            process_hash: Arc::from("h/1.2"),
            incarnation,
            alive_deadline,
            terminated: false,
        }
    }

    #[test]
    fn margin_defaults() {
        assert_eq!(safety_margin_ms(300_000, None), 5_000);
        assert_eq!(safety_margin_ms(3_000, None), 300);
        assert_eq!(safety_margin_ms(10_000, None), 1_000);
        assert_eq!(safety_margin_ms(3_000, Some(7)), 7);
    }

    #[test]
    fn lease_deadline_counts_from_send_time() {
        let clock = ManualClock::new(10_000);
        let sent = clock.now_ms();
        clock.advance(400); // the answer took 400 ms to come back
        let dl = lease_deadline(sent, 3_000, 300);
        assert_eq!(dl, 12_700, "deadline must count from the send time");
        let p = view(1, Some(1_000_000));
        clock.set(12_699);
        assert_eq!(self_fence_check(clock.now_ms(), dl, 1, &p), None);
        clock.set(12_700);
        assert_eq!(
            self_fence_check(clock.now_ms(), dl, 1, &p),
            Some(LostReason::LocalDeadline)
        );
    }

    #[test]
    fn margin_larger_than_ttl_means_already_expired() {
        let dl = lease_deadline(100, 50, 80);
        assert_eq!(dl, 100);
        assert_eq!(
            self_fence_check(100, dl, 0, &view(0, Some(1_000))),
            Some(LostReason::LocalDeadline)
        );
    }

    #[test]
    fn process_lapse_fences_even_with_long_lease() {
        let clock = ManualClock::new(0);
        let lease = lease_deadline(0, 300_000, 5_000);
        // Keep-alive sent at t=0 succeeded: alive until 0 + 10 000 - 1 000.
        let p = view(3, Some(lease_deadline(0, 10_000, 1_000)));
        clock.set(8_999);
        assert_eq!(self_fence_check(clock.now_ms(), lease, 3, &p), None);
        clock.set(9_000);
        assert_eq!(
            self_fence_check(clock.now_ms(), lease, 3, &p),
            Some(LostReason::ProcessLapsed)
        );
    }

    #[test]
    fn new_incarnation_fences_old_locks() {
        let p = view(4, Some(1_000_000));
        assert_eq!(
            self_fence_check(10, 1_000_000, 3, &p),
            Some(LostReason::ProcessLapsed)
        );
        assert_eq!(self_fence_check(10, 1_000_000, 4, &p), None);
    }

    #[test]
    fn never_alive_or_terminated_is_lapsed() {
        assert!(!view(0, None).is_alive_at(0));
        let mut p = view(0, Some(100));
        assert!(p.is_alive_at(99));
        p.terminated = true;
        assert!(!p.is_alive_at(99));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let c = MonotonicClock::new();
        let a = c.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(c.now_ms() >= a + 5);
    }
}
