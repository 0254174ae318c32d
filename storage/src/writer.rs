//! The writer task of a partition: the only code that writes its segments.
//!
//! Appends queue in memory with offsets already assigned. Each round the writer takes every
//! queued batch that fits (one write buffer, one segment), frames them behind the bytes of the
//! partially filled tail block, writes that with one aligned DMA write, and, under `always`,
//! covers the whole round with one fdatasync before acknowledging it. Appends that arrive while
//! a round is on disk form the next round: that is group commit, with no timer involved.
//!
//! Failure rules: a failed write rejects its round and everything queued behind it (their offsets
//! are handed out again; nothing acknowledged is touched, since the tail block's acknowledged
//! prefix is rewritten with the same bytes). A failed fdatasync stops the partition for good:
//! the kernel may have dropped the dirty pages, so no later sync could be trusted.

use crate::error::{AppendError, TruncateError};
use crate::file::{align_down, sync_dir};
use crate::frame::{encode_header, FrameHeader, FRAME_HEADER_BYTES};
use crate::layout::{index_path, remove_if_present, segment_files};
use crate::partition::Shared;
use crate::segment::{scan_frames, seal_segment, ScanStop, Segment, FRAME_BYTES_LIMIT};
use crate::signal::Completion;
use oxbow_core::{FlushPolicy, RecordBatch};
use std::io;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An append waiting for the writer.
pub(crate) struct PendingAppend {
    pub(crate) batch: RecordBatch,
    pub(crate) done: Rc<Completion<Result<(), AppendError>>>,
}

/// A truncation waiting for the queue to drain: the offset and who to tell the new end.
pub(crate) type TruncationRequest = (u64, Rc<Completion<Result<u64, TruncateError>>>);

enum Work {
    Write(Vec<PendingAppend>),
    Roll,
    Truncate(u64, Rc<Completion<Result<u64, TruncateError>>>),
    Close,
    Idle,
}

pub(crate) struct Writer {
    shared: Rc<Shared>,
    /// File position of `tail[0]`: the start of the active segment's last partial block.
    tail_start: u64,
    /// Bytes of the active segment from `tail_start` to its end, rewritten with each write.
    tail: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    /// False from a roll until the background task has fsynced the directory that holds the
    /// new active segment; acknowledging under `always` before that could lose the whole file.
    active_dir_synced: bool,
}

fn frame_len(batch: &RecordBatch) -> u64 {
    (FRAME_HEADER_BYTES + batch.len()) as u64
}

impl Writer {
    pub(crate) fn new(shared: Rc<Shared>, tail_start: u64, tail: Vec<u8>) -> Writer {
        Writer {
            shared,
            tail_start,
            tail,
            unsynced: false,
            last_sync: Instant::now(),
            active_dir_synced: true,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let outcome = match self.next_work() {
                Work::Write(round) => self.write_round(round).await,
                Work::Roll => self.roll().await,
                Work::Truncate(offset, done) => {
                    self.wait_for_seals().await;
                    let result = self.truncate(offset).await;
                    let failed = result.as_ref().err().map(|e| e.to_string());
                    done.complete(result.map_err(|e| TruncateError(e.to_string())));
                    match failed {
                        Some(why) => Err(io::Error::other(why)),
                        None => Ok(()),
                    }
                }
                Work::Close => {
                    self.wait_for_seals().await;
                    if let Err(e) = self.sync_if_unsynced().await {
                        self.stop(format!("fdatasync at close failed: {e}"));
                    }
                    return;
                }
                Work::Idle => {
                    self.idle().await;
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                self.stop(e.to_string());
                return;
            }
        }
    }

    /// Decides the next step from the queue. Truncation waits for the queue to drain.
    fn next_work(&mut self) -> Work {
        let shared = &self.shared;
        let mut st = shared.state.borrow_mut();
        if st.stopped.is_some() {
            return Work::Close;
        }
        if st.pending.is_empty() {
            if let Some((offset, done)) = st.truncation.take() {
                return Work::Truncate(offset, done);
            }
            return if st.closing { Work::Close } else { Work::Idle };
        }
        let config = &shared.config;
        let active = st.active();
        let first = frame_len(&st.pending[0].batch);
        let age_ms = crate::now_ms() - active.opened_at_ms;
        if active.log_bytes > 0
            && (active.log_bytes + first > config.segment_bytes_max
                || age_ms >= config.segment_age_max_ms as i64)
        {
            return Work::Roll;
        }
        let room_in_segment = config.segment_bytes_max.saturating_sub(active.log_bytes);
        let room_in_buffer = config.write_buffer_bytes as u64 - self.tail.len() as u64;
        let room = room_in_segment.min(room_in_buffer).max(first);
        let mut round = Vec::new();
        let mut round_bytes = 0;
        while let Some(next) = st.pending.front() {
            let len = frame_len(&next.batch);
            if round_bytes + len > room {
                break;
            }
            round_bytes += len;
            st.pending_bytes -= next.batch.len() as u64;
            round.push(st.pending.pop_front().expect("front exists"));
        }
        Work::Write(round)
    }

    /// Frames a round behind the tail block, writes it in one DMA write, syncs if the policy
    /// says so, then acknowledges it.
    async fn write_round(&mut self, round: Vec<PendingAppend>) -> io::Result<()> {
        let file = self.shared.state.borrow().active().file.clone();
        let frames_len: u64 = round.iter().map(|p| frame_len(&p.batch)).sum();
        let total = self.tail.len() + frames_len as usize;
        let mut buf = file.alloc_buffer(total);
        let bytes = buf.as_bytes_mut();
        bytes[..self.tail.len()].copy_from_slice(&self.tail);
        let mut at = self.tail.len();
        let mut headers = Vec::with_capacity(round.len());
        for pending in &round {
            let batch = &pending.batch;
            let delta = batch.last_offset_delta() as u32;
            let header = encode_header(
                batch.base_offset(),
                delta,
                batch.max_timestamp(),
                batch.bytes(),
            );
            bytes[at..at + FRAME_HEADER_BYTES].copy_from_slice(&header);
            bytes[at + FRAME_HEADER_BYTES..at + frame_len(batch) as usize]
                .copy_from_slice(batch.bytes());
            headers.push((
                FrameHeader {
                    frame_len: frame_len(batch) as u32,
                    crc: 0,
                    base_offset: batch.base_offset(),
                    last_offset_delta: delta,
                    max_timestamp: batch.max_timestamp(),
                },
                self.tail_start + at as u64,
            ));
            at += frame_len(batch) as usize;
        }
        assert_eq!(at, total, "round framing miscounted");
        bytes[total..].fill(0);
        let end = self.tail_start + total as u64;
        let new_tail_start = align_down(end);
        let new_tail = bytes[(new_tail_start - self.tail_start) as usize..total].to_vec();

        if let Err(e) = file.write_all_at(buf, self.tail_start).await {
            self.reject(round, &e);
            return Ok(());
        }
        {
            let mut st = self.shared.state.borrow_mut();
            let interval = self.shared.config.index_interval_bytes;
            let active = st.active_mut();
            for (header, position) in &headers {
                active.on_frame(header, *position, interval);
            }
            assert_eq!(
                active.log_bytes, end,
                "segment length disagrees with the write"
            );
        }
        self.tail_start = new_tail_start;
        self.tail = new_tail;
        self.unsynced = true;
        if self.shared.config.flush == FlushPolicy::Always {
            let synced = match self.sync().await {
                Ok(()) if !self.active_dir_synced => {
                    self.wait_for_seals().await;
                    self.active_dir_synced = true;
                    match self.shared.state.borrow().stopped.clone() {
                        Some(why) => Err(io::Error::other(why)),
                        None => Ok(()),
                    }
                }
                other => other,
            };
            if let Err(e) = synced {
                let why = format!("fdatasync failed: {e}");
                for pending in round {
                    pending
                        .done
                        .complete(Err(AppendError::Stopped(why.clone())));
                }
                return Err(io::Error::other(why));
            }
        }
        let next = round
            .last()
            .expect("a round is not empty")
            .batch
            .last_offset()
            + 1;
        self.shared.acked.advance(next);
        for pending in round {
            pending.done.complete(Ok(()));
        }
        if self.shared.config.flush == FlushPolicy::Interval && self.sync_due() {
            self.sync().await?;
        }
        Ok(())
    }

    /// A write failed: reject this round and everything queued after it, hand their offsets
    /// out again, and keep accepting appends.
    fn reject(&mut self, round: Vec<PendingAppend>, error: &io::Error) {
        let why = error.to_string();
        tracing::error!(dir = ?self.shared.dir, error = %why, "write failed; rejecting queued appends");
        let queued: Vec<PendingAppend> = {
            let mut st = self.shared.state.borrow_mut();
            let written_end = st.active().next_offset;
            st.next_offset = written_end;
            st.tail_cache.truncate(written_end);
            st.producers.truncate(written_end);
            st.pending_bytes = 0;
            st.pending.drain(..).collect()
        };
        for pending in round.into_iter().chain(queued) {
            pending
                .done
                .complete(Err(AppendError::WriteFailed(why.clone())));
        }
        self.shared.acked.wake_all();
    }

    /// Starts a new active segment at the next offset; seals the old one and fsyncs the
    /// directory in the background. Appends must not wait for that: measured on ext4 after a
    /// 1 GiB segment of appending writes, the directory fsync alone took 86-260 ms (it commits
    /// the journal with all the old segment's extent metadata) and stalled every append.
    /// Under `never` neither is fsynced: flushing a whole unsynced segment makes the device
    /// flush its cache (~0.5 s per GiB here, fio measures the same) and writes queue behind it.
    async fn roll(&mut self) -> io::Result<()> {
        let (base, file, log_bytes, index_bytes, next_offset) = {
            let st = self.shared.state.borrow();
            let active = st.active();
            (
                active.base_offset,
                active.file.clone(),
                active.log_bytes,
                active.index_file_bytes(),
                active.next_offset,
            )
        };
        let dir = self.shared.dir.clone();
        let faults = self.shared.faults.clone();
        let segment = Segment::create(&dir, next_offset, faults.clone()).await?;
        self.active_dir_synced = false;
        {
            let mut st = self.shared.state.borrow_mut();
            let old = st.active_mut();
            old.sealed = true;
            old.sealing = true;
            st.segments.push(segment);
        }
        self.tail_start = 0;
        self.tail.clear();
        // The new file holds nothing unsynced; the old one's data is synced by its seal.
        self.mark_synced();
        let shared = self.shared.clone();
        let durable = shared.config.flush != FlushPolicy::Never;
        shared.seals_in_flight.set(shared.seals_in_flight.get() + 1);
        glommio::spawn_local(async move {
            let sealed =
                match seal_segment(&dir, base, &file, log_bytes, &index_bytes, durable, faults)
                    .await
                {
                    Ok(()) if durable => sync_dir(&dir).await,
                    other => other,
                };
            if let Some(s) = shared
                .state
                .borrow_mut()
                .segments
                .iter_mut()
                .find(|s| s.base_offset == base)
            {
                s.sealing = false;
            }
            if let Err(e) = sealed {
                stop_partition(&shared, format!("sealing segment {base} failed: {e}"));
                shared.work.notify();
            }
            shared.seals_in_flight.set(shared.seals_in_flight.get() - 1);
            shared.seal_done.notify();
        })
        .detach();
        tracing::debug!(dir = ?self.shared.dir, sealed = base, new_base = next_offset, "rolled segment");
        Ok(())
    }

    /// Waits until no segment is being sealed in the background.
    async fn wait_for_seals(&self) {
        while self.shared.seals_in_flight.get() > 0 {
            self.shared.seal_done.notified().await;
        }
    }

    /// Removes every batch at or above `offset`; see [`crate::Partition::truncate_to`].
    async fn truncate(&mut self, offset: u64) -> io::Result<u64> {
        let dir = self.shared.dir.clone();
        let faults = self.shared.faults.clone();
        self.sync_if_unsynced().await?;
        // Whole segments above the cut go; an emptied log restarts at the cut.
        let removed: Vec<Segment> = {
            let mut st = self.shared.state.borrow_mut();
            let keep = st
                .segments
                .partition_point(|s| s.base_offset < offset)
                .max(1);
            st.segments.drain(keep..).collect()
        };
        let restart_at = {
            let st = self.shared.state.borrow();
            (offset <= st.segments[0].base_offset).then_some(offset)
        };
        let mut doomed = removed;
        if restart_at.is_some() {
            let old = self.shared.state.borrow_mut().segments.pop();
            doomed.extend(old);
        }
        // Delete before creating: a restarted log may reuse the same base offset and file name.
        for segment in doomed {
            for path in segment_files(&dir, segment.base_offset) {
                remove_if_present(&path)?;
            }
            segment.file.close().await?;
        }
        if let Some(restart) = restart_at {
            let segment = Segment::create(&dir, restart, faults.clone()).await?;
            let mut st = self.shared.state.borrow_mut();
            st.log_start_offset = restart;
            st.segments.push(segment);
        }
        // Cut the last remaining segment at the first frame that holds `offset` or more.
        let (file, base, start, limit) = {
            let st = self.shared.state.borrow();
            let a = st.active();
            let relative = offset.saturating_sub(a.base_offset).min(u32::MAX as u64) as u32;
            (
                a.file.clone(),
                a.base_offset,
                a.index.lookup(relative) as u64,
                a.log_bytes,
            )
        };
        let mut cut = (limit, None);
        let end = scan_frames(
            &file,
            start,
            limit,
            None,
            FRAME_BYTES_LIMIT,
            1 << 20,
            |h, p, _| {
                if h.next_offset() > offset {
                    cut = (p, Some(h.base_offset));
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        if let ScanStop::Damaged(reason) = end.stop {
            return Err(io::Error::other(format!(
                "cannot truncate through damage: {reason}"
            )));
        }
        let (position, new_end) = match cut {
            (position, Some(new_end)) => (position, new_end),
            (_, None) => (limit, self.shared.state.borrow().active().next_offset),
        };
        file.set_len(position).await?;
        file.sync().await?;
        remove_if_present(&index_path(&dir, base))?;
        sync_dir(&dir).await?;
        let tail_start = align_down(position);
        let tail = file
            .read_at(tail_start, (position - tail_start) as usize)
            .await?;
        {
            let mut st = self.shared.state.borrow_mut();
            let active = st.active_mut();
            if position < active.log_bytes {
                active.log_bytes = position;
                active.next_offset = new_end;
                active.index.truncate_to_position(position as u32);
            }
            active.sealed = false;
            st.next_offset = new_end;
            st.tail_cache.truncate(new_end);
            st.producers.truncate(new_end);
        }
        self.tail_start = tail_start;
        self.tail = tail.to_vec();
        self.shared
            .acked
            .reset(new_end.min(self.shared.acked.get()));
        tracing::info!(dir = ?dir, offset, new_end, "log truncated");
        Ok(new_end)
    }

    async fn idle(&mut self) {
        let interval = Duration::from_millis(self.shared.config.flush_interval_ms);
        if self.unsynced && self.shared.config.flush == FlushPolicy::Interval {
            let wait = interval.saturating_sub(self.last_sync.elapsed());
            let timer = async {
                glommio::timer::sleep(wait).await;
            };
            futures_lite::future::or(self.shared.work.notified(), timer).await;
            if self.sync_due() {
                if let Err(e) = self.sync().await {
                    self.stop(format!("interval fdatasync failed: {e}"));
                }
            }
        } else {
            self.shared.work.notified().await;
        }
    }

    fn sync_due(&self) -> bool {
        self.unsynced
            && self.last_sync.elapsed()
                >= Duration::from_millis(self.shared.config.flush_interval_ms)
    }

    async fn sync_if_unsynced(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.sync().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> io::Result<()> {
        let file = self.shared.state.borrow().active().file.clone();
        file.sync().await?;
        self.mark_synced();
        Ok(())
    }

    fn mark_synced(&mut self) {
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    fn stop(&mut self, why: String) {
        stop_partition(&self.shared, why);
    }
}

/// An fdatasync (or truncation) failed: refuse everything from now on.
pub(crate) fn stop_partition(shared: &Shared, why: String) {
    tracing::error!(dir = ?shared.dir, error = %why,
        "partition stopped: no appends are accepted until it is reopened");
    let queued: Vec<PendingAppend> = {
        let mut st = shared.state.borrow_mut();
        st.stopped.get_or_insert(why.clone());
        st.pending_bytes = 0;
        st.pending.drain(..).collect()
    };
    for pending in queued {
        pending
            .done
            .complete(Err(AppendError::Stopped(why.clone())));
    }
    let truncation = shared.state.borrow_mut().truncation.take();
    if let Some((_, done)) = truncation {
        done.complete(Err(TruncateError(why.clone())));
    }
    shared.acked.wake_all();
}
