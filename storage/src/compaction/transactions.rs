//! What compaction copies whole in a log with transactions.
//!
//! - Transaction markers (control batches): their keys are not record keys, and a reader or a
//!   recovery replaying the log needs every one of them to know a transaction ended.
//! - The batches of aborted transactions: their records must not count as the newest value of
//!   a key, or the committed value before them would go; `read_committed` readers skip them
//!   through the aborted-transaction list. (Kafka removes them; here they stay until the
//!   retention of a `compact,delete` topic or a later version takes them.)
//!
//! Open transactions need nothing here: the cleaner stops below the last stable offset.

use crate::txn::AbortedTxn;
use oxbow_core::RecordBatch;
use std::collections::HashMap;

/// The batches a pass copies whole, and never reads keys from.
#[derive(Debug, Default)]
pub(crate) struct KeptWhole {
    /// Each producer's aborted transactions as (first offset, marker offset), by marker.
    aborted: HashMap<i64, Vec<(u64, u64)>>,
}

impl KeptWhole {
    /// For a pass over a log with these aborted transactions (in marker order).
    pub(crate) fn new(aborted: &[AbortedTxn]) -> KeptWhole {
        let mut by_producer: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
        for a in aborted {
            (by_producer.entry(a.producer_id).or_default()).push((a.first_offset, a.last_offset));
        }
        KeptWhole {
            aborted: by_producer,
        }
    }

    /// Whether `batch` is copied whole.
    pub(crate) fn covers(&self, batch: &RecordBatch) -> bool {
        if batch.is_control() {
            return true;
        }
        if !batch.is_transactional() {
            return false;
        }
        let Some(spans) = self.aborted.get(&batch.producer_id()) else {
            return false;
        };
        // A producer's transactions do not overlap: the first ending at or after the batch is
        // the only one that can hold it.
        let offset = batch.base_offset();
        let at = spans.partition_point(|&(_, last)| last < offset);
        spans.get(at).is_some_and(|&(first, _)| first <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::control::TRANSACTIONAL_BIT;
    use oxbow_core::{BatchBuilder, MarkerKind, TxnMarker};

    fn batch(producer_id: i64, offset: u64, flags: i16) -> RecordBatch {
        let mut builder = BatchBuilder::new(0)
            .producer(producer_id, 0, 0)
            .attributes(flags);
        builder.push(Some(b"k"), Some(b"v"), 0);
        builder.build().with_base_offset(offset, 0)
    }

    #[test]
    fn markers_and_aborted_batches_are_kept_whole_and_nothing_else() {
        let kept = KeptWhole::new(&[
            AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 20,
            },
            AbortedTxn {
                producer_id: 1,
                first_offset: 30,
                last_offset: 40,
            },
        ]);
        let marker = TxnMarker {
            kind: MarkerKind::Commit,
            coordinator_epoch: 0,
        };
        assert!(kept.covers(&marker.batch(2, 0, 0).with_base_offset(5, 0)));
        assert!(kept.covers(&batch(1, 10, TRANSACTIONAL_BIT)));
        assert!(kept.covers(&batch(1, 35, TRANSACTIONAL_BIT)));
        assert!(
            !kept.covers(&batch(1, 25, TRANSACTIONAL_BIT)),
            "committed between aborts"
        );
        assert!(
            !kept.covers(&batch(2, 15, TRANSACTIONAL_BIT)),
            "another producer"
        );
        assert!(!kept.covers(&batch(1, 15, 0)), "not transactional");
    }
}
