//! A PLAIN login is checked against the user's SCRAM credential, which costs one PBKDF2 on the
//! shard's own thread (about a millisecond and a half at 4096 iterations of SHA-512). A flood
//! of them from many addresses, each under its own `authentication.failures_per_address_max`,
//! could take a shard from the clients it serves. So each shard paces its password checks to
//! `authentication.password_checks_per_second_max`, allowing a burst of one second's worth: a
//! check waits for its slot, and one whose slot lies further than `authentication.timeout_ms`
//! ahead is refused at once (counted as throttled) instead of queueing past its deadline.
//! SCRAM logins do no PBKDF2 on the broker and are not paced.

use crate::shard::Shard;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The pace of one shard's password checks: a virtual schedule (GCRA) in which each check
/// takes `interval`, of which up to `burst` may be ahead of now without waiting.
pub struct Pacer {
    interval: Duration,
    burst: Duration,
    /// When the schedule's last reserved check ends; `None` before the first.
    scheduled_until: Cell<Option<Instant>>,
}

impl Pacer {
    /// `per_second` checks a second, any of them at once after a quiet second.
    pub fn new(per_second: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / per_second.max(1),
            burst: Duration::from_secs(1),
            scheduled_until: Cell::new(None),
        }
    }

    /// Reserves the next check's slot at `now`: how long to wait for it, or `None` (nothing
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
}

fn of(shard: &Shard) -> Rc<Pacer> {
    if let Some(pacer) = shard.extension::<Pacer>() {
        return pacer;
    }
    let per_second = shard.config.authentication.password_checks_per_second_max;
    let pacer = Rc::new(Pacer::new(per_second));
    shard.set_extension(pacer.clone());
    pacer
}

/// Waits for a password check's turn on this shard; `false` when it is too far off (then the
/// login is refused as throttled, not failed: the client did nothing wrong).
pub async fn turn(shard: &Shard) -> bool {
    let longest = Duration::from_millis(shard.config.authentication.timeout_ms);
    match of(shard).reserve(Instant::now(), longest) {
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

/// What a client is told when its login is not checked for lack of time.
pub const BUSY: &str = "too many password checks on this broker: try again later";

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
