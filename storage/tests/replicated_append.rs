//! A follower's append of many batches at once: stored as the leader sent them, covered by a
//! shared fdatasync rather than one each, and cut short (after the good ones are durable) by
//! a batch that does not continue the log.

mod common;

use common::*;
use oxbow_core::{FlushPolicy, RecordBatch};
use oxbow_storage::metrics::fsync_latency_us;
use oxbow_storage::AppendError;

/// Batches `range` as a leader at `epoch` would have stored them, starting at `base`.
fn leaders_batches(range: std::ops::Range<u64>, mut base: u64, epoch: i32) -> Vec<RecordBatch> {
    range
        .map(|i| {
            let stored = batch(i).with_base_offset(base, epoch);
            base += records_in(i);
            stored
        })
        .collect()
}

/// The log holds exactly `sent`, byte for byte.
fn assert_same(stored: &[RecordBatch], sent: &[RecordBatch]) {
    assert_eq!(stored.len(), sent.len(), "batch count");
    for (i, (stored, sent)) in stored.iter().zip(sent).enumerate() {
        assert_eq!(stored.bytes(), sent.bytes(), "bytes of batch {i}");
    }
}

#[test]
fn many_batches_share_their_fdatasyncs_and_survive_reopen() {
    on_shard(|dir| async move {
        let config = small_config(FlushPolicy::Always);
        let partition = open(&dir, config.clone()).await;
        let syncs_before = fsync_latency_us().len();
        let batches = leaders_batches(0..40, 0, 2);
        let end: u64 = (0..40).map(records_in).sum();
        let last = (partition.append_replicated_all(batches.clone()).await).unwrap();
        assert_eq!(last.map(|a| a.last_offset + 1), Some(end));
        assert_eq!(partition.durable_end_offset(), end);
        let syncs = fsync_latency_us().len() - syncs_before;
        // One at a time would take 40 (and seals of the small segments add a few).
        assert!(syncs < 20, "{syncs} fdatasyncs for 40 batches");
        partition.close().await;
        let partition = open(&dir, config).await;
        assert_same(&read_all(&partition, 0).await, &batches);
        assert_eq!(
            partition.append_replicated_all(Vec::new()).await.unwrap(),
            None
        );
        partition.close().await;
    });
}

#[test]
fn a_batch_that_starts_before_the_log_end_ends_the_run_after_the_ones_before_it() {
    on_shard(|dir| async move {
        let partition = open(&dir, small_config(FlushPolicy::Always)).await;
        let good = leaders_batches(0..5, 0, 1);
        let end: u64 = (0..5).map(records_in).sum();
        // An overlap: the sixth batch starts inside the fifth. (A gap is a leader's
        // compaction, and kept.)
        let mut batches = good.clone();
        batches.extend(leaders_batches(5..8, end - 1, 1));
        let refused = partition.append_replicated_all(batches).await;
        assert!(
            matches!(refused, Err(AppendError::NotContiguous { .. })),
            "{refused:?}"
        );
        assert_eq!(partition.durable_end_offset(), end);
        assert_same(&read_all(&partition, 0).await, &good);
        partition.close().await;
    });
}

#[test]
fn a_wait_for_durable_data_ends_with_the_append_that_brings_it_or_with_close() {
    on_shard(|dir| async move {
        let partition = open(&dir, small_config(FlushPolicy::Always)).await;
        let end = partition.durable_end_offset();
        // The waiter is polled first and finds nothing; the append then wakes it.
        let (woken_at, appended) = futures_lite::future::zip(
            async {
                partition.wait_for_durable(end).await;
                partition.durable_end_offset()
            },
            partition.append(batch(0)),
        )
        .await;
        let appended = appended.unwrap();
        assert_eq!(woken_at, appended.last_offset + 1);
        // Nothing comes: closing ends the wait.
        let end = partition.durable_end_offset();
        futures_lite::future::zip(partition.wait_for_durable(end), partition.close()).await;
        assert_eq!(partition.durable_end_offset(), end);
    });
}
