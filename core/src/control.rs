//! Transaction markers: the control batches a transaction coordinator has written to every
//! partition of a transaction when it ends, in Kafka's format.
//!
//! A marker is a batch with the control and transactional attribute bits set, the producer id
//! and epoch of the transaction, and one record: key = version (i16, 0) and type (i16, 0 abort
//! or 1 commit); value = version (i16, 0) and the coordinator's epoch (i32). Only a broker
//! writes them; clients never send them (see [`RecordBatch::validate_records`]).

use crate::batch::RecordBatch;
use crate::builder::BatchBuilder;

/// Attribute bit of a batch that belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit of a control batch.
pub const CONTROL_BIT: i16 = 0x20;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// Its records are discarded by `read_committed` readers.
    Abort,
    /// Its records become visible to `read_committed` readers.
    Commit,
}

/// A transaction marker as read from a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    /// Abort or commit.
    pub kind: MarkerKind,
    /// Epoch of the coordinator that wrote it (fences markers of a deposed coordinator).
    pub coordinator_epoch: i32,
}

impl TxnMarker {
    /// Builds the control batch that ends the transaction of `producer_id` at `epoch`, with
    /// base offset 0 (the log assigns it).
    pub fn batch(self, producer_id: i64, epoch: i16, timestamp_ms: i64) -> RecordBatch {
        let kind: i16 = match self.kind {
            MarkerKind::Abort => 0,
            MarkerKind::Commit => 1,
        };
        let key = [0i16.to_be_bytes(), kind.to_be_bytes()].concat();
        let mut value = 0i16.to_be_bytes().to_vec();
        value.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        let mut builder = BatchBuilder::new(timestamp_ms)
            .producer(producer_id, epoch, -1)
            .attributes(TRANSACTIONAL_BIT | CONTROL_BIT);
        builder.push(Some(&key), Some(&value), timestamp_ms);
        builder.build()
    }

    /// The marker a control batch holds; `None` for other batches and for control records
    /// this version does not know (Kafka skips those too).
    pub fn of(batch: &RecordBatch) -> Option<TxnMarker> {
        if !batch.is_control() {
            return None;
        }
        // Control batches are never compressed and hold one record: a small bound suffices.
        let record = batch.records(1 << 16).ok()?.next()?.ok()?;
        let key = record.key?;
        let value = record.value?;
        if key.len() < 4 || value.len() < 6 || key[..2] != [0, 0] {
            return None;
        }
        let kind = match i16::from_be_bytes([key[2], key[3]]) {
            0 => MarkerKind::Abort,
            1 => MarkerKind::Commit,
            _ => return None,
        };
        let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
        Some(TxnMarker {
            kind,
            coordinator_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_through_their_control_batch() {
        for kind in [MarkerKind::Abort, MarkerKind::Commit] {
            let marker = TxnMarker {
                kind,
                coordinator_epoch: 7,
            };
            let stored = marker.batch(42, 3, 1_000).with_base_offset(10, 0);
            let parsed = RecordBatch::parse(stored.into_bytes()).expect("a valid batch");
            assert!(parsed.is_control() && parsed.is_transactional());
            assert_eq!((parsed.producer_id(), parsed.producer_epoch()), (42, 3));
            assert_eq!(TxnMarker::of(&parsed), Some(marker));
        }
    }

    #[test]
    fn data_batches_and_unknown_control_records_are_not_markers() {
        let mut data = BatchBuilder::new(0).attributes(TRANSACTIONAL_BIT);
        data.push(Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 7]), 0);
        assert_eq!(TxnMarker::of(&data.build()), None);
        let mut unknown = BatchBuilder::new(0).attributes(TRANSACTIONAL_BIT | CONTROL_BIT);
        unknown.push(Some(&[0, 0, 0, 5]), Some(&[0, 0, 0, 0, 0, 7]), 0);
        assert_eq!(TxnMarker::of(&unknown.build()), None);
    }
}
