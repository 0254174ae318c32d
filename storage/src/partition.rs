//! A partition's log: the API the broker uses.
//!
//! A [`Partition`] is owned by one shard and used only there (it is `!Send`). Any number of
//! tasks on that shard may call [`Partition::append`] and [`Partition::read`] concurrently.
//! Appends are ordered by arrival and acknowledged when durable under the topic's flush policy;
//! all disk writes go through one writer task per partition (see `writer.rs`), which is what
//! turns many concurrent appends into one write and one fdatasync (group commit).
//!
//! Call order: [`Partition::open`] (recovers the log), then appends/reads/retention/truncation
//! in any order, then [`Partition::close`] (writes and syncs everything queued).

use crate::error::{AppendError, OpenError, ReadError, RetentionError, TruncateError};
use crate::faults::Faults;
use crate::file::{align_down, align_up, sync_dir, SegmentFile};
use crate::layout::{
    classify, index_path, remove_if_present, segment_files, segment_path, PartitionFile,
};
use crate::producers::{ProducerState, SequenceCheck};
use crate::retention::{segments_to_delete, SegmentStats};
use crate::segment::{scan_frames, ScanStop, Segment, FRAME_BYTES_LIMIT};
use crate::signal::{Completion, Notify, Watermark};
use crate::tail_cache::TailCache;
use crate::writer::{PendingAppend, TruncationRequest, Writer};
use oxbow_core::{LogConfig, RecordBatch};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
}

/// A snapshot of a partition's offsets and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// First readable offset.
    pub log_start_offset: u64,
    /// Offset after the last acknowledged record: readers see everything below it.
    pub log_end_offset: u64,
    /// Offset the next append will get (above `log_end_offset` while appends are in flight).
    pub next_offset: u64,
    /// Number of segments, the active one included.
    pub segments: usize,
    /// Bytes of frames in all segments.
    pub log_bytes: u64,
    /// Bytes held by the tail cache.
    pub tail_cache_bytes: u64,
}

/// Options for opening a partition beyond its [`LogConfig`].
#[derive(Default)]
pub struct OpenOptions {
    /// Fault injection for tests; `None` in production.
    pub faults: Option<Rc<Faults>>,
}

/// State shared by the partition handle and its writer task. Never borrowed across an await.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) faults: Option<Rc<Faults>>,
    pub(crate) state: RefCell<LogState>,
    /// Wakes the writer.
    pub(crate) work: Notify,
    /// Offset below which every record is acknowledged (durable under the policy) and readable.
    pub(crate) acked: Watermark,
    /// Segments being sealed in the background, and the signal that one finished.
    pub(crate) seals_in_flight: Cell<usize>,
    pub(crate) seal_done: Notify,
    /// Appends waiting for queue space, oldest first (see [`PlaceInLine`]).
    line: RefCell<VecDeque<u64>>,
    next_ticket: Cell<u64>,
}

/// An append's place in the line for queue space. Appends that must wait are admitted in
/// arrival order, and a new one queues behind them even when space is free: otherwise a batch
/// arriving just as space frees up could overtake one that was woken but not yet run, and a
/// pipelining client's batches would land out of order. Leaving the head of the line (admitted,
/// failed or dropped) wakes the others to look again.
struct PlaceInLine<'a> {
    shared: &'a Shared,
    ticket: u64,
}

impl<'a> PlaceInLine<'a> {
    fn join(shared: &'a Shared) -> PlaceInLine<'a> {
        let ticket = shared.next_ticket.get();
        shared.next_ticket.set(ticket + 1);
        shared.line.borrow_mut().push_back(ticket);
        PlaceInLine { shared, ticket }
    }
}

impl Drop for PlaceInLine<'_> {
    fn drop(&mut self) {
        let was_head = {
            let mut line = self.shared.line.borrow_mut();
            let was_head = line.front() == Some(&self.ticket);
            line.retain(|t| *t != self.ticket);
            was_head
        };
        if was_head {
            self.shared.acked.wake_all();
        }
    }
}

impl Shared {
    /// Whether an append holding `place` (or none, when it just arrived) may take queue space.
    fn may_enter(&self, place: Option<u64>) -> bool {
        let line = self.line.borrow();
        let my_turn = match place {
            Some(ticket) => line.front() == Some(&ticket),
            None => line.is_empty(),
        };
        my_turn && self.state.borrow().pending_bytes < self.config.append_queue_bytes_max
    }
}

pub(crate) struct LogState {
    /// Oldest first; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pub(crate) pending: VecDeque<PendingAppend>,
    pub(crate) pending_bytes: u64,
    pub(crate) next_offset: u64,
    pub(crate) log_start_offset: u64,
    pub(crate) tail_cache: TailCache,
    pub(crate) leader_epoch: i32,
    pub(crate) closing: bool,
    /// Set after an fdatasync (or truncation) failure: no append is accepted again.
    pub(crate) stopped: Option<String>,
    pub(crate) truncation: Option<TruncationRequest>,
    /// Idempotent producers' recent batches.
    pub(crate) producers: ProducerState,
}

impl LogState {
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
}

/// One partition's log on this shard. See the module docs for the call order.
pub struct Partition {
    shared: Rc<Shared>,
    writer: RefCell<Option<glommio::Task<()>>>,
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Partition {
    /// Opens (creating if needed) the partition in `dir` and recovers it: sealed segments are
    /// trusted through their index (rebuilt by a scan when missing or stale), the active segment
    /// is scanned frame by frame and truncated at the first torn or corrupt frame. Must run on
    /// the shard that will own the partition, after [`crate::prepare_shard_io`].
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        options: OpenOptions,
    ) -> Result<Partition, OpenError> {
        config.validate()?;
        let faults = options.faults;
        std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match classify(&name) {
                PartitionFile::Segment(base) => bases.push(base),
                PartitionFile::Index(_) => {}
                PartitionFile::Temporary => {
                    std::fs::remove_file(entry.path()).map_err(io_error("removing", dir))?
                }
                PartitionFile::Unknown => tracing::warn!(
                    file = ?entry.path(),
                    "ignoring a file that is not a segment or index (expected <20 digits>.log)"
                ),
            }
        }
        bases.sort_unstable();
        // Rebuilt from the active segment; older producers are unknown and start afresh.
        let mut producers = ProducerState::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let path = segment_path(dir, base);
            let segment = if is_active {
                Self::recover_active(dir, base, &config, faults.clone(), &mut producers).await?
            } else {
                Self::open_sealed(dir, base, &config, faults.clone()).await?
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
            let segment = Segment::create(dir, 0, faults.clone())
                .await
                .map_err(io_error("creating segment in", dir))?;
            sync_dir(dir).await.map_err(io_error("syncing", dir))?;
            segments.push(segment);
        }
        let active = segments.last().expect("at least one segment");
        let next_offset = active.next_offset;
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
        let log_start_offset = segments[0].base_offset;
        tracing::debug!(dir = ?dir, segments = segments.len(), log_start_offset, next_offset, "partition opened");
        let shared = Rc::new(Shared {
            dir: dir.to_path_buf(),
            faults,
            state: RefCell::new(LogState {
                segments,
                pending: VecDeque::new(),
                pending_bytes: 0,
                next_offset,
                log_start_offset,
                tail_cache: TailCache::new(config.tail_cache_bytes_max),
                leader_epoch: 0,
                closing: false,
                stopped: None,
                truncation: None,
                producers,
            }),
            config,
            work: Notify::default(),
            acked: Watermark::new(next_offset),
            seals_in_flight: Cell::new(0),
            seal_done: Notify::default(),
            line: RefCell::default(),
            next_ticket: Cell::new(0),
        });
        let writer = Writer::new(shared.clone(), tail_start, tail.to_vec());
        let task = glommio::spawn_local(writer.run());
        Ok(Partition {
            shared,
            writer: RefCell::new(Some(task)),
        })
    }

    async fn recover_active(
        dir: &Path,
        base: u64,
        config: &LogConfig,
        faults: Option<Rc<Faults>>,
        producers: &mut ProducerState,
    ) -> Result<Segment, OpenError> {
        let path = segment_path(dir, base);
        let (segment, damage) = Segment::open_by_scan(
            dir,
            base,
            config.index_interval_bytes,
            faults,
            Some(producers),
        )
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
        remove_if_present(&stale_index).map_err(io_error("removing stale index", &stale_index))?;
        Ok(segment)
    }

    async fn open_sealed(
        dir: &Path,
        base: u64,
        config: &LogConfig,
        faults: Option<Rc<Faults>>,
    ) -> Result<Segment, OpenError> {
        let path = segment_path(dir, base);
        if let Some(segment) = Segment::open_by_index(dir, base, faults.clone())
            .await
            .map_err(io_error("opening", &path))?
        {
            return Ok(segment);
        }
        let (mut segment, damage) =
            Segment::open_by_scan(dir, base, config.index_interval_bytes, faults.clone(), None)
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
                crate::segment::seal_segment(
                    dir,
                    base,
                    &segment.file,
                    segment.log_bytes,
                    &segment.index_file_bytes(),
                    true,
                    faults,
                )
                .await
                .map_err(io_error("rebuilding index of", &path))?;
                tracing::info!(segment = ?path, "rebuilt missing or stale index");
            }
        }
        Ok(segment)
    }

    /// Appends a batch and resolves once it is acknowledged under the flush policy: after the
    /// fdatasync that covers it for `always`, after its write otherwise. Offsets are assigned
    /// in call order. Waits first if `append_queue_bytes_max` of appends are already queued.
    pub async fn append(&self, batch: RecordBatch) -> Result<Appended, AppendError> {
        let shared = &self.shared;
        let size = batch.len() as u64;
        if size > shared.config.batch_bytes_max as u64 {
            return Err(AppendError::TooLarge {
                size,
                max: shared.config.batch_bytes_max,
            });
        }
        let mut place: Option<PlaceInLine> = None;
        loop {
            {
                let st = shared.state.borrow();
                if let Some(why) = &st.stopped {
                    return Err(AppendError::Stopped(why.clone()));
                }
                if st.closing {
                    return Err(AppendError::Closed);
                }
            }
            if shared.may_enter(place.as_ref().map(|p| p.ticket)) {
                break;
            }
            let ticket = place
                .get_or_insert_with(|| PlaceInLine::join(shared))
                .ticket;
            let progress = shared.acked.get() + 1;
            shared
                .acked
                .reached(progress, || {
                    let st = shared.state.borrow();
                    st.stopped.is_some() || st.closing || shared.may_enter(Some(ticket))
                })
                .await;
        }
        // Nothing awaits from here until the batch is queued, so the next in line looks for
        // space only after this batch counts against it.
        drop(place);
        // Checked and recorded with no await in between: atomic on this shard.
        let check = shared.state.borrow().producers.check(&batch);
        match check {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => return self.await_duplicate(base_offset, last_offset).await,
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(AppendError::OutOfOrderSequence { expected, got })
            }
            SequenceCheck::Fenced { current } => {
                return Err(AppendError::ProducerFenced {
                    current_epoch: current,
                })
            }
        }
        let done = Completion::new();
        let appended = {
            let mut st = shared.state.borrow_mut();
            let batch = batch.with_base_offset(st.next_offset, st.leader_epoch);
            st.producers.record(&batch);
            let appended = Appended {
                base_offset: batch.base_offset(),
                last_offset: batch.last_offset(),
            };
            st.next_offset = appended.last_offset + 1;
            st.tail_cache.push(batch.clone());
            st.pending_bytes += size;
            st.pending.push_back(PendingAppend {
                batch,
                done: done.clone(),
            });
            appended
        };
        shared.work.notify();
        done.wait().await.map(|()| appended)
    }

    /// A retried batch of an idempotent producer: answered with its original offsets once those
    /// are acknowledged (the first attempt may still be in flight).
    async fn await_duplicate(
        &self,
        base_offset: u64,
        last_offset: u64,
    ) -> Result<Appended, AppendError> {
        let shared = &self.shared;
        let durable = shared
            .acked
            .reached(last_offset + 1, || shared.state.borrow().stopped.is_some())
            .await;
        match durable {
            true => Ok(Appended {
                base_offset,
                last_offset,
            }),
            false => Err(AppendError::Stopped(
                shared.state.borrow().stopped.clone().unwrap_or_default(),
            )),
        }
    }

    /// Reads whole batches starting with the one that holds `from`, up to `max_bytes` (but at
    /// least one batch, as Kafka fetch does), never past the acknowledged end. Serves from the
    /// tail cache when it can, otherwise from disk via the sparse index. An empty result means
    /// `from` is the log end.
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<RecordBatch>, ReadError> {
        let visible = self.shared.acked.get();
        let (file, position, limit) = {
            let st = self.shared.state.borrow();
            if st.segments.is_empty() {
                return Err(ReadError::Closed);
            }
            if from < st.log_start_offset || from > visible {
                return Err(ReadError::OffsetOutOfRange {
                    offset: from,
                    log_start: st.log_start_offset,
                    log_end: visible,
                });
            }
            if from == visible {
                return Ok(Vec::new());
            }
            if let Some(batches) = st.tail_cache.read(from, visible, max_bytes) {
                if !batches.is_empty() {
                    return Ok(batches);
                }
            }
            let at = st.segments.partition_point(|s| s.base_offset <= from);
            let segment = &st.segments[at.max(1) - 1];
            if from < segment.next_offset {
                let relative = (from - segment.base_offset) as u32;
                (
                    segment.file.clone(),
                    segment.index.lookup(relative) as u64,
                    segment.log_bytes,
                )
            } else {
                // `from` falls in a gap left by a damaged segment: continue at the next one.
                match st.segments.get(at) {
                    Some(next) => (next.file.clone(), 0, next.log_bytes),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let chunk = (max_bytes + self.shared.config.index_interval_bytes as usize + 4096)
            .clamp(64 << 10, 16 << 20);
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        let mut bad_batch = false;
        let end = scan_frames(
            &file,
            position,
            limit,
            None,
            FRAME_BYTES_LIMIT,
            chunk,
            |header, _, payload| {
                if header.base_offset >= visible {
                    return ControlFlow::Break(());
                }
                if header.next_offset() <= from {
                    return ControlFlow::Continue(());
                }
                if !batches.is_empty() && bytes + payload.len() > max_bytes {
                    return ControlFlow::Break(());
                }
                bytes += payload.len();
                match RecordBatch::from_trusted(payload) {
                    Ok(batch) => batches.push(batch),
                    Err(_) => {
                        bad_batch = true;
                        return ControlFlow::Break(());
                    }
                }
                if bytes >= max_bytes {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await
        .map_err(|source| ReadError::Io {
            path: file.path().to_path_buf(),
            source,
        })?;
        let damage = match end.stop {
            ScanStop::Damaged(reason) => Some(reason),
            _ if bad_batch => Some("frame payload is not a record batch"),
            _ => None,
        };
        match damage {
            Some(reason) if batches.is_empty() => Err(ReadError::Corrupt {
                path: file.path().to_path_buf(),
                position: end.position,
                reason,
            }),
            _ => Ok(batches),
        }
    }

    /// Resolves once the acknowledged end passes `offset` (data at `offset` is readable), or
    /// the partition stops or closes. For long-polling readers.
    pub async fn wait_for_offset(&self, offset: u64) {
        let shared = &self.shared;
        shared
            .acked
            .reached(offset + 1, || {
                let st = shared.state.borrow();
                st.stopped.is_some() || st.closing
            })
            .await;
    }

    /// Removes every batch holding an offset at or above `offset` (the batch containing it
    /// too) and returns the new log end. Queued appends are written first. Used when a
    /// follower's log diverges from its leader's.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, TruncateError> {
        let done = Completion::new();
        {
            let mut st = self.shared.state.borrow_mut();
            if let Some(why) = &st.stopped {
                return Err(TruncateError(why.clone()));
            }
            if st.closing {
                return Err(TruncateError("partition is closed".to_string()));
            }
            assert!(
                st.truncation.is_none(),
                "concurrent truncations of one partition"
            );
            st.truncation = Some((offset, done.clone()));
        }
        self.shared.work.notify();
        done.wait().await
    }

    /// Deletes the oldest sealed segments beyond the retention limits (never the active one)
    /// and returns how many were deleted. `now_ms` is wall-clock time in ms.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, RetentionError> {
        let config = &self.shared.config;
        let doomed: Vec<Segment> = {
            let mut st = self.shared.state.borrow_mut();
            if st.closing {
                return Ok(0);
            }
            let stats: Vec<SegmentStats> = st
                .segments
                .iter()
                .map(|s| SegmentStats {
                    log_bytes: s.log_bytes,
                    max_timestamp: s.max_timestamp,
                })
                .collect();
            // A segment still being sealed in the background is kept, and so is all after it.
            let sealing = st
                .segments
                .iter()
                .position(|s| s.sealing)
                .unwrap_or(usize::MAX);
            let count = segments_to_delete(
                &stats,
                config.retention_bytes_max,
                config.retention_age_max_ms,
                now_ms,
            )
            .min(sealing);
            let doomed = st.segments.drain(..count).collect();
            st.log_start_offset = st.log_start_offset.max(st.segments[0].base_offset);
            doomed
        };
        for segment in &doomed {
            assert!(
                segment.sealed,
                "retention chose the active segment {}",
                segment.base_offset
            );
            for path in segment_files(&self.shared.dir, segment.base_offset) {
                remove_if_present(&path).map_err(|source| RetentionError { path, source })?;
            }
            tracing::info!(dir = ?self.shared.dir, base_offset = segment.base_offset,
                bytes = segment.log_bytes, "retention deleted segment");
        }
        let deleted = doomed.len();
        for segment in doomed {
            // A failed close of a deleted file loses nothing; the descriptor is what matters.
            let _ = segment.file.close().await;
        }
        Ok(deleted)
    }

    /// Sets the leader epoch stamped into batches appended from now on.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.shared.state.borrow_mut().leader_epoch = epoch;
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> u64 {
        self.shared.state.borrow().log_start_offset
    }

    /// Offset after the last acknowledged record (what readers can see).
    pub fn log_end_offset(&self) -> u64 {
        self.shared.acked.get()
    }

    /// Offsets, sizes and counts, for metrics and tests.
    pub fn stats(&self) -> PartitionStats {
        let st = self.shared.state.borrow();
        PartitionStats {
            log_start_offset: st.log_start_offset,
            log_end_offset: self.shared.acked.get(),
            next_offset: st.next_offset,
            segments: st.segments.len(),
            log_bytes: st.segments.iter().map(|s| s.log_bytes).sum(),
            tail_cache_bytes: st.tail_cache.bytes(),
        }
    }

    /// The error that stopped the partition, if an fdatasync failed.
    pub fn stopped(&self) -> Option<String> {
        self.shared.state.borrow().stopped.clone()
    }

    /// Base offsets and files of the segments, oldest first (for tools and tests).
    pub fn segment_files(&self) -> Vec<(u64, SegmentFile)> {
        let st = self.shared.state.borrow();
        st.segments
            .iter()
            .map(|s| (s.base_offset, s.file.clone()))
            .collect()
    }

    /// Writes and syncs everything queued, stops the writer, and refuses appends from then on.
    pub async fn close(&self) {
        self.shared.state.borrow_mut().closing = true;
        self.shared.work.notify();
        self.shared.acked.wake_all();
        let writer = self.writer.borrow_mut().take();
        if let Some(task) = writer {
            task.await;
        }
        // Move the segments out so each close drops the last handle and really closes.
        let segments = std::mem::take(&mut self.shared.state.borrow_mut().segments);
        for segment in segments {
            if let Err(e) = segment.file.close().await {
                tracing::warn!(error = %e, "closing segment file failed");
            }
        }
    }
}
