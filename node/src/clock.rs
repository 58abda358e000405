//! The leader's clock: the wall clock read once at the start of a term, then
//! advanced by the monotonic clock, so a wall-clock step during the term
//! (NTP, an operator) changes nothing. Only the leader stamps time into the
//! log; no node expires anything by its own clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Reads the (possibly skewed, for fault tests) wall clock, in ms since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ms: i64,
    rate: f64,
    /// Real instant and wall time when the process started; the rate applies
    /// to time elapsed since then.
    origin: Instant,
    origin_wall_ms: u64,
}

impl WallClock {
    /// This machine's clock, shifted by `offset_ms` and running at `rate`
    /// (test builds skew clocks this way; production passes 0 and 1.0).
    pub fn new(offset_ms: i64, rate: f64) -> Self {
        let origin_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        WallClock {
            offset_ms,
            rate,
            origin: Instant::now(),
            origin_wall_ms,
        }
    }

    /// Wall time now: real wall time when the rate is 1, else scaled from start.
    pub fn now_ms(&self) -> u64 {
        let wall = if self.rate == 1.0 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        } else {
            let scaled = self.origin.elapsed().as_secs_f64() * 1000.0 * self.rate;
            self.origin_wall_ms.saturating_add(scaled as u64)
        };
        wall.saturating_add_signed(self.offset_ms)
    }

    fn monotonic_ms_since(&self, start: Instant) -> u64 {
        (start.elapsed().as_secs_f64() * 1000.0 * self.rate) as u64
    }
}

/// A leader's clock for one term.
#[derive(Debug, Clone, Copy)]
pub struct LeaderClock {
    wall: WallClock,
    base_ms: u64,
    base: Instant,
}

impl LeaderClock {
    /// Starts a term's clock; `floor_ms` (the log time so far) keeps it from
    /// starting behind what the log has already seen.
    pub fn start(wall: WallClock, floor_ms: u64) -> Self {
        LeaderClock {
            wall,
            base_ms: wall.now_ms().max(floor_ms),
            base: Instant::now(),
        }
    }

    /// The leader's time in ms since the epoch: the wall clock read once at
    /// the start of the term plus monotonic time since, so a wall-clock step
    /// during the term cannot move lease deadlines.
    pub fn now_ms(&self) -> u64 {
        self.base_ms
            .saturating_add(self.wall.monotonic_ms_since(self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_clock_is_monotonic_and_floored() {
        let wall = WallClock::new(0, 1.0);
        let c = LeaderClock::start(wall, u64::MAX / 2);
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(a >= u64::MAX / 2 && b >= a);
    }

    #[test]
    fn offset_and_rate_apply() {
        let ahead = WallClock::new(60_000, 1.0);
        let real = WallClock::new(0, 1.0);
        assert!(ahead.now_ms() >= real.now_ms() + 59_000);
        let fast = WallClock::new(0, 10.0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(fast.now_ms() >= real.now_ms() + 100);
    }
}
