//! The writer's work, decided here: rounds (group commit), rolls, syncs, and the failure rules.
//!
//! Each round takes every queued batch that fits one write buffer and the active segment; the
//! writer frames them behind the tail block, writes them with one DMA write and, under
//! `always`, covers the round with one fdatasync before it is acknowledged. Appends that arrive
//! meanwhile form the next round: group commit, with no timer.
//!
//! Failure rules: a failed write rejects its round and everything queued behind it (their
//! offsets are handed out again; nothing acknowledged is touched). A failed fdatasync stops the
//! log for good: the kernel may have dropped the dirty pages, so no later sync could be trusted.

use super::{Cut, LogCore, Pending};
use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::io::SegmentFile;
use crate::segment::Segment;
use oxbow_core::{FlushPolicy, RecordBatch};

/// What the writer does next.
pub(crate) enum Work<A, T> {
    /// Frame, write and (per policy) sync these appends, in order.
    Write(Vec<Pending<A>>),
    /// Start a new active segment at this base offset ([`LogCore::rolled`] once created).
    Roll(u64),
    /// The queue is empty and a truncation waits: carry it out.
    Truncate(Cut, T),
    /// An interval fdatasync is due.
    Sync,
    /// Sync what is unsynced and stop: the log is closing or stopped.
    Close,
    /// Nothing to do; wake on new work, or at this time (ms) for an interval fdatasync.
    Idle(Option<i64>),
}

/// What a roll leaves the writer to do in the background: seal the old active segment.
pub(crate) struct RollOutcome {
    pub(crate) base_offset: u64,
    pub(crate) file: SegmentFile,
    pub(crate) log_bytes: u64,
    pub(crate) index_bytes: Vec<u8>,
    /// The transaction snapshot at the new active segment's base, written once the old one
    /// is sealed.
    pub(crate) txn_snapshot: Vec<u8>,
}

pub(crate) fn frame_len(batch: &RecordBatch) -> u64 {
    (FRAME_HEADER_BYTES + batch.len()) as u64
}

impl<A, T> LogCore<A, T> {
    /// Decides the next step. `tail_bytes` is how much of the write buffer the rewritten tail
    /// block takes. A truncation waits for the queue to drain.
    pub(crate) fn next_work(&mut self, now_ms: i64, tail_bytes: u64) -> Work<A, T> {
        if self.stopped.is_some() {
            return Work::Close;
        }
        let config = &self.config;
        if self.pending.is_empty() {
            if let Some((cut, waiter)) = self.truncation.take() {
                self.truncating = true;
                return Work::Truncate(cut, waiter);
            }
            if self.closing {
                return Work::Close;
            }
            if self.unsynced && config.flush == FlushPolicy::Interval {
                let due = self.last_sync_ms + config.flush_interval_ms as i64;
                return if due <= now_ms {
                    Work::Sync
                } else {
                    Work::Idle(Some(due))
                };
            }
            return Work::Idle(None);
        }
        let active = self.active();
        let first = frame_len(&self.pending[0].batch);
        let age_ms = now_ms - active.opened_at_ms;
        if active.log_bytes > 0
            && (active.log_bytes + first > config.segment_bytes_max
                || age_ms >= config.segment_age_max_ms as i64)
        {
            return Work::Roll(active.next_offset);
        }
        let room_in_segment = config.segment_bytes_max.saturating_sub(active.log_bytes);
        let room_in_buffer = config.write_buffer_bytes as u64 - tail_bytes;
        let room = room_in_segment.min(room_in_buffer).max(first);
        let mut round = Vec::new();
        let mut round_bytes = 0;
        while let Some(next) = self.pending.front() {
            let len = frame_len(&next.batch);
            if round_bytes + len > room {
                break;
            }
            round_bytes += len;
            self.pending_bytes -= next.batch.len() as u64;
            round.push(self.pending.pop_front().expect("front exists"));
        }
        Work::Write(round)
    }

    /// A round's frames reached the file at these headers and positions.
    pub(crate) fn round_written(&mut self, frames: &[(FrameHeader, u64)], end: u64) {
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        for (header, position) in frames {
            active.on_frame(header, *position, interval);
        }
        assert_eq!(
            active.log_bytes, end,
            "segment length disagrees with the write"
        );
        self.unsynced = true;
    }

    /// Whether a written round must be fdatasynced before it is acknowledged.
    pub(crate) fn sync_before_ack(&self) -> bool {
        self.config.flush == FlushPolicy::Always
    }

    /// Whether the new active segment's directory entry must be fsynced (its seal finished)
    /// before an acknowledgement under `always`.
    pub(crate) fn active_dir_synced(&self) -> bool {
        self.active_dir_synced
    }

    /// The seal of the segment before the active one finished, so its directory is fsynced.
    pub(crate) fn mark_active_dir_synced(&mut self) {
        self.active_dir_synced = true;
    }

    /// A written round is durable under the policy: everything in it becomes durable (and
    /// visible, up to the high watermark). Returns the waiters to tell.
    pub(crate) fn round_durable(&mut self, round: Vec<Pending<A>>) -> Vec<A> {
        let last = round
            .last()
            .expect("a round is not empty")
            .batch
            .last_offset();
        assert!(
            last < self.next_offset && last + 1 > self.durable_end,
            "round ending at {last} is not the next durable one (durable end {})",
            self.durable_end
        );
        self.durable_end = last + 1;
        self.txns.settle(self.visible_end());
        self.txns.forget_below(self.log_start_offset);
        round.into_iter().map(|p| p.waiter).collect()
    }

    /// A write failed: its round and everything queued after it are rejected, and their
    /// offsets handed out again. Returns every waiter to tell.
    pub(crate) fn round_failed(&mut self, round: Vec<Pending<A>>) -> Vec<A> {
        let written_end = self.active().next_offset;
        self.forget_unwritten(written_end);
        round
            .into_iter()
            .chain(self.pending.drain(..))
            .map(|p| p.waiter)
            .collect()
    }

    fn forget_unwritten(&mut self, written_end: u64) {
        self.next_offset = written_end;
        self.tail_cache.truncate(written_end);
        self.producers.truncate(written_end);
        self.truncate_txns(written_end);
        self.epochs_dirty |= self.epochs.truncate_from(written_end);
        self.pending_bytes = 0;
    }

    /// An fdatasync (or truncation) failed: refuse everything from now on. Returns the queued
    /// appends and the waiting truncation to fail.
    pub(crate) fn stop(&mut self, why: String) -> (Vec<A>, Option<T>) {
        self.stopped.get_or_insert(why);
        self.pending_bytes = 0;
        let queued = self.pending.drain(..).map(|p| p.waiter).collect();
        (queued, self.truncation.take().map(|(_, t)| t))
    }

    /// Whether an interval fdatasync is due after a round.
    pub(crate) fn sync_due(&self, now_ms: i64) -> bool {
        self.unsynced
            && self.config.flush == FlushPolicy::Interval
            && now_ms - self.last_sync_ms >= self.config.flush_interval_ms as i64
    }

    /// Whether anything written is not yet fdatasynced.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    pub(crate) fn mark_synced(&mut self, now_ms: i64) {
        self.unsynced = false;
        self.last_sync_ms = now_ms;
    }

    /// The new active segment exists: the old one is sealed in the background (the returned
    /// job), and its directory entry is not yet durable.
    pub(crate) fn rolled(&mut self, segment: Segment, now_ms: i64) -> RollOutcome {
        let txn_snapshot =
            crate::txn::encode(&self.txns.as_of(segment.base_offset), segment.base_offset);
        let old = self.active_mut();
        old.sealed = true;
        old.sealing = true;
        let outcome = RollOutcome {
            base_offset: old.base_offset,
            file: old.file.clone(),
            log_bytes: old.log_bytes,
            index_bytes: old.index_file_bytes(),
            txn_snapshot,
        };
        assert_eq!(
            segment.base_offset, old.next_offset,
            "a roll continues the log"
        );
        self.segments.push(segment);
        self.active_dir_synced = false;
        self.seals_in_flight += 1;
        // The new file holds nothing unsynced; the old one's data is synced by its seal.
        self.mark_synced(now_ms);
        outcome
    }

    /// A background seal finished (or failed, then the caller stops the log).
    pub(crate) fn sealed(&mut self, base_offset: u64) {
        if let Some(segment) = self
            .segments
            .iter_mut()
            .find(|s| s.base_offset == base_offset)
        {
            segment.sealing = false;
        }
        self.seals_in_flight -= 1;
    }
}
