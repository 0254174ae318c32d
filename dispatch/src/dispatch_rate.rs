//! A subscription's dispatch rate limit (Pulsar's `dispatchRate`): at most so many messages
//! and so many bytes per second leave it, per partition. Token buckets that refill
//! continuously and hold a tenth of a second's worth, so that a limited subscription delivers
//! evenly instead of in one-second bursts. A message is let through while a bucket is not in
//! debt and charged in full, so a message larger than the bucket still goes, and the average
//! holds to the limit.

use std::time::{Duration, Instant};

/// Share of a second a bucket holds when full.
const BURST_SECONDS: f64 = 0.1;

/// How far past the end of its debt a bucket asks to be woken.
const MIN_WAIT: Duration = Duration::from_micros(1);

/// Limits of one subscription; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchRate {
    /// Messages per second.
    pub messages_per_second: u64,
    /// Bytes (keys, values and headers) per second.
    pub bytes_per_second: u64,
}

impl DispatchRate {
    /// Whether neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.messages_per_second == 0 && self.bytes_per_second == 0
    }
}

/// One bucket: `per_second` tokens a second, at most [`BURST_SECONDS`] of them held.
#[derive(Debug, Default)]
struct Bucket {
    per_second: u64,
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until first used (then full).
    at: Option<Instant>,
}

impl Bucket {
    fn new(per_second: u64) -> Bucket {
        Bucket {
            per_second,
            ..Bucket::default()
        }
    }

    fn capacity(&self) -> f64 {
        (self.per_second as f64 * BURST_SECONDS).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let added = match self.at {
            Some(at) => now.saturating_duration_since(at).as_secs_f64() * self.per_second as f64,
            None => self.capacity(),
        };
        self.tokens = (self.tokens + added).min(self.capacity());
        self.at = Some(now);
    }

    fn admits(&mut self, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        self.refill(now);
        self.tokens > 0.0
    }

    fn charge(&mut self, cost: f64) {
        if self.per_second > 0 {
            self.tokens -= cost;
        }
    }

    /// When it will admit again, if it does not now.
    fn ready_at(&self) -> Option<Instant> {
        if self.per_second == 0 || self.tokens > 0.0 {
            return None;
        }
        // A microsecond past the debt: a wait that rounds down would wake the driver to a
        // bucket still (just) in debt, again and again.
        let wait = Duration::from_secs_f64(-self.tokens / self.per_second as f64);
        Some(self.at? + wait + MIN_WAIT)
    }
}

/// The buckets of one subscription on one partition.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    rate: DispatchRate,
    messages: Bucket,
    bytes: Bucket,
}

impl RateGate {
    pub(crate) fn new(rate: DispatchRate) -> RateGate {
        RateGate {
            rate,
            messages: Bucket::new(rate.messages_per_second),
            bytes: Bucket::new(rate.bytes_per_second),
        }
    }

    pub(crate) fn rate(&self) -> DispatchRate {
        self.rate
    }

    /// Whether a message may leave now.
    pub(crate) fn admits(&mut self, now: Instant) -> bool {
        self.messages.admits(now) & self.bytes.admits(now)
    }

    /// Counts a message of `bytes` that left.
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.messages.charge(1.0);
        self.bytes.charge(bytes as f64);
    }

    /// When a message may leave again, if the limit holds them back now.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        [self.messages.ready_at(), self.bytes.ready_at()]
            .into_iter()
            .flatten()
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of `size` bytes let through by `gate` in `seconds`, asked every millisecond.
    fn admitted(gate: &mut RateGate, size: usize, seconds: u64) -> u64 {
        let start = Instant::now();
        let mut count = 0;
        for ms in 0..seconds * 1000 {
            let now = start + Duration::from_millis(ms);
            while gate.admits(now) {
                gate.charge(size);
                count += 1;
            }
        }
        count
    }

    #[test]
    fn messages_and_bytes_are_held_to_their_limits_over_time() {
        let by_messages = DispatchRate {
            messages_per_second: 2_000,
            bytes_per_second: 0,
        };
        let count = admitted(&mut RateGate::new(by_messages), 100, 10);
        // 10 s at 2,000/s, plus the first full bucket (200).
        assert!((20_000..=20_201).contains(&count), "{count}");
        let by_bytes = DispatchRate {
            messages_per_second: 0,
            bytes_per_second: 100_000,
        };
        let count = admitted(&mut RateGate::new(by_bytes), 1_000, 10);
        assert!((1_000..=1_011).contains(&count), "{count}");
        let mut unlimited = RateGate::default();
        let now = Instant::now();
        for _ in 0..1_000 {
            assert!(unlimited.admits(now));
            unlimited.charge(1 << 20);
        }
        assert_eq!(unlimited.ready_at(), None);
    }

    #[test]
    fn a_message_larger_than_the_bucket_still_goes_and_the_next_waits_for_it() {
        let mut gate = RateGate::new(DispatchRate {
            messages_per_second: 0,
            bytes_per_second: 1_000,
        });
        let now = Instant::now();
        assert!(gate.admits(now));
        gate.charge(5_000);
        assert!(!gate.admits(now));
        let ready = gate.ready_at().expect("held back");
        assert!(
            ready >= now + Duration::from_millis(4_900),
            "{:?}",
            ready - now
        );
        assert!(gate.admits(ready));
    }
}
