//! One seeded case of the crash simulation: the real log core, writer task and recovery on
//! [`SimDisk`], through random appends (several in flight at once), leader-epoch changes,
//! truncations, retention, deleted records, clean restarts, and power losses that land while
//! appends are in flight, checking the [`Model`] and the log start after every reopen. Needs a
//! glommio executor.

use super::{batch, Acked, Model, Promise, Violation};
use crate::io::{CrashKeep, SimDisk};
use crate::{AppendError, Appended, Disk, OpenOptions, Partition};
use oxbow_core::{FlushPolicy, LogConfig};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Where the simulated partition lives on its simulated disk.
const DIR: &str = "/data/topic/0";

/// What one case went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaseStats {
    /// Appends acknowledged.
    pub acks: u64,
    /// Power losses (with appends in flight or not).
    pub crashes: u64,
    /// Clean closes and reopens.
    pub restarts: u64,
    /// Truncations.
    pub truncations: u64,
    /// Retention passes.
    pub retentions: u64,
    /// Deletions of records (the log start moved, inside a segment too).
    pub deletions: u64,
    /// Reopens whose log was checked against the model.
    pub recoveries_checked: u64,
    /// Batches read back and compared.
    pub batches_checked: u64,
}

/// An append's id, the epoch it was stamped with, and its answer.
type Outcome = (u64, i32, Result<Appended, AppendError>);

/// The configuration of case `rng`'s partition: small segments (rolls), every flush policy
/// (mostly `always`), varied buffers and caches, retention by size half of the time.
fn config(rng: &mut fastrand::Rng) -> LogConfig {
    let flush = match rng.u8(..10) {
        0 => FlushPolicy::Never,
        1 => FlushPolicy::Interval,
        _ => FlushPolicy::Always,
    };
    LogConfig {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: [512, 1024, 4096][rng.usize(..3)],
        flush,
        flush_interval_ms: 1,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: [32 * 1024, 64 * 1024][rng.usize(..2)],
        append_queue_bytes_max: [16 * 1024, 1 << 20][rng.usize(..2)],
        tail_cache_bytes_max: [0, 8 * 1024, 1 << 20][rng.usize(..3)],
        retention_bytes_max: rng.bool().then_some(256 * 1024),
        retention_age_max_ms: None,
        ..LogConfig::default()
    }
}

struct Case {
    rng: fastrand::Rng,
    config: LogConfig,
    disk: SimDisk,
    model: Model,
    next_id: u64,
    epoch: i32,
    /// The highest offset records were deleted below: an answered deletion survives a power
    /// loss (unless the flush policy is `never`).
    deleted_below: u64,
    /// The furthest the log may start: where it started when last checked, or an action moved
    /// it since. No recovery may start it later (unless the flush policy is `never`): that
    /// would hide batches from the model's check.
    furthest_start: u64,
    stats: CaseStats,
}

/// Runs case `seed` to its end; the first invariant that fails ends it.
pub async fn run_case(seed: u64) -> Result<CaseStats, Violation> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let config = config(&mut rng);
    let disk = SimDisk::with_latency(seed, rng.usize(..4));
    disk.create_dir_all(Path::new(DIR))
        .map_err(|e| Violation(format!("creating the simulated directory: {e}")))?;
    Case {
        rng,
        config,
        disk,
        model: Model::default(),
        next_id: 0,
        epoch: 0,
        deleted_below: 0,
        furthest_start: 0,
        stats: CaseStats::default(),
    }
    .run()
    .await
}

impl Case {
    async fn open(&self) -> Result<Partition, Violation> {
        let disk: Rc<dyn Disk> = Rc::new(self.disk.boot());
        Partition::open(
            Path::new(DIR),
            self.config.clone(),
            OpenOptions::with_disk(disk),
        )
        .await
        .map_err(|e| Violation(format!("recovery failed on a crashed disk: {e}")))
    }

    /// Starts `count` appends at once; each answer is kept the moment it arrives.
    fn start_appends(
        &mut self,
        partition: &Rc<Partition>,
        count: usize,
    ) -> (Vec<glommio::Task<()>>, Rc<RefCell<Vec<Outcome>>>) {
        let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
        let tasks = (0..count)
            .map(|_| {
                let id = self.next_id;
                self.next_id += 1;
                let (partition, outcomes, epoch) =
                    (partition.clone(), outcomes.clone(), self.epoch);
                glommio::spawn_local(async move {
                    let outcome = partition.append(batch(id)).await;
                    outcomes.borrow_mut().push((id, epoch, outcome));
                })
            })
            .collect();
        (tasks, outcomes)
    }

    /// Takes acknowledged appends into the model.
    fn record(&mut self, outcomes: &RefCell<Vec<Outcome>>) -> Result<(), Violation> {
        for (id, epoch, outcome) in outcomes.borrow_mut().drain(..) {
            match outcome {
                Ok(appended) => {
                    self.stats.acks += 1;
                    self.model.acked(
                        appended.base_offset,
                        Acked {
                            id,
                            epoch,
                            last_offset: appended.last_offset,
                        },
                    )?;
                }
                Err(AppendError::Closed | AppendError::Stopped(_)) => {}
                Err(e) => return Err(Violation(format!("an append failed: {e}"))),
            }
        }
        Ok(())
    }

    async fn append_some(
        &mut self,
        partition: &Rc<Partition>,
        count: usize,
    ) -> Result<(), Violation> {
        let (tasks, outcomes) = self.start_appends(partition, count);
        for task in tasks {
            task.await;
        }
        self.record(&outcomes)
    }

    /// Starts appends and loses power after a random number of scheduler turns, mid-flight;
    /// what was acknowledged before must survive it (under `always`).
    async fn crash_during_appends(&mut self, partition: Rc<Partition>) -> Result<(), Violation> {
        let count = self.rng.usize(1..6);
        let (tasks, outcomes) = self.start_appends(&partition, count);
        for _ in 0..self.rng.usize(0..12) {
            futures_lite::future::yield_now().await;
        }
        self.crash();
        self.record(&outcomes)?;
        drop(tasks);
        drop(partition);
        Ok(())
    }

    fn crash(&mut self) {
        self.stats.crashes += 1;
        let keep = CrashKeep {
            sector: [0.0, 0.5, 0.9][self.rng.usize(..3)],
            set_len: [0.5, 1.0][self.rng.usize(..2)],
        };
        self.disk.crash(&mut self.rng, keep);
    }

    async fn check(&mut self, partition: &Partition) -> Result<(), Violation> {
        let promise = if self.config.flush == FlushPolicy::Always {
            Promise::AckedSurvive
        } else {
            Promise::NothingPromised
        };
        // Under `never` nothing, not even the epoch checkpoint, is promised after a power loss.
        let epochs = self.config.flush != FlushPolicy::Never;
        let checked = self.model.check(partition, promise, epochs).await?;
        let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
        if epochs && start > self.furthest_start {
            return Err(Violation(format!(
                "the log starts at {start}, past {} where it last started",
                self.furthest_start
            )));
        }
        // A power loss under `interval` may take the tail, and the start no further than that.
        if epochs && start < self.deleted_below.min(end) {
            return Err(Violation(format!(
                "deleted records came back: the log starts at {start}, records below {} were \
                 deleted",
                self.deleted_below
            )));
        }
        self.furthest_start = start;
        self.stats.recoveries_checked += 1;
        self.stats.batches_checked += checked.batches;
        Ok(())
    }

    async fn reopen(&mut self) -> Result<Rc<Partition>, Violation> {
        let partition = Rc::new(self.open().await?);
        self.check(&partition).await?;
        Ok(partition)
    }

    /// The log start moved (retention, a truncation that restarted the log, a deletion).
    fn started(&mut self, partition: &Partition) {
        self.furthest_start = self.furthest_start.max(partition.log_start_offset());
    }

    /// Deletes the records below a random offset, now and then one below the start (nothing
    /// changes) or inside a batch.
    async fn delete_records(&mut self, partition: &Partition) -> Result<(), Violation> {
        self.stats.deletions += 1;
        let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
        let below = self.rng.u64(start.saturating_sub(8)..=end);
        let new_start = partition
            .delete_records(below)
            .await
            .map_err(|e| Violation(format!("deleting records below {below}: {e}")))?;
        if new_start != below.max(start) {
            return Err(Violation(format!(
                "deleted records below {below} of a log starting at {start}; it starts at \
                 {new_start}"
            )));
        }
        self.deleted_below = self.deleted_below.max(new_start);
        self.started(partition);
        self.check(partition).await
    }

    async fn run(mut self) -> Result<CaseStats, Violation> {
        let mut partition = self.reopen().await?;
        for _ in 0..self.rng.usize(4..24) {
            match self.rng.u8(..100) {
                0..=49 => {
                    let count = self.rng.usize(1..8);
                    self.append_some(&partition, count).await?;
                }
                50..=59 => {
                    self.epoch += self.rng.i32(1..3);
                    partition.set_leader_epoch(self.epoch);
                }
                60..=64 => {
                    self.stats.truncations += 1;
                    let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
                    let to = self.rng.u64(start..=end);
                    let new_end = partition
                        .truncate_to(to)
                        .await
                        .map_err(|e| Violation(format!("truncating to {to}: {e}")))?;
                    if new_end > to.max(start) {
                        return Err(Violation(format!("truncated to {to}, ends at {new_end}")));
                    }
                    self.model.forget_from(new_end);
                    // A cut through the batch that held the start empties the log from that
                    // batch on: nothing deleted is readable, and the start moves back to it.
                    let start = partition.log_start_offset();
                    self.deleted_below = self.deleted_below.min(start);
                    self.furthest_start = start;
                    self.check(&partition).await?;
                }
                65..=67 => {
                    self.stats.retentions += 1;
                    partition
                        .apply_retention(i64::MAX)
                        .await
                        .map_err(|e| Violation(format!("retention: {e}")))?;
                    self.started(&partition);
                    self.check(&partition).await?;
                }
                68..=71 => self.delete_records(&partition).await?,
                72..=79 => {
                    self.stats.restarts += 1;
                    partition.close().await;
                    drop(partition);
                    partition = self.reopen().await?;
                }
                80..=89 => {
                    self.crash();
                    drop(partition);
                    partition = self.reopen().await?;
                }
                _ => {
                    self.crash_during_appends(partition).await?;
                    partition = self.reopen().await?;
                }
            }
            self.epoch = self
                .epoch
                .max(partition.leader_epochs().last().map_or(0, |e| e.0));
            partition.set_leader_epoch(self.epoch);
        }
        partition.close().await;
        Ok(self.stats)
    }
}
