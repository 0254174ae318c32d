//! Truncation of the partition log on real files: at the end (a follower whose log diverged)
//! and of everything, restarting at any offset (a replica that must continue past its end).

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::{AppendError, ReadError};

#[test]
fn truncate_to_cuts_at_batch_boundaries_and_survives_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let bases = append_range(&partition, 0..200).await;
        assert!(partition.stats().segments > 3);
        // Cut inside batch 150: that whole batch goes, the log ends at its base.
        let cut = bases[150] + records_in(150) - 1;
        assert_eq!(partition.truncate_to(cut).await.unwrap(), bases[150]);
        assert_eq!(partition.log_end_offset(), bases[150]);
        assert_log_is(&read_all(&partition, 0).await, 150);
        append_range(&partition, 150..160).await;
        assert_log_is(&read_all(&partition, 0).await, 160);
        // Cut in an older segment: later segments are deleted.
        let segments = partition.stats().segments;
        assert_eq!(partition.truncate_to(bases[20]).await.unwrap(), bases[20]);
        assert!(partition.stats().segments < segments);
        partition.close().await;
        let partition = open(&dir, config.clone()).await;
        assert_log_is(&read_all(&partition, 0).await, 20);
        assert_eq!(
            partition.append(batch(20)).await.unwrap().base_offset,
            bases[20]
        );
        assert_eq!(partition.truncate_to(0).await.unwrap(), 0);
        assert!(read_all(&partition, 0).await.is_empty());
        append_range(&partition, 0..3).await;
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_log_is(&read_all(&partition, 0).await, 3);
        partition.close().await;
    });
}

#[test]
fn restart_at_empties_the_log_and_continues_at_any_offset_across_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let end = append_range(&partition, 0..60).await.len() as u64;
        assert!(partition.stats().segments > 1);
        let old_end = partition.log_end_offset();
        assert!(end > 0 && old_end >= end);
        // Past the end: the old batches are gone, from memory (tail cache) and from disk.
        let start = old_end + 1_000;
        assert_eq!(partition.restart_at(start).await.unwrap(), start);
        assert_eq!(
            (partition.log_start_offset(), partition.log_end_offset()),
            (start, start)
        );
        assert!(matches!(
            partition.read(0, 1 << 20).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let replicated = batch(7).with_base_offset(start, 3);
        partition.append_replicated(replicated).await.unwrap();
        partition.close().await;
        let partition = open(&dir, config.clone()).await;
        assert_eq!(partition.log_start_offset(), start);
        let stored = read_all(&partition, start).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(
            (batch_index(&stored[0]), stored[0].partition_leader_epoch()),
            (7, 3)
        );
        // Below the end: everything goes too, and the log starts there.
        assert_eq!(partition.restart_at(5).await.unwrap(), 5);
        assert_eq!(partition.append(batch(1)).await.unwrap().base_offset, 5);
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_eq!(
            (
                partition.log_start_offset(),
                read_all(&partition, 5).await.len()
            ),
            (5, 1)
        );
        partition.close().await;
    });
}

#[test]
fn appends_are_refused_while_a_truncation_is_pending_and_admitted_after() {
    on_shard(|dir| async move {
        let partition = open(&dir, small_config(FlushPolicy::Always)).await;
        let bases = append_range(&partition, 0..10).await;
        // The truncation is requested first; the append then finds it pending.
        let (cut, refused) =
            futures_lite::future::zip(partition.truncate_to(bases[5]), partition.append(batch(5)))
                .await;
        assert_eq!(cut.unwrap(), bases[5]);
        assert_eq!(refused, Err(AppendError::Truncating));
        assert_eq!(
            partition.append(batch(5)).await.unwrap().base_offset,
            bases[5]
        );
        assert_log_is(&read_all(&partition, 0).await, 6);
        partition.close().await;
    });
}
