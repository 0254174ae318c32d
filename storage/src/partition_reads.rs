//! Reads of a partition's log: batches from an offset (from the tail cache, or from disk
//! through the shard's read cache with read-ahead for sequential readers), and the first batch
//! at a time (through the time index).

use crate::core::ReadPlan;
use crate::error::ReadError;
use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::io::SegmentFile;
use crate::read::{CachedSegment, StreamEnd};
use crate::segment::{scan_frames_admitting, FrameWalk, ScanEnd, ScanStop, FRAME_BYTES_LIMIT};
use crate::Partition;
use bytes::Bytes;
use oxbow_core::RecordBatch;
use std::cell::Cell;
use std::ops::ControlFlow;

impl Partition {
    /// Reads whole batches starting with the one that holds `from`, up to `max_bytes` (but at
    /// least one batch, as Kafka fetch does), never past the visible end. Serves from the tail
    /// cache when it can, otherwise from disk through the shard's read cache (where the sparse
    /// index or the reader's last read says). An empty result means
    /// `from` is the visible end.
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<RecordBatch>, ReadError> {
        let visible = self.shared.core.borrow().visible_end();
        self.read_before(from, max_bytes, visible).await
    }

    /// [`Partition::read`] for a `read_committed` reader: never past the last stable offset.
    /// From an offset between it and the visible end the answer is empty, as Kafka's is.
    pub async fn read_committed(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<RecordBatch>, ReadError> {
        let (stable, visible) = {
            let core = self.shared.core.borrow();
            (core.last_stable_offset(), core.visible_end())
        };
        if from > stable && from <= visible {
            return Ok(Vec::new());
        }
        self.read_before(from, max_bytes, stable).await
    }

    /// [`Partition::read`] up to the durable end, past the high watermark: what a leader sends
    /// its followers (they must get records before the high watermark can cover them).
    pub async fn read_for_followers(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<RecordBatch>, ReadError> {
        let durable = self.shared.core.borrow().durable_end();
        self.read_before(from, max_bytes, durable).await
    }

    async fn read_before(
        &self,
        mut from: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Vec<RecordBatch>, ReadError> {
        loop {
            let plan = self.shared.core.borrow().read_plan(from, max_bytes, end)?;
            let (batches, segment_end) = match plan {
                ReadPlan::Cached(batches) => return Ok(batches),
                ReadPlan::Empty => return Ok(Vec::new()),
                ReadPlan::Disk {
                    file,
                    key,
                    position,
                    limit,
                    visible,
                    sequential,
                    segment_end,
                } => {
                    let at = (position, limit, visible, sequential);
                    (
                        self.read_segment(from, max_bytes, file, key, at).await?,
                        segment_end,
                    )
                }
            };
            // Nothing at or after `from` in its segment: compaction removed the batches at its
            // end. The records go on in the next segment.
            if !batches.is_empty() || segment_end <= from || segment_end > end {
                return Ok(batches);
            }
            from = segment_end;
        }
    }

    /// Reads batches from `from` in segment `key` (see [`Partition::read`]): from byte
    /// `position` up to byte `limit`, never an offset at or past `visible`.
    async fn read_segment(
        &self,
        from: u64,
        max_bytes: usize,
        file: SegmentFile,
        key: u64,
        (position, limit, visible, sequential): (u64, u64, u64, bool),
    ) -> Result<Vec<RecordBatch>, ReadError> {
        let cache = &self.shared.read_cache;
        if sequential {
            // The blocks this read needs load together, and the next ones behind them.
            let config = cache.config();
            let ahead = config.read_ahead_blocks as u64 * config.block_bytes as u64;
            let to = position + max_bytes as u64 + ahead;
            cache.read_ahead(&file, key, position, to, limit);
        }
        let block_bytes = cache.config().block_bytes as usize;
        let mut batches = Vec::new();
        let bytes = Cell::new(0usize);
        let mut bad_batch = false;
        let mut read_end = None;
        // Frames the reader would not take are not read: past the visible end, or past
        // `max_bytes` once one batch is in hand.
        let admit = |header: &FrameHeader| {
            let payload = (header.frame_len as usize).saturating_sub(FRAME_HEADER_BYTES);
            let taken = bytes.get();
            header.base_offset < visible
                && (header.next_offset() <= from || taken == 0 || taken + payload <= max_bytes)
        };
        let end = self
            .walk_cached(
                &file,
                key,
                position,
                limit,
                admit,
                |header, position, payload| {
                    if header.next_offset() <= from {
                        return ControlFlow::Continue(());
                    }
                    bytes.set(bytes.get() + payload.len());
                    // A small batch is copied out of its block: a reader holding it (a response
                    // waiting for a slow client) must not keep a whole evicted block in memory.
                    let payload = if payload.len() < block_bytes / 4 {
                        Bytes::copy_from_slice(&payload)
                    } else {
                        payload
                    };
                    match RecordBatch::from_trusted(payload) {
                        Ok(batch) => batches.push(batch),
                        Err(_) => {
                            bad_batch = true;
                            return ControlFlow::Break(());
                        }
                    }
                    read_end = Some(StreamEnd {
                        next_offset: header.next_offset(),
                        key,
                        position: position + header.frame_len as u64,
                    });
                    if bytes.get() >= max_bytes {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await?;
        if let Some(read_end) = read_end {
            self.shared.core.borrow_mut().read_ended(from, read_end);
        }
        match damage(&file, end, bad_batch) {
            Err(e) if batches.is_empty() => Err(e),
            _ => Ok(batches),
        }
    }

    /// The first visible batch holding a record at or after `at` (ms; its newest timestamp
    /// reaches `at`), found through the segments' time index: only the frames between two
    /// index entries are read. `None` when no visible batch reaches `at`.
    pub async fn first_batch_at_time(&self, at: i64) -> Result<Option<RecordBatch>, ReadError> {
        let (plan, visible) = {
            let core = self.shared.core.borrow();
            (core.time_plan(at), core.visible_end())
        };
        let Some((file, key, position, limit)) = plan else {
            return Ok(None);
        };
        let mut found = None;
        let mut bad_batch = false;
        let admit = |header: &FrameHeader| header.base_offset < visible;
        let end = self
            .walk_cached(&file, key, position, limit, admit, |header, _, payload| {
                if header.max_timestamp < at {
                    return ControlFlow::Continue(());
                }
                match RecordBatch::from_trusted(payload) {
                    Ok(batch) => found = Some(batch),
                    Err(_) => bad_batch = true,
                }
                ControlFlow::Break(())
            })
            .await?;
        damage(&file, end, bad_batch).map(|()| found)
    }

    /// Walks the frames of segment `key` (its written bytes end at `limit`) from `position`
    /// through the shard's read cache, which hands out whole blocks at a time.
    async fn walk_cached(
        &self,
        file: &SegmentFile,
        key: u64,
        position: u64,
        limit: u64,
        admit: impl FnMut(&FrameHeader) -> bool,
        on_frame: impl FnMut(&FrameHeader, u64, Bytes) -> ControlFlow<()>,
    ) -> Result<ScanEnd, ReadError> {
        let cache = &self.shared.read_cache;
        let source = CachedSegment {
            cache,
            file,
            key,
            limit,
        };
        let walk = FrameWalk {
            position,
            limit,
            first_offset: None,
            frame_bytes_max: FRAME_BYTES_LIMIT,
            chunk: cache.config().block_bytes as usize,
        };
        (scan_frames_admitting(&source, walk, admit, on_frame).await).map_err(|source| {
            ReadError::Io {
                path: file.path().to_path_buf(),
                source,
            }
        })
    }
}

/// What a walk that ended at `end` says about the segment: an error if it stopped at damage
/// (or at a frame whose payload is not a batch).
fn damage(file: &SegmentFile, end: ScanEnd, bad_batch: bool) -> Result<(), ReadError> {
    let reason = match end.stop {
        ScanStop::Damaged(reason) => reason,
        _ if bad_batch => "frame payload is not a record batch",
        _ => return Ok(()),
    };
    Err(ReadError::Corrupt {
        path: file.path().to_path_buf(),
        position: end.position,
        reason,
    })
}
