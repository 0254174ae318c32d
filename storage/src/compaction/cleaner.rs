//! The cleaner's I/O: one pass over one partition (see the module docs of `compaction`).

use super::key_map::KeyMap;
use super::plan::{plan, CleanPlan, SegmentView};
use super::{cleaner_checkpoint_path, IoPace};
use crate::error::CompactionError;
use crate::frame::{encode_header, FrameHeader, FRAME_HEADER_BYTES};
use crate::io::{write_file_atomically, SegmentFile};
use crate::layout::{index_path, segment_path};
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

/// A segment's cleaned copy, being written.
struct Rewrite {
    path: PathBuf,
    segment: Segment,
    pending: Vec<u8>,
    flushed: u64,
    index_interval_bytes: u32,
    records_removed: u64,
    changed: bool,
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
        let (plan, targets, config) = {
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
                core.visible_end(),
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
            (due, targets, core.config.clone())
        };
        let (map, dirty_end) = self.map_keys(&targets, plan, cleaner).await?;
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
        for target in targets.iter().take_while(|t| t.base_offset < dirty_end) {
            let Some(rewrite) = self.rewrite(target, &keep, cleaner, &config).await? else {
                continue;
            };
            let (before, after, removed) = (
                target.log_bytes,
                rewrite.segment.log_bytes,
                rewrite.records_removed,
            );
            if self.swap(target, rewrite).await? {
                done.segments_rewritten += 1;
                done.bytes_before += before;
                done.bytes_after += after;
                done.records_removed += removed;
            }
        }
        if shared.cleaning.truncations.get() != truncations {
            // The log was cut meanwhile: what this pass read may be gone.
            return Ok(Some(done));
        }
        let mut ranges = cleaned.clone();
        ranges.record(dirty_end, now_ms);
        let path = cleaner_checkpoint_path(&shared.dir);
        write_file_atomically(shared.disk.as_ref(), &path, &ranges.encode(), true)
            .await
            .map_err(failed("writing", &path))?;
        *shared.cleaning.ranges.borrow_mut() = ranges;
        Ok(Some(done))
    }

    /// The newest offset of each key from the plan's clean end on, and where the map stopped:
    /// the dirty end, or the first record whose key found no room.
    async fn map_keys(
        &self,
        targets: &[Target],
        plan: CleanPlan,
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

    /// Writes the records of `target` that `keep` chooses into a new file; `None` when it
    /// would lose none (or the segment is damaged: its unreadable part is left as it is).
    async fn rewrite(
        &self,
        target: &Target,
        keep: &impl Fn(&RecordView) -> bool,
        cleaner: &Cleaner,
        config: &oxbow_core::LogConfig,
    ) -> Result<Option<Rewrite>, CompactionError> {
        let disk = &self.shared.disk;
        let path = self
            .shared
            .dir
            .join(format!("{:020}.cleaned.tmp", target.base_offset));
        let file = disk.open(&path).await.map_err(failed("creating", &path))?;
        file.set_len(0).await.map_err(failed("creating", &path))?;
        let mut rewrite = Rewrite {
            segment: Segment::empty(target.base_offset, file, target.opened_at_ms),
            path,
            pending: Vec::with_capacity(CHUNK_BYTES * 2),
            flushed: 0,
            index_interval_bytes: config.index_interval_bytes,
            records_removed: 0,
            changed: false,
        };
        let mut position = 0;
        let mut undecodable = false;
        loop {
            let mut resume = position;
            let end = scan_frames(
                &target.file,
                position,
                target.log_bytes,
                None,
                FRAME_BYTES_LIMIT,
                CHUNK_BYTES,
                |header, at, payload| {
                    resume = at + header.frame_len as u64;
                    let retained = RecordBatch::from_trusted(payload.clone())
                        .map_err(|_| ())
                        .and_then(|batch| {
                            let kept = batch.retain(cleaner.decompressed_bytes_max, keep);
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
            let damaged = matches!(end.stop, ScanStop::Damaged(_)) || undecodable;
            if damaged {
                tracing::warn!(segment = ?target.file.path(), position = end.position,
                    "not compacting a segment with unreadable frames");
            }
            if damaged || !rewrite.changed && end.stop == ScanStop::End {
                let _ = rewrite.segment.file.clone().close().await;
                let _ = disk.remove(&rewrite.path);
                return Ok(None);
            }
            let written = rewrite.flush(false).await?;
            cleaner.pace.spend(written).await;
            if end.stop == ScanStop::End {
                break;
            }
            position = resume;
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
        rewrite.segment.next_offset = target.next_offset;
        rewrite.segment.sealed = true;
        Ok(Some(rewrite))
    }

    /// Puts the cleaned copy in place of `target` if the log still holds it unchanged (not
    /// deleted, cut or being cut meanwhile). With no await between the check and the rename,
    /// no other task can change the segment in between.
    async fn swap(&self, target: &Target, rewrite: Rewrite) -> Result<bool, CompactionError> {
        let shared = &self.shared;
        let (dir, disk) = (&shared.dir, &shared.disk);
        let log = segment_path(dir, target.base_offset);
        let index = index_path(dir, target.base_offset);
        if !(shared.core.borrow()).may_replace(target.base_offset, target.cache_key) {
            let _ = rewrite.segment.file.close().await;
            let _ = disk.remove(&rewrite.path);
            return Ok(false);
        }
        // The old index must not outlive its segment: recovery rebuilds a missing one.
        disk.remove(&index).map_err(failed("removing", &index))?;
        disk.replace(&rewrite.path, &log)
            .map_err(failed("renaming", &rewrite.path))?;
        let old = shared.core.borrow_mut().replace_segment(rewrite.segment);
        let _ = old.file.close().await;
        disk.sync_dir(dir).await.map_err(failed("syncing", dir))?;
        let (index_bytes, cache_key) = {
            let core = shared.core.borrow();
            match core.segment_at(target.base_offset) {
                Some(segment) => (segment.index_file_bytes(), segment.cache_key),
                None => return Ok(true),
            }
        };
        write_file_atomically(disk.as_ref(), &index, &index_bytes, true)
            .await
            .map_err(failed("writing", &index))?;
        let still_there = (shared.core.borrow().segment_at(target.base_offset))
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
