//! The cleaner's I/O: one pass over one partition (see the module docs of `compaction`).

use super::key_map::KeyMap;
use super::plan::{merge_groups, plan, CleanPlan, SegmentView};
use super::transactions::KeptWhole;
use super::{cleaner_checkpoint_path, IoPace};
use crate::error::CompactionError;
use crate::frame::{encode_header, FrameHeader, FRAME_HEADER_BYTES};
use crate::io::{write_file_atomically, SegmentFile};
use crate::layout::{index_path, segment_path, swap_path};
use crate::segment::{scan_frames, ScanStop, Segment, FRAME_BYTES_LIMIT};
use crate::Partition;
use oxbow_core::{RecordBatch, RecordView, Retained};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Bytes read or written at once.
const CHUNK_BYTES: usize = 1 << 20;

/// What a shard's cleaner works with.
pub struct Cleaner {
    /// Memory for the newest offset of each key (see `compaction.key_map_bytes_max`).
    pub key_map_bytes_max: u64,
    /// Most bytes one compressed batch may decompress to.
    pub decompressed_bytes_max: u64,
    /// The shard's I/O budget.
    pub pace: IoPace,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Segments replaced by a cleaned copy.
    pub segments_rewritten: usize,
    /// The cleaned copies that replaced them (small neighbours merge into one).
    pub segments_written: usize,
    /// Their bytes before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Offsets below have now been cleaned.
    pub clean_end: u64,
}

/// A cleanable segment as it was when the pass began.
struct Target {
    base_offset: u64,
    next_offset: u64,
    log_bytes: u64,
    file: SegmentFile,
    cache_key: u64,
    opened_at_ms: i64,
}

/// What cleaning a group of segments made.
enum Rewritten {
    /// A cleaned copy, to put in their place.
    Copy(Rewrite),
    /// Nothing to change.
    Unchanged,
    /// A segment of the group has unreadable frames.
    Damaged,
}

/// The cleaned copy of a group of segments, being written.
struct Rewrite {
    path: PathBuf,
    segment: Segment,
    pending: Vec<u8>,
    flushed: u64,
    index_interval_bytes: u32,
    records_removed: u64,
    changed: bool,
}

/// What a rewrite copies: the records `keep` chooses, and the batches `kept_whole` covers.
struct Copy<'a, K> {
    keep: &'a K,
    kept_whole: &'a KeptWhole,
}

fn failed<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CompactionError + 'a {
    move |source| CompactionError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Partition {
    /// Cleans this log once if its policy compacts and a cleaning is due: reads the dirty part
    /// for the newest offset of each key (as far as `cleaner.key_map_bytes_max` allows), then
    /// rewrites every cleanable segment that loses records. `None`: nothing was due.
    pub async fn compact(
        &self,
        now_ms: i64,
        cleaner: &Cleaner,
    ) -> Result<Option<Compacted>, CompactionError> {
        let cleaning = &self.shared.cleaning;
        if cleaning.running.replace(true) {
            return Ok(None);
        }
        let outcome = self.compact_once(now_ms, cleaner).await;
        cleaning.running.set(false);
        match &outcome {
            Ok(Some(done)) => crate::metrics::record_compaction(Ok(done)),
            Ok(None) => {}
            Err(_) => crate::metrics::record_compaction(Err(())),
        }
        outcome
    }

    async fn compact_once(
        &self,
        now_ms: i64,
        cleaner: &Cleaner,
    ) -> Result<Option<Compacted>, CompactionError> {
        let shared = &self.shared;
        let truncations = shared.cleaning.truncations.get();
        let cleaned = shared.cleaning.ranges.borrow().clone();
        let (plan, targets, config, kept_whole) = {
            let core = shared.core.borrow();
            let views: Vec<SegmentView> = (core.segments.iter())
                .map(|s| SegmentView {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    log_bytes: s.log_bytes,
                    max_timestamp: s.max_timestamp,
                    sealed: s.sealed && !s.sealing,
                })
                .collect();
            let due = plan(
                &views,
                core.last_stable_offset(),
                cleaned.clean_end(),
                &core.config,
                now_ms,
            );
            let Some(due) = due else {
                return Ok(None);
            };
            let targets: Vec<Target> = (core.segments[..due.segments].iter())
                .map(|s| Target {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    log_bytes: s.log_bytes,
                    file: s.file.clone(),
                    cache_key: s.cache_key,
                    opened_at_ms: s.opened_at_ms,
                })
                .collect();
            let aborted = core.aborted_transactions(0, due.dirty_end);
            (due, targets, core.config.clone(), KeptWhole::new(&aborted))
        };
        tracing::info!(dir = ?shared.dir, clean_end = plan.clean_end, dirty_end = plan.dirty_end,
            segments = plan.segments, "compacting");
        let (map, dirty_end) = self.map_keys(&targets, plan, &kept_whole, cleaner).await?;
        let tombstone_horizon = now_ms.saturating_sub(config.delete_retention_ms as i64);
        let keep = |record: &RecordView| {
            // A compacted topic refuses keyless records; any written before it compacted go.
            let Some(key) = record.key else {
                return false;
            };
            if map.newest(key).is_some_and(|newest| record.offset < newest) {
                return false;
            }
            !(record.is_tombstone
                && (cleaned.first_cleaned_at(record.offset))
                    .is_some_and(|at| at < tombstone_horizon))
        };
        let mut done = Compacted {
            clean_end: dirty_end,
            ..Compacted::default()
        };
        let cleaning = targets.iter().take_while(|t| t.base_offset < dirty_end);
        let views: Vec<SegmentView> = (cleaning.map(|t| SegmentView {
            base_offset: t.base_offset,
            next_offset: t.next_offset,
            log_bytes: t.log_bytes,
            max_timestamp: i64::MIN,
            sealed: true,
        }))
        .collect();
        let mut groups: Vec<&[Target]> = (merge_groups(&views, config.segment_bytes_max))
            .into_iter()
            .map(|group| &targets[group])
            .collect();
        groups.reverse();
        let mut damaged_at = None;
        while let Some(group) = groups.pop() {
            let copy = Copy {
                keep: &keep,
                kept_whole: &kept_whole,
            };
            let rewrite = match self.rewrite(group, copy, cleaner, &config).await? {
                Rewritten::Copy(rewrite) => rewrite,
                Rewritten::Unchanged => continue,
                // Its healthy neighbours are cleaned one by one.
                Rewritten::Damaged if group.len() > 1 => {
                    groups.extend(group.chunks(1).rev());
                    continue;
                }
                Rewritten::Damaged => {
                    damaged_at.get_or_insert(group[0].base_offset);
                    continue;
                }
            };
            let before: u64 = group.iter().map(|t| t.log_bytes).sum();
            let (after, removed) = (rewrite.segment.log_bytes, rewrite.records_removed);
            if self.swap(group, rewrite).await? {
                done.segments_rewritten += group.len();
                done.segments_written += 1;
                done.bytes_before += before;
                done.bytes_after += after;
                done.records_removed += removed;
            }
        }
        // A damaged segment keeps its records, among them older values of keys whose newer
        // tombstones this pass saw: those tombstones must not count as cleaned (and expire)
        // while such a value may be left, so the clean end stops at the damage.
        let dirty_end = damaged_at.map_or(dirty_end, |at: u64| at.min(dirty_end));
        done.clean_end = dirty_end;
        if shared.cleaning.truncations.get() != truncations {
            // The log was cut meanwhile: what this pass read may be gone.
            return Ok(Some(done));
        }
        shared
            .cleaning
            .ranges
            .borrow_mut()
            .record(dirty_end, now_ms);
        self.save_cleaned().await?;
        Ok(Some(done))
    }

    /// Writes the cleaner checkpoint as memory holds it now (after a pass, or a truncation that
    /// cut the clean part), one write at a time.
    pub(crate) async fn save_cleaned(&self) -> Result<(), CompactionError> {
        let cleaning = &self.shared.cleaning;
        while cleaning.saving.get() {
            cleaning.saved.notified().await;
        }
        cleaning.saving.set(true);
        let bytes = cleaning.ranges.borrow().encode();
        let path = cleaner_checkpoint_path(&self.shared.dir);
        let written = write_file_atomically(self.shared.disk.as_ref(), &path, &bytes, true).await;
        cleaning.saving.set(false);
        cleaning.saved.notify();
        written.map_err(failed("writing", &path))
    }

    /// The newest offset of each key from the plan's clean end on, and where the map stopped:
    /// the dirty end, or the first record whose key found no room.
    async fn map_keys(
        &self,
        targets: &[Target],
        plan: CleanPlan,
        kept_whole: &KeptWhole,
        cleaner: &Cleaner,
    ) -> Result<(KeyMap, u64), CompactionError> {
        let mut map = KeyMap::new(cleaner.key_map_bytes_max);
        let mut full_at = None;
        for target in targets.iter().filter(|t| t.next_offset > plan.clean_end) {
            let file = &target.file;
            let end = scan_frames(
                file,
                0,
                target.log_bytes,
                None,
                FRAME_BYTES_LIMIT,
                CHUNK_BYTES,
                |header, _, payload| {
                    if header.next_offset() <= plan.clean_end {
                        return ControlFlow::Continue(());
                    }
                    let Ok(batch) = RecordBatch::from_trusted(payload) else {
                        return ControlFlow::Continue(());
                    };
                    if kept_whole.covers(&batch) {
                        return ControlFlow::Continue(());
                    }
                    let mut full = false;
                    // Keeping every record, `retain` only walks them: nothing is copied.
                    let _ = batch.retain(cleaner.decompressed_bytes_max, |record| {
                        if full || record.offset < plan.clean_end {
                            return true;
                        }
                        if let Some(key) = record.key {
                            if !map.insert(key, record.offset) {
                                full = true;
                                full_at = Some(record.offset);
                            }
                        }
                        true
                    });
                    if full {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await
            .map_err(failed("reading", file.path()))?;
            cleaner.pace.spend(end.position).await;
            if full_at.is_some() {
                break;
            }
        }
        if let Some(at) = full_at {
            tracing::info!(dir = ?self.shared.dir, keys = map.len(), stopped_at = at,
                "compaction key map full: this pass cleans up to there, the next goes on");
        }
        Ok((map, full_at.unwrap_or(plan.dirty_end)))
    }

    /// Writes the records of a group of consecutive segments that `keep` chooses into one new
    /// file, unless that would change nothing (one segment that loses no record) or a segment
    /// of the group is damaged (its unreadable part is left as it is).
    async fn rewrite(
        &self,
        group: &[Target],
        copy: Copy<'_, impl Fn(&RecordView) -> bool>,
        cleaner: &Cleaner,
        config: &oxbow_core::LogConfig,
    ) -> Result<Rewritten, CompactionError> {
        let disk = &self.shared.disk;
        let first = &group[0];
        let path = (self.shared.dir).join(format!("{:020}.cleaned.tmp", first.base_offset));
        let file = disk.open(&path).await.map_err(failed("creating", &path))?;
        file.set_len(0).await.map_err(failed("creating", &path))?;
        let mut rewrite = Rewrite {
            segment: Segment::empty(first.base_offset, file, first.opened_at_ms),
            path,
            pending: Vec::with_capacity(CHUNK_BYTES * 2),
            flushed: 0,
            index_interval_bytes: config.index_interval_bytes,
            records_removed: 0,
            changed: group.len() > 1,
        };
        for target in group {
            if !self.copy_kept(target, &mut rewrite, &copy, cleaner).await? {
                let _ = rewrite.segment.file.clone().close().await;
                let _ = disk.remove(&rewrite.path);
                return Ok(Rewritten::Damaged);
            }
        }
        if !rewrite.changed {
            let _ = rewrite.segment.file.clone().close().await;
            let _ = disk.remove(&rewrite.path);
            return Ok(Rewritten::Unchanged);
        }
        let written = rewrite.flush(true).await?;
        cleaner.pace.spend(written).await;
        let file = &rewrite.segment.file;
        file.set_len(rewrite.segment.log_bytes)
            .await
            .map_err(failed("trimming", &rewrite.path))?;
        // Durable before the rename: the new file replaces data that may be durable.
        file.sync()
            .await
            .map_err(failed("syncing", &rewrite.path))?;
        rewrite.segment.next_offset = group.last().expect("a group").next_offset;
        rewrite.segment.sealed = true;
        Ok(Rewritten::Copy(rewrite))
    }

    /// Adds the records of `target` that `keep` chooses to `rewrite`, writing whole chunks as
    /// they fill; `false` when the segment has unreadable frames.
    async fn copy_kept(
        &self,
        target: &Target,
        rewrite: &mut Rewrite,
        copy: &Copy<'_, impl Fn(&RecordView) -> bool>,
        cleaner: &Cleaner,
    ) -> Result<bool, CompactionError> {
        let mut position = 0;
        loop {
            let mut resume = position;
            let mut undecodable = false;
            let end = scan_frames(
                &target.file,
                position,
                target.log_bytes,
                None,
                FRAME_BYTES_LIMIT,
                CHUNK_BYTES,
                |header, at, payload| {
                    resume = at + header.frame_len as u64;
                    let retained =
                        RecordBatch::from_trusted(payload)
                            .map_err(|_| ())
                            .and_then(|batch| {
                                if copy.kept_whole.covers(&batch) {
                                    return Ok((batch, Retained::All));
                                }
                                let kept = batch.retain(cleaner.decompressed_bytes_max, copy.keep);
                                kept.map(|kept| (batch, kept)).map_err(|_| ())
                            });
                    match retained {
                        Ok((batch, Retained::All)) => rewrite.push(header, &batch),
                        Ok((batch, Retained::Nothing)) => {
                            rewrite.changed = true;
                            rewrite.records_removed += batch.records_count().max(0) as u64;
                        }
                        Ok((batch, Retained::Some(kept))) => {
                            rewrite.changed = true;
                            rewrite.records_removed +=
                                (batch.records_count() - kept.records_count()).max(0) as u64;
                            rewrite.push(header, &kept);
                        }
                        Err(()) => {
                            undecodable = true;
                            return ControlFlow::Break(());
                        }
                    }
                    if rewrite.pending.len() >= CHUNK_BYTES {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await
            .map_err(failed("reading", target.file.path()))?;
            cleaner.pace.spend(resume - position).await;
            if matches!(end.stop, ScanStop::Damaged(_)) || undecodable {
                tracing::warn!(segment = ?target.file.path(), position = end.position,
                    "not compacting a segment with unreadable frames");
                return Ok(false);
            }
            let written = rewrite.flush(false).await?;
            cleaner.pace.spend(written).await;
            if end.stop == ScanStop::End {
                return Ok(true);
            }
            position = resume;
        }
    }

    /// Puts the cleaned copy in place of the group it was made from if the log still holds
    /// them unchanged (not deleted, cut or being cut meanwhile).
    ///
    /// Everything from the check to the last rename is done without an await, so no other
    /// task (a truncation, retention, a close, a reader) sees a step in between. On disk the
    /// copy is named `<base>-<end>.swap` first: a crash from then on leaves recovery to finish
    /// the swap. Then the old files go (the first segment's is replaced by the copy's rename
    /// to its name). A file system journals these directory changes in order, so none of the
    /// removals can outlive a crash that the `.swap` name does not.
    async fn swap(&self, group: &[Target], rewrite: Rewrite) -> Result<bool, CompactionError> {
        let shared = &self.shared;
        let (dir, disk) = (&shared.dir, &shared.disk);
        let first = group[0].base_offset;
        let read: Vec<(u64, u64)> = group.iter().map(|t| (t.base_offset, t.cache_key)).collect();
        if !(shared.core.borrow()).may_replace(&read) {
            let _ = rewrite.segment.file.close().await;
            let _ = disk.remove(&rewrite.path);
            return Ok(false);
        }
        let swap = swap_path(dir, first, rewrite.segment.next_offset);
        let log = segment_path(dir, first);
        disk.replace(&rewrite.path, &swap)
            .map_err(failed("renaming", &rewrite.path))?;
        for target in group {
            let index = index_path(dir, target.base_offset);
            disk.remove(&index).map_err(failed("removing", &index))?;
            if target.base_offset != first {
                let old = segment_path(dir, target.base_offset);
                disk.remove(&old).map_err(failed("removing", &old))?;
            }
        }
        disk.replace(&swap, &log)
            .map_err(failed("renaming", &swap))?;
        let (old, index_bytes, cache_key) = {
            let mut core = shared.core.borrow_mut();
            let old = core.replace_segments(rewrite.segment, group.len());
            let copy = core.segment_at(first).expect("just put there");
            (old, copy.index_file_bytes(), copy.cache_key)
        };
        for segment in old {
            let _ = segment.file.close().await;
        }
        disk.sync_dir(dir).await.map_err(failed("syncing", dir))?;
        let index = index_path(dir, first);
        write_file_atomically(disk.as_ref(), &index, &index_bytes, true)
            .await
            .map_err(failed("writing", &index))?;
        let still_there = (shared.core.borrow().segment_at(first))
            .is_some_and(|segment| segment.cache_key == cache_key);
        if !still_there {
            // Deleted or cut while its index was written: the index must go too.
            disk.remove(&index).map_err(failed("removing", &index))?;
        }
        Ok(true)
    }
}

impl Rewrite {
    /// Adds a kept batch as a frame.
    fn push(&mut self, original: &FrameHeader, batch: &RecordBatch) {
        let payload = batch.bytes();
        let header = encode_header(
            original.base_offset,
            original.last_offset_delta,
            original.max_timestamp,
            payload,
        );
        let frame = FrameHeader {
            frame_len: (FRAME_HEADER_BYTES + payload.len()) as u32,
            crc: u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
            base_offset: original.base_offset,
            last_offset_delta: original.last_offset_delta,
            max_timestamp: original.max_timestamp,
        };
        let position = self.segment.log_bytes;
        self.segment
            .on_frame(&frame, position, self.index_interval_bytes);
        self.pending.extend_from_slice(&header);
        self.pending.extend_from_slice(payload);
    }

    /// Writes the whole chunks pending (and, `last`, the rest, padded to a block); returns the
    /// bytes written.
    async fn flush(&mut self, last: bool) -> Result<u64, CompactionError> {
        let whole = if last {
            self.pending.len()
        } else {
            self.pending.len() / CHUNK_BYTES * CHUNK_BYTES
        };
        if whole == 0 {
            return Ok(0);
        }
        let file = &self.segment.file;
        let mut buf = file.alloc_buffer(whole);
        buf.as_bytes_mut()[..whole].copy_from_slice(&self.pending[..whole]);
        buf.as_bytes_mut()[whole..].fill(0);
        file.write_all_at(buf, self.flushed)
            .await
            .map_err(failed("writing", &self.path))?;
        self.pending.drain(..whole);
        self.flushed += whole as u64;
        Ok(whole as u64)
    }
}
