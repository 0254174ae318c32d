//! The cleaner's I/O budget: bytes per second, shared by every partition a shard cleans.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// After this long without I/O the budget starts again: idle time is not saved up for a burst.
const IDLE_RESET: Duration = Duration::from_secs(1);

/// Spreads the cleaner's reads and writes at `bytes_per_sec`.
pub struct IoPace {
    bytes_per_sec: u64,
    since: Cell<Instant>,
    spent: Cell<u64>,
    last: Cell<Instant>,
}

impl IoPace {
    /// A budget of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> IoPace {
        let now = Instant::now();
        IoPace {
            bytes_per_sec: bytes_per_sec.max(1),
            since: Cell::new(now),
            spent: Cell::new(0),
            last: Cell::new(now),
        }
    }

    /// Counts `bytes` of I/O done, and waits until the budget has room for them.
    pub async fn spend(&self, bytes: u64) {
        let now = Instant::now();
        if now.duration_since(self.last.get()) > IDLE_RESET {
            self.since.set(now);
            self.spent.set(0);
        }
        self.spent.set(self.spent.get() + bytes);
        let due = Duration::from_secs_f64(self.spent.get() as f64 / self.bytes_per_sec as f64);
        let elapsed = now.duration_since(self.since.get());
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
        self.last.set(Instant::now());
    }
}
