//! A replicated partition's two read limits on real files: readers stop at the high watermark;
//! a leader serving its followers reads up to its durable end, past it.

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::ReadError;

#[test]
fn readers_stop_at_the_high_watermark_and_followers_read_past_it() {
    on_shard(|dir| async move {
        let partition = open(&dir, small_config(FlushPolicy::Always)).await;
        let bases = append_range(&partition, 0..50).await;
        assert!(partition.stats().segments > 1, "reads cross segments");
        partition.set_high_watermark(bases[10]);
        assert_log_is(&read_all(&partition, 0).await, 10);
        assert!(matches!(
            partition.read(bases[20], 64 * 1024).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // A follower fetching from the high watermark gets everything durable after it.
        let mut from_followers = read_all(&partition, 0).await;
        let mut next = bases[10];
        loop {
            let batches = partition.read_for_followers(next, 64 * 1024).await.unwrap();
            let Some(last) = batches.last() else { break };
            next = last.last_offset() + 1;
            from_followers.extend(batches);
        }
        assert_eq!(next, partition.durable_end_offset());
        assert_eq!(
            partition.log_end_offset(),
            bases[10],
            "readers see the high watermark"
        );
        assert_log_is(&from_followers, 50);
        // The high watermark moves on; it never goes back.
        partition.set_high_watermark(bases[40]);
        partition.set_high_watermark(bases[30]);
        assert_log_is(&read_all(&partition, 0).await, 40);
        partition.close().await;
    });
}
