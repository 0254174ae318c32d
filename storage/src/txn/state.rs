//! The open and aborted transactions of one partition (sans-IO).

use oxbow_core::{MarkerKind, RecordBatch, TxnMarker};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A transaction that ended in an abort: `read_committed` readers drop the records of
/// `producer_id` from `first_offset` up to the marker at `last_offset` (Kafka's
/// AbortedTransaction, as Fetch returns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The transaction's producer.
    pub producer_id: i64,
    /// Offset of its first batch in this partition.
    pub first_offset: u64,
    /// Offset of its abort marker.
    pub last_offset: u64,
}

/// A transaction whose marker a truncation may still cut (it is above the settled horizon).
#[derive(Debug, Clone, Copy)]
struct Ended {
    producer_id: i64,
    first_offset: u64,
    marker_offset: u64,
}

/// Transaction state of one partition. Owned by its log core.
#[derive(Debug, Default, Clone)]
pub(crate) struct TxnState {
    /// Open transactions by the offset of their first batch: the first one bounds the last
    /// stable offset. Two batches never share an offset, so neither do two transactions.
    open_by_first: BTreeMap<u64, i64>,
    open_by_producer: HashMap<i64, u64>,
    /// Aborted transactions in marker order (so also by `last_offset`).
    aborted: VecDeque<AbortedTxn>,
    /// Transactions ended by a marker at or above `settled_below`, in marker order.
    unsettled: VecDeque<Ended>,
    /// Markers below are never cut: a replica truncates only above its high watermark.
    settled_below: u64,
}

impl TxnState {
    /// Records a batch given its offsets: a transactional producer's first batch opens its
    /// transaction here, a marker ends it. Other batches change nothing.
    pub(crate) fn record(&mut self, batch: &RecordBatch) {
        let producer_id = batch.producer_id();
        if !batch.is_transactional() || producer_id < 0 {
            return;
        }
        if !batch.is_control() {
            if !self.open_by_producer.contains_key(&producer_id) {
                self.begin(producer_id, batch.base_offset());
            }
            return;
        }
        let Some(marker) = TxnMarker::of(batch) else {
            return;
        };
        // A marker for a transaction that wrote nothing here ends nothing here.
        let Some(first_offset) = self.open_by_producer.remove(&producer_id) else {
            return;
        };
        self.open_by_first.remove(&first_offset);
        let marker_offset = batch.base_offset();
        if marker.kind == MarkerKind::Abort {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
        }
        self.unsettled.push_back(Ended {
            producer_id,
            first_offset,
            marker_offset,
        });
    }

    fn begin(&mut self, producer_id: i64, first_offset: u64) {
        self.open_by_producer.insert(producer_id, first_offset);
        self.open_by_first.insert(first_offset, producer_id);
    }

    /// Offset of the first batch of the oldest open transaction: records from there on are
    /// not stable yet.
    pub(crate) fn first_unstable(&self) -> Option<u64> {
        self.open_by_first.keys().next().copied()
    }

    /// The open transactions, as (producer id, first offset), oldest first.
    pub(crate) fn open(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.open_by_first.iter().map(|(&first, &id)| (id, first))
    }

    /// No truncation will cut below `horizon` (it is below the high watermark): forget how
    /// to undo markers there.
    pub(crate) fn settle(&mut self, horizon: u64) {
        while self
            .unsettled
            .front()
            .is_some_and(|e| e.marker_offset < horizon)
        {
            self.unsettled.pop_front();
        }
        self.settled_below = self.settled_below.max(horizon);
    }

    /// Forgets aborted transactions whose marker is below the log start: no reader can fetch
    /// any of their records any more.
    pub(crate) fn forget_below(&mut self, log_start: u64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    /// Whether [`TxnState::truncate`] to `offset` is exact: it is not below the horizon of
    /// [`TxnState::settle`], where markers are forgotten.
    pub(crate) fn can_truncate_to(&self, offset: u64) -> bool {
        offset >= self.settled_below
    }

    /// The log now ends at `offset`: transactions begun at or after it never began, and those
    /// whose marker was cut are open again. False if the cut went below what was settled (the
    /// state then keeps markers it cannot undo: the caller reads it back from disk instead).
    pub(crate) fn truncate(&mut self, offset: u64) -> bool {
        for producer_id in self.open_by_first.split_off(&offset).into_values() {
            self.open_by_producer.remove(&producer_id);
        }
        while self.aborted.back().is_some_and(|a| a.last_offset >= offset) {
            self.aborted.pop_back();
        }
        while self
            .unsettled
            .back()
            .is_some_and(|e| e.marker_offset >= offset)
        {
            let ended = self.unsettled.pop_back().expect("checked");
            if ended.first_offset < offset {
                self.begin(ended.producer_id, ended.first_offset);
            }
        }
        let exact = offset >= self.settled_below;
        self.settled_below = self.settled_below.min(offset);
        exact
    }

    /// Aborted transactions with records in `from..upto`: a reader of that range drops them.
    pub(crate) fn aborted_overlapping(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        let first = self.aborted.partition_point(|a| a.last_offset < from);
        (self.aborted.range(first..))
            .filter(|a| a.first_offset < upto)
            .copied()
            .collect()
    }

    /// Every aborted transaction still remembered, in marker order.
    pub(crate) fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> + '_ {
        self.aborted.iter()
    }

    /// The state as it was when the log ended at `offset` (which must not be below the
    /// settled horizon): what a snapshot at a roll holds while later appends are queued.
    pub(crate) fn as_of(&self, offset: u64) -> TxnState {
        let mut state = self.clone();
        let exact = state.truncate(offset);
        debug_assert!(exact, "a snapshot below the settled horizon");
        state.unsettled.clear();
        state
    }

    /// A state read back from a snapshot: everything in it is settled.
    pub(crate) fn restored(open: Vec<(i64, u64)>, aborted: Vec<AbortedTxn>, at: u64) -> TxnState {
        let mut state = TxnState {
            aborted: aborted.into(),
            settled_below: at,
            ..TxnState::default()
        };
        for (producer_id, first_offset) in open {
            state.begin(producer_id, first_offset);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::control::TRANSACTIONAL_BIT;
    use oxbow_core::BatchBuilder;

    fn data(producer_id: i64, offset: u64) -> RecordBatch {
        let mut builder = BatchBuilder::new(0)
            .producer(producer_id, 0, 0)
            .attributes(TRANSACTIONAL_BIT);
        builder.push(Some(b"k"), Some(b"v"), 0);
        builder.build().with_base_offset(offset, 0)
    }

    fn marker(producer_id: i64, kind: MarkerKind, offset: u64) -> RecordBatch {
        let marker = TxnMarker {
            kind,
            coordinator_epoch: 0,
        };
        marker.batch(producer_id, 0, 0).with_base_offset(offset, 0)
    }

    fn plain(offset: u64) -> RecordBatch {
        let mut builder = BatchBuilder::new(0).producer(9, 0, 0);
        builder.push(Some(b"k"), Some(b"v"), 0);
        builder.build().with_base_offset(offset, 0)
    }

    #[test]
    fn the_oldest_open_transaction_bounds_stability_and_aborts_are_listed() {
        let mut state = TxnState::default();
        state.record(&plain(0));
        assert_eq!(state.first_unstable(), None);
        state.record(&data(1, 1));
        state.record(&data(2, 2));
        state.record(&data(1, 3));
        assert_eq!(state.first_unstable(), Some(1));
        state.record(&marker(1, MarkerKind::Abort, 4));
        assert_eq!(state.first_unstable(), Some(2));
        state.record(&marker(2, MarkerKind::Commit, 5));
        assert_eq!(state.first_unstable(), None);
        let abort = AbortedTxn {
            producer_id: 1,
            first_offset: 1,
            last_offset: 4,
        };
        assert_eq!(state.aborted_overlapping(0, 6), vec![abort]);
        assert_eq!(state.aborted_overlapping(4, 6), vec![abort]);
        assert_eq!(state.aborted_overlapping(5, 6), vec![]);
        assert_eq!(state.aborted_overlapping(0, 1), vec![]);
        // A marker for a producer with nothing open here ends nothing.
        state.record(&marker(3, MarkerKind::Abort, 6));
        assert_eq!(state.aborted().count(), 1);
        state.forget_below(5);
        assert_eq!(state.aborted().count(), 0);
    }

    #[test]
    fn a_truncation_reopens_what_its_cut_markers_ended() {
        let mut state = TxnState::default();
        state.record(&data(1, 0));
        state.record(&data(2, 1));
        state.record(&marker(1, MarkerKind::Abort, 2));
        state.record(&data(1, 3));
        state.record(&marker(2, MarkerKind::Commit, 4));
        state.settle(2);
        let before_cut = state.clone();
        assert!(state.truncate(3));
        // Producer 1's second transaction never began; producer 2's commit never happened.
        assert_eq!(state.open().collect::<Vec<_>>(), vec![(2, 1)]);
        assert_eq!(state.aborted().count(), 1);
        assert_eq!(before_cut.as_of(3).open().collect::<Vec<_>>(), vec![(2, 1)]);
        assert!(state.truncate(2));
        assert_eq!(state.open().collect::<Vec<_>>(), vec![(1, 0), (2, 1)]);
        assert_eq!(state.aborted().count(), 0);
        assert!(!state.truncate(1), "below the settled horizon");
    }
}
