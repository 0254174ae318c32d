//! Storage measurements of the current shard thread (each shard records its own; nothing is
//! shared, so recording takes no lock).

use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::time::Duration;

/// Highest fdatasync latency recorded exactly (µs); slower ones are clamped to it.
const FSYNC_LATENCY_MAX_US: u64 = 60_000_000;

thread_local! {
    static FSYNC_LATENCY_US: RefCell<Histogram<u64>> =
        RefCell::new(Histogram::new_with_bounds(1, FSYNC_LATENCY_MAX_US, 3).expect("valid bounds"));
}

/// Records one fdatasync's latency on this thread.
pub fn record_fsync(elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, FSYNC_LATENCY_MAX_US);
    FSYNC_LATENCY_US.with(|h| h.borrow_mut().record(micros).expect("clamped into bounds"));
}

/// This thread's fdatasync latencies so far, in microseconds.
pub fn fsync_latency_us() -> Histogram<u64> {
    FSYNC_LATENCY_US.with(|h| h.borrow().clone())
}
