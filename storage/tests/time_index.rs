//! The time index: the first batch reaching a time, found across segments whose timestamps go
//! back and forth, equals what a scan of every batch finds, before and after a reopen (sealed
//! segments then come back through their index files).

mod common;

use common::{on_shard, small_config};
use oxbow_core::{BatchBuilder, FlushPolicy};
use oxbow_storage::{OpenOptions, Partition};

/// Newest record time of batch `i`: a rising trend with jitter, so times repeat and go back.
fn newest(i: u64, rng: &mut fastrand::Rng) -> i64 {
    1_000_000 + (i as i64) * 10 + rng.i64(-300..300)
}

#[test]
fn the_first_batch_at_a_time_matches_a_full_scan_across_segments_and_a_reopen() {
    on_shard(|dir| async move {
        let mut rng = fastrand::Rng::with_seed(11);
        let config = small_config(FlushPolicy::Never);
        let log = Partition::open(&dir, config.clone(), OpenOptions::default())
            .await
            .unwrap();
        // (base offset, newest time) of every batch.
        let mut batches = Vec::new();
        for i in 0..600u64 {
            let time = newest(i, &mut rng);
            let mut builder = BatchBuilder::new(time - 5);
            builder.push(None, Some(&vec![b'v'; 300 + (i as usize % 700)]), time - 5);
            builder.push(None, Some(b"last"), time);
            let appended = log.append(builder.build()).await.unwrap();
            batches.push((appended.base_offset, time));
        }
        assert!(log.stats().segments > 5, "spans segments");
        let expected = |at: i64| batches.iter().find(|(_, t)| *t >= at).map(|(o, _)| *o);
        let probes: Vec<i64> = (0..300).map(|_| rng.i64(999_000..1_007_000)).collect();
        for at in &probes {
            let found = log.first_batch_at_time(*at).await.unwrap();
            assert_eq!(found.map(|b| b.base_offset()), expected(*at), "at {at}");
        }
        log.close().await;
        let log = Partition::open(&dir, config, OpenOptions::default())
            .await
            .unwrap();
        for at in &probes {
            let found = log.first_batch_at_time(*at).await.unwrap();
            assert_eq!(
                found.map(|b| b.base_offset()),
                expected(*at),
                "reopened, at {at}"
            );
        }
        assert_eq!(log.first_batch_at_time(i64::MAX).await.unwrap(), None);
        log.close().await;
    });
}
