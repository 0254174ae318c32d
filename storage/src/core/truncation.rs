//! Removing records: truncation at the end (a follower whose log diverged), and at the start
//! retention and deleting records. The core decides which segments go and where the cut is;
//! the writer does the files.

use super::LogCore;
use crate::error::{DeleteRecordsError, TruncateError};
use crate::io::SegmentFile;
use crate::retention::{segments_to_delete, SegmentStats};
use crate::segment::Segment;
use crate::txn::TxnState;

/// Where a truncation cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Remove every batch holding this offset or more (a follower whose log diverged).
    From(u64),
    /// Remove every batch and start the log again, empty, at this offset, which may lie beyond
    /// the old end (Kafka's "truncate fully and start at": a replica that fell behind its
    /// leader's log start, or a Raft follower that installs a snapshot).
    Everything(u64),
}

/// What a truncation to an offset removes.
pub(crate) struct TruncationPlan {
    /// Whole segments to delete (their files), newest last.
    pub(crate) doomed: Vec<Segment>,
    /// The log empties and restarts at this offset (a new segment must be created there).
    pub(crate) restart_at: Option<u64>,
}

/// Where the last kept segment is cut: scan its frames from `start` up to `limit` for the
/// first one holding the truncation offset or more.
pub(crate) struct CutSearch {
    pub(crate) file: SegmentFile,
    pub(crate) base_offset: u64,
    pub(crate) start: u64,
    pub(crate) limit: u64,
}

impl<A, T> LogCore<A, T> {
    /// Asks for every batch holding an offset at or above `offset` to be removed, once the queue
    /// has drained.
    pub(crate) fn request_truncation(&mut self, cut: Cut, waiter: T) -> Result<(), TruncateError> {
        if let Some(why) = &self.stopped {
            return Err(TruncateError(why.clone()));
        }
        if self.closing {
            return Err(TruncateError("partition is closed".to_string()));
        }
        assert!(
            self.truncation.is_none(),
            "concurrent truncations of one partition"
        );
        self.truncation = Some((cut, waiter));
        Ok(())
    }

    /// Takes the segments above the cut out of the log: whole segments past the cut go, and
    /// when the cut is at or before the first segment (or the cut is everything) the log
    /// restarts at the cut's offset.
    pub(crate) fn plan_truncation(&mut self, cut: Cut) -> TruncationPlan {
        let (offset, keep) = match cut {
            // Nothing readable would be left, and the start would pass the end: start again
            // there (Kafka truncates fully in this case too).
            Cut::From(offset) if offset <= self.log_start_offset => (offset, 0),
            Cut::From(offset) => {
                let keep = self.segments.partition_point(|s| s.base_offset < offset);
                (offset, keep.max(1))
            }
            Cut::Everything(offset) => (offset, 0),
        };
        let mut doomed: Vec<Segment> = self.segments.drain(keep..).collect();
        let restart_at = match self.segments.first() {
            Some(first) if offset <= first.base_offset => {
                doomed.extend(self.segments.pop());
                Some(offset)
            }
            Some(_) => None,
            None => Some(offset),
        };
        if restart_at.is_some() {
            // The checkpoint says where the new log starts before its segment exists: a start
            // left from before would hide its first records after a crash.
            self.log_start_offset = offset;
            self.log_start_dirty = true;
        }
        TruncationPlan { doomed, restart_at }
    }

    /// Every leader epoch goes: the log is emptied and restarts.
    pub(crate) fn forget_epochs(&mut self) {
        self.epochs_dirty |= self.epochs.truncate_from(0);
    }

    /// The log was emptied by a truncation: `segment` (at the truncation offset) starts it
    /// again, with nothing of the old log left in memory either.
    pub(crate) fn restart(&mut self, segment: Segment) {
        assert!(self.segments.is_empty(), "only an emptied log restarts");
        let start = segment.base_offset;
        self.log_start_offset = start;
        self.next_offset = start;
        self.durable_end = start;
        if let Some(hw) = &mut self.high_watermark {
            *hw = start;
        }
        self.tail_cache.truncate(0);
        self.producers.truncate(0);
        self.txns = Default::default();
        self.epochs_dirty |= self.epochs.truncate_before(start) | self.epochs.truncate_from(start);
        self.segments.push(segment);
    }

    /// Whether memory can undo the transaction state down to `end`; if not, the writer reads
    /// it back from disk.
    pub(crate) fn txns_cut_exact(&self, end: u64) -> bool {
        self.txns.can_truncate_to(end)
    }

    /// What is left of the log for reading the transaction state back: (file, base, bytes).
    pub(crate) fn segments_for_txns(&self) -> Vec<(SegmentFile, u64, u64)> {
        (self.segments.iter())
            .map(|s| (s.file.clone(), s.base_offset, s.log_bytes))
            .collect()
    }

    /// Where to look for the cut in the last remaining segment.
    pub(crate) fn cut_search(&self, offset: u64) -> CutSearch {
        let active = self.active();
        let relative = offset
            .saturating_sub(active.base_offset)
            .min(u32::MAX as u64) as u32;
        CutSearch {
            file: active.file.clone(),
            base_offset: active.base_offset,
            start: active.index.lookup(relative) as u64,
            limit: active.log_bytes,
        }
    }

    /// The active segment was cut at byte `position`, and the log now ends at `new_end`.
    /// `rebuilt` is the transaction state read back from disk, when memory could not undo
    /// the cut ([`LogCore::txns_cut_exact`]).
    pub(crate) fn truncated(&mut self, position: u64, new_end: u64, rebuilt: Option<TxnState>) {
        let active = self.active_mut();
        if position < active.log_bytes {
            active.log_bytes = position;
            // Bytes past the cut will be written anew: cached copies must not be served.
            active.cache_key = crate::read::new_cache_key();
            active.index.truncate_to_position(position as u32);
        }
        // Also when no frame was cut: the cut may fall in a gap compaction left at the end.
        active.next_offset = active.next_offset.min(new_end);
        active.sealed = false;
        if new_end < self.log_start_offset {
            // The cut took the whole batch that held the start: the log is empty from there.
            self.log_start_offset = new_end;
            self.log_start_dirty = true;
        }
        self.next_offset = new_end;
        self.tail_cache.truncate(new_end);
        self.producers.truncate(new_end);
        match rebuilt {
            Some(txns) => self.txns = txns,
            None => self.truncate_txns(new_end),
        }
        self.epochs_dirty |= self.epochs.truncate_from(new_end);
        self.durable_end = self.durable_end.min(new_end);
        self.truncating = false;
        if let Some(hw) = &mut self.high_watermark {
            *hw = (*hw).min(new_end);
        }
    }

    /// The oldest sealed segments beyond the retention limits at `now_ms`, taken out of the log
    /// (never the active one, nor one whose seal is still running, nor any after it).
    pub(crate) fn plan_retention(&mut self, now_ms: i64) -> Vec<Segment> {
        // A compact-only log keeps its segments: compaction is what bounds it.
        if self.closing || !self.config.cleanup_policy.delete {
            return Vec::new();
        }
        let stats: Vec<SegmentStats> = self
            .segments
            .iter()
            .map(|s| SegmentStats {
                log_bytes: s.log_bytes,
                max_timestamp: s.max_timestamp,
            })
            .collect();
        let count = segments_to_delete(
            &stats,
            self.config.retention_bytes_max,
            self.config.retention_age_max_ms,
            now_ms,
        );
        self.take_oldest(count)
    }

    /// Moves the log start up to `offset` (Kafka's DeleteRecords): offsets below it are no
    /// longer read, and the sealed segments holding only such offsets are taken out of the log
    /// for their files to be deleted. The start may fall inside a segment; the checkpoint that
    /// says so must be written (the writer does) before the deletion is acknowledged. An
    /// offset at or below the start changes nothing (`None`); one past the visible end is
    /// refused.
    pub(crate) fn delete_records_before(
        &mut self,
        offset: u64,
    ) -> Result<Option<Vec<Segment>>, DeleteRecordsError> {
        if let Some(why) = &self.stopped {
            return Err(DeleteRecordsError::Unavailable(why.clone()));
        }
        if self.closing || self.truncating || self.truncation.is_some() {
            return Err(DeleteRecordsError::Unavailable(
                "the log is closing or being truncated".to_string(),
            ));
        }
        let visible = self.visible_end();
        if offset > visible {
            return Err(DeleteRecordsError::OffsetOutOfRange {
                offset,
                log_end: visible,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(None);
        }
        self.log_start_offset = offset;
        self.log_start_dirty = true;
        self.epochs_dirty |= self.epochs.truncate_before(offset);
        Ok(Some(self.plan_deletion_below(offset)))
    }

    /// The sealed segments that hold only offsets below `offset`, taken out of the log: the
    /// log then starts at the first segment left. Retention of a log whose owner knows which
    /// prefix it no longer needs (a compacted state log after a snapshot).
    pub(crate) fn plan_deletion_below(&mut self, offset: u64) -> Vec<Segment> {
        if self.closing {
            return Vec::new();
        }
        let count = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= offset)
            .count();
        self.take_oldest(count)
    }

    /// Whether the cleaner may put a cleaned copy in place of the consecutive sealed segments
    /// it read, given as (base offset, cache key): they are all still there, unchanged, and no
    /// truncation is waiting or running (its cut was planned on the old files' positions).
    pub(crate) fn may_replace(&self, read: &[(u64, u64)]) -> bool {
        let sealed = &self.segments[..self.segments.len().saturating_sub(1)];
        let Some(at) =
            (read.first()).and_then(|&(base, _)| sealed.iter().position(|s| s.base_offset == base))
        else {
            return false;
        };
        let unchanged = sealed.get(at..at + read.len()).is_some_and(|found| {
            found.iter().zip(read).all(|(s, &(base, key))| {
                s.base_offset == base && s.cache_key == key && s.sealed && !s.sealing
            })
        });
        unchanged
            && self.stopped.is_none()
            && !self.closing
            && !self.truncating
            && self.truncation.is_none()
    }

    /// Puts a cleaned copy in place of the segments it covers (see [`LogCore::may_replace`])
    /// and returns them. The tail cache forgets the batches the copy covers, so readers see
    /// the cleaned log.
    pub(crate) fn replace_segments(&mut self, cleaned: Segment, count: usize) -> Vec<Segment> {
        let at = (self.segments.iter())
            .position(|s| s.base_offset == cleaned.base_offset)
            .expect("may_replace found it");
        self.tail_cache.forget_below(cleaned.next_offset);
        self.segments.splice(at..at + count, [cleaned]).collect()
    }

    /// The segment starting at `base`, if the log holds one.
    pub(crate) fn segment_at(&self, base: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.base_offset == base)
    }

    /// Takes out up to `count` of the oldest segments: never the active one, nor one whose
    /// seal is still running, nor any after it.
    fn take_oldest(&mut self, count: usize) -> Vec<Segment> {
        let sealing = self
            .segments
            .iter()
            .position(|s| s.sealing)
            .unwrap_or(usize::MAX);
        let count = count.min(sealing).min(self.segments.len() - 1);
        let doomed: Vec<Segment> = self.segments.drain(..count).collect();
        for segment in &doomed {
            assert!(
                segment.sealed,
                "retention chose the active segment {}",
                segment.base_offset
            );
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        self.epochs_dirty |= self.epochs.truncate_before(self.log_start_offset);
        doomed
    }
}
