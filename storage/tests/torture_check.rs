//! The torture check fails when it should: a lost acknowledged batch, an offset whose bytes
//! changed and a batch back after a truncation removed it are each reported, while the same
//! log, told the truth, passes.

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::torture::{batch, Acked, Model, Promise};
use oxbow_storage::{OpenOptions, Partition};

#[test]
fn the_check_reports_loss_changed_bytes_and_truncated_batches_back_and_passes_the_truth() {
    on_shard(|dir| async move {
        let log = Partition::open(
            &dir,
            small_config(FlushPolicy::Always),
            OpenOptions::default(),
        )
        .await
        .unwrap();
        log.set_leader_epoch(3);
        let mut model = Model::default();
        let mut bases = Vec::new();
        for id in 0..6 {
            let appended = log.append(batch(id)).await.unwrap();
            let acked = Acked {
                id,
                epoch: 3,
                last_offset: appended.last_offset,
            };
            model.acked(appended.base_offset, acked).unwrap();
            bases.push(appended.base_offset);
        }
        let checked = model
            .check(&log, Promise::AckedSurvive, true)
            .await
            .unwrap();
        assert_eq!((checked.batches, checked.acked_found), (6, 6));

        // The model claims another batch at an offset that holds batch 2.
        let mut wrong = Model::default();
        let claim = Acked {
            id: 99,
            epoch: 3,
            last_offset: bases[3] - 1,
        };
        wrong.acked(bases[2], claim).unwrap();
        let error = wrong
            .check(&log, Promise::AckedSurvive, false)
            .await
            .unwrap_err();
        assert!(error.0.contains("changed"), "{error}");

        // Truncation behind the model's back loses acknowledged batches 4 and 5.
        log.truncate_to(bases[4]).await.unwrap();
        let error = model
            .check(&log, Promise::AckedSurvive, true)
            .await
            .unwrap_err();
        assert!(error.0.contains("lost"), "{error}");
        // Where nothing was promised, the lost ones are forgotten and the rest still match.
        let checked = model
            .check(&log, Promise::NothingPromised, true)
            .await
            .unwrap();
        assert_eq!(checked.batches, 4);
        assert_eq!(model.len(), 4);

        // Once the model knows of the truncation (batch 6 was next), a later batch is fine
        // there, but batch 5, truncated away, must never come back.
        model.truncated(bases[4], 6);
        log.append(batch(6)).await.unwrap();
        model
            .check(&log, Promise::AckedSurvive, true)
            .await
            .unwrap();
        log.append(batch(5)).await.unwrap();
        let error = model
            .check(&log, Promise::AckedSurvive, true)
            .await
            .unwrap_err();
        assert!(error.0.contains("came back"), "{error}");
        log.close().await;
    });
}
