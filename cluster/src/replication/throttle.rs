//! The bandwidth a leader gives followers outside the ISR (a reassignment's new replica, a
//! node back from a long absence), so their catch-up does not starve producers and in-sync
//! followers (Kafka's `leader.replication.throttled.rate`): a token bucket of bytes per
//! second, with a second's worth banked at most. An answer may overdraw it (a fetch gets at
//! least one batch); the next waits until the debt is paid.

/// One partition's catch-up budget, sans-IO: the caller passes the clock.
#[derive(Debug, Clone)]
pub struct CatchUpThrottle {
    bytes_per_sec: u64,
    tokens: f64,
    at_ms: u64,
}

impl CatchUpThrottle {
    /// A full second's budget at `bytes_per_sec` (which must not be 0) as of `now_ms`.
    pub fn new(bytes_per_sec: u64, now_ms: u64) -> CatchUpThrottle {
        CatchUpThrottle {
            bytes_per_sec,
            tokens: bytes_per_sec as f64,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        let rate = self.bytes_per_sec as f64;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// How long to wait before sending a catching-up follower anything (0: now).
    pub fn wait_ms(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        match self.tokens >= 0.0 {
            true => 0,
            false => (-self.tokens * 1000.0 / self.bytes_per_sec as f64).ceil() as u64,
        }
    }

    /// `bytes` went to a catching-up follower at `now_ms`.
    pub fn spent(&mut self, bytes: usize, now_ms: u64) {
        self.refill(now_ms);
        self.tokens -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_averages_the_rate_and_banks_at_most_a_second() {
        let mut throttle = CatchUpThrottle::new(1_000_000, 0);
        assert_eq!(throttle.wait_ms(0), 0);
        // A second's worth may go at once, and a 1 MiB batch overdraws it.
        throttle.spent(1 << 20, 0);
        let wait = throttle.wait_ms(0);
        assert_eq!(wait, 49, "48,576 bytes of debt at 1 MB/s");
        assert_eq!(throttle.wait_ms(wait), 0);
        // Sending 100 KB every 100 ms is exactly the rate: never a wait.
        let mut now = wait;
        for _ in 0..50 {
            throttle.spent(100_000, now);
            now += 100;
            assert_eq!(throttle.wait_ms(now), 0);
        }
        // Idle for a minute banks one second, not sixty.
        now += 60_000;
        throttle.spent(1_500_000, now);
        assert_eq!(throttle.wait_ms(now), 500);
    }
}
