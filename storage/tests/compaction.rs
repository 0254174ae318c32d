//! Compaction: the newest record of each key stays at its offset, older ones go, tombstones go
//! after `delete.retention.ms`, readers step over the gaps, and a power loss at any point of a
//! pass loses no newest value.

mod common;

use bytes::Bytes;
use common::*;
use oxbow_core::config::{CleanupPolicy, DirtyRatio};
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, RecordBatch};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{Cleaner, Disk, IoPace, OpenOptions, Partition};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

/// Every record appended, by offset: its key and value (`None`: a tombstone).
type Appended = BTreeMap<u64, (Bytes, Option<Bytes>)>;

fn compacted_config() -> LogConfig {
    LogConfig {
        cleanup_policy: "compact".parse::<CleanupPolicy>().unwrap(),
        min_cleanable_dirty_ratio: DirtyRatio::try_from(0.0).unwrap(),
        delete_retention_ms: 60_000,
        ..small_config(FlushPolicy::Always)
    }
}

fn cleaner() -> Cleaner {
    Cleaner {
        key_map_bytes_max: 1 << 20,
        decompressed_bytes_max: 1 << 20,
        pace: IoPace::new(1 << 40),
    }
}

/// Appends `batches` batches of 1-8 records over `keys` keys (one in ten a tombstone);
/// returns nothing, the model in `appended` grows.
async fn append_keyed(
    partition: &Partition,
    rng: &mut fastrand::Rng,
    keys: u32,
    batches: usize,
    appended: &mut Appended,
) {
    for _ in 0..batches {
        let mut builder = BatchBuilder::new(oxbow_storage::now_ms());
        let mut records = Vec::new();
        for _ in 0..rng.usize(1..=8) {
            let key = Bytes::from(format!("key-{}", rng.u32(..keys)));
            let value = (rng.u8(..10) != 0)
                .then(|| Bytes::from(format!("{}-{}", key.len(), "v".repeat(rng.usize(..300)))));
            builder.push(Some(&key), value.as_deref(), oxbow_storage::now_ms());
            records.push((key, value));
        }
        let at = partition.append(builder.build()).await.unwrap();
        for (i, record) in records.into_iter().enumerate() {
            appended.insert(at.base_offset + i as u64, record);
        }
    }
}

/// Every record the log holds, by offset.
fn stored(batches: &[RecordBatch]) -> Appended {
    let mut out = BTreeMap::new();
    for batch in batches {
        for record in batch.records(u64::MAX).unwrap() {
            let record = record.unwrap();
            out.insert(record.offset, (record.key.unwrap(), record.value));
        }
    }
    out
}

/// The newest offset of each key among the records below `end`.
fn newest_below(appended: &Appended, end: u64) -> BTreeMap<Bytes, u64> {
    (appended.range(..end))
        .map(|(offset, (key, _))| (key.clone(), *offset))
        .collect()
}

/// The log holds only records that were appended, each at its own offset, and the newest
/// record of every key; below `clean_end`, only the newest of each key among those below it.
fn check(log: &Appended, appended: &Appended, clean_end: u64) {
    for (offset, record) in log {
        assert_eq!(appended.get(offset), Some(record), "offset {offset}");
    }
    for (key, newest) in newest_below(appended, u64::MAX) {
        let tombstone = appended[&newest].1.is_none();
        assert!(
            log.contains_key(&newest) || tombstone,
            "the newest record of {key:?} (offset {newest}) is gone"
        );
    }
    let cleaned = newest_below(appended, clean_end);
    for (offset, (key, _)) in log.range(..clean_end) {
        assert_eq!(
            cleaned[key], *offset,
            "a replaced record of {key:?} is left"
        );
    }
}

#[test]
fn a_compacted_log_keeps_the_newest_record_of_each_key_at_its_offset() {
    on_shard(|dir| async move {
        let config = compacted_config();
        let partition = open(&dir, config.clone()).await;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut appended = Appended::new();
        append_keyed(&partition, &mut rng, 40, 400, &mut appended).await;
        let before = partition.stats();
        assert!(before.segments > 4, "the test needs several segments");

        let now = oxbow_storage::now_ms();
        let done = partition.compact(now, &cleaner()).await.unwrap().unwrap();
        assert!(
            done.segments_rewritten > 0 && done.records_removed > 0,
            "{done:?}"
        );
        assert!(done.bytes_after < done.bytes_before);
        let clean_end = done.clean_end;
        assert!(clean_end > 0 && clean_end < partition.log_end_offset());
        let after = partition.stats();
        assert!(after.log_bytes < before.log_bytes);
        assert_eq!(
            after.segments,
            before.segments - done.segments_rewritten + done.segments_written
        );
        assert_eq!(files_with(&dir, "log").len(), after.segments);
        assert_eq!(files_with(&dir, "swap").len(), 0);
        assert_eq!(after.log_end_offset, before.log_end_offset, "offsets stay");
        let log = stored(&read_all(&partition, 0).await);
        assert!(log.len() < appended.len());
        check(&log, &appended, clean_end);
        // A read from inside a gap gets the next batch kept.
        for from in (0..partition.log_end_offset()).step_by(7) {
            let read = partition.read(from, 1).await.unwrap();
            let first = read
                .first()
                .expect("a batch after every offset below the end");
            assert!(first.last_offset() >= from);
            let next_kept = *log.range(from..).next().unwrap().0;
            assert!(
                first.base_offset() <= next_kept,
                "read from {from} skipped records"
            );
        }
        // Nothing more is due until more is written.
        assert_eq!(partition.compact(now, &cleaner()).await.unwrap(), None);
        partition.close().await;

        // Reopened: the cleaned segments, their indexes and the checkpoint are what they were.
        let partition = open(&dir, config.clone()).await;
        assert_eq!(stored(&read_all(&partition, 0).await), log);
        assert_eq!(partition.compact(now, &cleaner()).await.unwrap(), None);

        // More updates, and a pass after the tombstones' retention: the tombstones cleaned by
        // the first pass go, with nothing left of their keys below its end.
        append_keyed(&partition, &mut rng, 40, 200, &mut appended).await;
        let later = now + config.delete_retention_ms as i64 + 1;
        let second = partition.compact(later, &cleaner()).await.unwrap().unwrap();
        // The first pass's small copies merge (full segments did not, then).
        assert!(
            second.segments_written < second.segments_rewritten,
            "small cleaned segments were not merged: {second:?}"
        );
        assert_eq!(files_with(&dir, "log").len(), partition.stats().segments);
        let log = stored(&read_all(&partition, 0).await);
        check(&log, &appended, second.clean_end);
        let tombstones = |log: &Appended| {
            (log.range(..clean_end))
                .filter(|(_, (_, value))| value.is_none())
                .count()
        };
        assert_eq!(tombstones(&log), 0, "expired tombstones stayed");
        let first_pass = stored(&read_all(&partition, 0).await);
        assert_eq!(first_pass, log);
        partition.close().await;
    });
}

#[test]
fn a_delete_policy_log_is_never_compacted_and_a_compact_one_never_loses_segments_to_retention() {
    on_shard(|dir| async move {
        let delete = LogConfig {
            min_cleanable_dirty_ratio: DirtyRatio::try_from(0.0).unwrap(),
            ..small_config(FlushPolicy::Always)
        };
        let partition = open(&dir.join("delete"), delete).await;
        let mut rng = fastrand::Rng::with_seed(3);
        append_keyed(&partition, &mut rng, 5, 200, &mut Appended::new()).await;
        let now = oxbow_storage::now_ms();
        assert_eq!(partition.compact(now, &cleaner()).await.unwrap(), None);
        partition.close().await;

        let compact = LogConfig {
            retention_bytes_max: Some(64 * 1024),
            ..compacted_config()
        };
        let partition = open(&dir.join("compact"), compact).await;
        append_keyed(&partition, &mut rng, 5, 200, &mut Appended::new()).await;
        let segments = partition.stats().segments;
        assert_eq!(partition.apply_retention(now).await.unwrap(), 0);
        assert_eq!(partition.stats().segments, segments);
        partition.close().await;
    });
}

/// A key map too small for the dirty part: each pass cleans as far as it reaches, the next
/// goes on from there, and the log ends up as one big pass would leave it.
#[test]
fn a_full_key_map_cleans_in_several_passes() {
    on_shard(|dir| async move {
        let partition = open(&dir, compacted_config()).await;
        let mut rng = fastrand::Rng::with_seed(11);
        let mut appended = Appended::new();
        append_keyed(&partition, &mut rng, 2_000, 300, &mut appended).await;
        let small = Cleaner {
            key_map_bytes_max: 200 * 80,
            ..cleaner()
        };
        let now = oxbow_storage::now_ms();
        let mut ends = Vec::new();
        while let Some(done) = partition.compact(now, &small).await.unwrap() {
            ends.push(done.clean_end);
            assert!(ends.len() < 100, "passes do not progress: {ends:?}");
        }
        assert!(ends.len() > 2, "{ends:?}");
        assert!(ends.windows(2).all(|pair| pair[0] < pair[1]), "{ends:?}");
        let log = stored(&read_all(&partition, 0).await);
        for (offset, record) in &log {
            assert_eq!(appended.get(offset), Some(record));
        }
        for (key, newest) in newest_below(&appended, u64::MAX) {
            assert!(
                log.contains_key(&newest) || appended[&newest].1.is_none(),
                "{key:?}"
            );
        }
        partition.close().await;
    });
}

/// A power loss anywhere in a pass (or after it), with appends going on: after recovery the
/// log holds only appended records at their offsets and the newest of every key.
#[test]
fn a_power_loss_during_compaction_loses_no_newest_value() {
    on_shard(|_| async move {
        let (mut rewritten, mut interrupted) = (0, 0);
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::with_latency(seed, rng.usize(1..4));
            let dir = Path::new("/p");
            let config = compacted_config();
            let boot: Rc<dyn Disk> = Rc::new(disk.boot());
            let partition = Partition::open(dir, config.clone(), OpenOptions::with_disk(boot))
                .await
                .unwrap();
            let partition = Rc::new(partition);
            let mut appended = Appended::new();
            let batches = rng.usize(50..250);
            append_keyed(&partition, &mut rng, 30, batches, &mut appended).await;
            let pass = {
                let partition = partition.clone();
                glommio::spawn_local(async move {
                    partition.compact(oxbow_storage::now_ms(), &cleaner()).await
                })
            };
            // The power goes after a random share of the pass's steps.
            for _ in 0..rng.usize(..80) {
                futures_lite::future::yield_now().await;
            }
            let keep = CrashKeep {
                sector: rng.f64(),
                set_len: rng.f64(),
            };
            disk.crash(&mut rng, keep);
            match pass.await {
                Ok(done) => rewritten += done.map_or(0, |d| d.segments_rewritten),
                Err(_) => interrupted += 1,
            }
            drop(partition);
            let boot: Rc<dyn Disk> = Rc::new(disk.boot());
            let partition = Partition::open(dir, config.clone(), OpenOptions::with_disk(boot))
                .await
                .unwrap();
            let log = stored(&read_all(&partition, 0).await);
            check(&log, &appended, 0);
            // And the log compacts on from there.
            let done = partition
                .compact(oxbow_storage::now_ms(), &cleaner())
                .await
                .unwrap();
            let log = stored(&read_all(&partition, 0).await);
            check(&log, &appended, done.map_or(0, |d| d.clean_end));
            partition.close().await;
        }
        // Both kinds of case ran: passes cut short by the power loss, and passes that swapped
        // segments in before it.
        assert!(
            interrupted > 10 && rewritten > 10,
            "{interrupted} {rewritten}"
        );
    });
}

/// A crash right after a merged copy got its `.swap` name, before any old file went: the
/// reopened log is the one the swap would have left (recovery finishes it).
#[test]
fn recovery_finishes_a_swap_a_crash_interrupted() {
    on_shard(|dir| async move {
        let config = compacted_config();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut appended = Appended::new();
        let partition = open(&dir, config.clone()).await;
        append_keyed(&partition, &mut rng, 40, 400, &mut appended).await;
        let now = oxbow_storage::now_ms();
        partition.compact(now, &cleaner()).await.unwrap().unwrap();
        append_keyed(&partition, &mut rng, 40, 100, &mut appended).await;
        partition.close().await;
        let before = snapshot(&dir);

        let partition = open(&dir, config.clone()).await;
        let before_log = stored(&read_all(&partition, 0).await);
        let later = oxbow_storage::now_ms();
        let merged = partition.compact(later, &cleaner()).await.unwrap().unwrap();
        assert!(
            merged.segments_written < merged.segments_rewritten,
            "{merged:?}"
        );
        let after_log = stored(&read_all(&partition, 0).await);
        partition.close().await;
        let after = snapshot(&dir);

        // The merged copy took the name of the segment before the first one that went, and
        // covers everything up to the next segment left.
        let bases = |files: &BTreeMap<String, Vec<u8>>| -> Vec<u64> {
            (files.keys())
                .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
                .collect()
        };
        let kept = bases(&after);
        let gone: Vec<u64> = (bases(&before).into_iter())
            .filter(|base| !kept.contains(base))
            .collect();
        assert!(!gone.is_empty(), "the merge removed no segment file");
        let base = *kept.iter().filter(|&&b| b < gone[0]).max().unwrap();
        let end = *kept.iter().find(|&&b| b > base).unwrap();
        let copy = &after[&format!("{base:020}.log")];
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (name, bytes) in &before {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let swap = oxbow_storage::layout::swap_path(&dir, base, end);
        std::fs::write(&swap, copy).unwrap();

        let partition = open(&dir, config).await;
        assert!(!swap.exists());
        // The swapped range as the pass left it, the rest as it was before the pass.
        let mut expected: Appended = before_log
            .range(..base)
            .map(|(o, r)| (*o, r.clone()))
            .collect();
        expected.extend(after_log.range(base..end).map(|(o, r)| (*o, r.clone())));
        expected.extend(before_log.range(end..).map(|(o, r)| (*o, r.clone())));
        let recovered = stored(&read_all(&partition, 0).await);
        assert!(
            recovered == expected,
            "the recovered log is not the swapped one"
        );
        check(&recovered, &appended, 0);
        let logs: Vec<u64> = (files_with(&dir, "log").iter())
            .map(|p| segment_base(p))
            .collect();
        assert!(
            logs.contains(&base) && !logs.iter().any(|b| gone.contains(b)),
            "{logs:?}"
        );
        partition.close().await;
    });
}

/// Every file of `dir` by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    (std::fs::read_dir(dir).unwrap())
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// A damaged segment is left as it is (its readable part served, its unreadable part kept for
/// an operator) while its healthy neighbours are cleaned, and the clean end stops at it: the
/// tombstones after it cannot expire while older values of their keys may sit in it.
#[test]
fn a_damaged_segment_is_skipped_and_holds_the_clean_end() {
    on_shard(|dir| async move {
        let config = compacted_config();
        let partition = open(&dir, config.clone()).await;
        let mut rng = fastrand::Rng::with_seed(9);
        let mut appended = Appended::new();
        append_keyed(&partition, &mut rng, 40, 500, &mut appended).await;
        partition.close().await;
        let logs = files_with(&dir, "log");
        assert!(logs.len() > 5, "the test needs several segments");
        let damaged = segment_base(&logs[2]);
        let mut bytes = std::fs::read(&logs[2]).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&logs[2], &bytes).unwrap();

        let partition = open(&dir, config).await;
        let now = oxbow_storage::now_ms();
        let done = partition.compact(now, &cleaner()).await.unwrap().unwrap();
        assert_eq!(done.clean_end, damaged, "{done:?}");
        assert!(done.segments_rewritten >= 2, "{done:?}");
        assert_eq!(
            std::fs::read(&logs[2]).unwrap(),
            bytes,
            "the damaged segment changed"
        );
        partition.close().await;
    });
}
