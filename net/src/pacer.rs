//! Pacing of costly work a shard does for clients that have not authenticated yet (password
//! checks, TLS handshakes): a virtual schedule (GCRA) in which each piece of work takes
//! `1 / per_second`, of which up to a second's worth may lie ahead of now without waiting.
//! Work waits for its slot; work whose slot lies further off than it may wait is refused at
//! once, counted as throttled, and takes no slot.

use crate::shard::Shard;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// One kind of work's schedule on one shard.
pub struct Pacer {
    interval: Duration,
    burst: Duration,
    /// When the schedule's last reserved piece of work ends; `None` before the first.
    scheduled_until: Cell<Option<Instant>>,
}

impl Pacer {
    /// `per_second` pieces of work a second, any of them at once after a quiet second.
    pub fn new(per_second: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / per_second.max(1),
            burst: Duration::from_secs(1),
            scheduled_until: Cell::new(None),
        }
    }

    /// Reserves the next slot at `now`: how long to wait for it, or `None` (nothing
    /// reserved) when that would be longer than `longest`.
    pub fn reserve(&self, now: Instant, longest: Duration) -> Option<Duration> {
        let start = self.scheduled_until.get().map_or(now, |end| end.max(now));
        let end = start + self.interval;
        let wait = end.duration_since(now).saturating_sub(self.burst);
        if wait > longest {
            return None;
        }
        self.scheduled_until.set(Some(end));
        Some(wait)
    }

    /// Waits for the next slot; `false` (counted as throttled) when it is further off than
    /// `longest`.
    pub async fn turn(&self, shard: &Shard, longest: Duration) -> bool {
        match self.reserve(Instant::now(), longest) {
            Some(wait) if wait.is_zero() => true,
            Some(wait) => {
                glommio::timer::sleep(wait).await;
                true
            }
            None => {
                crate::metrics::of(shard).authentication_throttled();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_second_of_checks_goes_at_once_then_they_are_paced() {
        let pacer = Pacer::new(100);
        let now = Instant::now();
        let long = Duration::from_secs(10);
        for _ in 0..100 {
            assert_eq!(pacer.reserve(now, long), Some(Duration::ZERO));
        }
        assert_eq!(pacer.reserve(now, long), Some(10 * MS));
        assert_eq!(pacer.reserve(now, long), Some(20 * MS));
        // Time frees slots: 30 ms later, three have passed, so one more goes at once.
        assert_eq!(pacer.reserve(now + 30 * MS, long), Some(Duration::ZERO));
        assert_eq!(pacer.reserve(now + 30 * MS, long), Some(10 * MS));
    }

    #[test]
    fn a_slot_beyond_the_longest_wait_is_refused_and_not_reserved() {
        let pacer = Pacer::new(10);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(pacer.reserve(now, 250 * MS), Some(Duration::ZERO));
        }
        assert_eq!(pacer.reserve(now, 250 * MS), Some(100 * MS));
        assert_eq!(pacer.reserve(now, 250 * MS), Some(200 * MS));
        assert_eq!(pacer.reserve(now, 250 * MS), None);
        assert_eq!(pacer.reserve(now, 250 * MS), None);
        // Refusals took nothing: a second later the schedule is where the last grant left it.
        assert_eq!(
            pacer.reserve(now + 1000 * MS, 250 * MS),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn after_a_quiet_spell_the_full_burst_is_back() {
        let pacer = Pacer::new(50);
        let now = Instant::now();
        for _ in 0..60 {
            pacer.reserve(now, Duration::from_secs(10));
        }
        let later = now + Duration::from_secs(5);
        for _ in 0..50 {
            assert_eq!(pacer.reserve(later, MS), Some(Duration::ZERO));
        }
        assert_eq!(pacer.reserve(later, MS), None);
    }
}
