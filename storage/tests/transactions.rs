//! Transactions in the storage engine: the last stable offset stops at the oldest open
//! transaction, aborted transactions are listed for `read_committed` readers, and both survive
//! rolls, reopening, truncation, compaction and a power loss at any point (the state then
//! agrees with the log that is left).

mod common;

use bytes::Bytes;
use common::*;
use oxbow_core::config::{CleanupPolicy, DirtyRatio};
use oxbow_core::control::TRANSACTIONAL_BIT;
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, MarkerKind, RecordBatch, TxnMarker};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{AbortedTxn, Cleaner, Disk, IoPace, OpenOptions, Partition};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

/// Transactional producers writing to one partition: each one's next sequence, and whether
/// it has a transaction open.
#[derive(Default)]
struct Producers {
    next_sequence: HashMap<i64, i32>,
    open: BTreeMap<i64, bool>,
}

impl Producers {
    /// A transactional batch of `producer` (opening its transaction) with `records` records of
    /// `value_bytes` each, keyed `key-<n>` for n from `keys`.
    fn data(&mut self, producer: i64, keys: &[u32], value_bytes: usize) -> RecordBatch {
        let sequence = self.next_sequence.entry(producer).or_insert(0);
        let mut builder = BatchBuilder::new(oxbow_storage::now_ms())
            .producer(producer, 0, *sequence)
            .attributes(TRANSACTIONAL_BIT);
        for key in keys {
            let value = format!("p{producer}-{}", "v".repeat(value_bytes));
            let key = format!("key-{key}");
            builder.push(Some(key.as_bytes()), Some(value.as_bytes()), 0);
        }
        *sequence += keys.len() as i32;
        self.open.insert(producer, true);
        builder.build()
    }

    /// The marker that ends `producer`'s transaction.
    fn end(&mut self, producer: i64, kind: MarkerKind) -> RecordBatch {
        self.open.insert(producer, false);
        let marker = TxnMarker {
            kind,
            coordinator_epoch: 0,
        };
        marker.batch(producer, 0, oxbow_storage::now_ms())
    }

    fn open_ones(&self) -> Vec<i64> {
        (self.open.iter())
            .filter_map(|(&p, &open)| open.then_some(p))
            .collect()
    }

    /// A random next batch: plain, a transaction's data, or a marker (commit or abort), of
    /// producers 1 to 4 (others are the test's own).
    fn random(&mut self, rng: &mut fastrand::Rng, value_bytes: usize) -> RecordBatch {
        let open: Vec<i64> = self.open_ones().into_iter().filter(|&p| p <= 4).collect();
        match rng.u8(..10) {
            0..=2 => {
                let mut builder = BatchBuilder::new(oxbow_storage::now_ms());
                builder.push(Some(b"plain"), Some(&vec![b'p'; value_bytes]), 0);
                builder.build()
            }
            3..=4 if !open.is_empty() => {
                let kind = if rng.bool() {
                    MarkerKind::Commit
                } else {
                    MarkerKind::Abort
                };
                self.end(open[rng.usize(..open.len())], kind)
            }
            _ => {
                let keys: Vec<u32> = (0..rng.u32(1..4)).map(|_| rng.u32(..20)).collect();
                self.data(rng.i64(1..=4), &keys, value_bytes)
            }
        }
    }
}

/// The model: the last stable offset and the aborted transactions of a log holding exactly
/// `batches` and ending at `end`, worked out from the batches alone.
fn expected(batches: &[RecordBatch], end: u64) -> (u64, Vec<AbortedTxn>) {
    let mut open: HashMap<i64, u64> = HashMap::new();
    let mut aborted = Vec::new();
    for batch in batches.iter().filter(|b| b.is_transactional()) {
        let producer_id = batch.producer_id();
        match TxnMarker::of(batch) {
            None => {
                open.entry(producer_id).or_insert(batch.base_offset());
            }
            Some(marker) => {
                if let Some(first_offset) = open.remove(&producer_id) {
                    if marker.kind == MarkerKind::Abort {
                        aborted.push(AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset: batch.base_offset(),
                        });
                    }
                }
            }
        }
    }
    let stable = open
        .values()
        .copied()
        .min()
        .map_or(end, |first| first.min(end));
    (stable, aborted)
}

/// Checks the partition's transaction state against the model of what it holds.
async fn assert_state_matches_log(partition: &Partition, context: &str) {
    let batches = read_all(partition, partition.log_start_offset()).await;
    let end = partition.log_end_offset();
    let (stable, aborted) = expected(&batches, end);
    assert_eq!(partition.last_stable_offset(), stable, "{context}");
    assert_eq!(partition.aborted_transactions(0, end), aborted, "{context}");
}

fn snapshot_offsets(disk: &dyn Disk, dir: &Path) -> Vec<u64> {
    let mut offsets: Vec<u64> = (disk.list(dir).unwrap().iter())
        .filter_map(|name| name.strip_suffix(".txn.snapshot")?.parse().ok())
        .collect();
    offsets.sort_unstable();
    offsets
}

#[test]
fn the_stable_offset_waits_for_a_transaction_open_across_rolls_and_reopens() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let mut rng = fastrand::Rng::with_seed(11);
        let mut producers = Producers::default();
        let partition = open(&dir, config.clone()).await;
        assert_eq!(snapshot_offsets(&oxbow_storage::DmaDisk, &dir), vec![0]);
        // Producer 9's transaction stays open over many segments.
        let first = partition
            .append(producers.data(9, &[1], 100))
            .await
            .unwrap();
        for _ in 0..600 {
            let batch = producers.random(&mut rng, 300);
            partition.append(batch).await.unwrap();
        }
        assert!(partition.segment_files().len() > 3, "the log rolled");
        assert_eq!(partition.last_stable_offset(), first.base_offset);
        assert_state_matches_log(&partition, "before reopening").await;
        let aborted = partition.aborted_transactions(0, u64::MAX);
        assert!(aborted.len() > 10, "{aborted:?}");
        // Snapshots are written at rolls; the newest two are kept.
        let snapshots = snapshot_offsets(&oxbow_storage::DmaDisk, &dir);
        let bases: Vec<u64> = partition.segment_files().iter().map(|s| s.0).collect();
        assert_eq!(snapshots, bases[bases.len() - 2..].to_vec());
        partition.close().await;

        let partition = open(&dir, config.clone()).await;
        assert_eq!(partition.last_stable_offset(), first.base_offset);
        assert_eq!(partition.aborted_transactions(0, u64::MAX), aborted);
        for producer in producers.open_ones() {
            let end = producers.end(producer, MarkerKind::Commit);
            partition.append(end).await.unwrap();
        }
        assert_eq!(partition.last_stable_offset(), partition.log_end_offset());
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.last_stable_offset(), partition.log_end_offset());
        assert_state_matches_log(&partition, "all committed").await;
        // A reader from inside an aborted transaction is told of it and of those overlapping
        // it; one past it is not.
        let last = aborted.last().unwrap();
        let from_inside = partition.aborted_transactions(last.first_offset, u64::MAX);
        let overlapping: Vec<AbortedTxn> = (aborted.iter())
            .filter(|a| a.last_offset >= last.first_offset)
            .copied()
            .collect();
        assert!(overlapping.contains(last));
        assert_eq!(from_inside, overlapping);
        assert!(partition
            .aborted_transactions(last.last_offset + 1, u64::MAX)
            .is_empty());
        partition.close().await;
    });
}

/// A truncation that cuts markers opens their transactions again, on disk too.
#[test]
fn a_truncation_reopens_the_transactions_whose_markers_it_cut() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let mut producers = Producers::default();
        let partition = open(&dir, config.clone()).await;
        let first = partition
            .append(producers.data(1, &[1], 100))
            .await
            .unwrap();
        let second = partition
            .append(producers.data(2, &[2], 100))
            .await
            .unwrap();
        for i in 0..300 {
            let batch = producers.data(1 + i % 2, &[3], 500);
            partition.append(batch).await.unwrap();
        }
        let commit = partition
            .append(producers.end(1, MarkerKind::Commit))
            .await
            .unwrap();
        for _ in 0..200 {
            partition
                .append(producers.data(2, &[4], 500))
                .await
                .unwrap();
        }
        partition
            .append(producers.end(2, MarkerKind::Abort))
            .await
            .unwrap();
        assert_eq!(partition.last_stable_offset(), partition.log_end_offset());
        assert_eq!(partition.aborted_transactions(0, u64::MAX).len(), 1);
        let snapshots_before = snapshot_offsets(&oxbow_storage::DmaDisk, &dir);
        assert!(snapshots_before.iter().any(|&s| s > commit.base_offset));

        partition.truncate_to(commit.base_offset).await.unwrap();
        assert_eq!(partition.last_stable_offset(), first.base_offset);
        assert!(partition.aborted_transactions(0, u64::MAX).is_empty());
        let snapshots = snapshot_offsets(&oxbow_storage::DmaDisk, &dir);
        assert!(
            snapshots.iter().all(|&s| s <= commit.base_offset),
            "{snapshots:?}"
        );
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.last_stable_offset(), first.base_offset);
        assert_state_matches_log(&partition, "after the cut").await;
        // Producer 2 is still open from its first batch too.
        partition
            .append(producers.end(1, MarkerKind::Commit))
            .await
            .unwrap();
        assert_eq!(partition.last_stable_offset(), second.base_offset);
        partition.close().await;
    });
}

/// A replica cut below every snapshot it kept, above its high watermark (where memory can
/// undo the cut): a snapshot is left for recovery, which then knows the transaction still open
/// from before them.
#[test]
fn a_cut_below_every_snapshot_leaves_one_for_recovery() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let mut producers = Producers::default();
        let partition = open(&dir, config.clone()).await;
        partition.set_high_watermark(1);
        let first = partition
            .append(producers.data(1, &[1], 100))
            .await
            .unwrap();
        let mut bases = Vec::new();
        for _ in 0..600 {
            bases.push(
                partition
                    .append(producers.data(2, &[2], 500))
                    .await
                    .unwrap()
                    .base_offset,
            );
        }
        partition
            .append(producers.end(1, MarkerKind::Commit))
            .await
            .unwrap();
        let segments: Vec<u64> = partition.segment_files().iter().map(|s| s.0).collect();
        let snapshots = snapshot_offsets(&oxbow_storage::DmaDisk, &dir);
        assert!(
            segments.len() > 4 && snapshots.len() == 2,
            "{segments:?} {snapshots:?}"
        );
        // Inside the second segment, below both snapshots.
        let cut = *bases.iter().find(|&&b| b > segments[1]).unwrap();
        assert!(cut < snapshots[0]);
        partition.truncate_to(cut).await.unwrap();
        let left = snapshot_offsets(&oxbow_storage::DmaDisk, &dir);
        assert!(
            left.iter().all(|&s| s <= cut) && !left.is_empty(),
            "{left:?}"
        );
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.last_stable_offset(), first.base_offset);
        assert_state_matches_log(&partition, "after the cut and a reopen").await;
        partition.close().await;
    });
}

/// A power loss at any point: after recovery the transaction state is the one the surviving
/// log implies, also when the newest snapshot was lost or damaged (recovery replays from the
/// one before).
#[test]
fn after_a_power_loss_the_transaction_state_matches_the_log_left() {
    on_shard(|_| async move {
        let (mut damaged, mut rolled) = (0, 0);
        for seed in 0..60 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::with_latency(seed, rng.usize(1..4));
            let dir = Path::new("/p");
            let flush = [FlushPolicy::Always, FlushPolicy::Never][rng.usize(..2)];
            let config = small_config(flush);
            let boot: Rc<dyn Disk> = Rc::new(disk.boot());
            let partition = Partition::open(dir, config.clone(), OpenOptions::with_disk(boot))
                .await
                .unwrap();
            let partition = Rc::new(partition);
            let writer = {
                let partition = partition.clone();
                let mut rng = fastrand::Rng::with_seed(seed * 7 + 1);
                glommio::spawn_local(async move {
                    let mut producers = Producers::default();
                    loop {
                        let value_bytes = rng.usize(..900);
                        let batch = producers.random(&mut rng, value_bytes);
                        if partition.append(batch).await.is_err() {
                            return;
                        }
                    }
                })
            };
            for _ in 0..rng.usize(100..3000) {
                futures_lite::future::yield_now().await;
            }
            let keep = CrashKeep {
                sector: rng.f64(),
                set_len: rng.f64(),
            };
            disk.crash(&mut rng, keep);
            writer.await;
            drop(partition);
            let boot = disk.boot();
            let snapshots = snapshot_offsets(&boot, dir);
            rolled += (snapshots.len() > 1) as usize;
            if snapshots.len() > 1 && rng.bool() {
                let newest = dir.join(format!("{:020}.txn.snapshot", snapshots.last().unwrap()));
                boot.damage(&newest, |bytes| bytes[10] ^= 0x40).unwrap();
                damaged += 1;
            }
            let boot: Rc<dyn Disk> = Rc::new(boot);
            let partition = Partition::open(dir, config.clone(), OpenOptions::with_disk(boot))
                .await
                .unwrap();
            assert_state_matches_log(&partition, &format!("seed {seed}")).await;
            partition.close().await;
        }
        assert!(rolled > 20 && damaged > 5, "{rolled} {damaged}");
    });
}

/// Compaction keeps every marker and every batch of an aborted transaction, never cleans
/// past the last stable offset, and still removes older committed values.
#[test]
fn compaction_keeps_markers_and_aborted_batches_and_stops_at_the_stable_offset() {
    on_shard(|dir| async move {
        let config = LogConfig {
            cleanup_policy: "compact".parse::<CleanupPolicy>().unwrap(),
            min_cleanable_dirty_ratio: DirtyRatio::try_from(0.0).unwrap(),
            ..small_config(FlushPolicy::Always)
        };
        let mut producers = Producers::default();
        let partition = open(&dir, config.clone()).await;
        let mut rng = fastrand::Rng::with_seed(3);
        for round in 0..150 {
            let producer = 1 + round % 3;
            let keys: Vec<u32> = (0..4).map(|_| rng.u32(..10)).collect();
            partition
                .append(producers.data(producer, &keys, 400))
                .await
                .unwrap();
            let kind = if round % 4 == 0 {
                MarkerKind::Abort
            } else {
                MarkerKind::Commit
            };
            partition
                .append(producers.end(producer, kind))
                .await
                .unwrap();
        }
        // An open transaction holds back the stable offset; rolls seal what is before it.
        let open = partition
            .append(producers.data(7, &[1, 2], 400))
            .await
            .unwrap();
        for _ in 0..100 {
            partition
                .append(producers.data(7, &[3], 400))
                .await
                .unwrap();
        }
        let before = read_all(&partition, 0).await;
        let aborted = partition.aborted_transactions(0, u64::MAX);
        let cleaner = Cleaner {
            key_map_bytes_max: 1 << 20,
            decompressed_bytes_max: 1 << 20,
            pace: IoPace::new(1 << 40),
        };
        let done = (partition.compact(oxbow_storage::now_ms(), &cleaner).await)
            .unwrap()
            .expect("a pass ran");
        assert!(done.records_removed > 0);
        assert!(done.clean_end <= open.base_offset, "{}", done.clean_end);
        let after = read_all(&partition, 0).await;
        let in_aborted = |b: &RecordBatch| {
            aborted.iter().any(|a| {
                a.producer_id == b.producer_id()
                    && (a.first_offset..=a.last_offset).contains(&b.base_offset())
            })
        };
        let whole: Vec<&RecordBatch> = (before.iter())
            .filter(|b| b.is_control() || in_aborted(b) || b.base_offset() >= open.base_offset)
            .collect();
        for batch in whole {
            let kept = after
                .iter()
                .find(|a| a.base_offset() == batch.base_offset());
            assert_eq!(
                kept.map(|k| k.bytes()),
                Some(batch.bytes()),
                "{}",
                batch.base_offset()
            );
        }
        // What a read_committed reader sees: the newest committed value of each key, the
        // same before and after.
        let committed = |batches: &[RecordBatch]| -> BTreeMap<Bytes, Bytes> {
            let mut newest = BTreeMap::new();
            for batch in batches
                .iter()
                .filter(|b| !b.is_control() && !in_aborted(b) && b.base_offset() < open.base_offset)
            {
                for record in batch.records(u64::MAX).unwrap() {
                    let record = record.unwrap();
                    newest.insert(record.key.unwrap(), record.value.unwrap());
                }
            }
            newest
        };
        assert_eq!(committed(&after), committed(&before));
        assert_eq!(partition.aborted_transactions(0, u64::MAX), aborted);
        assert_state_matches_log(&partition, "after compaction").await;
        partition.close().await;
    });
}
