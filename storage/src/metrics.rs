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
    static COMPACTION: RefCell<CompactionStats> = RefCell::new(CompactionStats::default());
}

/// What the cleaner of this thread's compacted partitions did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Passes that cleaned something.
    pub passes: u64,
    /// Segments replaced by cleaned copies.
    pub segments_rewritten: u64,
    /// Bytes the cleaned copies saved.
    pub bytes_removed: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Passes that failed (an I/O error; the segment being cleaned was left as it was).
    pub failures: u64,
}

/// Records a pass's outcome on this thread.
pub(crate) fn record_compaction(outcome: Result<&crate::Compacted, ()>) {
    COMPACTION.with(|stats| {
        let mut stats = stats.borrow_mut();
        match outcome {
            Ok(done) => {
                stats.passes += 1;
                stats.segments_rewritten += done.segments_rewritten as u64;
                stats.bytes_removed += done.bytes_before.saturating_sub(done.bytes_after);
                stats.records_removed += done.records_removed;
            }
            Err(()) => stats.failures += 1,
        }
    });
}

/// This thread's compaction so far.
pub fn compaction_stats() -> CompactionStats {
    COMPACTION.with(|stats| *stats.borrow())
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
