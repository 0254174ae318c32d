//! The sans-IO core of a partition's log: every decision, no I/O.
//!
//! [`LogCore`] owns the state of one partition's log on its shard: the segments and what they
//! hold, offset assignment, the queue of appends with their admission order, round selection,
//! the roll decision, the reject and stop rules, truncation and retention plans, the leader
//! epochs, and two ends that replication keeps apart:
//! - the **durable end**: every offset below it is written (and fdatasynced under
//!   `flush = always`) on this node;
//! - the **visible end**: what readers may see. Standalone it equals the durable end; a
//!   replicated partition caps it at the high watermark ([`LogCore::set_high_watermark`]).
//!
//! It never reads the clock (callers pass `now_ms`), opens a file or awaits. The shells around
//! it, `Partition` (the API) and the writer task, do the I/O it hands out and report back, in
//! this order:
//! 1. appends: [`LogCore::join_line`]/[`LogCore::may_enter`] while queue space is short, then
//!    [`LogCore::append`] (or [`LogCore::append_replicated`] for a follower);
//! 2. the writer: [`LogCore::next_work`] → write a round, then [`LogCore::round_written`] and,
//!    once durable, [`LogCore::round_durable`] (or [`LogCore::round_failed`] /
//!    [`LogCore::stop`]); rolls, truncations and syncs likewise.
//!
//! `A` is what an append waits on and `T` what a truncation waits on; the core only hands them
//! back with the outcome, so the shells choose their wake-up mechanism and tests use plain ids.

mod append;
mod rounds;
mod truncation;
pub(crate) use truncation::Cut;

pub(crate) use append::Admitted;
pub(crate) use rounds::{frame_len, RollOutcome, Work};

use crate::epochs::LeaderEpochs;
use crate::error::ReadError;
use crate::io::SegmentFile;
use crate::producers::ProducerState;
use crate::read::{ReadStreams, StreamEnd};
use crate::segment::Segment;
use crate::tail_cache::TailCache;
use crate::txn::{AbortedTxn, TxnState};
use oxbow_core::{LogConfig, RecordBatch};
use std::collections::VecDeque;

/// An append queued for the writer: the batch with its offsets assigned, and its waiter.
pub(crate) struct Pending<A> {
    pub(crate) batch: RecordBatch,
    pub(crate) waiter: A,
}

/// Where a read must go.
pub(crate) enum ReadPlan {
    /// Served from memory.
    Cached(Vec<RecordBatch>),
    /// `from` is the visible end: nothing to read yet.
    Empty,
    /// Scan frames of `file` (cache key `key`) from `position` up to byte `limit`, stopping at
    /// `visible`. `sequential`: the read continues an earlier one, so read-ahead pays.
    /// `segment_end`: the offset after the segment, where the next one starts (a read that finds
    /// nothing at or after `from` in it, because compaction left a gap at its end, goes on there).
    Disk {
        file: SegmentFile,
        key: u64,
        position: u64,
        limit: u64,
        visible: u64,
        sequential: bool,
        segment_end: u64,
    },
}

/// Offsets and sizes of a log, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// First readable offset.
    pub log_start_offset: u64,
    /// What readers see: everything below is readable.
    pub log_end_offset: u64,
    /// Every offset below this one is durable on this node (under the flush policy).
    pub durable_end_offset: u64,
    /// Offset the next append will get (above the durable end while appends are in flight).
    pub next_offset: u64,
    /// Number of segments, the active one included.
    pub segments: usize,
    /// Bytes of frames in all segments.
    pub log_bytes: u64,
    /// Bytes held by the tail cache.
    pub tail_cache_bytes: u64,
}

/// The state and rules of one partition's log. See the module docs for the call order.
pub(crate) struct LogCore<A, T> {
    pub(crate) config: LogConfig,
    /// Oldest first; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pending: VecDeque<Pending<A>>,
    pending_bytes: u64,
    next_offset: u64,
    log_start_offset: u64,
    /// The log start moved past what the first segment's base says (records deleted, or the
    /// log restarted): the checkpoint must be written again.
    log_start_dirty: bool,
    durable_end: u64,
    high_watermark: Option<u64>,
    tail_cache: TailCache,
    /// Where recent reads from disk ended.
    streams: ReadStreams,
    /// Epoch stamped on this leader's appends.
    leader_epoch: i32,
    epochs: LeaderEpochs,
    epochs_dirty: bool,
    producers: ProducerState,
    txns: TxnState,
    closing: bool,
    /// Set after an fdatasync (or truncation) failure: no append is accepted again.
    stopped: Option<String>,
    truncation: Option<(Cut, T)>,
    /// The writer is carrying out a truncation: offsets are about to change under it.
    truncating: bool,
    /// Appends waiting for queue space, in arrival order (tickets).
    line: VecDeque<u64>,
    next_ticket: u64,
    /// Bytes written since the last fdatasync, and when that was (ms).
    unsynced: bool,
    last_sync_ms: i64,
    /// False from a roll until the new active segment's directory entry is fsynced; acknowledging
    /// under `always` before that could lose the whole file.
    active_dir_synced: bool,
    seals_in_flight: usize,
}

impl<A, T> LogCore<A, T> {
    /// A core over recovered segments (oldest first, at least one), starting at `log_start`
    /// (in the first segment), with the producer state and leader epochs recovery rebuilt.
    /// Everything recovered is durable and visible.
    pub(crate) fn new(
        config: LogConfig,
        segments: Vec<Segment>,
        log_start: u64,
        producers: ProducerState,
        txns: TxnState,
        epochs: LeaderEpochs,
        now_ms: i64,
    ) -> LogCore<A, T> {
        assert!(!segments.is_empty(), "a log always has an active segment");
        let next_offset = segments.last().expect("not empty").next_offset;
        LogCore {
            tail_cache: TailCache::new(config.tail_cache_bytes_max),
            streams: ReadStreams::default(),
            config,
            log_start_offset: log_start,
            log_start_dirty: false,
            segments,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_offset,
            durable_end: next_offset,
            high_watermark: None,
            leader_epoch: epochs.latest().unwrap_or(0),
            epochs,
            epochs_dirty: false,
            producers,
            txns,
            closing: false,
            stopped: None,
            truncation: None,
            truncating: false,
            line: VecDeque::new(),
            next_ticket: 0,
            unsynced: false,
            last_sync_ms: now_ms,
            active_dir_synced: true,
            seals_in_flight: 0,
        }
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Offsets below are readable.
    pub(crate) fn visible_end(&self) -> u64 {
        self.high_watermark
            .map_or(self.durable_end, |hw| hw.min(self.durable_end))
    }

    /// Offsets below are durable on this node.
    pub(crate) fn durable_end(&self) -> u64 {
        self.durable_end
    }

    /// Caps what readers see (replication: the high watermark, which the leader computes from
    /// its followers and followers learn from the leader). It never goes back.
    pub(crate) fn set_high_watermark(&mut self, high_watermark: u64) {
        let current = self.high_watermark.unwrap_or(0);
        self.high_watermark = Some(current.max(high_watermark));
        self.txns.settle(self.visible_end());
    }

    /// Offsets below are stable: no transaction open below them, and visible (Kafka's last
    /// stable offset, where `read_committed` readers stop).
    pub(crate) fn last_stable_offset(&self) -> u64 {
        let visible = self.visible_end();
        self.txns
            .first_unstable()
            .map_or(visible, |first| first.min(visible))
    }

    /// Aborted transactions with records in `from..upto`, for a `read_committed` reader.
    pub(crate) fn aborted_transactions(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        self.txns
            .aborted_overlapping(from.max(self.log_start_offset), upto)
    }

    /// The log now ends at `end` (at or above the settled horizon): undo the transaction state
    /// above it.
    pub(crate) fn truncate_txns(&mut self, end: u64) {
        let exact = self.txns.truncate(end);
        debug_assert!(
            exact,
            "a cut below the settled horizon without a rebuilt state"
        );
    }

    pub(crate) fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Recovery moved the log start from where the checkpoint says: it must be written again.
    pub(crate) fn mark_log_start_dirty(&mut self) {
        self.log_start_dirty = true;
    }

    /// The log start to checkpoint, if it moved since it was last taken.
    pub(crate) fn take_log_start_if_dirty(&mut self) -> Option<u64> {
        std::mem::take(&mut self.log_start_dirty).then_some(self.log_start_offset)
    }

    pub(crate) fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    pub(crate) fn begin_close(&mut self) {
        self.closing = true;
    }

    pub(crate) fn seals_in_flight(&self) -> usize {
        self.seals_in_flight
    }

    /// The leader epochs, and whether they changed since the checkpoint was last written.
    pub(crate) fn epochs(&self) -> &LeaderEpochs {
        &self.epochs
    }

    /// Recovery changed the epochs: the checkpoint must be written again.
    pub(crate) fn mark_epochs_dirty(&mut self) {
        self.epochs_dirty = true;
    }

    /// The checkpoint bytes if the epochs changed since they were last taken.
    pub(crate) fn take_epochs_if_dirty(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.epochs_dirty).then(|| self.epochs.encode())
    }

    /// Sets the epoch stamped into batches appended from now on (this node leads in it).
    pub(crate) fn set_leader_epoch(&mut self, epoch: i32) {
        assert!(
            epoch >= self.leader_epoch,
            "leader epoch moved back from {} to {epoch}",
            self.leader_epoch
        );
        self.leader_epoch = epoch;
    }

    /// Where the log must go to serve `from`: memory, disk, or nowhere yet.
    /// Where a read of whole batches from `from` starts, stopping before `visible` (the
    /// visible end for readers; the durable end for a leader serving its followers).
    pub(crate) fn read_plan(
        &self,
        from: u64,
        max_bytes: usize,
        visible: u64,
    ) -> Result<ReadPlan, ReadError> {
        if self.segments.is_empty() {
            return Err(ReadError::Closed);
        }
        if from < self.log_start_offset || from > visible {
            return Err(ReadError::OffsetOutOfRange {
                offset: from,
                log_start: self.log_start_offset,
                log_end: visible,
            });
        }
        if from == visible {
            return Ok(ReadPlan::Empty);
        }
        if let Some(batches) = self.tail_cache.read(from, visible, max_bytes) {
            if !batches.is_empty() {
                return Ok(ReadPlan::Cached(batches));
            }
        }
        let at = self.segments.partition_point(|s| s.base_offset <= from);
        let mut segment = &self.segments[at.max(1) - 1];
        let mut position = 0;
        if from < segment.next_offset {
            let relative = (from - segment.base_offset) as u32;
            position = segment.index.lookup(relative) as u64;
        } else {
            // `from` falls in a gap left by a damaged segment: continue at the next one.
            match self.segments.get(at) {
                Some(next) => segment = next,
                None => return Ok(ReadPlan::Empty),
            }
        }
        let stream = self.streams.continuing(from, segment.cache_key);
        Ok(ReadPlan::Disk {
            file: segment.file.clone(),
            key: segment.cache_key,
            position: stream.map_or(position, |s| s.position),
            limit: segment.log_bytes,
            visible,
            sequential: stream.is_some(),
            segment_end: segment.next_offset,
        })
    }

    /// Where the first frame holding a record at or after `at` (ms) may start: the first
    /// segment whose newest record reaches `at`, from its time index. `None`: no segment does.
    pub(crate) fn time_plan(&self, at: i64) -> Option<(SegmentFile, u64, u64, u64)> {
        let segment = self.segments.iter().find(|s| s.max_timestamp >= at)?;
        let position = segment.index.lookup_time(at) as u64;
        Some((
            segment.file.clone(),
            segment.cache_key,
            position,
            segment.log_bytes,
        ))
    }

    /// The idempotent producers with batches in the log (or queued for it).
    pub(crate) fn active_producers(&self) -> Vec<crate::producers::ActiveProducer> {
        let open: std::collections::HashMap<i64, u64> = self.txns.open().collect();
        let mut active = self.producers.active();
        for producer in &mut active {
            producer.txn_start_offset = open.get(&producer.id).copied();
        }
        active
    }

    /// A read from disk starting at offset `from` ended at `end`.
    pub(crate) fn read_ended(&mut self, from: u64, end: StreamEnd) {
        self.streams.advance(from, end);
    }

    pub(crate) fn stats(&self) -> PartitionStats {
        PartitionStats {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.visible_end(),
            durable_end_offset: self.durable_end,
            next_offset: self.next_offset,
            segments: self.segments.len(),
            log_bytes: self.segments.iter().map(|s| s.log_bytes).sum(),
            tail_cache_bytes: self.tail_cache.bytes(),
        }
    }

    /// Takes the segments out (closing).
    pub(crate) fn take_segments(&mut self) -> Vec<Segment> {
        std::mem::take(&mut self.segments)
    }
}

#[cfg(test)]
mod tests;
