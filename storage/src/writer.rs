//! The writer task of a partition: the only code that writes its segments. It carries out what
//! the log core decides (`core/rounds.rs` has the rules) and reports back.

use crate::core::{Cut, Pending, RollOutcome, Work};
use crate::epochs::checkpoint_path;
use crate::error::{AppendError, TruncateError};
use crate::frame::{encode_header, FrameHeader, FRAME_HEADER_BYTES};
use crate::io::{align_down, write_file_atomically, Disk};
use crate::layout::{classify, index_path, segment_files, PartitionFile};
use crate::log_start::log_start_path;
use crate::partition::{AppendWaiter, Shared, TruncateWaiter};
use crate::read::BlockFiller;
use crate::segment::{scan_frames, seal_segment, ScanStop, Segment, FRAME_BYTES_LIMIT};
use oxbow_core::FlushPolicy;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

pub(crate) struct Writer {
    shared: Rc<Shared>,
    /// File position of `tail[0]`: the start of the active segment's last partial block.
    tail_start: u64,
    /// Bytes of the active segment from `tail_start` to its end, rewritten with each write.
    tail: Vec<u8>,
    /// What it writes, on its way to the shard's read cache.
    filler: BlockFiller,
}

impl Writer {
    pub(crate) fn new(shared: Rc<Shared>, tail_start: u64, tail: Vec<u8>) -> Writer {
        Writer {
            shared,
            tail_start,
            tail,
            filler: BlockFiller::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            // The start before the epochs: epochs cut at a start that is not yet durable would
            // disagree with the log a crash in between leaves (recovery cuts them at the start
            // it finds, so the other order is safe).
            if let Err(e) = self.write_log_start_if_changed().await {
                self.stop(format!("writing the log-start checkpoint failed: {e}"));
            }
            if let Err(e) = self.write_epochs_if_changed().await {
                self.stop(format!("writing the leader-epoch checkpoint failed: {e}"));
            }
            let work = {
                let tail_bytes = self.tail.len() as u64;
                self.shared
                    .core
                    .borrow_mut()
                    .next_work(crate::now_ms(), tail_bytes)
            };
            let outcome = match work {
                Work::Write(round) => self.write_round(round).await,
                Work::Roll(base) => self.roll(base).await,
                Work::Truncate(cut, done) => self.truncate(cut, done).await,
                Work::Sync => self.sync().await,
                Work::Close => {
                    self.wait_for_seals().await;
                    if let Err(e) = self.sync_if_unsynced().await {
                        self.stop(format!("fdatasync at close failed: {e}"));
                    }
                    return;
                }
                Work::Idle(wake_at) => {
                    self.idle(wake_at).await;
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                self.stop(e.to_string());
                return;
            }
        }
    }

    /// Frames a round behind the tail block, writes it in one DMA write, syncs if the policy
    /// says so, then acknowledges it.
    async fn write_round(&mut self, round: Vec<Pending<AppendWaiter>>) -> io::Result<()> {
        let file = self.shared.core.borrow().active().file.clone();
        let frames_len: u64 = round.iter().map(|p| crate::core::frame_len(&p.batch)).sum();
        let total = self.tail.len() + frames_len as usize;
        let mut buf = file.alloc_buffer(total);
        let bytes = buf.as_bytes_mut();
        bytes[..self.tail.len()].copy_from_slice(&self.tail);
        let mut at = self.tail.len();
        let mut frames = Vec::with_capacity(round.len());
        for pending in &round {
            let batch = &pending.batch;
            let len = crate::core::frame_len(batch) as usize;
            let delta = batch.last_offset_delta() as u32;
            let header = encode_header(
                batch.base_offset(),
                delta,
                batch.max_timestamp(),
                batch.bytes(),
            );
            bytes[at..at + FRAME_HEADER_BYTES].copy_from_slice(&header);
            bytes[at + FRAME_HEADER_BYTES..at + len].copy_from_slice(batch.bytes());
            let header = FrameHeader {
                frame_len: len as u32,
                crc: 0,
                base_offset: batch.base_offset(),
                last_offset_delta: delta,
                max_timestamp: batch.max_timestamp(),
            };
            frames.push((header, self.tail_start + at as u64));
            at += len;
        }
        assert_eq!(at, total, "round framing miscounted");
        bytes[total..].fill(0);
        let end = self.tail_start + total as u64;
        let new_tail_start = align_down(end);
        let new_tail = bytes[(new_tail_start - self.tail_start) as usize..total].to_vec();
        let key = self.shared.core.borrow().active().cache_key;
        let appended_at = self.tail_start + self.tail.len() as u64;
        let appended = &bytes[self.tail.len()..total];
        (self.filler).writing(&self.shared.read_cache, key, appended_at, appended);

        if let Err(e) = file.write_all_at(buf, self.tail_start).await {
            self.filler.forget();
            let why = e.to_string();
            tracing::error!(dir = ?self.shared.dir, error = %why, "write failed; rejecting queued appends");
            let rejected = self.shared.core.borrow_mut().round_failed(round);
            for waiter in rejected {
                waiter.complete(Err(AppendError::WriteFailed(why.clone())));
            }
            self.shared.visible.wake_all();
            return Ok(());
        }
        self.shared.core.borrow_mut().round_written(&frames, end);
        self.filler.commit(&self.shared.read_cache);
        self.tail_start = new_tail_start;
        self.tail = new_tail;
        // A new epoch starts in this round: its checkpoint is written before it is acknowledged.
        let durable = match self.write_epochs_if_changed().await {
            Err(e) => Err(io::Error::other(format!(
                "writing the leader-epoch checkpoint failed: {e}"
            ))),
            Ok(()) if self.shared.core.borrow().sync_before_ack() => self.sync_for_ack().await,
            Ok(()) => Ok(()),
        };
        if let Err(e) = durable {
            let why = format!("fdatasync failed: {e}");
            for pending in round {
                pending
                    .waiter
                    .complete(Err(AppendError::Stopped(why.clone())));
            }
            return Err(io::Error::other(why));
        }
        let acknowledged = self.shared.core.borrow_mut().round_durable(round);
        self.shared.publish_visible();
        self.shared.publish_durable();
        for waiter in acknowledged {
            waiter.complete(Ok(()));
        }
        if self.shared.core.borrow().sync_due(crate::now_ms()) {
            self.sync().await?;
        }
        Ok(())
    }

    /// fdatasync before an acknowledgement under `always`; right after a roll, also waits for
    /// the directory fsync that makes the new active segment's name durable.
    async fn sync_for_ack(&mut self) -> io::Result<()> {
        self.sync().await?;
        if !self.shared.core.borrow().active_dir_synced() {
            self.wait_for_seals().await;
            self.shared.core.borrow_mut().mark_active_dir_synced();
            if let Some(why) = self.shared.core.borrow().stopped() {
                return Err(io::Error::other(why.to_string()));
            }
        }
        Ok(())
    }

    /// Starts a new active segment; seals the old one (trim, fdatasync, index, directory fsync)
    /// in the background. Appends must not wait for that: measured on ext4 after a 1 GiB
    /// segment of appending writes, the directory fsync alone took 86-260 ms (it commits the
    /// journal with all the old segment's extent metadata) and stalled every append. Under
    /// `never` nothing is fsynced: flushing a whole unsynced segment makes the device flush its
    /// cache (~0.5 s per GiB here, fio measures the same) and writes queue behind it.
    async fn roll(&mut self, base: u64) -> io::Result<()> {
        let shared = self.shared.clone();
        let segment =
            Segment::create(shared.disk.as_ref(), &shared.dir, base, crate::now_ms()).await?;
        let seal = shared.core.borrow_mut().rolled(segment, crate::now_ms());
        self.filler.sealed(&shared.read_cache);
        self.tail_start = 0;
        self.tail.clear();
        let durable = shared.core.borrow().config.flush != FlushPolicy::Never;
        glommio::spawn_local(async move {
            let sealed = seal_segment(
                shared.disk.as_ref(),
                &shared.dir,
                seal.base_offset,
                &seal.file,
                seal.log_bytes,
                &seal.index_bytes,
                durable,
            )
            .await;
            let sealed = match sealed {
                Ok(()) => write_txn_snapshot(&shared, &seal, base, durable).await,
                Err(e) => Err(e),
            };
            shared.core.borrow_mut().sealed(seal.base_offset);
            if let Err(e) = sealed {
                stop_partition(
                    &shared,
                    format!("sealing segment {} failed: {e}", seal.base_offset),
                );
                shared.work.notify();
            }
            shared.seal_done.notify();
        })
        .detach();
        tracing::debug!(dir = ?self.shared.dir, new_base = base, "rolled segment");
        Ok(())
    }

    /// Waits until no segment is being sealed in the background.
    async fn wait_for_seals(&self) {
        while self.shared.core.borrow().seals_in_flight() > 0 {
            self.shared.seal_done.notified().await;
        }
    }

    /// Carries out a truncation (see [`crate::Partition::truncate_to`]) and tells the waiter.
    async fn truncate(&mut self, cut: Cut, done: TruncateWaiter) -> io::Result<()> {
        self.filler.forget();
        self.wait_for_seals().await;
        let result = self.truncate_files(cut).await;
        let failed = result.as_ref().err().map(|e| e.to_string());
        done.complete(result.map_err(|e| TruncateError(e.to_string())));
        match failed {
            Some(why) => Err(io::Error::other(why)),
            None => Ok(()),
        }
    }

    async fn truncate_files(&mut self, cut: Cut) -> io::Result<u64> {
        let (dir, disk) = (self.shared.dir.clone(), self.shared.disk.clone());
        self.sync_if_unsynced().await?;
        // Whole segments above the cut go; an emptied log restarts at the cut. Delete before
        // creating: a restarted log may reuse the same base offset and file name.
        let plan = self.shared.core.borrow_mut().plan_truncation(cut);
        let offset = match cut {
            Cut::From(offset) | Cut::Everything(offset) => offset,
        };
        // Newest first: a crash part way leaves a prefix of the old log, which recovery reads
        // as a shorter log.
        let mut doomed = plan.doomed;
        doomed.sort_by_key(|segment| std::cmp::Reverse(segment.base_offset));
        for segment in doomed {
            for path in segment_files(&dir, segment.base_offset) {
                disk.remove(&path)?;
            }
            segment.file.close().await?;
        }
        if let Some(restart) = plan.restart_at {
            // Nothing of the old log is left for its transaction snapshots to describe.
            remove_txn_snapshots(disk.as_ref(), &dir, |_| true)?;
            // The emptied epochs are durable before the new segment exists: recovery would
            // otherwise stretch an old epoch over the new start.
            self.shared.core.borrow_mut().forget_epochs();
            self.write_epochs_if_changed().await?;
            self.write_log_start_if_changed().await?;
            let segment = Segment::create(disk.as_ref(), &dir, restart, crate::now_ms()).await?;
            self.shared.core.borrow_mut().restart(segment);
            // Nothing of the old log is left: no transaction is open in the new one.
            let bytes = crate::txn::encode(&Default::default(), restart);
            let durable = self.shared.core.borrow().config.flush != FlushPolicy::Never;
            crate::txn::write(disk.as_ref(), &dir, restart, &bytes, durable).await?;
        }
        // Cut the last remaining segment at the first frame that holds `offset` or more.
        let search = self.shared.core.borrow().cut_search(offset);
        let mut found = None;
        let end = scan_frames(
            &search.file,
            search.start,
            search.limit,
            None,
            FRAME_BYTES_LIMIT,
            1 << 20,
            |h, p, _| {
                if h.next_offset() > offset {
                    // Past a gap compaction left, the log ends at `offset` itself.
                    found = Some((p, h.base_offset.min(offset)));
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
        let (position, new_end) = match found {
            Some(found) => found,
            None => {
                let end = self.shared.core.borrow().active().next_offset;
                (search.limit, end.min(offset))
            }
        };
        let file = search.file;
        file.set_len(position).await?;
        file.sync().await?;
        disk.remove(&index_path(&dir, search.base_offset))?;
        disk.sync_dir(&dir).await?;
        let tail_start = align_down(position);
        let tail = file
            .read_at(tail_start, (position - tail_start) as usize)
            .await?;
        // Below what memory can undo (a replica cut under what it had made visible), the
        // transaction state is read back from the newest snapshot and the batches after it.
        // Memory can undo the cut only if a snapshot is left for a later recovery to start
        // from (the cut may have taken the segments the kept ones described).
        let segments = self.shared.core.borrow().segments_for_txns();
        let (first, active) = (segments[0].1, segments[segments.len() - 1].1);
        let exact = self.shared.core.borrow().txns_cut_exact(new_end)
            && has_txn_snapshot(disk.as_ref(), &dir, first..=active)?;
        let rebuilt = if exact {
            None
        } else {
            let mut segments = segments;
            if let Some(last) = segments.last_mut() {
                last.2 = position;
            }
            let durable = self.shared.core.borrow().config.flush != FlushPolicy::Never;
            Some(crate::txn::rebuild(disk.as_ref(), &dir, &segments, new_end, durable).await?)
        };
        self.shared
            .core
            .borrow_mut()
            .truncated(position, new_end, rebuilt);
        // Snapshots past the new end describe records that are gone.
        remove_txn_snapshots(disk.as_ref(), &dir, |at| at > new_end)?;
        self.tail_start = tail_start;
        self.tail = tail.to_vec();
        let visible = self.shared.core.borrow().visible_end();
        match cut {
            Cut::From(_) => self
                .shared
                .visible
                .reset(visible.min(self.shared.visible.get())),
            // Readers waiting below the new start find nothing there: wake them to see so.
            Cut::Everything(_) => {
                self.shared.visible.reset(visible);
                self.shared.visible.wake_all();
            }
        }
        self.shared.publish_durable();
        self.write_epochs_if_changed().await?;
        self.write_log_start_if_changed().await?;
        tracing::info!(dir = ?dir, offset, new_end, "log truncated");
        Ok(new_end)
    }

    /// Persists the leader epochs when they changed: atomically, and durably unless the policy
    /// is `never` (recovery re-derives the active segment's epochs from its batches, but those
    /// of sealed segments only come from here).
    async fn write_epochs_if_changed(&mut self) -> io::Result<()> {
        let Some(bytes) = self.shared.core.borrow_mut().take_epochs_if_dirty() else {
            return Ok(());
        };
        self.write_checkpoint(&checkpoint_path(&self.shared.dir), &bytes)
            .await
    }

    /// Persists the log start when records were deleted or the log restarted: atomically, and
    /// durably unless the policy is `never` (see `log_start.rs`).
    async fn write_log_start_if_changed(&mut self) -> io::Result<()> {
        let Some(start) = self.shared.core.borrow_mut().take_log_start_if_dirty() else {
            return Ok(());
        };
        let bytes = crate::log_start::encode(start);
        self.write_checkpoint(&log_start_path(&self.shared.dir), &bytes)
            .await?;
        self.shared.publish_start_written(start);
        Ok(())
    }

    /// Replaces a checkpoint file atomically, durably unless the policy is `never`.
    async fn write_checkpoint(&self, path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
        let durable = self.shared.core.borrow().config.flush != FlushPolicy::Never;
        write_file_atomically(self.shared.disk.as_ref(), path, bytes, durable).await
    }

    /// Waits for new work, or until `wake_at` (ms) for an interval fdatasync.
    async fn idle(&mut self, wake_at: Option<i64>) {
        match wake_at {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(crate::now_ms()).max(0) as u64);
                let timer = async {
                    glommio::timer::sleep(wait).await;
                };
                futures_lite::future::or(self.shared.work.notified(), timer).await;
            }
            None => self.shared.work.notified().await,
        }
    }

    async fn sync_if_unsynced(&mut self) -> io::Result<()> {
        if self.shared.core.borrow().unsynced() {
            self.sync().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> io::Result<()> {
        let file = self.shared.core.borrow().active().file.clone();
        file.sync().await?;
        self.shared.core.borrow_mut().mark_synced(crate::now_ms());
        Ok(())
    }

    fn stop(&mut self, why: String) {
        stop_partition(&self.shared, why);
    }
}

/// Writes the transaction snapshot a roll took, once the segment before it is sealed (so the
/// state never describes records a crash could still take), and removes those before the
/// previous one: recovery needs the newest, and the one before in case the newest is damaged.
async fn write_txn_snapshot(
    shared: &Shared,
    seal: &RollOutcome,
    at: u64,
    durable: bool,
) -> io::Result<()> {
    let (disk, dir) = (shared.disk.as_ref(), &shared.dir);
    crate::txn::write(disk, dir, at, &seal.txn_snapshot, durable).await?;
    remove_txn_snapshots(disk, dir, |offset| offset < seal.base_offset)
}

/// Whether a transaction snapshot at an offset in `range` exists.
fn has_txn_snapshot(
    disk: &dyn Disk,
    dir: &Path,
    range: std::ops::RangeInclusive<u64>,
) -> io::Result<bool> {
    Ok((disk.list(dir)?.iter()).any(|name| {
        matches!(classify(name), PartitionFile::TxnSnapshot(offset) if range.contains(&offset))
    }))
}

/// Removes the transaction snapshots whose offset `doomed` picks.
fn remove_txn_snapshots(
    disk: &dyn Disk,
    dir: &Path,
    doomed: impl Fn(u64) -> bool,
) -> io::Result<()> {
    for name in disk.list(dir)? {
        if let PartitionFile::TxnSnapshot(offset) = classify(&name) {
            if doomed(offset) {
                disk.remove(&dir.join(name))?;
            }
        }
    }
    Ok(())
}

/// An fdatasync (or truncation) failed: refuse everything from now on.
pub(crate) fn stop_partition(shared: &Shared, why: String) {
    tracing::error!(dir = ?shared.dir, error = %why,
        "partition stopped: no appends are accepted until it is reopened");
    let (queued, truncation) = shared.core.borrow_mut().stop(why.clone());
    for waiter in queued {
        waiter.complete(Err(AppendError::Stopped(why.clone())));
    }
    if let Some(done) = truncation {
        done.complete(Err(TruncateError(why.clone())));
    }
    shared.wake_all();
}
