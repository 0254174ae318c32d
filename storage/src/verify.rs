//! Read-only verification of a partition's files: the `oxbow storage verify` scrub.
//!
//! Every frame of every segment is read and checked (magic, length, CRC, offset continuity).
//! After damage the scan resynchronises on the next frame whose header and CRC are valid, so the
//! report names exactly which offsets are unreadable and the rest of the segment is still
//! checked. Index files are compared with what the scan found. Nothing is written.

use crate::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC};
use crate::index::SparseIndex;
use crate::io::{Disk, SegmentFile};
use crate::layout::{classify, index_path, PartitionFile};
use crate::segment::{scan_frames, ScanStop, FRAME_BYTES_LIMIT, SCAN_CHUNK_BYTES};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// A run of unreadable bytes in a segment and the offsets they held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// Byte position where the bad bytes start.
    pub position: u64,
    /// Bytes up to the next good frame (or the end of the file).
    pub bytes: u64,
    /// First offset that cannot be read.
    pub first_offset: u64,
    /// Last offset that cannot be read; `None` when no good frame follows in this segment
    /// (then the damage reaches the next segment's base, or the log end).
    pub last_offset: Option<u64>,
    /// What was wrong with the first bad frame.
    pub reason: &'static str,
}

/// How a segment's index file compares with the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexCheck {
    /// No index file (normal for the active segment).
    Absent,
    /// The index agrees with the segment.
    Matches,
    /// The index is damaged or disagrees; the next open rebuilds it.
    Stale(String),
}

/// What verification found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The `.log` file.
    pub path: PathBuf,
    /// Its base offset.
    pub base_offset: u64,
    /// Good frames found.
    pub frames: u64,
    /// Offset after the last good frame.
    pub next_offset: u64,
    /// Unreadable ranges, in file order.
    pub damage: Vec<DamagedRange>,
    /// The index file's state.
    pub index: IndexCheck,
}

/// Checks every segment of the partition in `dir`, oldest first. Files that are not segments
/// are skipped. Read-only; safe to run on a stopped broker's data directory.
pub async fn verify_partition(disk: &dyn Disk, dir: &Path) -> io::Result<Vec<SegmentCheck>> {
    let mut bases = Vec::new();
    for name in disk.list(dir)? {
        if let PartitionFile::Segment(base) = classify(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut checks = Vec::with_capacity(bases.len());
    for base in bases {
        checks.push(verify_segment(disk, dir, base).await?);
    }
    Ok(checks)
}

async fn verify_segment(disk: &dyn Disk, dir: &Path, base_offset: u64) -> io::Result<SegmentCheck> {
    let path = crate::layout::segment_path(dir, base_offset);
    let file = disk.open_read_only(&path).await?;
    let file_len = file.len().await?;
    let mut check = SegmentCheck {
        path,
        base_offset,
        frames: 0,
        next_offset: base_offset,
        damage: Vec::new(),
        index: IndexCheck::Absent,
    };
    let mut position = 0;
    let mut log_bytes = 0;
    loop {
        let mut frames = 0;
        let mut next = check.next_offset;
        let mut end_of_frames = position;
        let expected = (check.frames == 0 && check.damage.is_empty()).then_some(base_offset);
        let end = scan_frames(
            &file,
            position,
            file_len,
            expected,
            FRAME_BYTES_LIMIT,
            SCAN_CHUNK_BYTES,
            |h, p, _| {
                frames += 1;
                next = h.next_offset();
                end_of_frames = p + h.frame_len as u64;
                ControlFlow::Continue(())
            },
        )
        .await?;
        check.frames += frames;
        check.next_offset = next;
        log_bytes = log_bytes.max(end_of_frames);
        let ScanStop::Damaged(reason) = end.stop else {
            break;
        };
        let resumed = next_good_frame(&file, end.position + 1, file_len, check.next_offset).await?;
        let (bytes, last_offset) = match resumed {
            Some((at, base)) => (at - end.position, Some(base - 1)),
            None => (file_len - end.position, None),
        };
        check.damage.push(DamagedRange {
            position: end.position,
            bytes,
            first_offset: check.next_offset,
            last_offset,
            reason,
        });
        match resumed {
            Some((at, base)) => {
                position = at;
                check.next_offset = base;
            }
            None => break,
        }
    }
    if check.damage.is_empty()
        && log_bytes < file_len
        && !all_zero(&file, log_bytes, file_len).await?
    {
        // Zeros ended the frames, yet something was written after them: a torn extending write.
        check.damage.push(DamagedRange {
            position: log_bytes,
            bytes: file_len - log_bytes,
            first_offset: check.next_offset,
            last_offset: None,
            reason: "bytes after the last frame",
        });
    }
    file.close().await?;
    check.index = check_index(disk, dir, base_offset, &check, log_bytes, file_len);
    Ok(check)
}

async fn all_zero(file: &SegmentFile, from: u64, to: u64) -> io::Result<bool> {
    let mut at = from;
    while at < to {
        let chunk = file
            .read_at(at, SCAN_CHUNK_BYTES.min((to - at) as usize))
            .await?;
        if chunk.is_empty() {
            break;
        }
        if chunk.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += chunk.len() as u64;
    }
    Ok(true)
}

/// Finds the first position at or after `from` holding a whole valid frame whose base offset is
/// at least `at_least`, with its base offset.
async fn next_good_frame(
    file: &SegmentFile,
    from: u64,
    limit: u64,
    at_least: u64,
) -> io::Result<Option<(u64, u64)>> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut chunk_start = from;
    while chunk_start + FRAME_HEADER_BYTES as u64 <= limit {
        let chunk = file.read_at(chunk_start, SCAN_CHUNK_BYTES).await?;
        if chunk.len() < magic.len() {
            break;
        }
        for i in 0..=chunk.len() - magic.len() {
            if chunk[i..i + magic.len()] != magic {
                continue;
            }
            let candidate = chunk_start + i as u64;
            let mut found = None;
            scan_frames(
                file,
                candidate,
                limit,
                None,
                FRAME_BYTES_LIMIT,
                1 << 20,
                |h, _, _| {
                    found = Some(h.base_offset);
                    ControlFlow::Break(())
                },
            )
            .await?;
            if let Some(base) = found.filter(|b| *b >= at_least) {
                return Ok(Some((candidate, base)));
            }
        }
        // Overlap by the magic's length so a magic split across chunks is still seen.
        chunk_start += (chunk.len() - magic.len() + 1) as u64;
    }
    Ok(None)
}

fn check_index(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: u64,
    check: &SegmentCheck,
    log_bytes: u64,
    file_len: u64,
) -> IndexCheck {
    let bytes = match disk.read_small(&index_path(dir, base_offset)) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return IndexCheck::Absent,
        Err(e) => return IndexCheck::Stale(format!("unreadable: {e}")),
    };
    match SparseIndex::decode(&bytes) {
        Err(e) => IndexCheck::Stale(e.to_string()),
        Ok((_, summary)) if !check.damage.is_empty() => IndexCheck::Stale(format!(
            "segment is damaged; index claims {} bytes",
            summary.log_bytes
        )),
        Ok((_, summary))
            if summary.next_offset != check.next_offset
                || summary.log_bytes != log_bytes
                || summary.log_bytes != file_len =>
        {
            IndexCheck::Stale(format!(
                "index says offsets up to {} in {} bytes, segment holds up to {} in {} bytes",
                summary.next_offset, summary.log_bytes, check.next_offset, log_bytes
            ))
        }
        Ok(_) => IndexCheck::Matches,
    }
}
