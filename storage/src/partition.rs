//! A partition's log: the API the broker uses, a thin shell around the sans-IO [`LogCore`].
//!
//! A [`Partition`] is owned by one shard and used only there (it is `!Send`). Any number of
//! tasks on that shard may call [`Partition::append`] and [`Partition::read`] concurrently.
//! Appends are ordered by arrival and acknowledged when durable under the topic's flush policy;
//! all disk writes go through one writer task per partition (`writer.rs`), which is what turns
//! many concurrent appends into one write and one fdatasync (group commit). Reads and waits see
//! the visible end (the durable end standalone; capped by the high watermark when replicated).
//!
//! Call order: [`Partition::open`] (recovers the log), then appends/reads/retention/truncation
//! in any order, then [`Partition::close`] (writes and syncs everything queued).

use crate::compaction::Cleaning;
use crate::core::{Admitted, Cut, LogCore};
use crate::error::{AppendError, DeleteRecordsError, OpenError, RetentionError, TruncateError};
use crate::io::{default_disk, Disk, Faults, FaultyDisk};
use crate::layout::segment_files;
use crate::read::ReadCache;
use crate::segment::Segment;
use crate::signal::{Completion, Notify, Watermark};
use crate::txn::AbortedTxn;
use crate::writer::Writer;
use crate::SegmentFile;
use oxbow_core::{LogConfig, RecordBatch};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use crate::core::PartitionStats;

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
}

/// Options for opening a partition beyond its [`LogConfig`].
#[derive(Default)]
pub struct OpenOptions {
    /// The disk the partition lives on; `None`: direct I/O on the real file system.
    pub disk: Option<Rc<dyn Disk>>,
    /// The cache its reads from disk go through; `None`: the shard's
    /// ([`crate::read::shard_cache`]).
    pub read_cache: Option<Rc<ReadCache>>,
}

impl OpenOptions {
    /// On this disk.
    pub fn with_disk(disk: Rc<dyn Disk>) -> OpenOptions {
        OpenOptions {
            disk: Some(disk),
            read_cache: None,
        }
    }

    /// On the real file system, with `faults` switchable by the caller (tests).
    pub fn with_faults(faults: Rc<Faults>) -> OpenOptions {
        OpenOptions::with_disk(Rc::new(FaultyDisk::new(default_disk(), faults)))
    }
}

pub(crate) type AppendWaiter = Rc<Completion<Result<(), AppendError>>>;
pub(crate) type TruncateWaiter = Rc<Completion<Result<u64, TruncateError>>>;

/// State shared by the partition handle and its writer task. The core is never borrowed
/// across an await.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) disk: Rc<dyn Disk>,
    pub(crate) core: RefCell<LogCore<AppendWaiter, TruncateWaiter>>,
    /// Wakes the writer.
    pub(crate) work: Notify,
    /// Mirrors the core's visible end, for tasks that wait on it.
    pub(crate) visible: Watermark,
    /// Mirrors the core's durable end (a leader's followers wait on it).
    pub(crate) durable: Watermark,
    /// The log start the checkpoint holds (deletions of records wait on it).
    pub(crate) start_written: Watermark,
    /// The shard's cache of bytes read from disk.
    pub(crate) read_cache: Rc<ReadCache>,
    /// A background seal finished.
    pub(crate) seal_done: Notify,
    /// Where compaction stands.
    pub(crate) cleaning: Cleaning,
}

impl Shared {
    /// Tells waiters the visible end moved up.
    pub(crate) fn publish_visible(&self) {
        let visible = self.core.borrow().visible_end();
        if visible > self.visible.get() {
            self.visible.advance(visible);
        }
    }

    /// Tells waiters the durable end moved: up after a write, or anywhere after a truncation
    /// (every waiter looks again).
    pub(crate) fn publish_durable(&self) {
        let durable = self.core.borrow().durable_end();
        if durable >= self.durable.get() {
            self.durable.advance(durable);
        } else {
            self.durable.reset(durable);
            self.durable.wake_all();
        }
    }

    /// Whether the partition stopped or closes: what every wait gives up on.
    pub(crate) fn ending(&self) -> bool {
        let core = self.core.borrow();
        core.stopped().is_some() || core.is_closing()
    }

    /// Wakes every waiter to see that the partition stopped or closes.
    pub(crate) fn wake_all(&self) {
        self.visible.wake_all();
        self.durable.wake_all();
        self.start_written.wake_all();
    }

    /// The checkpoint now holds `start`: wakes the deletions waiting for it (all of them when
    /// a restart moved the start back, to see so).
    pub(crate) fn publish_start_written(&self, start: u64) {
        if start >= self.start_written.get() {
            self.start_written.advance(start);
        } else {
            self.start_written.reset(start);
            self.start_written.wake_all();
        }
    }
}

/// An append's place in the line for queue space; leaving the head wakes the others to look
/// again.
struct PlaceInLine<'a> {
    shared: &'a Shared,
    ticket: u64,
}

impl Drop for PlaceInLine<'_> {
    fn drop(&mut self) {
        if self.shared.core.borrow_mut().leave_line(self.ticket) {
            self.shared.visible.wake_all();
        }
    }
}

/// One partition's log on this shard. See the module docs for the call order.
pub struct Partition {
    pub(crate) shared: Rc<Shared>,
    writer: RefCell<Option<glommio::Task<()>>>,
}

impl Partition {
    /// Opens (creating if needed) the partition in `dir` and recovers it (see `recovery.rs`).
    /// Must run on the shard that will own the partition, after [`crate::prepare_shard_io`]
    /// when on the real disk.
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        options: OpenOptions,
    ) -> Result<Partition, OpenError> {
        config.validate()?;
        let disk = options.disk.unwrap_or_else(default_disk);
        let now = crate::now_ms();
        let recovered = crate::recovery::recover(disk.as_ref(), dir, &config, now).await?;
        let mut core = LogCore::new(
            config,
            recovered.segments,
            recovered.log_start,
            recovered.producers,
            recovered.txns,
            recovered.epochs,
            now,
        );
        if recovered.epochs_changed {
            core.mark_epochs_dirty();
        }
        if recovered.log_start_changed {
            core.mark_log_start_dirty();
        }
        let cleaning = Cleaning::new(crate::recovery::read_cleaner_checkpoint(disk.as_ref(), dir));
        let visible = Watermark::new(core.visible_end());
        let durable = Watermark::new(core.durable_end());
        let start_written = Watermark::new(core.log_start_offset());
        let shared = Rc::new(Shared {
            dir: dir.to_path_buf(),
            disk,
            core: RefCell::new(core),
            work: Notify::default(),
            visible,
            durable,
            start_written,
            read_cache: options.read_cache.unwrap_or_else(crate::read::shard_cache),
            seal_done: Notify::default(),
            cleaning,
        });
        let writer = Writer::new(shared.clone(), recovered.tail_start, recovered.tail);
        let task = glommio::spawn_local(writer.run());
        let partition = Partition {
            shared,
            writer: RefCell::new(Some(task)),
        };
        // Segments wholly below a start that records were deleted to: a crash came between
        // the checkpoint and their removal.
        let start = partition.log_start_offset();
        if let Err(e) = partition.delete_below(start).await {
            tracing::warn!(dir = ?dir, error = %e, "removing segments below the log start");
        }
        Ok(partition)
    }

    /// Waits for room in the append queue, in arrival order.
    async fn wait_for_room(&self) -> Result<(), AppendError> {
        let shared = &self.shared;
        let mut place: Option<PlaceInLine> = None;
        loop {
            let ticket = place.as_ref().map(|p| p.ticket);
            {
                let core = shared.core.borrow();
                core.check_open()?;
                if core.may_enter(ticket) {
                    break;
                }
            }
            let ticket = match ticket {
                Some(ticket) => ticket,
                None => {
                    let ticket = shared.core.borrow_mut().join_line();
                    place.insert(PlaceInLine { shared, ticket }).ticket
                }
            };
            let progress = shared.visible.get() + 1;
            shared
                .visible
                .reached(progress, || {
                    let core = shared.core.borrow();
                    core.check_open().is_err() || core.may_enter(Some(ticket))
                })
                .await;
        }
        // Nothing awaits from here until the batch is queued, so the next in line looks for
        // space only after this batch counts against it.
        drop(place);
        Ok(())
    }

    /// Appends a batch at this leader's next offsets and resolves once it is acknowledged under
    /// the flush policy: after the fdatasync that covers it for `always`, after its write
    /// otherwise. Offsets are assigned in call order. Waits first if `append_queue_bytes_max`
    /// of appends are already queued.
    pub async fn append(&self, batch: RecordBatch) -> Result<Appended, AppendError> {
        self.shared.core.borrow().check_size(&batch)?;
        self.wait_for_room().await?;
        let done = Completion::new();
        let admitted = self.shared.core.borrow_mut().append(batch, done.clone())?;
        match admitted {
            Admitted::Queued(appended) => {
                self.shared.work.notify();
                done.wait().await.map(|()| appended)
            }
            Admitted::Duplicate(appended) => self.await_durable(appended).await,
        }
    }

    /// Appends a batch exactly as the leader stored it (a follower's append): its offsets and
    /// leader epoch are kept; it must continue this log and not go back in epochs.
    pub async fn append_replicated(&self, batch: RecordBatch) -> Result<Appended, AppendError> {
        self.shared.core.borrow().check_size(&batch)?;
        self.wait_for_room().await?;
        let done = Completion::new();
        let appended = self
            .shared
            .core
            .borrow_mut()
            .append_replicated(batch, done.clone())?;
        self.shared.work.notify();
        done.wait().await.map(|()| appended)
    }

    /// Appends several batches as [`Partition::append_replicated`] does, all queued before any
    /// is waited for, so that they share one write and one fdatasync (a follower receives
    /// the many batches of a leader's group commit at once). Resolves with the last one's
    /// offsets once every queued batch is acknowledged; a batch that cannot be queued ends
    /// the run, and its error is returned after the ones before it are done.
    pub async fn append_replicated_all(
        &self,
        batches: Vec<RecordBatch>,
    ) -> Result<Option<Appended>, AppendError> {
        let mut last = None;
        let mut refused = None;
        for batch in batches {
            let queued = async {
                self.shared.core.borrow().check_size(&batch)?;
                self.wait_for_room().await?;
                let done = Completion::new();
                let core = &mut self.shared.core.borrow_mut();
                let appended = core.append_replicated(batch, done.clone())?;
                Ok::<_, AppendError>((appended, done))
            };
            match queued.await {
                Ok(queued) => {
                    self.shared.work.notify();
                    last = Some(queued);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        // Completions resolve in log order, so the last one covers the rest.
        let appended = match last {
            Some((appended, done)) => {
                done.wait().await?;
                Some(appended)
            }
            None => None,
        };
        match refused {
            Some(e) => Err(e),
            None => Ok(appended),
        }
    }

    /// A retried batch of an idempotent producer: answered with its original offsets once those
    /// are durable.
    async fn await_durable(&self, appended: Appended) -> Result<Appended, AppendError> {
        let shared = &self.shared;
        let durable = shared
            .visible
            .reached(appended.last_offset + 1, || {
                shared.core.borrow().stopped().is_some()
            })
            .await;
        match durable {
            true => Ok(appended),
            false => Err(AppendError::Stopped(
                shared
                    .core
                    .borrow()
                    .stopped()
                    .unwrap_or_default()
                    .to_string(),
            )),
        }
    }

    /// Offsets below are stable: visible, with no transaction open below them (Kafka's last
    /// stable offset, where `read_committed` readers stop).
    pub fn last_stable_offset(&self) -> u64 {
        self.shared.core.borrow().last_stable_offset()
    }

    /// Aborted transactions with records in `from..upto`: a `read_committed` reader of that
    /// range drops their records (Fetch's `aborted_transactions`).
    pub fn aborted_transactions(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        self.shared.core.borrow().aborted_transactions(from, upto)
    }

    /// The idempotent producers this partition remembers (those of its active segment and
    /// since), by id: Kafka's DescribeProducers.
    pub fn active_producers(&self) -> Vec<crate::producers::ActiveProducer> {
        self.shared.core.borrow().active_producers()
    }

    /// Resolves once the visible end passes `offset` (data at `offset` is readable), or the
    /// partition stops or closes. For long-polling readers.
    pub async fn wait_for_offset(&self, offset: u64) {
        let shared = &self.shared;
        shared.visible.reached(offset + 1, || shared.ending()).await;
    }

    /// Resolves once the durable end passes `offset` (a follower fetching at `offset` has
    /// something to get), or the partition stops or closes. For a leader's waiting followers.
    pub async fn wait_for_durable(&self, offset: u64) {
        let shared = &self.shared;
        shared.durable.reached(offset + 1, || shared.ending()).await;
    }

    /// Resolves once the log start checkpointed passes `start` (records were deleted: a
    /// leader's waiting followers must hear of it), or the partition stops or closes.
    pub async fn wait_for_start_past(&self, start: u64) {
        let shared = &self.shared;
        shared
            .start_written
            .reached(start + 1, || shared.ending())
            .await;
    }

    /// Removes every batch holding an offset at or above `offset` (the batch containing it
    /// too) and returns the new log end. Queued appends are written first. Used when a
    /// follower's log diverges from its leader's.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, TruncateError> {
        self.truncate(Cut::From(offset)).await
    }

    /// Removes every batch and starts the log again, empty, at `offset` (which may lie beyond
    /// the old end); returns `offset`. Queued appends are written first. Used when a replica
    /// must continue from a point its log does not reach (a Raft snapshot, a leader whose log
    /// starts past this replica's end).
    pub async fn restart_at(&self, offset: u64) -> Result<u64, TruncateError> {
        self.truncate(Cut::Everything(offset)).await
    }

    /// Hands a cut to the writer and waits for it.
    async fn truncate(&self, cut: Cut) -> Result<u64, TruncateError> {
        let done = Completion::new();
        self.shared
            .core
            .borrow_mut()
            .request_truncation(cut, done.clone())?;
        let cut_at = match cut {
            Cut::From(offset) => offset,
            Cut::Everything(_) => 0,
        };
        let cut_clean_part = self.shared.cleaning.truncation_begins(cut_at);
        self.shared.work.notify();
        let outcome = done.wait().await;
        self.shared.cleaning.truncation_ended();
        if cut_clean_part {
            if let Err(e) = self.save_cleaned().await {
                tracing::warn!(dir = ?self.shared.dir, error = %e, "writing the cleaner checkpoint after a truncation");
            }
        }
        outcome
    }

    /// Deletes the oldest sealed segments beyond the retention limits (never the active one)
    /// and returns how many were deleted. `now_ms` is wall-clock time in ms.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, RetentionError> {
        let doomed = self.shared.core.borrow_mut().plan_retention(now_ms);
        let deleted = self.delete_segments(doomed).await?;
        if deleted > 0 {
            tracing::info!(dir = ?self.shared.dir, deleted, "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Deletes the records below `offset` (Kafka's DeleteRecords): the log starts there from
    /// now on, inside a segment if need be, and segments holding only older records are
    /// deleted. Resolves with the log start once it is checkpointed (durably unless the flush
    /// policy is `never`), so a deletion answered survives a crash. An offset at or below the
    /// start changes nothing; one past the visible end (the high watermark) is refused.
    pub async fn delete_records(&self, offset: u64) -> Result<u64, DeleteRecordsError> {
        let shared = &self.shared;
        let Some(doomed) = shared.core.borrow_mut().delete_records_before(offset)? else {
            // At or below the start: nothing moves, and nothing is waited for.
            return Ok(shared.core.borrow().log_start_offset());
        };
        let start = shared.core.borrow().log_start_offset();
        shared.work.notify();
        let written = shared
            .start_written
            .reached(start, || {
                shared.ending() || shared.core.borrow().log_start_offset() < start
            })
            .await;
        if !written {
            let core = shared.core.borrow();
            let why = core
                .stopped()
                .unwrap_or("the log closed or was truncated meanwhile");
            return Err(DeleteRecordsError::Unavailable(why.to_string()));
        }
        self.delete_segments(doomed).await?;
        Ok(start)
    }

    /// Deletes the sealed segments holding only offsets below `offset` (never the active one)
    /// and returns how many were deleted; the log then starts at the first segment kept.
    pub async fn delete_below(&self, offset: u64) -> Result<usize, RetentionError> {
        let doomed = self.shared.core.borrow_mut().plan_deletion_below(offset);
        self.delete_segments(doomed).await
    }

    async fn delete_segments(&self, doomed: Vec<Segment>) -> Result<usize, RetentionError> {
        for segment in &doomed {
            for path in segment_files(&self.shared.dir, segment.base_offset) {
                self.shared
                    .disk
                    .remove(&path)
                    .map_err(|source| RetentionError { path, source })?;
            }
            tracing::debug!(dir = ?self.shared.dir, base_offset = segment.base_offset,
                bytes = segment.log_bytes, "deleted segment");
        }
        let deleted = doomed.len();
        for segment in doomed {
            // A failed close of a deleted file loses nothing; the descriptor is what matters.
            let _ = segment.file.close().await;
        }
        // The leader epochs may have moved with the log start: the writer persists them.
        self.shared.work.notify();
        Ok(deleted)
    }

    /// The log settings it runs with.
    pub fn config(&self) -> LogConfig {
        self.shared.core.borrow().config.clone()
    }

    /// Runs with `config` from now on (a topic's configs altered): segment size and age,
    /// retention, flush policy and batch limits are read as each round, check or append needs
    /// them, so the next one uses the new values.
    pub fn set_config(&self, config: LogConfig) -> Result<(), oxbow_core::config::ConfigError> {
        config.validate()?;
        self.shared.core.borrow_mut().config = config;
        self.shared.work.notify();
        Ok(())
    }

    /// Sets the leader epoch stamped into batches appended from now on.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.shared.core.borrow_mut().set_leader_epoch(epoch);
    }

    /// Caps the visible end at `high_watermark` (replication); it never goes back.
    pub fn set_high_watermark(&self, high_watermark: u64) {
        self.shared
            .core
            .borrow_mut()
            .set_high_watermark(high_watermark);
        self.shared.publish_visible();
    }

    /// Where `epoch` ends on this log (epoch found, end offset), as a follower of a new leader
    /// asks to find where the logs diverge; `None` when every known epoch is newer.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let core = self.shared.core.borrow();
        core.epochs().end_offset_for(epoch, core.durable_end())
    }

    /// The leader epochs as (epoch, first offset), oldest first.
    pub fn leader_epochs(&self) -> Vec<(i32, u64)> {
        self.shared.core.borrow().epochs().entries().to_vec()
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> u64 {
        self.shared.core.borrow().log_start_offset()
    }

    /// Offset after the last visible record (what readers can see).
    pub fn log_end_offset(&self) -> u64 {
        self.shared.core.borrow().visible_end()
    }

    /// Offset after the last record held under the flush policy, the high watermark aside:
    /// what a replica reports to its leader, and what a leader serves its followers.
    pub fn durable_end_offset(&self) -> u64 {
        self.shared.core.borrow().durable_end()
    }

    /// Offsets, sizes and counts, for metrics and tests.
    pub fn stats(&self) -> PartitionStats {
        self.shared.core.borrow().stats()
    }

    /// The error that stopped the partition, if an fdatasync failed.
    pub fn stopped(&self) -> Option<String> {
        self.shared.core.borrow().stopped().map(str::to_string)
    }

    /// Base offsets and files of the segments, oldest first (for tools and tests).
    pub fn segment_files(&self) -> Vec<(u64, SegmentFile)> {
        let core = self.shared.core.borrow();
        core.segments
            .iter()
            .map(|s| (s.base_offset, s.file.clone()))
            .collect()
    }

    /// Writes and syncs everything queued, stops the writer, and refuses appends from then on.
    pub async fn close(&self) {
        self.shared.core.borrow_mut().begin_close();
        self.shared.work.notify();
        self.shared.wake_all();
        let writer = self.writer.borrow_mut().take();
        if let Some(task) = writer {
            task.await;
        }
        // Move the segments out so each close drops the last handle and really closes.
        let segments = self.shared.core.borrow_mut().take_segments();
        for segment in segments {
            if let Err(e) = segment.file.close().await {
                tracing::warn!(error = %e, "closing segment file failed");
            }
        }
    }
}
