//! Recent batches of one partition kept in memory, so consumers at the head read without I/O.

use oxbow_core::RecordBatch;
use std::collections::VecDeque;

/// The newest batches of a partition, in offset order (a follower of a compacted log keeps its
/// leader's gaps), bounded in bytes.
/// Owned by the partition's shard.
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<RecordBatch>,
    bytes: u64,
    bytes_max: u64,
}

impl TailCache {
    /// An empty cache holding at most `bytes_max` bytes (always at least the newest batch).
    pub fn new(bytes_max: u64) -> TailCache {
        TailCache {
            batches: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Adds the newest batch; evicts the oldest beyond the byte budget.
    pub fn push(&mut self, batch: RecordBatch) {
        if let Some(last) = self.batches.back() {
            assert!(
                last.last_offset() < batch.base_offset(),
                "tail cache must stay in offset order"
            );
        }
        self.bytes += batch.len() as u64;
        self.batches.push_back(batch);
        while self.bytes > self.bytes_max && self.batches.len() > 1 {
            let old = self.batches.pop_front().expect("non-empty");
            self.bytes -= old.len() as u64;
        }
    }

    /// Batches holding offsets from `from` up to (not including) `end`, at most `max_bytes` but
    /// at least one; `None` when `from` is older than the cache.
    pub fn read(&self, from: u64, end: u64, max_bytes: usize) -> Option<Vec<RecordBatch>> {
        let first = self.batches.front()?;
        if from < first.base_offset() {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset() < from);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for batch in self.batches.range(start..) {
            if batch.base_offset() >= end || (!out.is_empty() && bytes + batch.len() > max_bytes) {
                break;
            }
            bytes += batch.len();
            out.push(batch.clone());
        }
        Some(out)
    }

    /// Drops the batches wholly below `offset` (compaction rewrote them on disk).
    pub fn forget_below(&mut self, offset: u64) {
        while self
            .batches
            .front()
            .is_some_and(|b| b.last_offset() < offset)
        {
            let b = self.batches.pop_front().expect("non-empty");
            self.bytes -= b.len() as u64;
        }
    }

    /// Drops batches holding any offset at or above `offset`.
    pub fn truncate(&mut self, offset: u64) {
        while self
            .batches
            .back()
            .is_some_and(|b| b.last_offset() >= offset)
        {
            let b = self.batches.pop_back().expect("non-empty");
            self.bytes -= b.len() as u64;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
