//! Opening a partition's directory after anything: a clean close, a kill, a power loss.
//!
//! - Sealed segments are trusted through their index when it is intact and agrees with the
//!   file's length; otherwise they are scanned frame by frame (and the index rebuilt when the
//!   scan is clean). A damaged sealed segment is served up to the damage.
//! - The active segment (the newest) is always scanned; the log is cut at the first partial,
//!   zero or bad frame, and the file truncated there and synced, so stale bytes can never be
//!   read as frames later.
//! - Idempotent-producer state is rebuilt from the active segment's batches.
//! - Transaction state comes from the newest usable snapshot, with the batches after it
//!   replayed (see `txn/snapshot.rs`).
//! - The log starts where the log-start checkpoint says, if records were deleted past the
//!   first segment's base (see `log_start.rs`).
//! - Leader epochs of sealed segments come from the checkpoint file, those of the active
//!   segment from its batches (see `epochs.rs`); a missing or damaged checkpoint is rebuilt by
//!   scanning every segment.

use crate::compaction::{cleaner_checkpoint_path, CleanedRanges};
use crate::epochs::{checkpoint_path, LeaderEpochs};
use crate::error::OpenError;
use crate::io::{align_down, align_up, Disk};
use crate::layout::{classify, index_path, segment_path, swap_path, PartitionFile};
use crate::log_start::{self, log_start_path, recovered_start};
use crate::producers::ProducerState;
use crate::segment::{scan_frames, seal_segment, Segment, FRAME_BYTES_LIMIT, SCAN_CHUNK_BYTES};
use crate::txn::{choose_start, replay, TxnState};
use oxbow_core::{LogConfig, RecordBatch};
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

/// What recovery hands the log core and its writer.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Segment>,
    pub(crate) producers: ProducerState,
    pub(crate) txns: TxnState,
    pub(crate) epochs: LeaderEpochs,
    /// Whether the epochs differ from the checkpoint on disk (it must be written again).
    pub(crate) epochs_changed: bool,
    /// The first readable offset.
    pub(crate) log_start: u64,
    /// The log-start checkpoint says otherwise (it must be written again before anything is
    /// appended: left higher, it would hide the records appended above the recovered start).
    pub(crate) log_start_changed: bool,
    /// File position of the active segment's last partial block, and its bytes.
    pub(crate) tail_start: u64,
    pub(crate) tail: Vec<u8>,
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Recovers (creating if needed) the partition in `dir`.
pub(crate) async fn recover(
    disk: &dyn Disk,
    dir: &Path,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Recovered, OpenError> {
    disk.create_dir_all(dir)
        .map_err(io_error("creating", dir))?;
    complete_swaps(disk, dir).await?;
    let (mut bases, mut snapshots) = (Vec::new(), Vec::new());
    for name in disk.list(dir).map_err(io_error("listing", dir))? {
        match classify(&name) {
            PartitionFile::Segment(base) => bases.push(base),
            PartitionFile::TxnSnapshot(offset) => snapshots.push(offset),
            PartitionFile::Index(_)
            | PartitionFile::EpochCheckpoint
            | PartitionFile::LogStartCheckpoint
            | PartitionFile::CleanerCheckpoint
            | PartitionFile::Swap { .. } => {}
            PartitionFile::Temporary => disk
                .remove(&dir.join(&name))
                .map_err(io_error("removing", dir))?,
            PartitionFile::Unknown => tracing::warn!(
                file = ?dir.join(&name),
                "ignoring a file that is not a segment or index (expected <20 digits>.log)"
            ),
        }
    }
    bases.sort_unstable();
    let checkpoint = read_checkpoint(disk, dir);
    let mut producers = ProducerState::default();
    let (first_base, active_base) = match (bases.first(), bases.last()) {
        (Some(&first), Some(&active)) => (first, active),
        _ => (0, 0),
    };
    let txn_start = choose_start(disk, dir, snapshots, first_base, active_base);
    let (mut txns, replay_from) = (txn_start.state, txn_start.replay_from);
    let mut active_epochs = Vec::new();
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let segment = if i + 1 == bases.len() {
            recover_active(disk, dir, base, config, |batch| {
                producers.record(&batch);
                if batch.base_offset() >= replay_from {
                    txns.record(&batch);
                }
                active_epochs.push((
                    batch.partition_leader_epoch(),
                    batch.base_offset(),
                    batch.last_offset(),
                ));
            })
            .await?
        } else {
            let sealed = open_sealed(disk, dir, base, config).await?;
            if sealed.next_offset > replay_from {
                let (file, bytes) = (&sealed.file, sealed.log_bytes);
                replay(file, bytes, replay_from..u64::MAX, &mut txns)
                    .await
                    .map_err(io_error("scanning", file.path()))?;
            }
            sealed
        };
        if let Some(previous) = segments.last() {
            if previous.next_offset > base {
                tracing::error!(segment = ?path, previous_end = previous.next_offset,
                    "segment overlaps the previous one; its overlapping offsets are unreadable");
            }
        }
        segments.push(segment);
    }
    if segments.is_empty() {
        let segment = Segment::create(disk, dir, 0, now_ms)
            .await
            .map_err(io_error("creating segment in", dir))?;
        disk.sync_dir(dir).await.map_err(io_error("syncing", dir))?;
        segments.push(segment);
    }
    let log_end = segments.last().expect("one segment").next_offset;
    let checkpointed = read_log_start(disk, dir);
    let log_start = recovered_start(checkpointed, segments[0].base_offset, log_end);
    let log_start_changed = checkpointed.is_some_and(|start| start != log_start);
    let (mut epochs, mut epochs_changed) = match checkpoint {
        Some(epochs) => (epochs, false),
        None if log_end > log_start => (rebuild_epochs(&segments).await?, true),
        None => (LeaderEpochs::default(), false),
    };
    // The active segment's batches say exactly which epochs wrote it, whatever an older
    // checkpoint claims about that range; sealed segments are known from the checkpoint.
    let active_base = segments.last().expect("one segment").base_offset;
    epochs_changed |= epochs.truncate_from(active_base);
    epochs_changed |= epochs.truncate_before(log_start);
    // Batches whose records were all deleted say nothing; one holding the start, from there.
    for (epoch, base, last) in active_epochs {
        if last >= log_start {
            epochs_changed |= epochs.observe(epoch, base.max(log_start));
        }
    }
    let active = segments.last().expect("one segment");
    if txn_start.write_snapshot {
        // New, or older than transactions: nothing transactional before the active base.
        let base = active.base_offset;
        let bytes = crate::txn::encode(&Default::default(), base);
        let durable = config.flush != oxbow_core::FlushPolicy::Never;
        (crate::txn::write(disk, dir, base, &bytes, durable).await)
            .map_err(io_error("writing a transaction snapshot in", dir))?;
    }
    let tail_start = align_down(active.log_bytes);
    let tail = active
        .file
        .read_at(tail_start, (active.log_bytes - tail_start) as usize)
        .await
        .map_err(io_error("reading tail of", active.file.path()))?;
    assert_eq!(
        tail.len() as u64,
        active.log_bytes - tail_start,
        "tail block reads short"
    );
    tracing::debug!(dir = ?dir, segments = segments.len(), log_start, log_end, "partition opened");
    Ok(Recovered {
        segments,
        producers,
        txns,
        epochs,
        epochs_changed,
        log_start,
        log_start_changed,
        tail_start,
        tail: tail.to_vec(),
    })
}

/// Finishes the compaction swaps a crash interrupted. A `<base>-<end>.swap` file is a complete
/// cleaned copy (fdatasynced before it got that name) of the segments from `base` to `end`:
/// those still here go, and the copy takes the first one's name.
async fn complete_swaps(disk: &dyn Disk, dir: &Path) -> Result<(), OpenError> {
    let names = disk.list(dir).map_err(io_error("listing", dir))?;
    let swaps: Vec<(u64, u64)> = (names.iter())
        .filter_map(|name| match classify(name) {
            PartitionFile::Swap { base, end } => Some((base, end)),
            _ => None,
        })
        .collect();
    for &(base, end) in &swaps {
        for name in &names {
            if let PartitionFile::Segment(b) | PartitionFile::Index(b) = classify(name) {
                if (base..end).contains(&b) {
                    let path = dir.join(name);
                    disk.remove(&path).map_err(io_error("removing", &path))?;
                }
            }
        }
        let swap = swap_path(dir, base, end);
        disk.replace(&swap, &segment_path(dir, base))
            .map_err(io_error("renaming", &swap))?;
        tracing::warn!(dir = ?dir, base, end, "finished a compaction swap a crash interrupted");
    }
    if !swaps.is_empty() {
        disk.sync_dir(dir).await.map_err(io_error("syncing", dir))?;
    }
    Ok(())
}

/// How far the log was compacted; nothing when the checkpoint is missing or damaged (the next
/// pass reads the whole log for keys).
pub(crate) fn read_cleaner_checkpoint(disk: &dyn Disk, dir: &Path) -> CleanedRanges {
    let damaged = "the cleaner starts from the log start";
    let path = cleaner_checkpoint_path(dir);
    read_small_file(disk, &path, CleanedRanges::decode, damaged).unwrap_or_default()
}

/// The checkpoint, or `None` when it is missing or damaged (then rebuilt from the log).
fn read_checkpoint(disk: &dyn Disk, dir: &Path) -> Option<LeaderEpochs> {
    let damaged = "rebuilding leader epochs from the log";
    read_small_file(disk, &checkpoint_path(dir), LeaderEpochs::decode, damaged)
}

/// The log-start checkpoint, or `None` when it is missing or damaged (then the log starts at
/// its first segment).
fn read_log_start(disk: &dyn Disk, dir: &Path) -> Option<u64> {
    let damaged = "ignoring the log-start checkpoint; the log starts at its first segment";
    read_small_file(disk, &log_start_path(dir), log_start::decode, damaged)
}

/// A small file decoded, or `None` when it is missing; one that cannot be read or decoded is
/// logged with what recovery does instead (`damaged`), and is `None` too.
fn read_small_file<T, E: std::fmt::Display>(
    disk: &dyn Disk,
    path: &Path,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    damaged: &str,
) -> Option<T> {
    let decoded = match disk.read_small(path) {
        Ok(Some(bytes)) => decode(&bytes).map_err(|e| e.to_string()),
        Ok(None) => return None,
        Err(e) => Err(e.to_string()),
    };
    decoded
        .map_err(|error| tracing::warn!(file = ?path, error = %error, "{damaged}"))
        .ok()
}

/// Every epoch change in the log, from the batches of every segment.
async fn rebuild_epochs(segments: &[Segment]) -> Result<LeaderEpochs, OpenError> {
    let mut epochs = LeaderEpochs::default();
    for segment in segments {
        let file = &segment.file;
        scan_frames(
            file,
            0,
            segment.log_bytes,
            None,
            FRAME_BYTES_LIMIT,
            SCAN_CHUNK_BYTES,
            |header, _, payload| {
                if let Ok(batch) = RecordBatch::from_trusted(payload) {
                    epochs.observe(batch.partition_leader_epoch(), header.base_offset);
                }
                ControlFlow::Continue(())
            },
        )
        .await
        .map_err(io_error("scanning", file.path()))?;
    }
    Ok(epochs)
}

async fn recover_active(
    disk: &dyn Disk,
    dir: &Path,
    base: u64,
    config: &LogConfig,
    on_batch: impl FnMut(RecordBatch),
) -> Result<Segment, OpenError> {
    let path = segment_path(dir, base);
    let (segment, damage) =
        Segment::open_by_scan(disk, dir, base, config.index_interval_bytes, on_batch)
            .await
            .map_err(io_error("recovering", &path))?;
    if let Some(damage) = &damage {
        tracing::warn!(segment = ?path, position = damage.position,
            truncated_bytes = damage.bytes_after, reason = damage.reason,
            first_lost_offset = damage.first_lost_offset,
            "truncating the torn tail of the active segment");
    }
    let file_len = segment
        .file
        .len()
        .await
        .map_err(io_error("sizing", &path))?;
    if damage.is_none() && file_len > align_up(segment.log_bytes) {
        // Zeros ended the scan, yet the file goes on past the tail block's padding: an
        // extending write was interrupted. Say what is dropped.
        tracing::warn!(segment = ?path, position = segment.log_bytes,
            truncated_bytes = file_len - segment.log_bytes,
            "truncating the torn tail of the active segment (bytes after the last frame)");
    }
    if file_len > segment.log_bytes {
        // Drop torn bytes and zero padding so nothing stale can ever be read as a frame.
        segment
            .file
            .set_len(segment.log_bytes)
            .await
            .map_err(io_error("truncating", &path))?;
        segment
            .file
            .sync()
            .await
            .map_err(io_error("syncing", &path))?;
    }
    // The active segment grows again: an index file from when it was sealed is stale.
    let stale_index = index_path(dir, base);
    disk.remove(&stale_index)
        .map_err(io_error("removing stale index", &stale_index))?;
    Ok(segment)
}

async fn open_sealed(
    disk: &dyn Disk,
    dir: &Path,
    base: u64,
    config: &LogConfig,
) -> Result<Segment, OpenError> {
    let path = segment_path(dir, base);
    if let Some(segment) = Segment::open_by_index(disk, dir, base)
        .await
        .map_err(io_error("opening", &path))?
    {
        return Ok(segment);
    }
    let (mut segment, damage) =
        Segment::open_by_scan(disk, dir, base, config.index_interval_bytes, |_| {})
            .await
            .map_err(io_error("scanning", &path))?;
    segment.sealed = true;
    match damage {
        Some(damage) => tracing::error!(segment = ?path, position = damage.position,
            first_unreadable_offset = damage.first_lost_offset, unreadable_bytes = damage.bytes_after,
            reason = damage.reason,
            "sealed segment is damaged; serving the frames before the damage, the rest is unreadable"),
        None => {
            // A clean segment whose index was missing: trim padding and write the index.
            seal_segment(
                disk,
                dir,
                base,
                &segment.file,
                segment.log_bytes,
                &segment.index_file_bytes(),
                true,
            )
            .await
            .map_err(io_error("rebuilding index of", &path))?;
            tracing::info!(segment = ?path, "rebuilt missing or stale index");
        }
    }
    Ok(segment)
}
