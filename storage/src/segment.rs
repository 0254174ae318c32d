//! One segment of a partition's log: its file, its sparse index and what it holds, plus the frame
//! scanner that recovery, index rebuilds, reads and verification share.

use crate::frame::{crc_matches, probe_header, FrameHeader, FrameProbe, FRAME_HEADER_BYTES};
use crate::index::{SealedSummary, SparseIndex};
use crate::io::{write_file_atomically, Disk, SegmentFile};
use crate::layout::{index_path, segment_path};
use crate::now_ms;
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

/// Largest frame any scan accepts, whatever the topic's current `batch_bytes_max`: lowering
/// that setting must never make recovery cut off frames written under the old one. It still
/// bounds what a corrupt length field can make a scan read.
pub const FRAME_BYTES_LIMIT: u32 =
    oxbow_core::config::BATCH_BYTES_LIMIT + crate::frame::FRAME_HEADER_BYTES as u32;

/// How much a scan reads at once when it walks a whole segment.
pub const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStop {
    /// Reached the byte limit, or zeros (the unwritten tail).
    End,
    /// The callback asked to stop.
    Stopped,
    /// A frame that is partial or fails its checks: a torn write or damage.
    Damaged(&'static str),
}

/// Result of walking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Position after the last good frame visited.
    pub position: u64,
    /// Offset after the last good frame visited.
    pub next_offset: u64,
    /// Why the walk ended.
    pub stop: ScanStop,
}

/// Where a frame walk gets its bytes: a segment file read directly, or through a shard's read
/// cache.
pub trait FrameSource {
    /// At least `min_len` bytes at `pos` (fewer only where the file ends), and as many as
    /// `len` when that costs no extra I/O.
    fn read(&self, pos: u64, min_len: usize, len: usize)
        -> impl Future<Output = io::Result<Bytes>>;
}

impl FrameSource for SegmentFile {
    fn read(
        &self,
        pos: u64,
        min_len: usize,
        len: usize,
    ) -> impl Future<Output = io::Result<Bytes>> {
        self.read_at(pos, len.max(min_len))
    }
}

/// Walks frames of `file` from `position` (a frame boundary) up to byte `limit`, checking each
/// frame's header, CRC and offset order (each frame starts at or after the end of the one
/// before, and the first at or after `first_offset`: compaction leaves gaps). Calls `on_frame` with each good frame's header,
/// position and payload; it may stop the walk. Reads `chunk` bytes at a time (more for a frame
/// larger than that).
pub async fn scan_frames(
    file: &impl FrameSource,
    position: u64,
    limit: u64,
    first_offset: Option<u64>,
    frame_bytes_max: u32,
    chunk: usize,
    on_frame: impl FnMut(&FrameHeader, u64, Bytes) -> ControlFlow<()>,
) -> io::Result<ScanEnd> {
    let walk = FrameWalk {
        position,
        limit,
        first_offset,
        frame_bytes_max,
        chunk,
    };
    scan_frames_admitting(file, walk, |_| true, on_frame).await
}

/// Where and how a frame walk goes (see [`scan_frames`]).
#[derive(Debug, Clone, Copy)]
pub struct FrameWalk {
    /// A frame boundary to start at.
    pub position: u64,
    /// Byte where the walk ends.
    pub limit: u64,
    /// The offset the first frame must start with, if known.
    pub first_offset: Option<u64>,
    /// Largest frame accepted.
    pub frame_bytes_max: u32,
    /// Bytes read at once (more for a larger frame).
    pub chunk: usize,
}

/// [`scan_frames`], asking `admit` about each frame's header before its bytes are read: a
/// reader that would not take the frame (it is past what the reader wants) stops there without
/// reading it. The walk then ends with [`ScanStop::Stopped`] at that frame.
pub async fn scan_frames_admitting(
    file: &impl FrameSource,
    walk: FrameWalk,
    mut admit: impl FnMut(&FrameHeader) -> bool,
    mut on_frame: impl FnMut(&FrameHeader, u64, Bytes) -> ControlFlow<()>,
) -> io::Result<ScanEnd> {
    let FrameWalk {
        mut position,
        limit,
        first_offset,
        frame_bytes_max,
        chunk,
    } = walk;
    let mut buf = Bytes::new();
    let mut buf_pos = position;
    let mut expected = first_offset;
    let end = |position, next_offset: Option<u64>, stop| -> io::Result<ScanEnd> {
        Ok(ScanEnd {
            position,
            next_offset: next_offset.unwrap_or(0),
            stop,
        })
    };
    loop {
        if position >= limit {
            return end(position, expected, ScanStop::End);
        }
        let in_buf = (position - buf_pos) as usize;
        let available = buf.len().saturating_sub(in_buf);
        let probe = probe_header(&buf[in_buf.min(buf.len())..], frame_bytes_max);
        let needed = match probe {
            FrameProbe::Header(h) => h.frame_len as usize,
            _ => FRAME_HEADER_BYTES,
        };
        if let FrameProbe::Header(header) = &probe {
            if !admit(header) {
                return end(position, expected, ScanStop::Stopped);
            }
        }
        if available < needed && buf_pos + (buf.len() as u64) < limit {
            let rest = (limit - position) as usize;
            let len = chunk.max(needed).min(rest);
            buf = file.read(position, needed.min(rest), len).await?;
            buf_pos = position;
            if buf.is_empty() {
                return end(position, expected, ScanStop::End);
            }
            continue;
        }
        let header = match probe {
            FrameProbe::End => return end(position, expected, ScanStop::End),
            FrameProbe::Short => {
                return end(
                    position,
                    expected,
                    ScanStop::Damaged("partial frame header"),
                )
            }
            FrameProbe::Garbage(why) => return end(position, expected, ScanStop::Damaged(why)),
            FrameProbe::Header(h) => h,
        };
        if available < needed || position + needed as u64 > limit {
            return end(
                position,
                expected,
                ScanStop::Damaged("frame runs past the end"),
            );
        }
        let frame = buf.slice(in_buf..in_buf + needed);
        if !crc_matches(&header, &frame) {
            return end(
                position,
                expected,
                ScanStop::Damaged("frame checksum mismatch"),
            );
        }
        // Compaction leaves gaps between batches; an offset going back is damage.
        if expected.is_some_and(|e| header.base_offset < e) {
            return end(
                position,
                expected,
                ScanStop::Damaged("frame offset out of sequence"),
            );
        }
        if on_frame(&header, position, frame.slice(FRAME_HEADER_BYTES..)).is_break() {
            return end(position, expected, ScanStop::Stopped);
        }
        position += needed as u64;
        expected = Some(header.next_offset());
    }
}

/// A segment and what it holds. Owned by the partition's shard.
pub struct Segment {
    /// Offset of its first frame; also its file name.
    pub base_offset: u64,
    /// Offset after its last written frame.
    pub next_offset: u64,
    /// Bytes of written frames.
    pub log_bytes: u64,
    /// Largest record timestamp written (ms), `i64::MIN` when empty.
    pub max_timestamp: i64,
    /// Wall-clock time (ms) the segment was created or, when recovered, opened: its age for
    /// time-based rolling. Record timestamps are the producer's and may be anything.
    pub opened_at_ms: i64,
    /// Sparse offset index.
    pub index: SparseIndex,
    /// The `.log` file.
    pub file: SegmentFile,
    /// Whether the segment is closed to appends.
    pub sealed: bool,
    /// Whether its seal (fdatasync, index write) is still running in the background.
    pub sealing: bool,
    /// Names its bytes in the shard's read cache; a new key once bytes are cut off.
    pub cache_key: u64,
}

/// A segment ended before its file did: damaged bytes were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte position of the first bad frame.
    pub position: u64,
    /// Offset the bad frame should have started with.
    pub first_lost_offset: u64,
    /// Bytes after the last good frame.
    pub bytes_after: u64,
    /// What was wrong.
    pub reason: &'static str,
}

impl Segment {
    /// Creates an empty segment file at `base_offset`, `now_ms` being its creation time.
    pub async fn create(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let file = disk.open(&segment_path(dir, base_offset)).await?;
        file.set_len(0).await?;
        Ok(Segment::empty(base_offset, file, now_ms))
    }

    pub(crate) fn empty(base_offset: u64, file: SegmentFile, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            next_offset: base_offset,
            log_bytes: 0,
            max_timestamp: i64::MIN,
            opened_at_ms: now_ms,
            index: SparseIndex::default(),
            file,
            sealed: false,
            sealing: false,
            cache_key: crate::read::new_cache_key(),
        }
    }

    /// Records a frame written (or found) at `position`.
    pub fn on_frame(&mut self, header: &FrameHeader, position: u64, index_interval_bytes: u32) {
        assert_eq!(
            position,
            self.log_bytes,
            "frames must be contiguous in {:?}",
            self.file.path()
        );
        assert!(
            header.base_offset >= self.next_offset,
            "offsets must not go back"
        );
        let relative = u32::try_from(header.base_offset - self.base_offset)
            .expect("segment spans more than 2^32 offsets");
        let position32 = u32::try_from(position).expect("segment larger than 4 GiB");
        self.index.on_frame(
            relative,
            position32,
            header.frame_len,
            index_interval_bytes,
            header.max_timestamp,
        );
        self.log_bytes = position + header.frame_len as u64;
        self.next_offset = header.next_offset();
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Opens a segment by scanning every frame (for the active segment, or a sealed one whose
    /// index is missing or stale), showing each batch to `on_batch` (recovery rebuilds producer
    /// state and leader epochs from them). Stops at the first bad frame and reports it; the
    /// caller decides whether to truncate there.
    pub async fn open_by_scan(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u32,
        mut on_batch: impl FnMut(oxbow_core::RecordBatch),
    ) -> io::Result<(Segment, Option<Damage>)> {
        let file = disk.open(&segment_path(dir, base_offset)).await?;
        let file_len = file.len().await?;
        let mut segment = Segment::empty(base_offset, file.clone(), now_ms());
        let end = scan_frames(
            &file,
            0,
            file_len,
            Some(base_offset),
            FRAME_BYTES_LIMIT,
            SCAN_CHUNK_BYTES,
            |header, position, payload| {
                segment.on_frame(header, position, index_interval_bytes);
                if let Ok(batch) = oxbow_core::RecordBatch::from_trusted(payload) {
                    on_batch(batch);
                }
                ControlFlow::Continue(())
            },
        )
        .await?;
        let damage = match end.stop {
            ScanStop::Damaged(reason) => Some(Damage {
                position: end.position,
                first_lost_offset: segment.next_offset,
                bytes_after: file_len - end.position,
                reason,
            }),
            _ => None,
        };
        Ok((segment, damage))
    }

    /// Opens a sealed segment through its index file, if the index is intact and agrees with
    /// the segment file's length. `Ok(None)` means the index cannot be trusted.
    pub async fn open_by_index(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: u64,
    ) -> io::Result<Option<Segment>> {
        let Some(bytes) = disk.read_small(&index_path(dir, base_offset))? else {
            return Ok(None);
        };
        let (index, summary) = match SparseIndex::decode(&bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(dir = ?dir, base_offset, error = %e, "index file rejected; rebuilding");
                return Ok(None);
            }
        };
        let file = disk.open(&segment_path(dir, base_offset)).await?;
        let file_len = file.len().await?;
        if summary.base_offset != base_offset || summary.log_bytes != file_len {
            tracing::warn!(dir = ?dir, base_offset, file_len, ?summary, "index disagrees with its segment; rebuilding");
            return Ok(None);
        }
        Ok(Some(Segment {
            base_offset,
            next_offset: summary.next_offset,
            log_bytes: summary.log_bytes,
            max_timestamp: summary.max_timestamp,
            opened_at_ms: now_ms(),
            index,
            file,
            sealed: true,
            sealing: false,
            cache_key: crate::read::new_cache_key(),
        }))
    }

    /// The index file describing this segment as it is now.
    pub fn index_file_bytes(&self) -> Vec<u8> {
        let summary = SealedSummary {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            log_bytes: self.log_bytes,
            max_timestamp: self.max_timestamp,
        };
        self.index.encode(&summary)
    }
}

/// Seals a segment whose frames are all written: trims the file to its frames, makes it durable
/// (when `sync`) and writes its index. Takes copies so no borrow of the log state is held
/// across the I/O.
pub async fn seal_segment(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: u64,
    file: &SegmentFile,
    log_bytes: u64,
    index_bytes: &[u8],
    sync: bool,
) -> io::Result<()> {
    file.set_len(log_bytes).await?;
    if sync {
        file.sync().await?;
    }
    write_file_atomically(disk, &index_path(dir, base_offset), index_bytes, sync).await
}
