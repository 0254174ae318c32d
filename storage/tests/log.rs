//! The partition log on real files: round trips, rolls, index rebuilds, the io-poll probe bug,
//! group commit, retention, bad files and injected faults (truncation: `truncation.rs`).

mod common;

use common::*;
use oxbow_core::{FlushPolicy, LogConfig};
use oxbow_storage::{AppendError, Faults, OpenOptions, Partition, ReadError};
use std::rc::Rc;

async fn open_with_faults(dir: &std::path::Path, config: LogConfig) -> (Partition, Rc<Faults>) {
    let faults = Rc::new(Faults::default());
    let options = OpenOptions::with_faults(faults.clone());
    (
        Partition::open(dir, config, options).await.expect("open"),
        faults,
    )
}

#[test]
fn round_trip_across_rolls_from_every_offset_and_after_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Never);
        let partition = open(&dir, config.clone()).await;
        let bases = append_range(&partition, 0..300).await;
        let end = partition.log_end_offset();
        assert_eq!(end, (0..300).map(records_in).sum::<u64>());
        assert!(partition.stats().segments > 5, "expected several segments");
        assert_log_is(&read_all(&partition, 0).await, 300);
        partition.close().await;

        // Reopened: sealed segments come from their index, the active one from a scan; the
        // tail cache is empty so every read below hits the disk.
        let partition = open(&dir, config.clone()).await;
        assert_eq!(partition.log_end_offset(), end);
        for offset in 0..end {
            let first = &partition.read(offset, 1).await.unwrap()[0];
            assert!(first.base_offset() <= offset && offset <= first.last_offset());
            let i = bases.partition_point(|b| *b <= offset) as u64 - 1;
            assert_eq!(batch_index(first), i, "offset {offset}");
        }
        assert!(partition.read(end, 1024).await.unwrap().is_empty());
        assert!(matches!(
            partition.read(end + 1, 1024).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        partition.close().await;

        // Without index files every sealed segment is scanned and its index rewritten.
        let indexes = files_with(&dir, "index");
        assert!(indexes.len() > 4);
        indexes
            .iter()
            .for_each(|p| std::fs::remove_file(p).unwrap());
        let partition = open(&dir, config).await;
        assert_log_is(&read_all(&partition, 0).await, 300);
        let next = partition.append(batch(300)).await.unwrap();
        assert_eq!(next.base_offset, end);
        partition.close().await;
        assert_eq!(files_with(&dir, "index").len(), indexes.len());
    });
}

#[test]
fn empty_segment_opened_first_is_readable_back_through_dma() {
    // glommio's io-poll probe bug: an empty file opened first marks the device pollable and
    // later DMA reads fail with EOPNOTSUPP. prepare_shard_io (run by on_shard) prevents it.
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        append_range(&partition, 0..3).await;
        partition.close().await;
        let partition = open(&dir, config).await; // empty tail cache: reads hit the file
        assert_log_is(&read_all(&partition, 0).await, 3);
        partition.close().await;
    });
}

#[test]
fn concurrent_appends_share_fdatasyncs() {
    on_shard(|dir| async move {
        let (partition, faults) = open_with_faults(&dir, small_config(FlushPolicy::Always)).await;
        let partition = Rc::new(partition);
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let partition = partition.clone();
                glommio::spawn_local(async move { partition.append(batch(i % 3)).await })
            })
            .collect();
        let mut bases = Vec::new();
        for task in tasks {
            bases.push(task.await.expect("append").base_offset);
        }
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), 64, "every append got its own offsets");
        assert!(
            faults.syncs() <= 16,
            "64 appends took {} fdatasyncs",
            faults.syncs()
        );
        assert_eq!(read_all(&partition, 0).await.len(), 64);
        partition.close().await;
    });
}

#[test]
fn appends_keep_their_arrival_order_while_waiting_for_queue_space() {
    on_shard(|dir| async move {
        // A queue that holds two batches: most appends wait for space. They arrive the way a
        // pipelining connection's do, one task each, spawned in order while earlier ones wait
        // and rounds complete in between.
        let mut config = small_config(FlushPolicy::Always);
        config.append_queue_bytes_max = config.batch_bytes_max as u64;
        let partition = Rc::new(open(&dir, config).await);
        let mut tasks = Vec::new();
        for i in 0..2_000u64 {
            let partition = partition.clone();
            tasks.push(glommio::spawn_local(async move {
                partition.append(batch(i % 7)).await
            }));
            if i % 3 == 0 {
                glommio::yield_if_needed().await;
                futures_lite::future::yield_now().await;
            }
        }
        let mut last = None;
        for (i, task) in tasks.into_iter().enumerate() {
            let base = task.await.expect("append").base_offset;
            if let Some(previous) = last {
                assert!(
                    base > previous,
                    "append {i} got offset {base}, before its predecessor's {previous}"
                );
            }
            last = Some(base);
        }
        partition.close().await;
    });
}

#[test]
fn failed_fdatasync_stops_the_partition_until_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let (partition, faults) = open_with_faults(&dir, config.clone()).await;
        append_range(&partition, 0..5).await;
        faults.fail_syncs(true);
        assert!(matches!(
            partition.append(batch(5)).await,
            Err(AppendError::Stopped(_))
        ));
        faults.fail_syncs(false);
        // Even with a healthy disk again, nothing more is acknowledged until reopened.
        assert!(matches!(
            partition.append(batch(5)).await,
            Err(AppendError::Stopped(_))
        ));
        assert!(partition.stopped().is_some());
        assert_log_is(&read_all(&partition, 0).await, 5);
        partition.close().await;
        let partition = open(&dir, config).await;
        let recovered = read_all(&partition, 0).await;
        assert!(
            recovered.len() == 5 || recovered.len() == 6,
            "acknowledged prefix kept"
        );
        partition
            .append(batch(99))
            .await
            .expect("appends work after reopen");
        partition.close().await;
    });
}

#[test]
fn disk_full_rejects_appends_keeps_reads_and_recovers_when_space_returns() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let (partition, faults) = open_with_faults(&dir, config.clone()).await;
        append_range(&partition, 0..20).await;
        faults.fail_writes_with_enospc(true);
        let err = partition.append(batch(20)).await.unwrap_err();
        assert!(
            matches!(&err, AppendError::WriteFailed(m) if m.contains("No space")),
            "{err}"
        );
        assert_log_is(&read_all(&partition, 0).await, 20);
        faults.fail_writes_with_enospc(false);
        faults.shorten_next_write();
        assert!(matches!(
            partition.append(batch(20)).await,
            Err(AppendError::WriteFailed(_))
        ));
        // The failed appends' offsets are handed out again: no hole, no duplicate.
        append_range(&partition, 20..30).await;
        assert_log_is(&read_all(&partition, 0).await, 30);
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_log_is(&read_all(&partition, 0).await, 30);
        partition.close().await;
    });
}

#[test]
fn retention_deletes_oldest_sealed_segments_never_the_active_one() {
    on_shard(|dir| async move {
        let mut config = small_config(FlushPolicy::Never);
        config.retention_bytes_max = Some(128 * 1024);
        let partition = open(&dir, config.clone()).await;
        append_range(&partition, 0..400).await;
        let before = partition.stats();
        assert!(before.log_bytes > 256 * 1024);
        let deleted = partition
            .apply_retention(oxbow_storage::now_ms())
            .await
            .unwrap();
        let after = partition.stats();
        assert_eq!(after.segments, before.segments - deleted);
        assert!(after.log_bytes >= 128 * 1024, "kept at least the limit");
        assert!(
            after.log_bytes - 64 * 1024 < 128 * 1024,
            "deleted all it could"
        );
        assert_eq!(files_with(&dir, "log").len(), after.segments);
        let start = partition.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            partition.read(start - 1, 1).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            partition.read(start, 1).await.unwrap()[0].base_offset(),
            start
        );
        partition.close().await;

        // By age: every record is from 1970, so all sealed segments go; the active one stays.
        config.retention_bytes_max = None;
        config.retention_age_max_ms = Some(1000);
        let partition = open(&dir, config).await;
        assert_eq!(partition.log_start_offset(), start);
        partition
            .apply_retention(oxbow_storage::now_ms())
            .await
            .unwrap();
        assert_eq!(partition.stats().segments, 1);
        assert_eq!(files_with(&dir, "log").len(), 1);
        let end = partition.log_end_offset();
        assert_eq!(partition.append(batch(400)).await.unwrap().base_offset, end);
        partition.close().await;
    });
}

#[test]
fn bad_files_are_repaired_or_reported_never_a_panic() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        append_range(&partition, 0..120).await;
        partition.close().await;
        let logs = files_with(&dir, "log");
        let indexes = files_with(&dir, "index");
        assert!(logs.len() >= 3);

        // A truncated index and a garbage-named file: the index is rebuilt, the file ignored.
        let index_len = std::fs::metadata(&indexes[0]).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&indexes[0])
            .unwrap()
            .set_len(index_len / 2)
            .unwrap();
        std::fs::write(dir.join("not-a-segment.log"), b"operator notes").unwrap();
        std::fs::write(dir.join("00000000000000000007.index.tmp"), b"half-written").unwrap();
        let partition = open(&dir, config.clone()).await;
        assert_log_is(&read_all(&partition, 0).await, 120);
        partition.close().await;
        assert!(
            dir.join("not-a-segment.log").exists(),
            "unknown files are left alone"
        );
        assert!(!dir.join("00000000000000000007.index.tmp").exists());
        assert_eq!(
            std::fs::metadata(&indexes[0]).unwrap().len(),
            index_len,
            "index rebuilt"
        );

        // Unknown magic in the middle of a sealed segment with no index: frames before the
        // damage are served, reads stop with a clear error at the damage, later segments
        // are still readable.
        std::fs::remove_file(&indexes[1]).unwrap();
        let seg_len = std::fs::metadata(&logs[1]).unwrap().len();
        let mut bytes = std::fs::read(&logs[1]).unwrap();
        let damage_at = (seg_len / 2) as usize;
        bytes[damage_at..damage_at + 64].fill(0xEE);
        std::fs::write(&logs[1], &bytes).unwrap();
        let partition = open(&dir, config.clone()).await;
        let second_base = segment_base(&logs[1]);
        let third_base = segment_base(&logs[2]);
        let before_damage = partition.read(second_base, 1).await.unwrap();
        assert_eq!(before_damage[0].base_offset(), second_base);
        let after = partition.read(third_base, 1).await.unwrap();
        assert_eq!(after[0].base_offset(), third_base);
        let tail = read_all(&partition, third_base).await;
        assert_eq!(
            tail.last().unwrap().last_offset() + 1,
            partition.log_end_offset()
        );
        partition.close().await;

        // The active segment starting with garbage is truncated to empty; the log goes on.
        let active = logs.last().unwrap();
        let active_base = segment_base(active);
        std::fs::write(active, vec![0x42u8; 10_000]).unwrap();
        let partition = open(&dir, config).await;
        assert_eq!(partition.log_end_offset(), active_base);
        assert_eq!(
            partition.append(batch(0)).await.unwrap().base_offset,
            active_base
        );
        partition.close().await;
    });
}

#[test]
fn oversized_batches_are_refused_with_the_limit() {
    on_shard(|dir| async move {
        let partition = open(&dir, small_config(FlushPolicy::Never)).await;
        let mut builder = oxbow_core::BatchBuilder::new(0);
        builder.push(None, Some(&vec![7u8; 20 * 1024]), 0);
        let err = partition.append(builder.build()).await.unwrap_err();
        assert!(
            matches!(err, AppendError::TooLarge { max: 16384, .. }),
            "{err}"
        );
        partition.close().await;
    });
}

#[test]
fn interval_flush_acknowledges_written_appends_and_syncs_on_close() {
    on_shard(|dir| async move {
        let mut config = small_config(FlushPolicy::Interval);
        config.flush_interval_ms = 60_000;
        let (partition, faults) = open_with_faults(&dir, config.clone()).await;
        // The first append starts leader epoch 0, whose checkpoint file is written durably.
        append_range(&partition, 0..1).await;
        let checkpoint_syncs = faults.syncs();
        append_range(&partition, 1..10).await;
        assert_eq!(
            faults.syncs(),
            checkpoint_syncs,
            "no fdatasync of data before the interval"
        );
        assert_log_is(&read_all(&partition, 0).await, 10);
        partition.close().await;
        assert_eq!(
            faults.syncs(),
            checkpoint_syncs + 1,
            "close syncs what the interval had not"
        );
        let partition = open(&dir, config).await;
        assert_log_is(&read_all(&partition, 0).await, 10);
        partition.close().await;
    });
}

/// Descriptors of this process open on files under `dir` (other tests run in parallel threads
/// of the same process, so only this test's own directory is counted).
fn open_fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn closing_a_partition_releases_every_file_descriptor() {
    on_shard(|dir| async move {
        let mut config = small_config(FlushPolicy::Always);
        config.retention_bytes_max = Some(64 * 1024);
        let partition = open(&dir, config.clone()).await;
        assert!(
            open_fds_under(&dir) > 0,
            "the check must see the partition's own files"
        );
        partition.close().await;
        let before = open_fds_under(&dir);
        for round in 0..5u64 {
            let partition = open(&dir, config.clone()).await;
            append_range(&partition, round * 100..round * 100 + 100).await;
            partition
                .apply_retention(oxbow_storage::now_ms())
                .await
                .unwrap();
            let end = partition.log_end_offset();
            partition.truncate_to(end - 1).await.unwrap();
            partition.close().await;
        }
        assert_eq!(
            open_fds_under(&dir),
            before,
            "descriptors leaked across open/roll/retention/close"
        );
    });
}

#[test]
fn failed_background_seal_stops_the_partition() {
    on_shard(|dir| async move {
        // Under `interval` with a long interval, only sealing a segment fdatasyncs.
        let mut config = small_config(FlushPolicy::Interval);
        config.flush_interval_ms = 600_000;
        let (partition, faults) = open_with_faults(&dir, config.clone()).await;
        append_range(&partition, 0..10).await;
        faults.fail_syncs(true);
        let mut stopped_after = None;
        for i in 10..1000 {
            if let Err(e) = partition.append(batch(i)).await {
                assert!(
                    matches!(e, AppendError::Stopped(ref m) if m.contains("sealing")),
                    "{e}"
                );
                stopped_after = Some(i);
                break;
            }
        }
        let stopped_after = stopped_after.expect("a failed seal must stop the partition");
        assert!(partition.stopped().is_some());
        faults.fail_syncs(false);
        partition.close().await;
        // Everything that was acknowledged (written) is recovered.
        let partition = open(&dir, config).await;
        assert_log_is(&read_all(&partition, 0).await, stopped_after);
        partition.close().await;
    });
}

#[test]
fn segments_roll_by_age() {
    on_shard(|dir| async move {
        let mut config = small_config(FlushPolicy::Always);
        config.segment_bytes_max = 1 << 30; // only age can roll
        config.segment_age_max_ms = 1;
        let partition = open(&dir, config).await;
        // Append until well past the age limit, so that at least one roll is due whatever the
        // speed of the machine.
        let started = std::time::Instant::now();
        let mut appended = 0;
        while started.elapsed() < std::time::Duration::from_millis(5) || appended < 2 {
            partition.append(batch(appended)).await.unwrap();
            appended += 1;
        }
        let segments = partition.stats().segments;
        assert!(segments >= 2, "no age roll after {:?}", started.elapsed());
        assert_log_is(&read_all(&partition, 0).await, appended);
        partition.close().await;
        assert_eq!(files_with(&dir, "log").len(), segments);
    });
}

fn idempotent(epoch: i16, sequence: i32, records: usize) -> oxbow_core::RecordBatch {
    let mut builder = oxbow_core::BatchBuilder::new(0).producer(42, epoch, sequence);
    for i in 0..records {
        builder.push(
            None,
            Some(format!("seq {}", sequence as usize + i).as_bytes()),
            0,
        );
    }
    builder.build()
}

#[test]
fn idempotent_retries_are_deduplicated_even_after_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let first = partition.append(idempotent(0, 0, 3)).await.unwrap();
        let second = partition.append(idempotent(0, 3, 2)).await.unwrap();
        // A retry of the first batch gets its original offsets and appends nothing.
        assert_eq!(partition.append(idempotent(0, 0, 3)).await.unwrap(), first);
        assert_eq!(partition.log_end_offset(), 5);
        assert_eq!(
            partition.append(idempotent(0, 9, 1)).await,
            Err(AppendError::OutOfOrderSequence {
                expected: 5,
                got: 9
            })
        );
        partition.close().await;
        // The producer state comes back from the log.
        let partition = open(&dir, config).await;
        assert_eq!(partition.append(idempotent(0, 3, 2)).await.unwrap(), second);
        assert_eq!(
            partition
                .append(idempotent(0, 5, 1))
                .await
                .unwrap()
                .base_offset,
            5
        );
        assert_eq!(
            partition
                .append(idempotent(1, 0, 1))
                .await
                .unwrap()
                .base_offset,
            6
        );
        assert_eq!(
            partition.append(idempotent(0, 6, 1)).await,
            Err(AppendError::ProducerFenced { current_epoch: 1 })
        );
        assert_eq!(read_all(&partition, 0).await.len(), 4);
        partition.close().await;
    });
}
