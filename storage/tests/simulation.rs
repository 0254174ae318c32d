//! Seeded simulation of the log over the simulated disk: the real code (log core, writer task,
//! recovery) runs on one glommio executor against `SimDisk`, through random appends (several
//! in flight at once), leader-epoch changes, truncations, retention, clean restarts and crashes
//! that land while appends are in flight, and checks after every reopen:
//! - every append acknowledged under `flush = always` is there, at its offset, with its bytes;
//! - everything recovered is something that was appended, in offset order, contiguous;
//! - no acknowledged offset ever holds other bytes later (offsets are never reused);
//! - the recovered leader epochs match the epochs in the recovered batches.
//!
//! `OXBOW_SIM_CASES` (default 10,000) cases per run, `OXBOW_SIM_SEED` to replay one seed.

use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, RecordBatch};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{AppendError, Disk, OpenOptions, Partition};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The case running now, named when one fails.
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

/// What the model knows of one stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    bytes: bytes::Bytes,
    last_offset: u64,
}

/// An append's batch, the epoch it was stamped with, and its answer.
type Outcome = (
    RecordBatch,
    i32,
    Result<oxbow_storage::Appended, AppendError>,
);

struct Case {
    rng: fastrand::Rng,
    config: LogConfig,
    disk: SimDisk,
    /// Acknowledged batches still in the log, by base offset. Under `always` all of them must
    /// survive anything but truncation and retention.
    acked: BTreeMap<u64, Stored>,
    /// Every batch ever attempted, by the unique id in its first record's key.
    attempted: HashMap<u64, RecordBatch>,
    next_id: u64,
    epoch: i32,
    checks: u64,
}

const DIR: &str = "/data/topic/0";

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

impl Case {
    fn batch(&mut self) -> RecordBatch {
        let id = self.next_id;
        self.next_id += 1;
        let mut builder = BatchBuilder::new(id as i64);
        for record in 0..self.rng.u64(1..6) {
            let value = vec![(id + record) as u8; self.rng.usize(1..3000)];
            builder.push(Some(&id.to_be_bytes()), Some(&value), id as i64);
        }
        let batch = builder.build();
        self.attempted.insert(id, batch.clone());
        batch
    }

    async fn open(&self) -> Partition {
        let disk: Rc<dyn Disk> = Rc::new(self.disk.boot());
        Partition::open(
            Path::new(DIR),
            self.config.clone(),
            OpenOptions::with_disk(disk),
        )
        .await
        .expect("recovery never fails on a crashed disk")
    }

    /// Starts `count` appends at once; each acknowledgement is recorded the moment it arrives.
    fn start_appends(
        &mut self,
        partition: &Rc<Partition>,
        count: usize,
    ) -> (Vec<glommio::Task<()>>, Rc<RefCell<Vec<Outcome>>>) {
        let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
        let tasks = (0..count)
            .map(|_| {
                let batch = self.batch();
                let (partition, outcomes, epoch) =
                    (partition.clone(), outcomes.clone(), self.epoch);
                glommio::spawn_local(async move {
                    let outcome = partition.append(batch.clone()).await;
                    outcomes.borrow_mut().push((batch, epoch, outcome));
                })
            })
            .collect();
        (tasks, outcomes)
    }

    /// Takes acknowledged appends into the model.
    fn record(&mut self, outcomes: &RefCell<Vec<Outcome>>) {
        for (batch, epoch, outcome) in outcomes.borrow_mut().drain(..) {
            match outcome {
                Ok(appended) => {
                    let stored = batch.with_base_offset(appended.base_offset, epoch);
                    let stored = Stored {
                        bytes: stored.into_bytes(),
                        last_offset: appended.last_offset,
                    };
                    let previous = self.acked.insert(appended.base_offset, stored);
                    assert!(
                        previous.is_none(),
                        "offset {} acknowledged twice",
                        appended.base_offset
                    );
                }
                Err(AppendError::Closed | AppendError::Stopped(_)) => {}
                Err(e) => panic!("unexpected append failure: {e}"),
            }
        }
    }

    /// Appends `count` batches at once and waits for every answer.
    async fn append_some(&mut self, partition: &Rc<Partition>, count: usize) {
        let (tasks, outcomes) = self.start_appends(partition, count);
        for task in tasks {
            task.await;
        }
        self.record(&outcomes);
    }

    /// Starts appends and crashes after a random number of scheduler turns, mid-flight; what
    /// was acknowledged before the crash must survive it.
    async fn crash_during_appends(&mut self, partition: Rc<Partition>) {
        let count = self.rng.usize(1..6);
        let (tasks, outcomes) = self.start_appends(&partition, count);
        for _ in 0..self.rng.usize(0..12) {
            futures_lite::future::yield_now().await;
        }
        self.crash();
        self.record(&outcomes);
        drop(tasks);
        drop(partition);
    }

    fn crash(&mut self) {
        let keep = CrashKeep {
            sector: [0.0, 0.5, 0.9][self.rng.usize(..3)],
            set_len: [0.5, 1.0][self.rng.usize(..2)],
        };
        self.disk.crash(&mut self.rng, keep);
    }

    /// Reads the whole log and checks it against the model.
    async fn check(&mut self, partition: &Partition) {
        self.checks += 1;
        let start = partition.log_start_offset();
        let end = partition.log_end_offset();
        let mut batches = Vec::new();
        let mut next = start;
        while next < end {
            let read = partition
                .read(next, 64 * 1024)
                .await
                .expect("the log reads back");
            assert!(
                !read.is_empty(),
                "read at {next} below the end {end} found nothing: {:?}, segments {:?}",
                partition.stats(),
                partition
                    .segment_files()
                    .iter()
                    .map(|(b, _)| *b)
                    .collect::<Vec<_>>()
            );
            for batch in read {
                if batch.last_offset() < next {
                    continue;
                }
                assert_eq!(batch.base_offset(), next, "batches are contiguous");
                next = batch.last_offset() + 1;
                batches.push(batch);
            }
        }
        assert_eq!(next, end, "the log ends where it says");
        let durable = self.config.flush == FlushPolicy::Always;
        // Acknowledged batches at or above the start: present, same offset, same bytes.
        self.acked.retain(|&base, _| base >= start);
        let by_base: BTreeMap<u64, &RecordBatch> =
            batches.iter().map(|b| (b.base_offset(), b)).collect();
        for (base, stored) in &self.acked {
            match by_base.get(base) {
                Some(batch) => assert_eq!(batch.bytes(), &stored.bytes, "offset {base} changed"),
                None if durable => panic!("acknowledged batch at {base} lost (log {start}..{end})"),
                None => {}
            }
        }
        // Without fdatasync before the ack, what the crash dropped was never promised; those
        // offsets may be handed out again.
        self.acked.retain(|base, _| by_base.contains_key(base));
        // Everything recovered was appended, whole.
        let mut expected_epochs: Vec<(i32, u64)> = Vec::new();
        for batch in &batches {
            let record = batch.records(u64::MAX).unwrap().next().unwrap().unwrap();
            let id = u64::from_be_bytes(record.key.unwrap()[..].try_into().unwrap());
            let original = &self.attempted[&id];
            let epoch = batch.partition_leader_epoch();
            assert_eq!(
                batch.bytes(),
                original
                    .clone()
                    .with_base_offset(batch.base_offset(), epoch)
                    .bytes(),
                "batch at {} is not what was appended",
                batch.base_offset()
            );
            if expected_epochs.last().is_none_or(|&(e, _)| epoch > e) {
                expected_epochs.push((epoch, batch.base_offset()));
            }
            assert!(
                expected_epochs.last().unwrap().0 == epoch,
                "leader epochs go back at {}",
                batch.base_offset()
            );
        }
        // Under `never` nothing, not even the epoch checkpoint, is promised after a power loss.
        if self.config.flush != FlushPolicy::Never {
            let recovered: Vec<(i32, u64)> = partition
                .leader_epochs()
                .into_iter()
                .filter(|&(_, first)| first < end)
                .collect();
            assert_eq!(
                recovered, expected_epochs,
                "leader epochs of {start}..{end}"
            );
        }
    }

    async fn run(mut self) -> u64 {
        let mut partition = Rc::new(self.open().await);
        self.check(&partition).await;
        for _ in 0..self.rng.usize(4..24) {
            match self.rng.u8(..100) {
                0..=49 => {
                    let count = self.rng.usize(1..8);
                    self.append_some(&partition, count).await;
                }
                50..=59 => {
                    self.epoch += self.rng.i32(1..3);
                    partition.set_leader_epoch(self.epoch);
                }
                60..=64 => {
                    let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
                    let to = self.rng.u64(start..=end);
                    let new_end = partition.truncate_to(to).await.expect("truncation");
                    assert!(
                        new_end <= to.max(start),
                        "truncated to {to}, ends at {new_end}"
                    );
                    self.acked.retain(|_, stored| stored.last_offset < new_end);
                    self.check(&partition).await;
                }
                65..=69 => {
                    partition
                        .apply_retention(i64::MAX)
                        .await
                        .expect("retention");
                    self.check(&partition).await;
                }
                70..=79 => {
                    partition.close().await;
                    drop(partition);
                    partition = Rc::new(self.open().await);
                    self.check(&partition).await;
                }
                80..=89 => {
                    self.crash();
                    drop(partition);
                    partition = Rc::new(self.open().await);
                    self.check(&partition).await;
                }
                _ => {
                    self.crash_during_appends(partition).await;
                    partition = Rc::new(self.open().await);
                    self.check(&partition).await;
                }
            }
            self.epoch = self
                .epoch
                .max(partition.leader_epochs().last().map_or(0, |e| e.0));
            partition.set_leader_epoch(self.epoch);
        }
        partition.close().await;
        self.checks
    }
}

#[test]
fn the_log_survives_random_crashes_with_every_acknowledged_append() {
    let cases: u64 = std::env::var("OXBOW_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let first_seed: u64 = std::env::var("OXBOW_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let started = std::time::Instant::now();
    let checks = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut checks = 0;
            for seed in first_seed..first_seed + cases {
                let mut rng = fastrand::Rng::with_seed(seed);
                let config = config(&mut rng);
                let disk = SimDisk::with_latency(seed, rng.usize(..4));
                disk.create_dir_all(Path::new(DIR)).unwrap();
                let case = Case {
                    rng,
                    config,
                    disk,
                    acked: BTreeMap::new(),
                    attempted: HashMap::new(),
                    next_id: 0,
                    epoch: 0,
                    checks: 0,
                };
                CURRENT_SEED.store(seed, Ordering::Relaxed);
                checks += case.run().await;
            }
            checks
        })
        .expect("executor")
        .join()
        .unwrap_or_else(|_| {
            let seed = CURRENT_SEED.load(Ordering::Relaxed);
            panic!("case {seed} failed; replay it with OXBOW_SIM_SEED={seed} OXBOW_SIM_CASES=1")
        });
    eprintln!(
        "{cases} cases, {checks} recoveries checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
