//! Waits between attempts, as Kafka's clients space them (KIP-580): the first is the
//! client's retry backoff, each next one twice as long up to the retry backoff maximum, and
//! each is spread by ±20% so that the clients of one broker that went away do not all come
//! back in the same millisecond.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Share of a wait it may be shortened or lengthened by.
const JITTER: f64 = 0.2;

/// The waits of one series of attempts.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A series whose first wait is `first` and whose waits never pass `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }

    /// The wait before the next attempt; the one after will be twice as long.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = jittered(self.next).min(self.max);
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// `wait`, made up to [`JITTER`] shorter or longer at random.
fn jittered(wait: Duration) -> Duration {
    // A fresh `RandomState` has fresh keys, so hashing nothing gives a new random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = random as f64 / u64::MAX as f64;
    wait.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_within_the_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next_wait()).collect();
        for (wait, nominal) in waits.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                *wait >= nominal.mul_f64(1.0 - JITTER),
                "{wait:?} vs {nominal:?}"
            );
            assert!(
                *wait
                    <= nominal
                        .mul_f64(1.0 + JITTER)
                        .min(Duration::from_millis(1000))
            );
        }
    }

    #[test]
    fn waits_are_spread() {
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(2)).next_wait())
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
    }
}
