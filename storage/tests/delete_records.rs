//! Deleting records (Kafka's DeleteRecords): the log start moves to any offset, inside a
//! segment too, and stays there across a reopen and a power loss once the deletion is
//! answered.

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{DeleteRecordsError, Disk, OpenOptions, Partition, ReadError};
use std::path::Path;
use std::rc::Rc;

#[test]
fn the_log_start_moves_inside_a_segment_and_stays_there_across_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let bases = append_range(&partition, 0..200).await;
        let segments = files_with(&dir, "log");
        assert!(segments.len() > 4, "the test needs several segments");
        let end = partition.log_end_offset();

        // Past the end: refused, nothing changes.
        assert!(matches!(
            partition.delete_records(end + 1).await,
            Err(DeleteRecordsError::OffsetOutOfRange { offset, log_end }) if offset == end + 1 && log_end == end
        ));
        assert_eq!(partition.log_start_offset(), 0);

        // Inside batch 121, which lies inside a segment past the first few.
        let start = bases[121] + 1;
        assert!(records_in(121) > 1, "the start must fall inside the batch");
        assert_eq!(partition.delete_records(start).await.unwrap(), start);
        assert_eq!(partition.log_start_offset(), start);
        assert!(matches!(
            partition.read(start - 1, 1 << 20).await,
            Err(ReadError::OffsetOutOfRange { log_start, .. }) if log_start == start
        ));
        // A read at the start gets the whole batch that holds it, as Kafka answers.
        let first = &partition.read(start, 1 << 20).await.unwrap()[0];
        assert_eq!(batch_index(first), 121);
        let kept = files_with(&dir, "log");
        assert!(kept.len() < segments.len(), "no segment was deleted");
        let first_kept = segment_base(&kept[0]);
        assert!(first_kept <= bases[121] && first_kept > 0);

        // Lower than the start: nothing changes.
        assert_eq!(partition.delete_records(bases[10]).await.unwrap(), start);
        partition.close().await;

        let partition = open(&dir, config.clone()).await;
        assert_eq!(partition.log_start_offset(), start);
        let read = read_all(&partition, start).await;
        assert_eq!(batch_index(&read[0]), 121);
        assert_eq!(read.len(), 79);

        // Everything: the log is empty and goes on at its end.
        let end = partition.log_end_offset();
        assert_eq!(partition.delete_records(end).await.unwrap(), end);
        assert_eq!(partition.append(batch(200)).await.unwrap().base_offset, end);
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.log_start_offset(), end);
        assert_eq!(read_all(&partition, end).await.len(), 1);
        partition.close().await;
    });
}

#[test]
fn truncating_below_a_moved_start_restarts_the_log_there() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let bases = append_range(&partition, 0..50).await;
        let start = bases[40] + 1;
        partition.delete_records(start).await.unwrap();
        // A follower told to cut at or below its start keeps nothing readable: it starts again
        // at the cut, and the old start does not hide the new records after a reopen.
        let cut = bases[40];
        assert_eq!(partition.truncate_to(cut).await.unwrap(), cut);
        assert_eq!(
            (partition.log_start_offset(), partition.log_end_offset()),
            (cut, cut)
        );
        let replicated = batch(40).with_base_offset(cut, 0);
        partition.append_replicated(replicated).await.unwrap();
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.log_start_offset(), cut);
        let read = read_all(&partition, cut).await;
        assert_eq!(read.len(), 1);
        assert_eq!(batch_index(&read[0]), 40);
        partition.close().await;
    });
}

/// Retention moved the start: a deletion at or below it changes nothing and is answered at
/// once (nothing is waited for).
#[test]
fn a_deletion_below_where_retention_left_the_start_is_answered_at_once() {
    on_shard(|dir| async move {
        let config = oxbow_core::LogConfig {
            retention_bytes_max: Some(128 * 1024),
            ..small_config(FlushPolicy::Always)
        };
        let partition = open(&dir, config).await;
        append_range(&partition, 0..200).await;
        assert!(
            partition
                .apply_retention(oxbow_storage::now_ms())
                .await
                .unwrap()
                > 0
        );
        let start = partition.log_start_offset();
        for below in [start - 1, start] {
            let deleted = futures_lite::future::or(
                async { Some(partition.delete_records(below).await) },
                async {
                    glommio::timer::sleep(std::time::Duration::from_secs(10)).await;
                    None
                },
            );
            let deleted = deleted.await.expect("the deletion hung");
            assert_eq!(deleted.unwrap(), start);
        }
        partition.close().await;
    });
}

/// A checkpoint left past the log end (a power loss took the tail it pointed into, or a
/// truncation cut there and crashed before writing it again) is corrected at open, before
/// anything is appended: it must not hide the records appended later.
#[test]
fn a_checkpoint_past_the_end_is_corrected_before_appends() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        append_range(&partition, 0..10).await;
        let end = partition.log_end_offset();
        partition.close().await;
        let stale = oxbow_storage::log_start::encode(end + 5);
        std::fs::write(oxbow_storage::log_start::log_start_path(&dir), stale).unwrap();

        let partition = open(&dir, config.clone()).await;
        assert_eq!(partition.log_start_offset(), end, "capped at the end");
        append_range(&partition, 10..20).await;
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(partition.log_start_offset(), end);
        let read = read_all(&partition, end).await;
        assert_eq!(
            batch_index(&read[0]),
            10,
            "the records appended after are all there"
        );
        partition.close().await;
    });
}

/// Every answered deletion survives a power loss at any point after it, whatever else was in
/// flight; nothing acknowledged above the start is lost.
#[test]
fn an_answered_deletion_survives_a_power_loss() {
    on_shard(|_| async move {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::with_latency(seed, rng.usize(..4));
            let dir = Path::new("/p");
            let config = small_config(FlushPolicy::Always);
            let boot: Rc<dyn Disk> = Rc::new(disk.boot());
            let partition = Partition::open(dir, config.clone(), OpenOptions::with_disk(boot))
                .await
                .unwrap();
            let partition = Rc::new(partition);
            let count = rng.u64(5..120);
            append_range(&partition, 0..count).await;
            let start = rng.u64(0..=partition.log_end_offset());
            // Appends in flight while the deletion runs.
            let tail: Vec<_> = (count..count + rng.u64(0..8))
                .map(|i| {
                    let partition = partition.clone();
                    glommio::spawn_local(async move { partition.append(batch(i)).await })
                })
                .collect();
            assert_eq!(partition.delete_records(start).await.unwrap(), start);
            for append in tail {
                append.await.unwrap();
            }
            let acked_end = partition.log_end_offset();
            drop(partition);
            let keep = CrashKeep {
                sector: rng.f64(),
                set_len: rng.f64(),
            };
            disk.crash(&mut rng, keep);
            let boot: Rc<dyn Disk> = Rc::new(disk.boot());
            let partition = Partition::open(dir, config, OpenOptions::with_disk(boot))
                .await
                .unwrap();
            assert_eq!(partition.log_start_offset(), start, "seed {seed}");
            let end = partition.log_end_offset();
            assert!(end >= acked_end, "seed {seed}: lost acknowledged batches");
            if start < end {
                let read = read_all(&partition, start).await;
                let last = read.last().unwrap();
                assert_eq!(last.last_offset() + 1, end);
            }
            partition.close().await;
        }
    });
}
